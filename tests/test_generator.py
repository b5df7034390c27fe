"""The generator, its KV cache and the strategies, on a tiny real model."""

import numpy as np
import pytest
import torch

from inflvg.context import STRATEGIES, make_strategy
from inflvg.context.base import ContextStrategy
from inflvg.generate import generate
from inflvg.generator.backend import StoryWorldGenerator
from inflvg.generator.cache import KVCache
from inflvg.generator.rope import apply_rope, rope_tables, temporal_freqs
from inflvg.generator.weights import load_generator, save_generator
from inflvg.protocol import load_backend
from inflvg.world import sample_prompt_set


def stories(world, n=2, scenes=None):
    return [sample_prompt_set(i, "heldout", scenes or world.n_scenes, world.cast_size, f"h{i}") for i in range(n)]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_generates(tiny, tiny_gen, name):
    model, world, ctx = tiny
    res = generate(tiny_gen, stories(world), make_strategy(name), seed=3)
    total = world.n_scenes * world.frames_per_scene
    assert res.frames.shape == (2, total, 32, 32, 3) and res.frames.dtype == np.uint8
    assert (res.ms_per_frame > 0).all()
    if name == "full":
        assert res.context_tokens[-1] == (total - 1) * model.tokens_per_frame
    else:
        assert res.context_tokens.max() <= 2 * model.tokens_per_frame + ctx.budget_k + model.tokens_per_frame


def test_budgeted_context_is_constant_while_full_grows(tiny, tiny_gen):
    model, world, ctx = tiny
    long = stories(world, n=1, scenes=3 * world.n_scenes)
    far = generate(tiny_gen, long, make_strategy("far"), seed=0)
    full = generate(tiny_gen, long, make_strategy("full"), seed=0)
    settled = far.context_tokens[2 * world.frames_per_scene :]
    assert (settled == settled[0]).all()
    assert settled[0] == model.tokens_per_frame * (1 + ctx.window_frames) + ctx.budget_k
    assert (np.diff(full.context_tokens) == model.tokens_per_frame).all()
    assert far.gathered_bytes[-1] == ctx.budget_k * model.cfg.n_layers * 2 * model.cfg.d_model * 4
    assert far.history_bytes[-1] > 8 * far.gathered_bytes[-1]


def test_same_seed_same_video_and_strategies_share_noise(tiny, tiny_gen):
    _, world, _ = tiny
    s = stories(world)
    a = generate(tiny_gen, s, make_strategy("random"), seed=5)
    b = generate(tiny_gen, s, make_strategy("random"), seed=5)
    assert np.array_equal(a.frames, b.frames)
    w = generate(tiny_gen, s, make_strategy("window"), seed=5)
    sw = generate(tiny_gen, s, make_strategy("sink_window"), seed=5)
    # frames 0 and 1 see the same context under both (no sink yet to differ on frame 0)
    assert np.array_equal(w.frames[:, 0], sw.frames[:, 0])


def test_gather_returns_exactly_the_selected_pool_tokens(tiny):
    model, _, ctx = tiny
    cache = KVCache(model, n_videos=2, total_frames=8, ctx=ctx, full_history=False)
    d, L = model.cfg.d_model, model.cfg.n_layers
    for t in range(6):
        kv_full = torch.randn(L, 2, 2, model.tokens_per_frame, d)
        kv_long = torch.full((L, 2, 2, model.long_tokens_per_frame, d), float(t))
        cache.add(t, kv_full, kv_long, torch.zeros(2, model.long_tokens_per_frame, d))
    # frames 1..3 left the window (sink frame 0 never enters the pool)
    assert cache.pool_frames.unique().tolist() == [1, 2, 3]
    sel = torch.tensor([[0, 40, -1], [17, 5, 33]])
    got = cache.gather(sel)
    assert got.valid.tolist() == [[True, True, False], [True, True, True]]
    assert got.kv[0, 0, 1, :, 0].tolist() == [2.0, 1.0, 3.0]  # frames of tokens 17, 5, 33
    assert got.pos[0, 1, 0].item() == 3.0


