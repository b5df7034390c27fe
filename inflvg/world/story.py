"""Stories: a cast, a list of scenes, EPS-style prompts, and the rendered video with ground truth.

A character's first scene names it explicitly ("character B, a small red and blue striped
triangle, bounces in the desert"); later scenes only refer to it ("character B jumps at night").
Consecutive scenes never share a character, so every return needs memory beyond the window.

Splits: identities whose (shape, colour1, pattern) triple is in ``HELDOUT_TRIPLES`` appear only
in the held-out split; the training split never sees those combinations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..config import WorldConfig
from .render import Identity, action_offsets, background, paste
from .vocab import ACTION_NAMES, ACTIONS, BACKGROUND_NAMES, BACKGROUNDS, COLOUR_NAMES, LETTERS, PATTERNS, SHAPES, SIZE_NAMES

Split = str  # "train" | "heldout"
SPLITS = ("train", "heldout")
_SPLIT_STREAM = {"train": 0, "heldout": 1}


def _heldout_triples() -> frozenset[tuple[str, str, str]]:
    triples = list(itertools.product(SHAPES, COLOUR_NAMES, PATTERNS))
    order = np.random.default_rng(20260101).permutation(len(triples))
    return frozenset(triples[i] for i in order[: len(triples) // 5])


HELDOUT_TRIPLES = _heldout_triples()


def split_of(identity: Identity) -> Split:
    key = (identity.shape, identity.colour1, identity.pattern)
    return "heldout" if key in HELDOUT_TRIPLES else "train"


@dataclass(frozen=True)
class Scene:
    character: int  # index into Story.cast
    background: str
    action: str
    first_appearance: bool


@dataclass(frozen=True)
class Story:
    cast: tuple[Identity, ...]
    scenes: tuple[Scene, ...]
    seed: int
    letters: tuple[str, ...] = LETTERS
    """Name of each cast member in prompts; parsed prompt files keep the user's letters."""

    def prompt(self, i: int) -> str:
        sc = self.scenes[i]
        name = f"character {self.letters[sc.character]}"
        who = f"{name}, {self.cast[sc.character].describe()}," if sc.first_appearance else name
        return f"{who} {ACTIONS[sc.action]} {BACKGROUNDS[sc.background][2]} {sc.background}"

    def prompts(self) -> list[str]:
        return [self.prompt(i) for i in range(len(self.scenes))]


def _distinct_enough(a: Identity, b: Identity) -> bool:
    return sum(x != y for x, y in zip(a.attributes(), b.attributes(), strict=True)) >= 2


def sample_identity(rng: np.random.Generator, split: Split) -> Identity:
    while True:
        c1, c2 = rng.choice(len(COLOUR_NAMES), 2, replace=False)
        ident = Identity(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour1=COLOUR_NAMES[c1],
            colour2=COLOUR_NAMES[c2],
            pattern=PATTERNS[rng.integers(len(PATTERNS))],
            size=SIZE_NAMES[rng.integers(len(SIZE_NAMES))],
        )
        if split_of(ident) == split:
            return ident


def sample_cast(rng: np.random.Generator, split: Split, size: int) -> tuple[Identity, ...]:
    cast: list[Identity] = []
    while len(cast) < size:
        ident = sample_identity(rng, split)
        if all(_distinct_enough(ident, other) for other in cast):
            cast.append(ident)
    return tuple(cast)


def sample_character_order(rng: np.random.Generator, n_scenes: int, cast_size: int) -> list[int]:
    """Scene subjects: never the previous scene's; new characters are introduced in letter order.

    The opening character returns only when nothing else can follow: its first frame is the
    attention sink, which every context strategy keeps, so its returns would test no selection."""
    order = [0]
    introduced = 1
    for _ in range(1, n_scenes):
        returning = [c for c in range(1, introduced) if c != order[-1]]
        if not returning and introduced == cast_size:
            returning = [c for c in range(introduced) if c != order[-1]]
        if introduced < cast_size and (not returning or rng.random() < 0.5):
            order.append(introduced)
            introduced += 1
        else:
            order.append(int(rng.choice(returning)))
    return order


def sample_story(seed: int, split: Split, n_scenes: int, cast_size: int) -> Story:
    """Deterministic from (seed, split)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    cast = sample_cast(rng, split, cast_size)
    seen: set[int] = set()
    scenes = []
    for c in sample_character_order(rng, n_scenes, cast_size):
        scenes.append(
            Scene(
                character=c,
                background=BACKGROUND_NAMES[rng.integers(len(BACKGROUND_NAMES))],
                action=ACTION_NAMES[rng.integers(len(ACTION_NAMES))],
                first_appearance=c not in seen,
            )
        )
        seen.add(c)
    return Story(cast=cast, scenes=tuple(scenes), seed=seed)


@dataclass(frozen=True)
class Video:
    """A rendered story with per-frame ground truth."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, H, W) bool, the subject's pixels
    character: np.ndarray  # (T,) int, index into the cast
    background: np.ndarray  # (T,) int, index into BACKGROUND_NAMES
    scene: np.ndarray  # (T,) int, scene index of each frame


