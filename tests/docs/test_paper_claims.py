"""`docs/results/paper_claims.py`: the verdicts of the paper's claims."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "paper_claims", ROOT / "docs" / "results" / "paper_claims.py"
)
paper_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_claims)

HEADER = "fraction,sparsity,loss,accuracy\n"


def write_run(folder, name, seed, weight, unit):
    """A run folder whose sweeps hold `{fraction: accuracy}`."""
    run = folder / f"{name}-s{seed}"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": name}))
    for targeting, accuracies in (("weight", weight), ("unit", unit)):
        lines = [f"{f},{f},1.0,{a}" for f, a in sorted(accuracies.items())]
        (run / f"sweep_{targeting}.csv").write_text(
            HEADER + "\n".join(lines) + "\n"
        )


@pytest.mark.parametrize(
    "values, bound, at_least, word",
    [
        ([2.0, 2.5, 2.2], 3.0, False, "MET"),
        ([3.5, 4.0, 3.8], 3.0, False, "NOT MET"),
        ([2.0, 4.0], 3.0, False, "UNDECIDED"),
        ([25.0, 30.0, 28.0], 20.0, True, "MET"),
        ([10.0, 12.0], 20.0, True, "NOT MET"),
        ([2.9], 3.0, False, "MET"),
    ],
)
def test_verdict_by_the_band(values, bound, at_least, word):
    text, got = paper_claims.verdict(values, bound, at_least)
    assert got == word
    assert ("(1 seed)" in text) == (len(values) == 1)


def test_claims_from_run_folders(tmp_path, capsys):
    # none: 80 dense, 50 at 80% weight and 30 at 50% unit pruning;
    # targeted weight loses 1 point at 80%; unit targeted dropout is
    # 8 points below none dense and loses 2 at 50%.
    for seed, shift in ((0, 0.0), (1, 0.4)):
        write_run(
            tmp_path,
            "none",
            seed,
            {0.0: 0.80 + shift / 100, 0.8: 0.50},
            {0.0: 0.80 + shift / 100, 0.5: 0.30},
        )
        write_run(
            tmp_path,
            "targeted_weight_0.66_0.75",
            seed,
            {0.0: 0.79, 0.8: 0.78 - shift / 100},
            {0.0: 0.79, 0.5: 0.40},
        )
        write_run(
            tmp_path,
            "targeted_unit_0.9_0.75_column",
            seed,
            {0.0: 0.72, 0.8: 0.10},
            {0.0: 0.72, 0.5: 0.70},
        )
    found = paper_claims.accuracies(str(tmp_path), False)
    rows = paper_claims.claims(found, "targeted_unit_0.9_0.75_column")
    words = [word for _, _, word in rows]
    assert words == ["MET", "MET", "NOT MET", "MET", "MET"]
    assert rows[0][1].startswith("  1.20 ± 0.28 (2 seeds)")
    assert rows[2][1].startswith("  8.20 ± 0.00 (2 seeds)")
    paper_claims.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "no runs" in out  # no recalibrated sweeps in these folders


def test_committed_claims_are_what_the_script_prints(capsys, monkeypatch):
    """`make results` rewrites nothing: the committed claims.txt (quoted by
    docs/reproducing.md) is what paper_claims.py prints from the committed
    run folders."""
    scale = ROOT / "docs" / "results" / "cifar10_resnet8_cos20"
    monkeypatch.chdir(ROOT)  # the header names the folder as make gives it
    paper_claims.main([str(scale.relative_to(ROOT))])
    printed = capsys.readouterr().out
    assert printed == (scale / "claims.txt").read_text()
    assert printed.strip() in (ROOT / "docs" / "reproducing.md").read_text()


def test_figures_behind_the_claims(tmp_path):
    """The table of accuracies: one row per run and fraction of its own
    kind of pruning, mean ± sd over the seeds, `-` where no recalibrated
    sweep was run, runs absent from the folder left out."""
    for seed, dense in ((0, 0.80), (1, 0.82)):
        write_run(tmp_path, "none", seed, {0.0: dense, 0.8: 0.5}, {0.0: dense})
    write_run(
        tmp_path,
        "targeted_weight_0.66_0.75",
        0,
        {0.0: 0.79, 0.5: 0.785, 0.8: 0.78},
        {0.0: 0.79},
    )
    table = paper_claims.figures(str(tmp_path), "targeted_unit_x")
    lines = table.splitlines()
    assert lines[0].split() == [
        "run",
        "pruning",
        "prune",
        "%",
        "as",
        "trained",
        "recalibrated",
    ]
    body = [line.split() for line in lines[2:]]
    # none weight 0/50/80, targeted weight 0/50/80, none unit 0/50/80;
    # no ramping_weight and no unit experiment runs.
    assert [row[:3] for row in body] == [
        ["none", "weight", "0%"],
        ["none", "weight", "50%"],
        ["none", "weight", "80%"],
        ["targeted_weight_0.66_0.75", "weight", "0%"],
        ["targeted_weight_0.66_0.75", "weight", "50%"],
        ["targeted_weight_0.66_0.75", "weight", "80%"],
        ["none", "unit", "0%"],
        ["none", "unit", "50%"],
        ["none", "unit", "80%"],
    ]
    assert body[0][3:] == ["81.00", "±", "1.41", "(2)", "-"]
    assert body[1][3:] == ["-", "-"]  # no seed swept 50%
    assert body[2][3:] == ["50.00", "±", "0.00", "(2)", "-"]
    assert body[4][3:] == ["78.50", "(1", "seed)", "-"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert paper_claims.figures(str(empty), "x") == "no runs"
