"""Training contexts: random subsets of the fixed-budget layout, so the generator is
in-distribution for whatever a strategy (or the learned policy) keeps.

A prototype measured it before the project began: a tiny generator ignores its memory unless recall from context is a large share of
its training targets. So half of the targets (``Mixture.targets``) are the first frame of a
returning character's scene, and the long-term selection is drawn from a mixture in which the
referenced character's tokens are often present, among distractors, in the order oracle-K keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ContextConfig, WorldConfig
from ..world.story import Story, Video

CHARACTER_PIXELS = 8  # a long-term token "shows" the subject when this many of its pixels do


@dataclass(frozen=True)
class TargetContext:
    """Which cached tokens one training target attends to (frame indices within its video)."""

    t: int
    sink: list[int]  # full-resolution frames
    window: list[int]  # full-resolution frames, padded with -1 to window_frames
    long: list[tuple[int, int]]  # (frame, token) pairs, padded with (-1, -1) to budget_k


def subject_tokens(masks: np.ndarray, long_side: int) -> np.ndarray:
    """(T, H, W) bool subject masks -> (T, n_long) bool: which long-term tokens show the subject."""
    t, h, _ = masks.shape
    g = h // long_side
    counts = masks.reshape(t, g, long_side, g, long_side).sum((2, 4)).reshape(t, g * g)
    return counts >= CHARACTER_PIXELS


@dataclass(frozen=True)
class Mixture:
    """Shares of what a training target is and of what its long-term selection holds."""

    targets: tuple[float, float, float] = (0.5, 0.2, 0.3)
    """The first frame of a returning character's scene (recall from memory), the first frame
    of a first appearance (drawing from the description), any frame. A scene's later frames
    mostly copy the window, so they need the smallest share."""
    long: tuple[float, float, float, float] = (0.65, 0.15, 0.1, 0.1)
    """The target's subject's tokens (``subject_first``'s order) among random distractors, K random
    tokens, the K newest, nothing."""

    def __post_init__(self) -> None:
        for name, n in (("targets", 3), ("long", 4)):
            shares = getattr(self, name)
            if len(shares) != n or min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
                raise ValueError(f"Mixture.{name} must be {n} non-negative shares summing to 1, got {shares!r}")


def choose_targets(story: Story, world: WorldConfig, n: int, rng: np.random.Generator, mix: Mixture = Mixture()) -> list[int]:
    fps = world.frames_per_scene
    returns = [i * fps for i, sc in enumerate(story.scenes) if i > 0 and not sc.first_appearance]
    firsts = [i * fps for i, sc in enumerate(story.scenes) if sc.first_appearance]
    total = len(story.scenes) * fps
    out = []
    for _ in range(n):
        u = rng.random()
        if returns and u < mix.targets[0]:
            out.append(int(rng.choice(returns)))
        elif u < mix.targets[0] + mix.targets[1]:
            out.append(int(rng.choice(firsts)))
        else:
            out.append(int(rng.integers(total)))
    return out


def subject_first(pool_frames: np.ndarray, shows: np.ndarray, opens_scene: np.ndarray) -> list[tuple[int, int]]:
    """(frame, token) pairs of the tokens showing the subject: frames that open a scene first (the
    subject stands where every scene starts), then the rest, each part newest first. The shipped
    weights were trained on this order; oracle-K now takes the subject's first scene alone
    (``inflvg.context.baselines.OracleK``), which scores higher at 1x as well.

    pool_frames (P,); shows (P, n_long) bool; opens_scene (P,) bool."""
    order = sorted(range(len(pool_frames)), key=lambda i: (not opens_scene[i], -int(pool_frames[i])))
    return [(int(pool_frames[i]), int(j)) for i in order for j in np.flatnonzero(shows[i])]


def sample_long(
    pool_frames: np.ndarray, shows: np.ndarray, opens_scene: np.ndarray, n_long: int, k: int, rng: np.random.Generator,
    shares: tuple[float, float, float, float] = Mixture.long,
) -> list[tuple[int, int]]:
    """Long-term selection from the pool, drawn from ``shares`` (``Mixture.long``).

    pool_frames (P,) frame indices in the pool; shows (P, n_long) bool: token shows the subject;
    opens_scene (P,) bool: the frame is its scene's first.
    """
    if len(pool_frames) == 0:
        return []
    all_tokens = [(int(f), j) for f in pool_frames[::-1] for j in range(n_long)]  # newest first
    u = rng.random()
    if u < shares[0]:
        subject = subject_first(pool_frames, shows, opens_scene)
        least = k // 2 if rng.random() < 0.7 else 1  # mostly enough of the subject to redraw it
        n_subject = min(len(subject), int(rng.integers(least, k + 1)))
        chosen = subject[:n_subject] if rng.random() < 0.7 else [subject[i] for i in rng.permutation(len(subject))[:n_subject]]
        rest = [tok for tok in all_tokens if tok not in set(chosen)]
        n_rest = min(len(rest), int(rng.integers(0, k - n_subject + 1)))
        return chosen + [rest[i] for i in rng.permutation(len(rest))[:n_rest]]
    u -= shares[0]
    if u < shares[1]:
        return [all_tokens[i] for i in rng.permutation(len(all_tokens))[:k]]
    if u < shares[1] + shares[2]:
        return all_tokens[:k]
    return []


def target_context(
    t: int, video: Video, world: WorldConfig, ctx: ContextConfig, n_long: int, long_side: int, rng: np.random.Generator,
    mix: Mixture = Mixture(),
) -> TargetContext:
    fps, w, ns = world.frames_per_scene, ctx.window_frames, ctx.sink_frames
    scene_start = (t // fps) * fps
    sink = [f for f in range(ns) if f < t]
    window = list(range(max(ns, t - w), t))
    pool = np.arange(ns, max(ns, scene_start - w))
    subject = video.character[t]
    shows = subject_tokens(video.masks[pool], long_side) & (video.character[pool] == subject)[:, None]
    long = sample_long(pool, shows, pool % fps == 0, n_long, ctx.budget_k, rng, mix.long)
    return TargetContext(
        t=t,
        sink=sink + [-1] * (ns - len(sink)),
        window=window + [-1] * (w - len(window)),
        long=long + [(-1, -1)] * (ctx.budget_k - len(long)),
    )
