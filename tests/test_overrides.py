"""`--set FIELD=VALUE` overrides of a preset: nested fields, values read by the field's type, applied at once, clear errors."""

import re
import subprocess
import sys

import pytest

from cluster.config import preset
from cluster.overrides import apply_overrides


def test_nested_fields_take_literal_values_and_leave_the_rest():
    base = preset("storyworld")
    cfg = apply_overrides(base, ["learner.lr=5e-4", "rollout.group_size=8", "run_name=sweep_a",
                                 "rewards.weights=[('alignment', 0.25), ('identity', 1.0)]"])  # fmt: skip
    assert cfg.learner.lr == 5e-4 and cfg.rollout.group_size == 8 and cfg.run_name == "sweep_a"
    assert cfg.rewards.weights == (("alignment", 0.25), ("identity", 1.0))
    assert cfg.learner.epochs == base.learner.epochs and cfg.steps == base.steps
    assert base.learner.lr != 5e-4  # the preset itself is untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.lrate=1", "LearnerConfig has no field 'lrate'"),
        ("learner=1", "name one of its fields"),
        ("steps.x=1", "steps is a value"),
        ("learner.lr", "expects FIELD=VALUE"),
        ("learner.lr=-1", "LearnerConfig.lr must be a number > 0"),
        ("rewards.weights=[('colour', 1.0)]", "unknown family 'colour'"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(preset("debug"), [override])


def test_the_cli_rejects_a_bad_override_before_starting_ray():
    r = subprocess.run([sys.executable, "-m", "cluster.train", "--preset", "debug", "--set", "learner.epochs=0"], check=False,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "LearnerConfig.epochs must be an integer >= 1" in r.stderr


def test_values_are_read_by_the_field_type_and_applied_at_once():
    base = preset("debug")
    cfg = apply_overrides(base, ["learner.lr=1", "rollout.budget_k=None", "learner.dtype=bf16", "run_name=123", "rewards.normalise_components=true"])
    assert cfg.learner.lr == 1.0 and isinstance(cfg.learner.lr, float) and cfg.rollout.budget_k is None
    assert cfg.learner.dtype == "bf16" and cfg.run_name == "123" and cfg.rewards.normalise_components is True
    model, ckpt = "rewards.alignment.model_name=ViT-B-32", "rewards.alignment.checkpoint=/weights/clip.pt"
    assert apply_overrides(base, [model, ckpt]) == apply_overrides(base, [ckpt, model])  # checked together, set in either order


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.lr=fast", "LearnerConfig.lr takes a number; e.g. --set learner.lr=0.0001"),
        ("steps=2.5", "ServiceConfig.steps takes an integer"),
        ("learner.zero_stage=4", "LearnerConfig.zero_stage takes one of 0, 1, 2, 3"),
        ("rewards.weights=identity", "RewardConfig.weights takes a tuple[tuple[str, float], ...], written as a Python literal"),
        ("learner.lrate=1", "did you mean learner.lr?"),
    ],
)
def test_a_wrong_type_names_the_field_and_an_example(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(preset("debug"), [override])
