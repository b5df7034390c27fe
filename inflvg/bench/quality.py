"""Quality of generated videos, measured by the world readers.

Per scene: alignment (the read background is the prompted one), character (the reader picks the
prompted cast member; `returns` counts only the scenes where a character comes back, the ones
that need memory; `returns_among4` the same with the reader choosing among the returning subject
and 3 other cast members, the cast size of the training stories, so that stories with a cast of
8 are read as those with 4 are), artifacts (1 - artifact score, averaged over frames). Per returning scene:
identity consistency, the fraction of the 5 attributes on which the subject as read now agrees
with the subject as read in its first scene of the same video. Combined = mean of alignment,
identity and artifacts. Everything is 0-1, higher is better, and reported per video so that
confidence intervals and paired differences are over videos.

Prompt sets without ground truth (free text) get what the readers can say without it:
identity against the first earlier scene about the same subject as the prompts name it
(``inflvg.subjects``), artifacts against the background read from the frames; alignment,
character and the returns are NaN, and combined is the mean of what there is.

Every measure is also kept per scene (``VideoScores.by_scene``: NaN where a scene has none, e.g.
identity on a first appearance), for the drift curves over scene index (``drift``), with each
scene's visit (how many earlier scenes its subject had), for returns by visit (``by_visit``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..prompts import PromptSet
from ..subjects import subject_keys, subject_scenes
from ..world.readers import SubjectReading, artifact_score, attribute_agreement, read_scene, which_character
from ..world.story import Story
from ..world.vocab import BACKGROUND_NAMES

METRICS = ("alignment", "identity", "artifacts", "combined", "character", "returns", "returns_among4")
READER_CHOICES = 4
"""``returns_among4``'s reader chooses among this many cast members: the returning subject and
others drawn per scene. With a larger cast, the same drawing is more often closer to some other
member (cast members differ in as few as 2 of 5 attributes), so the strict ``returns`` falls with
the cast size, not with the drawing; this keeps the choice the same for every kind of story."""


@dataclass(frozen=True)
class VideoScores:
    alignment: float
    identity: float  # nan when the video has no returning scene
    artifacts: float
    character: float
    returns: float  # the right character on returning scenes; nan when none returns
    returns_among4: float  # the same, the reader choosing among READER_CHOICES cast members (ties split)
    by_scene: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    """METRIC -> (n_scenes,) the same measures scene by scene (combined: the mean of what the scene has),
    and "visit" -> (n_scenes,) how many earlier scenes the scene's subject had (0: a first appearance)."""

    @property
    def combined(self) -> float:
        parts = [x for x in (self.alignment, self.artifacts, self.identity) if not np.isnan(x)]
        return float(np.mean(parts)) if parts else float("nan")


def score_video(ps: PromptSet, truth: Story | None, frames: np.ndarray, frames_per_scene: int) -> VideoScores:
    """frames (T, H, W, 3) uint8 of one generated prompt set; ``truth``: its StoryWorld story, or None."""
    return score_story(truth, frames, frames_per_scene) if truth is not None else score_free_text(ps, frames, frames_per_scene)


def score_free_text(ps: PromptSet, frames: np.ndarray, frames_per_scene: int) -> VideoScores:
    """The readers' measures that need no ground truth (see the module docstring)."""
    readings = [read_scene(frames[i * frames_per_scene : (i + 1) * frames_per_scene]) for i in range(ps.n_scenes)]
    artif = [1.0 - float(np.mean([artifact_score(f, r.background) for f in frames[i * frames_per_scene : (i + 1) * frames_per_scene]]))
             for i, r in enumerate(readings)]  # fmt: skip
    keys = subject_keys(ps)
    nan = float("nan")
    earlier = [subject_scenes(ps, i, keys) for i in range(ps.n_scenes)]
    ident = [attribute_agreement(readings[i].subject, readings[e[0]].subject) if e else nan for i, e in enumerate(earlier)]
    nans = [nan] * ps.n_scenes
    return _scores(nans, ident, artif, nans, nans, nans, [len(e) for e in earlier])


