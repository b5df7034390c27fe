"""One command-line convention (inflvg.cli): the typed config tree is the CLI of cluster.train, presets
by --preset, typed --set, clean errors, the resolved config written; the other entry points by the same rules."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest

from cluster import train as cluster_train
from cluster.config import ServiceConfig, preset, to_json
from inflvg import cli

REPO = Path(__file__).resolve().parent.parent


def flat(text: str) -> str:
    """Help or error text without its box drawing and line breaks, whitespace collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def config_tree(cls: type, prefix: str = ""):
    """(dotted name, docstring, is a nested config) of every field of a dataclass tree, walked from its types."""
    hints, docs = typing.get_type_hints(cls), cli.field_docs(cls)
    for f in dataclasses.fields(cls):
        nested = dataclasses.is_dataclass(hints[f.name])
        yield f"{prefix}{f.name}", docs.get(f.name), nested
        if nested:
            yield from config_tree(hints[f.name], f"{prefix}{f.name}.")


@pytest.fixture(scope="module")
def train_help() -> str:
    r = subprocess.run([sys.executable, "-m", "cluster.train", "--help"], check=False, capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "COLUMNS": "100"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_config_field_is_documented():
    missing = [name for name, doc, _ in config_tree(ServiceConfig) if not doc]
    assert not missing, f"fields without a docstring (the docstring is the flag's --help): {missing}"


def test_help_lists_every_field_by_its_dotted_name_with_its_docstring(train_help):
    tree = list(config_tree(ServiceConfig))
    flags = [name for name, _, nested in tree if not nested]
    assert {"learner.max_grad_norm", "rollout.group_size", "rewards.alignment.checkpoint", "learner.policy.temperature"} <= set(flags)
    assert len(flags) > 60
    text = flat(train_help)
    for name, doc, nested in tree:
        if not nested:
            assert re.search(rf"--{re.escape(name)}[\s,]", train_help), f"--{name} is not in --help"
        assert flat(doc) in text, f"the docstring of {name} is not in --help"
    for flag in ("--preset", "--steps", "--seed", "--resume", "--faults", "--set", "--prompts", "--generator", "--run_name", "--output_root"):
        assert re.search(rf"{flag}[\s,]", train_help), flag


def test_a_preset_is_the_default_that_flags_override_in_any_order():
    for argv in (["--preset", "debug", "--steps", "5"], ["--steps", "5", "--preset", "debug"], ["--steps=5", "--preset=debug"]):
        cfg, resume, faults, _ = cluster_train.parse_args(argv)
        assert cfg == dataclasses.replace(preset("debug"), steps=5) and resume == "auto" and faults == ()
    cfg, *_ = cluster_train.parse_args([])
    assert cfg == preset("storyworld")


def test_the_old_flag_spellings_still_work(tmp_path):
    argv = ["--preset", "debug", "--run-name", "mine", "--output-root", str(tmp_path), "--seed", "3", "--resume", "none",
            "--faults", "rollout@1", "--generator", "wan-tiny", "--learner.max-grad-norm", "0.5"]  # fmt: skip
    cfg, resume, faults, _ = cluster_train.parse_args(argv)
    assert (cfg.run_name, cfg.output_root, cfg.seed, cfg.learner.max_grad_norm, resume) == ("mine", str(tmp_path), 3, 0.5, "none")
    assert cfg.rollout.generator == "wan-tiny" and cfg == cluster_train.with_generator(dataclasses.replace(cfg, rollout=dataclasses.replace(
        cfg.rollout, generator="storyworld")), "wan-tiny")  # fmt: skip
    assert [f.role for f in faults] == ["rollout"]


def test_set_is_typed_applied_at_once_and_wins_over_flags():
    model = "rewards.alignment.model_name=ViT-B-32"
    ckpt = "rewards.alignment.checkpoint=/weights/clip.pt"
    one, *_ = cluster_train.parse_args(["--preset", "debug", "--set", model, "--set", ckpt])
    other, *_ = cluster_train.parse_args(["--preset", "debug", "--set", ckpt, "--set", model])
    assert one == other and one.rewards.alignment.model_name == "ViT-B-32" and one.rewards.alignment.checkpoint == "/weights/clip.pt"
    cfg, *_ = cluster_train.parse_args(["--preset", "debug", "--set", "learner.lr=1", "--learner.lr", "0.5", "--set", "rollout.budget_k=None",
                                          "--set", "rewards.weights=(('identity', 1),)", "--set", "learner.dtype=bf16"])  # fmt: skip
    assert cfg.learner.lr == 1.0 and isinstance(cfg.learner.lr, float) and cfg.rollout.budget_k is None
    assert cfg.rewards.weights == (("identity", 1.0),) and cfg.learner.dtype == "bf16"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--learner.lr", "abc"], "--learner.lr expects FLOAT"),
        (["--steps", "2.5"], "--steps expects INT"),
        (["--learner.zero_stage", "7"], "--learner.zero_stage expects one of 0, 1, 2, 3, got '7'"),
        (["--learner.epochs", "0"], "--learner.epochs: LearnerConfig.epochs must be an integer >= 1, got 0"),
        (["--steps", "0"], "--steps: ServiceConfig.steps must be a positive integer, got 0"),
        (["--set", "learner.lr=abc"], "--set learner.lr=abc: LearnerConfig.lr takes a number; e.g. --set learner.lr=0.0001"),
        (["--set", "steps=2.5"], "ServiceConfig.steps takes an integer"),
        (["--set", "rollout.budget_k=many"], "RolloutConfig.budget_k takes an integer or None"),
        (["--set", "learner.dtype=fp16x"], "LearnerConfig.dtype takes one of 'fp32', 'bf16'"),
        (["--set", "learner.lrate=1"], "LearnerConfig has no field 'lrate'; did you mean learner.lr?"),
        (["--set", "rewards.alignment.model_name=ViT-B-32"], "AlignmentConfig.checkpoint is required with model_name"),
        (["--preset", "laptop"], "unknown preset 'laptop'; choose one of debug, storyworld, gpu"),
    ],
)
def test_a_bad_value_is_a_one_line_error_naming_the_field(argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        cluster_train.parse_args(["--preset", "debug", *argv] if argv[0] != "--preset" else argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m cluster.train: error: ") and expected in err and "Traceback" not in err


def test_the_errors_are_clean_in_a_real_process():
    for argv in (["--learner.max_grad_norm", "x"], ["--set", "rollout.group_size=eight"]):
        r = subprocess.run([sys.executable, "-m", "cluster.train", "--preset", "debug", *argv], check=False, capture_output=True, text=True,
                           timeout=120, cwd=REPO)  # fmt: skip
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert ("--learner.max_grad_norm expects FLOAT" if argv[0] != "--set" else "RolloutConfig.group_size takes an integer") in r.stderr


def test_run_writes_the_resolved_config_first(tmp_path, monkeypatch):
    class Stop(Exception):
        pass

    def no_roles(cfg):
        raise Stop

    monkeypatch.setattr(cluster_train, "start_roles", no_roles)
    cfg, *_ = cluster_train.parse_args(["--preset", "debug", "--output-root", str(tmp_path), "--run-name", "r", "--set", "learner.lr=3e-3"])
    with pytest.raises(Stop):
        cluster_train.run(cfg, "none")
    written = (tmp_path / "r" / "config.json").read_text()
    assert written == to_json(cfg)
    data = json.loads(written)
    assert data["learner"]["lr"] == 3e-3 and data["run_name"] == "r" and data["rewards"]["weights"][0] == ["alignment", 0.25]


def test_resuming_with_another_config_is_refused_with_the_differences(tmp_path, capsys):
    from inflvg.storage import Storage

    store = Storage(tmp_path)
    cfg, *_ = cluster_train.parse_args(["--preset", "debug"])
    stored = json.loads(to_json(cfg))
    stored["learner"]["lr"], stored["steps"] = 0.5, 7
    del stored["storage"]  # a field an older version did not have: not a change
    store.write_bytes(json.dumps(stored).encode(), "config.json")
    with pytest.raises(ValueError, match=r"learner.lr: 0.5 -> 0.0001; steps: 7 -> 3\. Use the same flags.*--allow-config-change"):
        cluster_train.check_same_config(cfg, store, allow_change=False)
    cluster_train.check_same_config(cfg, store, allow_change=True)
    assert "resuming with a changed config" in capsys.readouterr().out


def test_a_run_that_raises_ends_failed_in_one_mlflow_store(tmp_path, monkeypatch):
    """The store is <output_root>/mlflow.db, shared by every run; the experiment opens on training charts."""
    import sqlite3
    from types import SimpleNamespace

    class Boom(Exception):
        pass

    def boom(*args, **kwargs):
        raise Boom

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set by mlflow.set_tracking_uri in earlier tests
    handles = SimpleNamespace(handles=[None])  # the roles are not under test: the run never reaches them
    monkeypatch.setattr(cluster_train, "start_roles", lambda cfg: SimpleNamespace(rewards={"identity": handles}, rollouts=handles, learner=None))
    monkeypatch.setattr(cluster_train, "train_loop", boom)
    cfg, *_ = cluster_train.parse_args(["--preset", "debug", "--output-root", str(tmp_path), "--run-name", "r"])
    with pytest.raises(Boom):
        cluster_train.run(cfg, "none")
    db = sqlite3.connect(tmp_path / "mlflow.db")
    assert db.execute("select name, status from runs").fetchall() == [("r", "FAILED")]
    assert ("mlflow.experimentKind", "custom_model_development") in db.execute("select key, value from experiment_tags").fetchall()


# ------------------------------------------------------------------ the convention itself, on a toy config


@dataclass(frozen=True)
class Inner:
    width: int = 4
    """Width of the thing."""

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"Inner.width must be >= 1, got {self.width}; use 1 or more")


@dataclass(frozen=True)
class Toy:
    """A toy entry point."""

    name: str = "a"
    """Its name."""
    sizes: Annotated[tuple[int, ...], cli.comma(int, "1,2")] = (1, 2)
    """Sizes, comma-separated."""
    inner: Inner = dataclasses.field(default_factory=Inner)
    """The nested part."""


PRESETS = {"small": lambda: Toy(name="small", inner=Inner(width=1)), "big": lambda: Toy(name="big", inner=Inner(width=64))}


def test_presets_flags_and_help(capsys):
    assert cli.parse(Toy, [], prog="toy") == Toy()
    assert cli.parse(Toy, ["--sizes", "3,1", "--inner.width", "2"], prog="toy") == Toy(sizes=(3, 1), inner=Inner(width=2))
    assert cli.parse(Toy, ["--inner.width", "8", "--preset", "big"], prog="toy", presets=PRESETS) == Toy(name="big", inner=Inner(width=8))
    assert cli.parse(Toy, [], prog="toy", presets=PRESETS, preset="small") == PRESETS["small"]()
    with pytest.raises(SystemExit) as e:
        cli.parse(Toy, ["--preset", "big", "--help"], prog="toy", presets=PRESETS, preset_help="Which toy.")
    assert e.value.code == 0
    out = flat(capsys.readouterr().out)
    assert "--preset {None,small,big}" in out and "Which toy." in out and "Sizes, comma-separated. (default: 1,2)" in out
    assert "--inner.width INT Width of the thing. (default: 64)" in out  # the preset's value is the default shown


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sizes", "1,x"], "toy: error: --sizes expects INT,...: expected comma-separated int values (e.g. 1,2), got '1,x'"),
        (["--inner.width", "0"], "toy: error: --inner.width: Inner.width must be >= 1, got 0; use 1 or more"),
        (["--preset", "huge"], "toy: error: unknown preset 'huge'; choose one of small, big"),
    ],
)
def test_toy_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(Toy, argv, prog="toy", presets=PRESETS)
    assert e.value.code == 2 and capsys.readouterr().err.strip() == expected


