"""Every ```python block of README.md and docs/*.md runs.

Each file's blocks run in order in one namespace, in a fresh Python process
(the TF-MOT example turns `tf.keras` into tf_keras for its whole process)
whose working folder is a temporary one. A block whose previous non-blank
line is `<!-- skip-test -->` is not run (long training, several machines).
Shell blocks are not run.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SKIP = "<!-- skip-test -->"
FENCE = re.compile(r"^```(\S*)\s*$")

# Every page starts from the same seeds (numpy's global generator, Keras'
# and TensorFlow's), so an example on random data is the same run each time.
RUNNER = """
import json, sys
import keras
keras.utils.set_random_seed(0)
path, blocks = sys.argv[1], json.load(open(sys.argv[2]))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"-- {path}:{line}", flush=True)
    exec(compile("\\n" * line + code, path, "exec"), namespace)
"""


def code_blocks(text):
    """`(line, language, code, skipped)` of each fenced block.

    `line` is the opening fence's line number (from 1), so the block's code
    starts on the next line; blocks without a language are left out.
    """
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        before = [x for x in lines[:i] if x.strip()]
        skipped = bool(before) and before[-1].strip() == SKIP
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"Unclosed ``` block at line {i + 1}.")
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append((i + 1, match.group(1), code, skipped))
        i = end + 1
    return blocks


def documents():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path):
    return [
        (line, code)
        for line, language, code, skipped in code_blocks(path.read_text())
        if language == "python" and not skipped
    ]


@pytest.mark.parametrize(
    "path", documents(), ids=lambda p: str(p.relative_to(ROOT))
)
def test_python_blocks_run(path, tmp_path):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip("no python block")
    blocks_file = tmp_path / "blocks.json"
    blocks_file.write_text(json.dumps(blocks))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(path), str(blocks_file)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def test_skipped_blocks_are_rare():
    """At most one python block in five is marked `<!-- skip-test -->`."""
    counts = [0, 0]
    for path in documents():
        for _, language, _, skipped in code_blocks(path.read_text()):
            if language == "python":
                counts[skipped] += 1
    assert counts[0] > 0
    assert counts[1] * 5 <= sum(counts), counts


def test_code_blocks_parses_fences_and_skip_marks():
    text = "\n".join(
        [
            "# t",
            "```python",
            "a = 1",
            "```",
            "<!-- skip-test -->",
            "",
            "```python",
            "b = 2",
            "```",
            "```bash",
            "make demo",
            "```",
            "```",
            "plain",
            "```",
        ]
    )
    assert code_blocks(text) == [
        (2, "python", "a = 1\n", False),
        (7, "python", "b = 2\n", True),
        (10, "bash", "make demo\n", False),
    ]


def test_unclosed_block_is_refused():
    with pytest.raises(ValueError, match="Unclosed ``` block at line 2"):
        code_blocks("x\n```python\na = 1\n")
