"""`--set FIELD=VALUE` overrides of a preset: nested fields, literal values, validation, clear errors."""

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
    "override, message",
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
    r = subprocess.run([sys.executable, "-m", "cluster.train", "--preset", "debug", "--set", "learner.epochs=0"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "LearnerConfig.epochs must be an integer >= 1" in r.stderr
