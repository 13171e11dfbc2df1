"""Optional dependencies: lazy, named by their extra; the library never
imports the paper's application, and the application uses only the library's
public names."""

import ast
import importlib
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from keras_tdrop.optional_imports import require

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_tdrop"
OPTIONAL = {
    "tensorflow_datasets": "data",
    "matplotlib": "plots",
    "tensorflow_model_optimization": "tfmot",
    "tf_keras": "tfmot",
    "ai_edge_litert": "litert",
    "tensorboard": "tensorboard",
}
APPLICATION = "keras_tdrop.experiments"

BLOCKED_RUN = r"""
import importlib
import importlib.util
import importlib.abc
import pkgutil
import sys

BLOCKED = {blocked!r}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {{name!r}} (blocked)")
        return None


sys.meta_path.insert(0, Blocker())
import keras_tdrop

for name in {library!r}:
    importlib.import_module("keras_tdrop." + name)
modules = [
    m.name
    for m in pkgutil.walk_packages(keras_tdrop.__path__, "keras_tdrop.")
]
for name in modules:
    importlib.import_module(name)
print("imported", len(modules), "modules")
assert not BLOCKED & {{m.split(".")[0] for m in sys.modules}}

from keras_tdrop.experiments import datasets

try:
    datasets.load("mnist", "test", data_dir=".", limit=8)
except ImportError as error:
    print("datasets.load:", error)
try:
    rows = [{{"fraction": 0.0, "accuracy": 0.5}}]
    keras_tdrop.pruning.plot_sweeps({{"a": rows}}, "sweep.png")
except ImportError as error:
    print("plot_sweeps:", error)
"""


@pytest.fixture(scope="module")
def blocked_run(tmp_path_factory):
    """Runs BLOCKED_RUN with the optional dependencies blocked."""
    library = [
        "layers",
        "callbacks",
        "pruning",
        "export",
        "baselines",
        "channels",
        "wrapping",
        "schedules",
        "truncation",
    ]
    script = BLOCKED_RUN.format(blocked=set(OPTIONAL), library=library)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("blocked"),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_module_imports_without_optional_dependencies(blocked_run):
    count = int(re.search(r"imported (\d+) modules", blocked_run).group(1))
    assert count > 50


@pytest.mark.parametrize(
    "call, extra",
    [("datasets.load", "data"), ("plot_sweeps", "plots")],
)
def test_missing_dependency_names_its_extra(blocked_run, call, extra):
    line = re.search(f"^{call}: (.*)$", blocked_run, re.M)
    assert line, blocked_run
    assert f'pip install "keras-tdrop[{extra}]"' in line.group(1)


def test_require_returns_the_module():
    assert require("json.decoder", "plots").__name__ == "json.decoder"


def test_require_names_the_extra_and_keeps_the_cause():
    with pytest.raises(
        ImportError,
        match=r"plot_x needs `no_such_module_x`.*"
        r'pip install "keras-tdrop\[plots\]"',
    ) as info:
        require("no_such_module_x", "plots", "plot_x")
    assert info.value.name == "no_such_module_x"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path, ast.parse(path.read_text())


def _imports(name, path, tree):
    """(node, absolute dotted names) of every import in `tree`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield node, [base] + [f"{base}.{a.name}" for a in node.names]


def _is_application(dotted):
    return dotted == APPLICATION or dotted.startswith(APPLICATION + ".")


def test_library_never_imports_the_application():
    found = []
    for name, path, tree in _modules():
        if _is_application(name):
            continue
        for node, targets in _imports(name, path, tree):
            found += [
                f"{name}:{node.lineno} imports {t}"
                for t in targets
                if _is_application(t)
            ]
    assert not found, found


def _is_library(dotted):
    parts = dotted.split(".")
    return parts[0] == "keras_tdrop" and not _is_application(dotted)


def _is_private(name):
    return name.startswith("_") and not (
        name.startswith("__") and name.endswith("__")
    )


def _library_names(tree):
    """(line, module, name) of every library name that `tree` imports:
    `from keras_tdrop.x import name` and the registry's lazy
    `_lazy("keras_tdrop.x", "name")`; name is None for `import keras_tdrop.x`.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level:
            if _is_library(node.module):
                for alias in node.names:
                    yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_library(alias.name):
                    yield node.lineno, alias.name, None
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "_lazy"
            and len(node.args) == 2
            and all(isinstance(a, ast.Constant) for a in node.args)
            and _is_library(node.args[0].value)
        ):
            yield node.lineno, node.args[0].value, node.args[1].value


def test_application_uses_only_public_library_names():
    """No private module or name, and a name listed in its module's
    `__all__` where the module has one."""
    found, checked = [], 0
    for name, path, tree in _modules():
        if not _is_application(name):
            continue
        for line, module, imported in _library_names(tree):
            checked += 1
            where = f"{name}:{line} imports {module}"
            if any(_is_private(part) for part in module.split(".")):
                found.append(f"{where} (a private module)")
                continue
            if imported is None:
                continue
            where += f".{imported}"
            if _is_private(imported):
                found.append(f"{where} (a private name)")
                continue
            public = getattr(importlib.import_module(module), "__all__", None)
            submodule = f"{module}.{imported}"
            if (
                public is not None
                and imported not in public
                and importlib.util.find_spec(submodule) is None
            ):
                found.append(f"{where} (not in {module}.__all__)")
    assert checked > 50
    assert not found, found


@pytest.mark.parametrize(
    "name,path",
    [(name, path) for name, path, _ in _modules()],
    ids=[name for name, _, _ in _modules()],
)
def test_every_module_has_all(name, path):
    """Every module, library and application, lists its public names in an
    `__all__` assigned at its top level, and each of them exists."""
    assigned = {
        target.id
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "__all__" in assigned
    module = importlib.import_module(name)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []
    assert len(set(module.__all__)) == len(module.__all__)


def test_optional_imports_are_lazy_and_go_through_require():
    """Each import of an optional module sits in a function that first
    calls `require` on it with the module's extra."""
    found = []
    for name, path, tree in _modules():
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node, targets in _imports(name, path, tree):
            top = {t.split(".")[0] for t in targets} & set(OPTIONAL)
            if not top:
                continue
            function = parents.get(node)
            while function and not isinstance(
                function, (ast.FunctionDef, ast.AsyncFunctionDef)
            ):
                function = parents.get(function)
            required = {
                (call.args[0].value, call.args[1].value)
                for call in ast.walk(function or ast.Module(body=[]))
                if isinstance(call, ast.Call)
                and getattr(call.func, "id", None) == "require"
                and len(call.args) >= 2
                and all(isinstance(a, ast.Constant) for a in call.args[:2])
            }
            for module in top:
                if (module, OPTIONAL[module]) not in required:
                    found.append(f"{name}:{node.lineno} imports {module}")
    assert not found, found


def test_every_required_extra_is_declared():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert set(OPTIONAL.values()) <= set(extras)
    for name, path, tree in _modules():
        for call in ast.walk(tree):
            if (
                isinstance(call, ast.Call)
                and getattr(call.func, "id", None) == "require"
                and len(call.args) >= 2
            ):
                assert call.args[1].value in extras, (name, call.lineno)
