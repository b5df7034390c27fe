"""Generator training on tiny models: steps move parameters, contexts keep the layout, the recipe's
parts (mixtures, oracle order, context noise, learning rate, continuing) behave as configured."""

import numpy as np
import pytest
import torch

from inflvg.generator.contexts import sample_long, subject_tokens, target_context
from inflvg.generator.train import TrainConfig, train, train_step, training_stories
from inflvg.world import render_story, sample_story


def test_train_step_moves_parameters(tiny):
    model, world, ctx = tiny
    model.train().requires_grad_(True)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for step in range(3):  # adaLN gates start at zero: the first step only reaches the gates and the head
        loss = train_step(model, world, ctx, TrainConfig(videos_per_step=2, targets_per_video=3), seed=step, rng=rng)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert moved > 0.9 * len(before)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        for p, b in zip(model.parameters(), before, strict=True):
            p.copy_(b)


def test_long_stories_train_with_a_cast_of_8_and_far_returns(tiny):
    from inflvg.world.story import return_gaps

    model, world, ctx = tiny
    tc = TrainConfig(videos_per_step=2, targets_per_video=3, long_scenes=12)
    stories = training_stories(world, tc, seed=7, n=2)
    assert [len(s.scenes) for s in stories] == [12, 12] and all(len(s.cast) == 8 for s in stories)
    assert min(g for s in stories for g in return_gaps(s)) >= 5
    assert [len(s.scenes) for s in training_stories(world, TrainConfig(), seed=7, n=2)] == [world.n_scenes] * 2
    model.train().requires_grad_(True)
    loss = train_step(model, world, ctx, tc, seed=7, rng=np.random.default_rng(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    model.eval().requires_grad_(False)


def test_training_contexts_respect_the_layout(tiny):
    model, world, ctx = tiny
    story = sample_story(4, "train", world.n_scenes, world.cast_size)
    video = render_story(story, world)
    rng = np.random.default_rng(0)
    fps = world.frames_per_scene
    for t in range(len(video.frames)):
        c = target_context(t, video, world, ctx, model.long_tokens_per_frame, 8, rng)
        scene_start = (t // fps) * fps
        assert len(c.window) == ctx.window_frames and len(c.long) == ctx.budget_k
        assert all(f < t for f in c.sink + c.window)
        # long-term tokens come only from frames that had left the window when the scene began
        assert all(f == -1 or 1 <= f < scene_start - ctx.window_frames for f, _ in c.long)


def test_subject_tokens_and_oracle_mixture():
    story = sample_story(1, "train", 4, 2)
    from inflvg.config import WorldConfig

    video = render_story(story, WorldConfig(n_scenes=4, cast_size=2))
    shows = subject_tokens(video.masks, 8)
    assert shows.shape == (16, 16) and shows.any(1).all()
    pool = np.arange(1, 9)
    picks = [sample_long(pool, shows[pool], pool % 4 == 0, 16, 8, np.random.default_rng(s)) for s in range(50)]
    assert all(len(p) <= 8 and len(set(p)) == len(p) for p in picks)
    assert any(len(p) == 0 for p in picks) and any(len(p) == 8 for p in picks)


def test_learning_rate_warms_up_then_follows_the_cosine():
    import math

    from inflvg.generator.train import learning_rate

    flat = TrainConfig(lr=1e-3, warmup_steps=10)
    assert learning_rate(flat, 0) == 1e-4 and learning_rate(flat, 9) == 1e-3 and learning_rate(flat, 5000) == 1e-3
    tc = TrainConfig(lr=1e-3, warmup_steps=10, decay_steps=100, final_lr_fraction=0.1)
    assert math.isclose(learning_rate(tc, 50), 1e-3 * (0.1 + 0.9 * 0.5))  # half-way: cos(pi/2) = 0
    assert math.isclose(learning_rate(tc, 100), 1e-4) and math.isclose(learning_rate(tc, 400), 1e-4)
    assert learning_rate(tc, 30) > learning_rate(tc, 60) > learning_rate(tc, 90)


def test_context_noise_is_per_frame_bounded_and_leaves_the_clean_frames_alone():
    from inflvg.generator.train import noisy_context

    torch.manual_seed(0)
    clean = torch.zeros(3, 5, 32, 32, 3)
    assert noisy_context(clean, 0.0) is clean
    noisy = noisy_context(clean, 0.1)
    assert torch.count_nonzero(clean) == 0 and noisy.shape == clean.shape
    stds = noisy.std(dim=(2, 3, 4))  # (B, T): one noise level per frame
    assert (stds > 0).all() and (stds < 0.11).all() and stds.max() - stds.min() > 0.02


def test_training_oracle_order_matches_oracle_k():
    from inflvg.generator.contexts import subject_first

    pool = np.array([1, 2, 3, 4, 5, 8, 9])
    shows = np.zeros((7, 16), bool)
    shows[[0, 3, 5, 6], 5] = True  # frames 1, 4, 8, 9 show the subject
    order = [f for f, _ in subject_first(pool, shows, pool % 4 == 0)]
    assert order == [8, 4, 9, 1]  # scene openings newest first, then the rest newest first


def test_mixture_shares_are_checked_and_steer_the_targets():
    from inflvg.generator.contexts import Mixture, choose_targets

    with pytest.raises(ValueError, match=r"Mixture\.targets"):
        Mixture(targets=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"Mixture\.long"):
        Mixture(long=(1.0, 0.0, 0.0))
    from inflvg.config import WorldConfig

    world = WorldConfig()
    story = sample_story(3, "train", world.n_scenes, world.cast_size)
    returns = {i * 4 for i, sc in enumerate(story.scenes) if i > 0 and not sc.first_appearance}
    only_returns = choose_targets(story, world, 40, np.random.default_rng(0), Mixture(targets=(1.0, 0.0, 0.0)))
    assert set(only_returns) <= returns


def test_continuing_counts_steps_from_the_saved_weights(tmp_path):
    from inflvg.config import ContextConfig, GeneratorConfig, WorldConfig
    from inflvg.generator.weights import load_generator

    world = WorldConfig(n_scenes=3, cast_size=3)
    gen = GeneratorConfig(d_model=32, n_heads=2, n_layers=1, d_text=32, text_layers=1, denoise_steps=2, horizon_frames=16)
    ctx = ContextConfig(budget_k=8, window_frames=2)
    tc = TrainConfig(max_steps=2, videos_per_step=1, targets_per_video=2, warmup_steps=1)
    first = tmp_path / "first.pt"
    train(world, ctx, gen, tc, str(first))
    with pytest.raises(ValueError, match="max_steps"):
        train(world, ctx, gen, tc, str(tmp_path / "again.pt"), init=str(first))
    more = tmp_path / "more.pt"
    train(world, ctx, gen, TrainConfig(max_steps=3, videos_per_step=1, targets_per_video=2, warmup_steps=1), str(more), init=str(first))
    before, after = load_generator(first)[0], load_generator(more)[0]
    assert load_generator(more)[3]["steps"] == 3
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))
