import re
import subprocess
import sys

import pytest

from inflvg.config import ContextConfig, GeneratorConfig, WorldConfig


@pytest.mark.parametrize("bad", [0, -3, "16", 2.5, True])
def test_budget_must_be_positive_int(bad):
    with pytest.raises(ValueError, match=re.escape("ContextConfig.budget_k must be a positive integer")):
        ContextConfig(budget_k=bad)


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        GeneratorConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="rope_scaling must be 'none' or 'flex'"):
        GeneratorConfig(rope_scaling="yarn")
    with pytest.raises(ValueError, match="multiple of 8"):
        WorldConfig(frame_size=30)


def test_import_is_light():
    code = (
        "import time, sys; t = time.time(); import inflvg, inflvg.world, inflvg.config, inflvg.context; "
        "print(time.time() - t, 'ray' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 1.0
    assert out[1:] == ["False", "False"]


def test_one_validator_names_the_field_the_value_and_the_fix():
    from dataclasses import dataclass

    from inflvg.validate import at_least, boolean, number, one_of, positive_int

    @dataclass
    class Demo:
        n: object = 1
        x: object = 0.5
        mode: object = "a"

    with pytest.raises(ValueError, match=r"^Demo.n must be a positive integer, got True; set it to an int >= 1$"):
        positive_int(Demo(n=True), "n")
    with pytest.raises(ValueError, match=r"^Demo.n must be an integer >= 0, got -1; use 0 for none$"):
        at_least(Demo(n=-1), "n", 0, "use 0 for none")
    for bad in (float("nan"), 0, True, "1"):
        with pytest.raises(ValueError, match=r"^Demo.x must be a number > 0, got"):
            number(Demo(x=bad), "x", 0, strict=True)
    number(Demo(x=0), "x")  # >= 0 by default
    with pytest.raises(ValueError, match=r"^Demo.mode must be 'a', 'b' or 'c', got 'd'$"):
        one_of(Demo(mode="d"), "mode", ("a", "b", "c"))
    with pytest.raises(ValueError, match=r"^Demo.n must be 0 or 1, got True$"):  # True is not the choice 1
        one_of(Demo(n=True), "n", (0, 1))
    with pytest.raises(ValueError, match=r"^Demo.n must be True or False, got 'no'$"):
        boolean(Demo(n="no"), "n")


@pytest.mark.parametrize(
    ("change", "message"),
    [({"keep_checkpoints": -1}, "ServiceConfig.keep_checkpoints must be an integer >= 0"),
     ({"rollout_parquet": "yes"}, "ServiceConfig.rollout_parquet must be True or False"),
     ({"steps": 0}, "ServiceConfig.steps must be a positive integer"),
     ({"topology": "colocated"}, "ServiceConfig.topology must be 'separate' or 'hybrid'"),
     ({"topology": "hybrid", "zero_stage": 3}, "topology='hybrid' needs learner.zero_stage <= 2"),
     ({"topology": "hybrid", "rollout_parquet": True}, "ServiceConfig.rollout_parquet needs topology='separate'")],
)  # fmt: skip
def test_service_config_checks_its_fields(change, message):
    from dataclasses import replace

    from cluster.config import ServiceConfig
    from learner.config import LearnerConfig

    if "zero_stage" in change:
        change = {"topology": change["topology"], "learner": replace(LearnerConfig(), zero_stage=change["zero_stage"])}
    with pytest.raises(ValueError, match=message):
        ServiceConfig(**change)


def test_init_policy_must_exist_and_match_the_learners_policy(tmp_path):
    from dataclasses import replace

    import torch

    from cluster.config import ServiceConfig
    from cluster.roles import initial_weights
    from inflvg.policy import PolicyConfig, SelectionPolicy, save_policy

    with pytest.raises(ValueError, match="init_policy must be the path of an existing policy file"):
        ServiceConfig(init_policy=str(tmp_path / "missing.pt"))
    save_policy(SelectionPolicy(PolicyConfig(d_model=32)), tmp_path / "policy.pt")
    cfg = ServiceConfig(init_policy=str(tmp_path / "policy.pt"), learner=replace(ServiceConfig().learner, policy=PolicyConfig(d_model=32)))
    weights = initial_weights(cfg)
    assert weights is not None and all(torch.equal(v, torch.load(tmp_path / "policy.pt")["state_dict"][k]) for k, v in weights.items())
    with pytest.raises(ValueError, match="holds a policy with config"):
        initial_weights(replace(cfg, learner=ServiceConfig().learner))
    assert initial_weights(ServiceConfig()) is None
