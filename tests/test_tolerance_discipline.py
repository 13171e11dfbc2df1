"""Every float comparison in the tests goes through `tests.tolerance`.

Parses each test file and names, as file:line, any comparison made with
numpy's, pytest's, math's, Keras' or unittest's own tolerance functions,
which have no absolute floor and so fail on one machine's kernels and
pass on another's.
"""

import ast
import pathlib

import pytest

TESTS = pathlib.Path(__file__).parent
HELPER = "tests.tolerance"
BANNED = {
    "allclose",
    "isclose",
    "approx",
    "assert_allclose",
    "assert_almost_equal",
    "assert_approx_equal",
    "assert_array_almost_equal",
    "assert_array_almost_equal_nulp",
    "assert_array_max_ulp",
    "assertAllClose",
    "assertNotAllClose",
    "assertAlmostEqual",
    "assertNotAlmostEqual",
}


def violations(source, filename="<test>"):
    """`file:line: name` for each float comparison not made via HELPER."""
    tree = ast.parse(source, filename)
    helper_aliases = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == HELPER:
                    helper_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if module == "tests" and alias.name == "tolerance":
                    helper_aliases.add(alias.asname or alias.name)
                elif alias.name in BANNED and module != HELPER:
                    found.append((node.lineno, f"{module}.{alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in BANNED:
            owner = ast.unparse(node.value)
            if owner not in helper_aliases:
                found.append((node.lineno, f"{owner}.{node.attr}"))
    return [f"{filename}:{line}: {name}" for line, name in sorted(found)]


def test_every_float_comparison_goes_through_the_helper():
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == TESTS / "tolerance.py":
            continue
        name = path.relative_to(TESTS.parent).as_posix()
        found += violations(path.read_text(), name)
    assert not found, "use tests.tolerance instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "np.testing.assert_allclose(a, b)",
        "assert not np.allclose(a, b)",
        "np.isclose(a, b).all()",
        "assert x == pytest.approx(1.0)",
        "self.assertAllClose(a, b)",
        "self.assertAlmostEqual(a, b)",
        "math.isclose(a, b)",
        "ops.isclose(a, b)",
        "check = np.testing.assert_array_almost_equal",
        "from numpy.testing import assert_allclose",
        "from pytest import approx",
    ],
)
def test_flags_each_way_around_the_helper(source):
    (line,) = violations(source, "t.py")
    assert line.startswith("t.py:1: ")


@pytest.mark.parametrize(
    "source",
    [
        "from tests.tolerance import approx\nassert x == approx(1.0)",
        "from tests.tolerance import close\nassert not close(a, b)",
        "from tests import tolerance\ntolerance.assert_close(a, b)",
        "import tests.tolerance\ntests.tolerance.approx(1.0)",
        "np.testing.assert_array_equal(a, b)",
        "'np.allclose(a, b)'",
    ],
)
def test_allows_the_helper_and_exact_comparisons(source):
    assert violations(source) == []
