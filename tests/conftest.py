import pytest
import torch

from inflvg.config import ContextConfig, GeneratorConfig, WorldConfig


@pytest.fixture(scope="session")
def tiny():
    """A tiny real generator (random weights): hidden 32, 2 layers."""
    from inflvg.generator.model import Generator

    torch.manual_seed(0)
    torch.set_num_threads(1)
    world = WorldConfig(n_scenes=4, cast_size=3)
    gen = GeneratorConfig(d_model=32, n_heads=2, n_layers=2, d_text=32, text_layers=1, denoise_steps=2, horizon_frames=16)
    model = Generator(gen, world.frame_size).eval()
    return model, world, ContextConfig(budget_k=8, window_frames=2)
