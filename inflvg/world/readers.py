"""World readers: analytic measurements of a StoryWorld frame (numpy only), the benchmark's yardstick.

A frame is (H, W, 3) uint8. The background is read from the median colours of the sky and
ground bands; the subject is segmented as the largest connected blob of pixels far from the
background or closer to a palette colour than to it, then explained by the least-squares best
sprite (size x shape x pattern x colour pair x position x blur, ``readers_fit.fit_sprite``), so
blurred, noisy or colour-shifted imitations of renders still read. ``artifact_score`` measures
what neither the background nor the subject explains; ``corrupt`` makes the corruptions it is
calibrated against and the generator-like imitations the readers must read through.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .readers_fit import band_residual, box_count, dilate, fit_sprite, gaussian_blur, horizon_row, largest_component
from .render import Identity
from .vocab import BACKGROUND_NAMES, BACKGROUNDS, COLOUR_NAMES, COLOURS, PATTERNS, SHAPES, SIZE_NAMES, SIZES

T = TypeVar("T")

PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], np.float32)  # (6, 3)
BAND_TEMPLATES = np.array([BACKGROUNDS[b][:2] for b in BACKGROUND_NAMES], np.float32)  # (8, 2, 3)
MIN_SUBJECT_PIXELS = 8
MAX_SHIFT = 60.0  # largest global colour shift the readers correct for
FG_DISTANCE = 40.0  # a pixel this far from the background colour is not background
CORRUPTIONS = ("gaussian", "blocks", "blur_shift", "salt_pepper")  # artefacts artifact_score must flag
IMITATIONS = ("degrade", "rough")  # generator-like imperfections the readers must read through


@dataclass(frozen=True)
class SubjectReading:
    """The character seen in one frame; attribute values are vocab.py names."""

    shape: str
    colour1: str
    colour2: str
    pattern: str
    size: str
    pixels: int  # pixel count of the subject's connected component
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # (y0, x0, y1, x1) of the component, end exclusive

    def attributes(self) -> tuple[str, str, str, str, str]:
        return (self.shape, self.colour1, self.colour2, self.pattern, self.size)


@dataclass(frozen=True)
class SceneReading:
    """Majority reading over the frames of one scene."""

    background: int  # index into BACKGROUND_NAMES
    subject: SubjectReading | None  # per-attribute majority over frames with a subject
    frames_with_subject: int
    n_frames: int


def _dist(x: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """x (..., 3), colours (K, 3) -> (K, ...) Euclidean colour distances."""
    diff = x[None].astype(np.float32) - colours.reshape((-1,) + (1,) * (x.ndim - 1) + (3,))
    return np.sqrt((diff * diff).sum(-1))


def band_colours(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (2, 3) float robust median (sky, ground) colours, subject pixels left out."""
    hz = horizon_row(frame.shape[0])
    out = []
    for rows in (frame[: max(hz - 1, 1)], frame[hz + 1 :] if hz + 1 < frame.shape[0] else frame[hz:]):
        px = rows.reshape(-1, 3).astype(np.float32)
        med = np.median(px, 0)
        keep = _dist(px, med[None])[0] < _dist(px, PALETTE).min(0)
        out.append(np.median(px[keep], 0) if keep.sum() >= 8 else med)
    return np.stack(out)


def read_background(frame: np.ndarray) -> int:
    """(H, W, 3) uint8 -> index into BACKGROUND_NAMES of the nearest (sky, ground) template."""
    bands = band_colours(frame)
    return int(np.argmin(((BAND_TEMPLATES - bands[None]) ** 2).sum((1, 2))))


