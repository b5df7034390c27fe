import pytest
import torch

from inflvg.config import ContextConfig, GeneratorConfig, WorldConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Intra-op threads fight over busy cores (10-60x slower with 2 threads on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray on loopback for one test module."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


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


@pytest.fixture(scope="session")
def lively(tiny):
    """The tiny generator with its zero-initialised gates and output made random: a fresh one
    ignores noise and context (zero gates), so neither could change its frames."""
    import copy

    model, world, ctx = tiny
    gen = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lin in [b.ada for b in gen.blocks] + [gen.ada_out, gen.out]:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.2)
    return gen, world, ctx


@pytest.fixture(scope="session")
def tiny_gen(tiny):
    """The tiny generator behind the generator protocol (``inflvg.protocol.Generator``)."""
    from inflvg.generator.backend import StoryWorldGenerator

    return StoryWorldGenerator(*tiny)


@pytest.fixture(scope="session")
def lively_gen(lively):
    """``lively`` behind the generator protocol."""
    from inflvg.generator.backend import StoryWorldGenerator

    return StoryWorldGenerator(*lively)