# ------------------------------------------------------------------ the other entry points


def test_the_generator_recipe_is_the_makefile_s_seven_stages():
    """The stages `make generator` ran as literal flags (threads 1, 120 minutes, seed SEED + offset)."""
    from inflvg.generator.contexts import Mixture
    from inflvg.generator.train import RECIPE, TrainArgs, TrainConfig

    recall = {"warmup_steps": 30, "decay_steps": 400, "mixture": Mixture((0.7, 0.15, 0.15), (0.85, 0.05, 0.05, 0.05))}
    expected = {
        "text": ({"lr": 1.5e-3, "text_steps": 800, "max_steps": 800, "decay_steps": 3000}, 0, None, "runs/generator/text.pt"),
        "scenes": ({"lr": 1.5e-3, "max_steps": 2400, "decay_steps": 2200, "mixture": Mixture((0.5, 0.2, 0.3), (0.65, 0.15, 0.1, 0.1))}, 0,
                   "runs/generator/text.pt", "runs/generator/scenes.pt"),
        "recall": ({"lr": 1e-3, "max_steps": 2800, **recall}, 1, "runs/generator/scenes.pt", "runs/generator/recall.pt"),
        "recall2": ({"lr": 5e-4, "max_steps": 3200, **recall}, 2, "runs/generator/recall.pt", "runs/generator/recall2.pt"),
        "recall3": ({"lr": 5e-4, "max_steps": 3600, **recall}, 3, "runs/generator/recall2.pt", "runs/generator/recall3.pt"),
        "long": ({"lr": 5e-4, "max_steps": 4000, "long_scenes": 16, **recall}, 4, "runs/generator/recall3.pt", "runs/generator/long.pt"),
        "long2": ({"lr": 5e-4, "max_steps": 4400, "long_scenes": 16, **recall}, 5, "runs/generator/long.pt", "inflvg/weights/generator.pt"),
    }  # fmt: skip
    assert list(RECIPE) == list(expected)
    for name, (changes, offset, init, out) in expected.items():
        args = cli.parse(TrainArgs, ["--preset", name, "--seed", "5"], prog="gen", presets={n: (lambda a=a: a) for n, a in RECIPE.items()})
        assert args.train_config() == TrainConfig(minutes=120.0, threads=1, seed=5 + offset, **changes), name
        assert (args.init, args.out) == (init, out)
    makefile = (REPO / "Makefile").read_text()
    assert all(f"--preset {name}" in makefile for name in RECIPE)