def test_unselected_pool_tokens_do_not_change_the_output(tiny, tiny_gen):
    """The frame depends on the selected tokens only: shuffling what else the pool holds changes nothing."""
    _, world, ctx = tiny

    class First(ContextStrategy):
        name = "first"

        def select(self, state):
            return np.tile(np.arange(min(state.budget_k, state.pool_size)), (state.n_videos, 1))

    s = stories(world, n=1)
    a = generate(tiny_gen, s, First(), seed=1)
    b = generate(tiny_gen, s, First(), seed=1)
    assert np.array_equal(a.frames, b.frames)
    assert all((sel[:, : min(ctx.budget_k, 1)] == 0).all() for sel in a.selections[2:])


def test_rope_depends_on_relative_time_and_flex_scales_low_frequencies():
    hd = 32
    q, k = torch.randn(1, 1, 1, hd), torch.randn(1, 1, 1, hd)
    f = temporal_freqs(4, horizon=16, max_distance=16, scaling="flex")
    dot = []
    for shift in (0.0, 37.0):
        pq = torch.tensor([[[5.0 + shift, 1.0, 2.0]]])
        pk = torch.tensor([[[2.0 + shift, 3.0, 0.0]]])
        dot.append((apply_rope(q, *rope_tables(pq, hd, f)) * apply_rope(k, *rope_tables(pk, hd, f))).sum())
    assert torch.allclose(dot[0], dot[1], atol=1e-4)
    assert torch.equal(f, temporal_freqs(4, horizon=16, max_distance=16, scaling="none"))  # nothing changes within the horizon
    long = temporal_freqs(4, horizon=64, max_distance=256, scaling="flex")
    none = temporal_freqs(4, horizon=64, max_distance=256, scaling="none")
    assert long[0] == none[0]  # 10 periods inside the horizon: extrapolated
    assert torch.isclose(long[-1], none[-1] / 4)  # under one period: interpolated by 256/64
    assert none[1] / 4 < long[1] < none[1]  # in between: blended


def test_weights_round_trip_and_missing_file(tiny, tmp_path):
    model, world, ctx = tiny
    path = tmp_path / "g.pt"
    save_generator(model, world, ctx, path, {"steps": 0})
    loaded, w2, c2, meta = load_generator(path)
    assert (w2, c2, meta["steps"]) == (world, ctx, 0)
    s = stories(world, n=1)
    a = generate(StoryWorldGenerator(model, world, ctx), s, make_strategy("far"), seed=2)
    b = generate(StoryWorldGenerator(loaded, w2, c2), s, make_strategy("far"), seed=2)
    assert np.array_equal(a.frames, b.frames)
    with pytest.raises(FileNotFoundError, match=r"generator weights not found at .*nope\.pt"):
        load_generator(tmp_path / "nope.pt")


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match="unknown strategy 'best'; choose one of full, window"):
        make_strategy("best")


def test_shipped_weights_load_and_generate():
    _, _, _, meta = load_generator()
    assert meta["steps"] > 0
    gen = load_backend("storyworld")
    s = [sample_prompt_set(0, "heldout", 2, 4, "h0")]
    res = generate(gen, s, make_strategy("oracle"), seed=0)
    assert res.frames.shape[1] == 2 * gen.spec.frames_per_scene


def test_shared_noise_makes_a_group_differ_only_by_selection(lively, lively_gen):
    _, world, _ = lively
    story = stories(world, n=1)[0]
    res = generate(lively_gen, [story] * 3, make_strategy("far"), seed=4, shared_noise=True)
    assert np.array_equal(res.frames[0], res.frames[1]) and np.array_equal(res.frames[1], res.frames[2])
    apart = generate(lively_gen, [story] * 2, make_strategy("far"), seed=4)
    assert not np.array_equal(apart.frames[0], apart.frames[1])
