"""The arrows of the design hold, dynamic imports included: the core imports no role, no wiring
and not Ray; a role imports the core and itself, never another role or the wiring, whether by an
import statement, ``importlib`` or an import-path string (``"pkg.module:Name"``). Only ``cluster``
(the wiring) brings roles together."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROLES = ("rollout_workers", "reward_actors", "learner", "serving")
WIRING = "cluster"
CORE = "inflvg"
# ``python -m serving`` is an entry point, not part of the role: it hands over to the assembled
# application in the wiring layer (cluster.serve), which is what may bind roles together.
ENTRY_POINTS = {Path("serving/__main__.py"): {WIRING}}
MODULE_STRING = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$")


def top_packages(tree: ast.AST) -> set[str]:
    """Top-level packages a module imports: statements, and any string that reads as a module path
    (``importlib.import_module("x.y")``, ``"x.y:Name"``) naming a first-party package."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            head = node.value.split(":")[0].split(".")[0]
            if head in (*ROLES, WIRING, CORE) and ("." in node.value or ":" in node.value):
                found.add(head)
    return found


def violations(package: str, path: Path, tree: ast.AST) -> set[str]:
    first_party = top_packages(tree) & {*ROLES, WIRING, CORE, "ray"}
    if package == CORE:
        return first_party - {CORE}
    allowed = {CORE, package} | ENTRY_POINTS.get(path.relative_to(REPO), set())
    return first_party - allowed - {"ray"}


@pytest.mark.parametrize("package", [CORE, *ROLES])
def test_no_arrow_points_the_wrong_way(package):
    bad = {}
    for path in sorted((REPO / package).rglob("*.py")):
        wrong = violations(package, path, ast.parse(path.read_text()))
        if wrong:
            bad[str(path.relative_to(REPO))] = sorted(wrong)
    assert not bad, f"imports against the arrows: {bad}"


def test_the_arrow_test_would_catch_each_kind_of_violation():
    path = REPO / "serving" / "generator.py"
    for code, culprit in [("import learner.actor", "learner"), ("from reward_actors.videos import VideoScorer", "reward_actors"),
                          ("x = importlib.import_module('cluster.refine')", "cluster"),
                          ("REFINER = 'cluster.refine:Refiner'", "cluster")]:  # fmt: skip
        assert violations("serving", path, ast.parse(code)) == {culprit}
    assert violations(CORE, REPO / "inflvg" / "refine.py", ast.parse("import ray")) == {"ray"}
    assert violations("serving", path, ast.parse("from inflvg.refine import Refiner\nimport ray\nNOTE = 'see serving.app'")) == set()
