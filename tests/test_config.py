import subprocess
import sys

import pytest

from inflvg.config import ContextConfig, GeneratorConfig, WorldConfig


@pytest.mark.parametrize("bad", [0, -3, "16", 2.5, True])
def test_budget_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="ContextConfig.budget_k must be a positive integer"):
        ContextConfig(budget_k=bad)


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        GeneratorConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="rope_scaling must be 'none' or 'flex'"):
        GeneratorConfig(rope_scaling="yarn")
    with pytest.raises(ValueError, match="multiple of 8"):
        WorldConfig(frame_size=30)


def test_import_is_light():
    code = "import time, sys; t = time.time(); import inflvg, inflvg.world, inflvg.config, inflvg.context; " \
           "print(time.time() - t, 'ray' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 1.0
    assert out[1:] == ["False", "False"]
