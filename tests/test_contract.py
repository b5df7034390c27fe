"""The contract of the generator protocol and of ground truth, checked on the source itself.

Outside ``inflvg/generator/`` (the StoryWorld backend), ``inflvg/world/`` (StoryWorld) and the
configs of both (``inflvg/config.py``):
- nothing imports the backend's modules: everything speaks ``inflvg.protocol``;
- nothing uses the tiny model's internals (the names in ``INTERNALS``);
- only the oracle, the benchmark and the reward models' training, calibration and throughput
  scripts touch StoryWorld's ``Story`` or its ground truth (the names in ``GROUND_TRUTH``);
  everyone else gets prompt sets (``sample_prompt_set``, ``prompt_set_of`` are fine).
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("inflvg", "rollout_workers", "reward_actors", "learner", "serving", "cluster")
# the backends' own packages, and config.py, which holds the StoryWorld backend's and the world's configs
INSIDE = ("inflvg/generator/", "inflvg/wan/", "inflvg/world/", "inflvg/config.py")
# names only the tiny model has (CLIP's encode_text is the reward model's own, so it is not listed:
# the model itself cannot be reached without importing inflvg.generator, which the first rule forbids)
INTERNALS = {"velocity", "predict_clean", "encode_frames_kv", "full_yx", "long_yx", "frame_size", "pool_kv", "pool_features",
             "t_freqs", "word_emb", "text_proj", "patch_in", "long_in", "denoise_steps"}  # fmt: skip
GROUND_TRUTH_NAMES = {"Story", "Scene", "Video", "render_story", "sample_story", "ground_truth", "parse_row", "subject_history"}
GROUND_TRUTH_ATTRS = {"first_appearance", "character", "cast", "letters"}  # a Story's and a Scene's fields
MAY_READ_GROUND_TRUTH = {
    "inflvg/context/baselines.py",  # the oracle
    "inflvg/bench/__main__.py", "inflvg/bench/run.py", "inflvg/bench/quality.py", "inflvg/bench/parallel.py",
    "reward_actors/calibrate.py", "reward_actors/train_identity.py", "reward_actors/identity_data.py",
    "reward_actors/train_clip.py", "reward_actors/fit_artifacts.py", "reward_actors/bench.py",
}  # fmt: skip


def sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    return [p for p in files if not str(p.relative_to(REPO)).startswith(INSIDE)]


def imported(tree: ast.AST, path: Path) -> set[str]:
    """Absolute module names this file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(x for x in (base, node.module) if x)
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
    return out


def attributes(tree: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def from_world(tree: ast.AST, path: Path) -> set[str]:
    """Names imported from StoryWorld's package (``inflvg.world`` and its modules)."""
    return {m.rsplit(".", 1)[1] for m in imported(tree, path) if m.startswith("inflvg.world.")}


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_protocol_and_only_allowed_readers_of_ground_truth(path):
    rel = str(path.relative_to(REPO))
    tree = ast.parse(path.read_text())
    backend = sorted(m for m in imported(tree, path) if m.startswith("inflvg.generator"))
    assert not backend, f"{rel} imports the StoryWorld backend's modules {backend}; use inflvg.protocol"
    internals = sorted(attributes(tree) & INTERNALS)
    assert not internals, f"{rel} uses generator internals {internals}; use the protocol (GeneratorSpec, Pool, ...)"
    if rel not in MAY_READ_GROUND_TRUTH:
        truth = sorted((from_world(tree, path) & GROUND_TRUTH_NAMES) | (attributes(tree) & GROUND_TRUTH_ATTRS))
        assert not truth, f"{rel} touches StoryWorld's ground truth {truth}; take prompt sets (inflvg.prompts) instead"


def test_the_contract_test_would_catch_a_violation():
    """The checks above are not vacuous: a file that breaks each rule is caught."""
    bad = ast.parse("from inflvg.generator.model import Generator\nfrom inflvg.world.story import Story\n"
                    "x = model.velocity(a)\ny = story.scenes[0].character\n")  # fmt: skip
    fake = REPO / "serving" / "fake.py"
    assert "inflvg.generator.model" in imported(bad, fake) and "Story" in from_world(bad, fake)
    assert {"velocity", "character"} <= attributes(bad)
    assert len(sources()) > 40