def score_story(story: Story, frames: np.ndarray, frames_per_scene: int) -> VideoScores:
    """frames (T, H, W, 3) uint8 of one generated StoryWorld story, measured against its ground truth."""
    first_reading: dict[int, SubjectReading | None] = {}
    nan = float("nan")
    align, ident, artif, char, back, back4 = [], [], [], [], [], []
    for i, sc in enumerate(story.scenes):
        clip = frames[i * frames_per_scene : (i + 1) * frames_per_scene]
        reading = read_scene(clip)
        align.append(float(BACKGROUND_NAMES[reading.background] == sc.background))
        char.append(float(which_character(reading.subject, story.cast) == sc.character))
        bg = BACKGROUND_NAMES.index(sc.background)
        artif.append(1.0 - float(np.mean([artifact_score(f, bg) for f in clip])))
        if sc.character in first_reading:
            back.append(char[-1])
            back4.append(right_among(reading.subject, story.cast, sc.character, i))
            ident.append(attribute_agreement(reading.subject, first_reading[sc.character]))
        else:
            first_reading[sc.character] = reading.subject
            back.append(nan)
            back4.append(nan)
            ident.append(nan)
    visits = [sum(earlier.character == sc.character for earlier in story.scenes[:i]) for i, sc in enumerate(story.scenes)]
    return _scores(align, ident, artif, char, back, back4, visits)


def right_among(reading: SubjectReading | None, cast: tuple, subject: int, scene: int) -> float:
    """The reader's choice between the subject and up to READER_CHOICES - 1 other cast members, drawn
    from scene and subject (the same for every strategy): 1 / (members tied at the top) if the
    subject is among them, else 0; 0 with no reading."""
    if reading is None:
        return 0.0
    others = [j for j in range(len(cast)) if j != subject]
    drawn = np.random.default_rng((scene, subject, len(cast))).choice(others, min(READER_CHOICES - 1, len(others)), replace=False)
    agree = np.array([attribute_agreement(reading, cast[j]) for j in (subject, *drawn)])
    top = np.flatnonzero(agree == agree.max())
    return float(0 in top) / len(top)


def _nanmean(values, axis=None):
    with warnings.catch_warnings():  # an all-NaN slice is NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _scores(align: list[float], ident: list[float], artif: list[float], char: list[float], back: list[float],
            back4: list[float], visits: list[int]) -> VideoScores:  # fmt: skip
    """A video's scores from its per-scene lists (NaN where a scene has no such measure) and each scene's visit."""
    scene = {"alignment": align, "identity": ident, "artifacts": artif, "character": char, "returns": back, "returns_among4": back4}
    by_scene = {m: np.array(v, float) for m, v in scene.items()}
    by_scene["combined"] = _nanmean(np.stack([by_scene[m] for m in ("alignment", "artifacts", "identity")]), axis=0)
    means = {m: float(_nanmean(v)) if len(v) else float("nan") for m, v in by_scene.items() if m != "combined"}
    return VideoScores(**means, by_scene=by_scene | {"visit": np.array(visits, float)})


def per_video_table(scores: list[VideoScores]) -> dict[str, np.ndarray]:
    return {m: np.array([getattr(s, m) for s in scores], float) for m in METRICS}


def per_scene_table(scores: list[VideoScores]) -> dict[str, np.ndarray]:
    """METRIC and "visit" -> (videos, scenes); a video shorter than the longest is NaN past its end."""
    n = max(len(s.by_scene["combined"]) for s in scores)
    pad = lambda v: np.concatenate([v, np.full(n - len(v), np.nan)])  # noqa: E731
    return {m: np.stack([pad(s.by_scene[m]) for s in scores]) for m in (*METRICS, "visit")}