def test_the_generator_cli_keeps_its_flags(monkeypatch, capsys):
    import inflvg.generator.train as gen_train

    seen = {}
    monkeypatch.setattr(gen_train, "train", lambda w, c, g, tc, out, init=None: seen.update(tc=tc, out=out, init=init) or
                        {"steps": 0, "seconds": 0, "final_loss": 0.0})  # fmt: skip
    gen_train.main(["--minutes", "1", "--max-steps", "9", "--seed", "2", "--threads", "1", "--decay-steps", "3", "--lr", "1e-3",
                    "--warmup-steps", "4", "--text-steps", "5", "--target-shares", "0.4,0.2,0.4", "--long-shares", "0.25,0.25,0.25,0.25",
                    "--context-noise", "0.2", "--long-scenes", "16", "--init", "a.pt", "--out", "b.pt"])  # fmt: skip
    tc = seen["tc"]
    assert (tc.minutes, tc.max_steps, tc.seed, tc.threads, tc.decay_steps, tc.lr, tc.warmup_steps, tc.text_steps, tc.context_noise,
            tc.long_scenes) == (1.0, 9, 2, 1, 3, 1e-3, 4, 5, 0.2, 16)  # fmt: skip
    assert tc.mixture.targets == (0.4, 0.2, 0.4) and tc.mixture.long == (0.25, 0.25, 0.25, 0.25) and (seen["init"], seen["out"]) == ("a.pt", "b.pt")
    with pytest.raises(SystemExit):
        gen_train.main(["--target-shares", "0.5,0.5,0.5"])
    assert "Mixture.targets must be 3 non-negative shares summing to 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "cls", "argv", "fields"),
    [
        ("inflvg.bench.__main__", "BenchArgs", ["--split", "heldout", "--seed", "1", "--videos", "3", "--lengths", "2,1,2", "--strategies",
         "full,window,oracle", "--timing-videos", "1", "--budget-k", "8", "--workers", "1", "--threads", "1", "--out", "x.json"],
         {"videos": 3, "length_list": [1, 2], "strategy_list": ["full", "window", "oracle"], "budget_k": 8}),
        ("inflvg.bench.scale", "ScaleArgs", ["--generator", "wan-tiny", "--lengths", "1,2", "--strategies", "full,window", "--repeats", "1"],
         {"lengths": (1, 2), "strategies": ("full", "window"), "repeats": 1}),
        ("inflvg.world.readers_check", "CheckArgs", ["--videos", "64", "--seed", "0", "--artifact-stride", "8", "--strict", "--out", "r.json"],
         {"videos": 64, "artifact_stride": 8, "strict": True, "out": Path("r.json")}),
        ("reward_actors.bench", "BenchArgs", ["--scenes", "32", "--repeats", "2", "--families", "identity,artifacts"],
         {"scenes": 32, "families": ("identity", "artifacts")}),
        ("reward_actors.calibrate", "CalibrateArgs", ["--split", "heldout", "--seed", "0", "--prompt-sets", "32", "--out", "c.json"],
         {"prompt_sets": 32}),
        ("reward_actors.fit_artifacts", "FitArgs", ["--videos", "10", "--out", "a.json"], {"videos": 10}),
        ("reward_actors.train_clip", "ClipArgs", ["--minutes", "8", "--eval-only", "--out", "c.pt"], {"eval_only": True, "minutes": 8.0}),
        ("reward_actors.train_identity", "IdentityArgs", ["--steps", "1500", "--threads", "2", "--attr-weight", "0", "--generated-videos", "0"],
         {"steps": 1500, "threads": 2, "attr_weight": 0.0, "generated_videos": 0}),
        ("serving.bench", "BenchArgs", ["--clients", "4", "--compare-duration", "2", "--frames-per-scene", "2", "--batch-wait-timeout-s", "0.1"],
         {"clients": 4, "compare_duration": 2.0, "frames_per_scene": 2, "batch_wait_timeout_s": 0.1}),
    ],
)  # fmt: skip
def test_entry_points_parse_their_documented_flags(module, cls, argv, fields):
    import importlib

    kind = getattr(importlib.import_module(module), cls)
    args = cli.parse(kind, argv, prog=module)
    assert {k: getattr(args, k) for k in fields} == fields
    missing = [f.name for f in dataclasses.fields(kind) if not cli.field_docs(kind).get(f.name)]
    assert not missing, f"{module}.{cls}: fields without a docstring: {missing}"