def _bg_distance(frame: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """(H, W) distance of each pixel to its band's colour (either band next to the horizon)."""
    h = frame.shape[0]
    hz = horizon_row(h)
    d = _dist(frame, bands)  # (2, H, W)
    band = np.where(np.arange(h) < hz, 0, 1)[:, None]
    own = np.where(band == 0, d[0], d[1])
    near = np.abs(np.arange(h) - hz + 0.5)[:, None] <= 1.5
    return np.where(near, d.min(0), own)


def _fg_mask(frame: np.ndarray, bands: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels far from the background or closer to a palette colour than to it."""
    d_bg = _bg_distance(frame, bands)
    fg = (d_bg > FG_DISTANCE) | (_dist(frame, palette).min(0) < d_bg)
    return fg & (box_count(fg) >= 4)  # drops isolated noise pixels, keeps sprite corners


def read_subject(frame: np.ndarray, background_index: int) -> SubjectReading | None:
    """(H, W, 3) uint8 frame -> the character in it, or None when no subject is found.

    The measured band colours serve as the background and the palette is moved by the frame's
    overall colour shift, so blurred, noisy and colour-shifted frames still read.
    """
    return _read_subject(frame, background_index)[0]


def _read_subject(
    frame: np.ndarray, background_index: int
) -> tuple[SubjectReading | None, np.ndarray, np.ndarray, np.ndarray]:
    """-> (reading or None, subject component (H, W) bool, bands (2, 3), shifted palette (6, 3))."""
    bands, palette = _reference(frame, background_index)
    comp = largest_component(_fg_mask(frame, bands, palette))
    n = int(comp.sum())
    if n < MIN_SUBJECT_PIXELS:
        return None, comp, bands, palette
    ys, xs = np.nonzero(comp)
    bbox = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
    _, (si, sh, pa, c1, c2) = fit_sprite(frame, bands, palette, bbox)
    reading = SubjectReading(SHAPES[sh], COLOUR_NAMES[c1], COLOUR_NAMES[c2], PATTERNS[pa], SIZE_NAMES[si], n, bbox)
    return reading, comp, bands, palette


def _reference(frame: np.ndarray, background_index: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (bands (2, 3), palette (6, 3)): the measured background colours (the template of
    ``background_index`` where a measurement is far off it) and the palette moved by the
    frame's colour shift, measured against the background template nearest to the frame."""
    bands = band_colours(frame)
    template = BAND_TEMPLATES[background_index]
    far = np.linalg.norm(bands - template, axis=1) > 100.0  # measurement broken: trust the template
    bands = np.where(far[:, None], template, bands)
    nearest = BAND_TEMPLATES[np.argmin(((BAND_TEMPLATES - bands[None]) ** 2).sum((1, 2)))]
    shift = (bands - nearest).mean(0)
    shift *= min(1.0, MAX_SHIFT / max(float(np.linalg.norm(shift)), 1e-6))
    return bands, np.clip(PALETTE + shift, 0, 255).astype(np.float32)


def _vote(values: list[T]) -> T:
    """Most common value; ties go to the value seen first."""
    return Counter(values).most_common(1)[0][0]


def read_scene(frames: np.ndarray) -> SceneReading:
    """(F, H, W, 3) uint8 frames of one scene -> majority background and subject attributes."""
    bg = int(_vote([read_background(f) for f in frames]))
    subs = [s for s in (read_subject(f, bg) for f in frames) if s is not None]
    subject = None
    if subs:
        attrs = [_vote([s.attributes()[i] for s in subs]) for i in range(5)]
        subject = SubjectReading(*attrs, pixels=int(np.median([s.pixels for s in subs])), bbox=subs[0].bbox)
    return SceneReading(bg, subject, len(subs), len(frames))


def attribute_agreement(a: SubjectReading | Identity | None, b: SubjectReading | Identity | None) -> float:
    """Fraction of (shape, colour1, colour2, pattern, size) that agree; 0 if either is None."""
    if a is None or b is None:
        return 0.0
    return sum(x == y for x, y in zip(a.attributes(), b.attributes(), strict=True)) / 5.0


def which_character(reading: SubjectReading | None, cast: tuple[Identity, ...]) -> int | None:
    """Index of the cast member agreeing most with ``reading`` (ties -> lower index); None if no reading."""
    if reading is None or not cast:
        return None
    scores = [attribute_agreement(reading, ident) for ident in cast]
    return int(np.argmax(scores))


def corrupt(frame: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 corrupted copy.

    kind: "gaussian" (noise sigma 25), "blocks" (2-3 rectangles of random colour),
    "blur_shift" (blur sigma 1.6 + a colour shift of ~40 levels), "salt_pepper" (6% of pixels
    black or white); or imitations of a clean render that are not artefacts: "degrade" (blur
    sigma 0.7 + noise sigma 8) and "rough" (every flat colour of the render off by up to 30
    levels per channel, blur sigma 1.0, noise sigma 12, 3 stray pixels).
    """
    h, w = frame.shape[:2]
    x = frame.astype(np.float32)
    if kind == "gaussian":
        x = x + rng.normal(0, 25, x.shape)
    elif kind == "blocks":
        for _ in range(rng.integers(2, 4)):
            bh, bw = rng.integers(4, 9, 2)
            y0, x0 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            x[y0 : y0 + bh, x0 : x0 + bw] = rng.integers(0, 256, 3)
    elif kind == "blur_shift":
        x = gaussian_blur(x, 1.6) + rng.choice([-1.0, 1.0], 3) * rng.uniform(30, 50, 3)
    elif kind == "salt_pepper":
        hit = rng.random((h, w)) < 0.06
        x[hit] = rng.choice([0.0, 255.0], (int(hit.sum()), 1))
    elif kind == "degrade":
        x = gaussian_blur(x, 0.7) + rng.normal(0, 8, x.shape)
    elif kind == "rough":
        colours, which = np.unique(frame.reshape(-1, 3), axis=0, return_inverse=True)
        x = x + rng.uniform(-30, 30, (len(colours), 3))[which.ravel()].reshape(x.shape)
        x = gaussian_blur(x, 1.0) + rng.normal(0, 12, x.shape)
        x[rng.integers(0, h, 3), rng.integers(0, w, 3)] = rng.integers(0, 256, (3, 3))
    else:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS + IMITATIONS}")
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


ARTIFACT_DISTANCE = 45.0  # a pixel further than this from every colour the scene explains is unexplained
STRAY_DISTANCE = 70.0  # a pixel this far from the background, away from the subject, is a stray


def _segment_distance(x: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(H, W) distance of each pixel colour in x (H, W, 3) to the colour segment p-q (a blend)."""
    d = q - p
    t = np.clip(((x - p) @ d) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return np.linalg.norm(x - p - t[..., None] * d, axis=-1)


def _subject_colours(frame: np.ndarray, reading: SubjectReading, comp: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(2, 3) measured colours of the subject's colour1 and colour2 pixels (palette if unseen)."""
    idx = [COLOUR_NAMES.index(reading.colour1), COLOUR_NAMES.index(reading.colour2)]
    x = frame[comp].astype(np.float32)
    d = _dist(x, palette[idx])  # (2, n)
    out = []
    for k in range(2):
        own = (d[k] < d[1 - k]) & (d[k] < 60.0)
        if own.sum() >= 3:  # the purer half, so that blurred edges do not drag the colour
            own &= d[k] <= np.median(d[k][own])
        out.append(np.median(x[own], 0) if own.sum() >= 3 else palette[idx[k]])
    return np.stack(out)


def _unexplained(frame: np.ndarray, bands: np.ndarray, subject: np.ndarray | None, comp: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that are neither a background band colour, a subject colour near the
    subject (subject (2, 3) or None), nor a blend of two colours valid at the pixel."""
    h = frame.shape[0]
    x = frame.astype(np.float32)
    rows = np.arange(h)[:, None] - horizon_row(h)
    colours = list(bands)
    valid = [np.broadcast_to(rows < 2, comp.shape), np.broadcast_to(rows >= -2, comp.shape)]
    if subject is not None:
        near = dilate(comp, 2)
        colours += list(subject)
        valid += [near, near]
    best = np.full(comp.shape, np.inf, np.float32)
    for i in range(len(colours)):
        best = np.where(valid[i], np.minimum(best, np.linalg.norm(x - colours[i], axis=-1)), best)
        for j in range(i):
            both = valid[i] & valid[j]
            best = np.where(both, np.minimum(best, _segment_distance(x, colours[j], colours[i])), best)
    return best > ARTIFACT_DISTANCE


def _horizon_sharpness(frame: np.ndarray, keep: np.ndarray) -> float:
    """Share of the sky-to-ground step taken between the two rows at the horizon (1 = sharp)."""
    hz = horizon_row(frame.shape[0])
    x = frame.astype(np.float32)
    cols = keep[hz - 3 : hz + 3].all(0)
    if cols.sum() < 4:
        return 1.0
    step = np.linalg.norm(np.median(x[hz + 2 : hz + 4, cols] - x[hz - 4 : hz - 2, cols], axis=(0, 1)))
    if step < 25.0:
        return 1.0
    return float(np.linalg.norm(np.median(x[hz, cols] - x[hz - 1, cols], axis=0)) / step)


def artifact_features(frame: np.ndarray, background_index: int) -> dict[str, float]:
    """(H, W, 3) uint8 -> raw artefact measurements, all 0 for a clean render.

    unexplained / strays: fraction of pixels no scene colour explains / far from the
    background away from the subject; noise: median absolute residual of background pixels;
    shift: distance of the band colours from the template; colour_error: of the subject's
    colours from the palette; blur: 1 - sharpness of the horizon; oversize: subject pixels
    beyond 1.5 times the largest sprite, as a fraction of the frame.
    """
    reading, comp, bands, palette = _read_subject(frame, background_index)
    subject = None if reading is None else _subject_colours(frame, reading, comp, palette)
    unexplained = _unexplained(frame, bands, subject, comp)
    away = ~dilate(comp, 2)
    resid = np.abs(band_residual(frame, bands)).sum(0) / 3.0  # (H, W) mean absolute channel residual
    rows = np.abs(np.arange(frame.shape[0]) - horizon_row(frame.shape[0]) + 0.5)[:, None] > 2
    quiet = away & rows
    truth = None if reading is None else PALETTE[[COLOUR_NAMES.index(c) for c in (reading.colour1, reading.colour2)]]
    return {
        "unexplained": float(unexplained.mean()),
        "strays": float(((_bg_distance(frame, bands) > STRAY_DISTANCE) & away).mean()),
        "noise": float(np.median(resid[quiet])) if quiet.sum() > 16 else 0.0,
        "shift": float(np.linalg.norm(band_colours(frame) - BAND_TEMPLATES[background_index], axis=1).mean()),
        "oversize": max(0.0, float(comp.sum()) - 1.5 * max(SIZES.values()) ** 2) / comp.size,
        "colour_error": 0.0 if subject is None else float(np.linalg.norm(subject - truth, axis=1).max()),
        "blur": 1.0 - _horizon_sharpness(frame, away),
    }


def artifact_score(frame: np.ndarray, background_index: int) -> float:
    """(H, W, 3) uint8 -> artefact score in [0, 1]; 0 for a clean render.

    1 - exp(-z), z summing each feature's excess over what a generator's blurred, noisy,
    slightly off-colour imitation of a render shows (``corrupt`` kinds "degrade", "rough"),
    so such imitations score low and noise, blocks, heavy blur or strays score high.
    """
    f = artifact_features(frame, background_index)
    z = (
        8.0 * f["unexplained"]
        + 8.0 * f["strays"]
        + 8.0 * f["oversize"]
        + max(0.0, f["noise"] - 10.0) / 6.0
        + max(0.0, f["shift"] - 35.0) / 35.0
        + max(0.0, f["colour_error"] - 50.0) / 40.0
        + max(0.0, f["blur"] - 0.68) / 0.1
    )
    return float(1.0 - np.exp(-z))