def drift(scenes: dict[str, np.ndarray], n_boot: int = 2000, seed: int = 0) -> dict:
    """Drift curves: each metric's mean over videos at every scene index, with its 95% bootstrap
    percentile interval (videos resampled, the same draws for every scene; NaN where no video has
    the measure there). ``scenes``: ``per_scene_table``'s output."""
    out: dict = {"ci95": {}}
    for m in METRICS:
        v = scenes[m]
        idx = np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))
        boot = np.concatenate([_nanmean(v[chunk], axis=1) for chunk in np.array_split(idx, max(1, n_boot // 250))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        out[m] = [_num(x) for x in _nanmean(v, axis=0)]
        out["ci95"][m] = [[_num(a), _num(b)] for a, b in zip(lo, hi, strict=True)]
    return out


def identity_drift(identity: np.ndarray, early: tuple[int, int] = (3, 9), late_from: int = 9, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """The no-drift check: identity on returning scenes at scene index >= ``late_from`` over identity
    on returning scenes at indices [early[0], early[1]), each pooled over every such scene of every
    video, with a 95% bootstrap interval of the ratio (videos resampled). ``identity`` (videos, scenes):
    ``per_scene_table``'s, NaN where a scene is no return. None when the videos are too short."""
    if identity.shape[1] <= late_from:
        return None
    parts = []
    for block in (identity[:, early[0] : early[1]], identity[:, late_from:]):
        seen = ~np.isnan(block)
        parts += [np.where(seen, block, 0.0).sum(1), seen.sum(1).astype(float)]

    def ratio(early_sum, early_n, late_sum, late_n, axis=-1):
        return (late_sum.sum(axis) / late_n.sum(axis)) / (early_sum.sum(axis) / early_n.sum(axis))

    early_mean, late_mean = parts[0].sum() / parts[1].sum(), parts[2].sum() / parts[3].sum()
    return {"early_scenes": list(early), "late_from": late_from, "early": _num(early_mean), "late": _num(late_mean),
            "ratio": _num(late_mean / early_mean), "ratio_ci95": bootstrap_ci(tuple(parts), ratio, n_boot, seed)}  # fmt: skip


VISITS = (("1", 1, 2), ("2", 2, 3), ("3+", 3, np.inf))
"""Returns grouped by the subject's earlier scenes: its first return, its second, its third and later."""


def by_visit(returns: np.ndarray, visit: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Right character on returns by visit (``VISITS``): each group pooled over every such scene of every
    video, with a 95% bootstrap interval (videos resampled) and its number of scenes; None for a group
    without scenes. A character's later returns copy a memory that earlier returns may have spoilt, so
    they are harder whatever the length, and the mix of visits differs between kinds of story.
    ``returns``, ``visit`` (videos, scenes): ``per_scene_table``'s."""
    out: dict = {}
    pooled = lambda t, c, axis=-1: t.sum(axis) / c.sum(axis)  # noqa: E731
    for name, lo, hi in VISITS:
        picked = (visit >= lo) & (visit < hi) & ~np.isnan(returns)
        total, count = np.where(picked, returns, 0.0).sum(1), picked.sum(1).astype(float)
        if not count.sum():
            out[name] = None
            continue
        out[name] = {"mean": _num(total.sum() / count.sum()), "ci95": bootstrap_ci((total, count), pooled, n_boot, seed),
                     "scenes": int(count.sum())}  # fmt: skip
    return out


def _num(x) -> float | None:
    return None if np.isnan(x) else round(float(x), 5)


def bootstrap_ci(samples: tuple[np.ndarray, ...], statistic, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95% bootstrap percentile interval of ``statistic(*samples, axis=-1)`` (``scipy.stats.bootstrap``),
    the samples resampled together (paired: one index draw for all). [nan, nan] without samples;
    one sample gives the degenerate interval [value, value]."""
    n = len(samples[0])
    if n < 2:
        value = float(statistic(*samples, axis=-1)) if n else float("nan")
        return [value, value]
    from scipy.stats import bootstrap

    res = bootstrap(samples, statistic, n_resamples=n_boot, paired=True, vectorized=True, axis=-1, method="percentile",
                    rng=np.random.default_rng(seed))  # fmt: skip
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% bootstrap percentile interval over the non-nan values."""
    v = values[~np.isnan(values)]
    lo, hi = bootstrap_ci((v,), np.mean, n_boot, seed)
    return float(v.mean()) if len(v) else float("nan"), lo, hi