SCENE_CENTRE = (0.55, 0.5)  # where every scene starts, as a fraction of the frame


def scene_positions(story: Story, frames_per_scene: int, frame_size: int) -> np.ndarray:
    """(n_scenes * frames_per_scene, 2) centre (cy, cx) of the subject in every frame.

    Every scene starts at the same place and the action alone moves the subject, so a prompt
    determines its frames up to identity: a few-step sampler then has one mode to find, not a
    blur of every possible position."""
    base = np.array(SCENE_CENTRE) * frame_size
    return np.concatenate([base + action_offsets(sc.action, frames_per_scene) for sc in story.scenes], 0)


def render_story(story: Story, world: WorldConfig) -> Video:
    fps, size = world.frames_per_scene, world.frame_size
    pos = scene_positions(story, fps, size)
    t_total = len(story.scenes) * fps
    frames = np.empty((t_total, size, size, 3), np.uint8)
    masks = np.empty((t_total, size, size), bool)
    for t in range(t_total):
        sc = story.scenes[t // fps]
        frames[t] = background(sc.background, size)
        masks[t] = paste(frames[t], story.cast[sc.character], *pos[t])
    char = np.repeat([sc.character for sc in story.scenes], fps)
    bg = np.repeat([BACKGROUND_NAMES.index(sc.background) for sc in story.scenes], fps)
    return Video(frames, masks, char, bg, np.repeat(np.arange(len(story.scenes)), fps))


def subject_history(story: Story, frames: np.ndarray, frames_per_scene: int, scene: int) -> np.ndarray | None:
    """Frames of the earlier scenes whose prompt names the same character as ``scene`` (the
    history the identity reward compares against); None at a first appearance.

    frames (T, H, W, 3) of one video -> (M, H, W, 3) or None.
    """
    subject = story.scenes[scene].character
    earlier = [i for i in range(scene) if story.scenes[i].character == subject]
    if not earlier:
        return None
    return np.concatenate([frames[i * frames_per_scene : (i + 1) * frames_per_scene] for i in earlier])


LONG_CAST = 8  # every letter A-H
LONG_MIN_GAP = 5


def sample_spread_order(rng: np.random.Generator, n_scenes: int, cast_size: int, min_gap: int) -> list[int]:
    """Scene subjects for long videos: a character returns only ``min_gap`` or more scenes after
    its last appearance (a return then needs memory beyond the last min_gap - 1 scenes), and new
    characters are introduced in letter order, each with even odds while returns are possible.
    The opening character (the attention sink) returns only when nothing else can follow."""
    order, last, introduced = [0], {0: 0}, 1
    for i in range(1, n_scenes):
        ready = [c for c in range(1, introduced) if i - last[c] >= min_gap]
        if introduced < cast_size and (not ready or rng.random() < 0.5):
            c, introduced = introduced, introduced + 1
        elif ready:
            c = int(rng.choice(ready))
        else:  # a cast too small for the gap: the least recently seen other character
            c = min((c for c in range(introduced) if c != order[-1]), key=lambda c: last[c])
        order.append(c)
        last[c] = i
    return order


def sample_long_story(seed: int, split: Split, n_scenes: int, cast_size: int = LONG_CAST, min_gap: int = LONG_MIN_GAP) -> Story:
    """A story for videos of several training horizons: a cast of ``cast_size`` and returns at
    least ``min_gap`` scenes apart (``sample_spread_order``), so that every return needs long
    memory. Deterministic from (seed, split), on a random stream of its own (not ``sample_story``'s)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 1 <= cast_size <= len(LETTERS):
        raise ValueError(f"cast_size must be 1-{len(LETTERS)} (letters A-H), got {cast_size}")
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split], 1])
    cast = sample_cast(rng, split, cast_size)
    order = sample_spread_order(rng, n_scenes, cast_size, min_gap)
    scenes = tuple(Scene(c, BACKGROUND_NAMES[rng.integers(len(BACKGROUND_NAMES))], ACTION_NAMES[rng.integers(len(ACTION_NAMES))],
                         first_appearance=c not in order[:i]) for i, c in enumerate(order))  # fmt: skip
    return Story(cast=cast, scenes=scenes, seed=seed)


def return_gaps(story: Story) -> list[int]:
    """Scenes between each appearance of a character and its previous one, over the whole cast."""
    last: dict[int, int] = {}
    gaps = []
    for i, sc in enumerate(story.scenes):
        if sc.character in last:
            gaps.append(i - last[sc.character])
        last[sc.character] = i
    return gaps
