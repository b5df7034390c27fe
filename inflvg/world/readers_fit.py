"""Pixel machinery of the world readers: morphology, blur, and the least-squares sprite fit.

``fit_sprite`` explains a frame as background + a * (colour1 - background) + b * (colour2 -
background), where a and b are the (optionally blurred) first- and second-colour regions of a
sprite template; it searches sizes, shapes, patterns, blur levels, positions near the subject's
bounding box and palette colour pairs at once, with correlations and closed-form costs.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .render import HORIZON_FRACTION, pattern_mask, shape_mask
from .vocab import PATTERNS, SHAPES, SIZE_NAMES, SIZES


def horizon_row(h: int) -> int:
    """First ground row of an h-row frame."""
    return round(h * HORIZON_FRACTION)


def gaussian_blur(frame: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) -> (H, W, C) float32 separable Gaussian blur with edge padding."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    x = frame.astype(np.float32)
    for axis in (0, 1):
        p = np.pad(x, [(r, r) if a == axis else (0, 0) for a in range(x.ndim)], mode="edge")
        n = x.shape[axis]
        x = sum((k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1)), start=np.zeros_like(x))
    return x


def box_count(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) int count of True pixels in each 3x3 neighbourhood."""
    h, w = mask.shape
    p = np.pad(mask.astype(np.int32), 1)
    return sum((p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)), start=np.zeros((h, w), np.int32))


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """(H, W) bool -> (H, W) bool dilated by a (2r+1)^2 square."""
    h, w = mask.shape
    p = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy : dy + h, dx : dx + w]
    return out


def components(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) int labels of 8-connected components (0 = background)."""
    h, w = mask.shape
    lab = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), 0)
    while True:
        p = np.pad(lab, 1)
        nb = lab.copy()
        for dy in range(3):
            for dx in range(3):
                np.maximum(nb, p[dy : dy + h, dx : dx + w], out=nb)
        nb = np.where(mask, nb, 0)
        if np.array_equal(nb, lab):
            return lab
        lab = nb


def largest_component(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool largest 8-connected component (all False if none)."""
    lab = components(mask)
    if not lab.any():
        return np.zeros_like(mask)
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    return lab == ids[np.argmax(counts)]


BLUR_SIGMAS = (0.0, 0.8, 1.4)  # the fit tries each: sharp renders and generator-like blur
_MARGIN = 2  # template border that blur spreads into


@cache
def _templates(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Sprite regions for each (blur, shape, pattern), T = len(BLUR_SIGMAS) * 20 of them.

    Returns (lin (T, 2, S, S): blurred first-colour region a and second-colour region b,
    quad (T, 3, S + 1, S + 1): integral images of a*a, b*b, a*b), S = side + 2 * margin.
    """
    lin = []
    for sigma in BLUR_SIGMAS:
        for shape in SHAPES:
            m = shape_mask(shape, side)
            for pattern in PATTERNS:
                sec = pattern_mask(pattern, side, shape) & m
                ab = np.pad(np.stack([m & ~sec, sec], -1).astype(np.float32), ((_MARGIN,) * 2,) * 2 + ((0, 0),))
                lin.append(np.moveaxis(gaussian_blur(ab, sigma) if sigma > 0 else ab, -1, 0))
    lin = np.array(lin, np.float32)
    prod = np.stack([lin[:, 0] ** 2, lin[:, 1] ** 2, lin[:, 0] * lin[:, 1]], 1)
    quad = np.pad(prod.cumsum(2).cumsum(3), ((0, 0), (0, 0), (1, 0), (1, 0)))
    return lin, quad.astype(np.float64)


def _offsets(lo: int, hi: int, side: int) -> np.ndarray:
    """Template tops (or lefts, margin included) that place a side-long sprite over [lo, hi)."""
    a, b = min(lo, hi - side), max(lo, hi - side)
    return np.arange(a - 2, b + 3) - _MARGIN


def band_residual(frame: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """-> (6, H, W) frame minus background colour, sky rows in channels 0-2, ground in 3-5."""
    h = frame.shape[0]
    sky = (np.arange(h) < horizon_row(h))[:, None, None]
    r = frame.astype(np.float32) - np.where(sky, bands[0], bands[1])
    return np.moveaxis(np.concatenate([r * sky, r * ~sky], -1), -1, 0)


def _band_sums(quad: np.ndarray, tops: np.ndarray, lefts: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sums of quad's products over the in-frame part of each band: (2, T, 3, Y * X)."""
    s = quad.shape[-1] - 1
    top, left = tops[:, None], lefts[None, :]
    c0, c1 = np.clip(-left, 0, s), np.clip(w - left, 0, s)
    hz = np.clip(horizon_row(h) - top, 0, s)
    out = []
    for lo, hi in ((np.clip(-top, 0, s), hz), (hz, np.clip(h - top, 0, s))):
        r0, r1, a0, a1 = np.broadcast_arrays(lo, hi, c0, c1)
        rect = quad[..., r1, a1] - quad[..., r0, a1] - quad[..., r1, a0] + quad[..., r0, a0]
        out.append(rect.reshape(*quad.shape[:2], -1))
    return np.stack(out)


def _pair_costs(lin: np.ndarray, quad: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Squared error minus ||r||^2 of every hypothesis and colour pair: (N, T, 6, 6).

    lin (6, N, T, 2): residual (band k channels 3k..3k+2) correlated with regions a, b;
    quad (2, T, 3, N): band sums of a*a, b*b, a*b; u (2, 6, 3): palette minus band colour.
    """
    uu = np.einsum("kic,kjc->kij", u, u)  # (2, 6, 6)
    n2 = np.einsum("kii->ki", uu)  # (2, 6)
    lin = lin.reshape(2, 3, *lin.shape[1:])  # (band, channel, N, T, region)
    dots = np.einsum("kcntr,kjc->rntj", lin, u)  # (2, N, T, 6): residual . (colour - band)
    q = np.moveaxis(quad, -1, 0)  # (N, 2, T, 3)
    first = -2 * dots[0] + np.einsum("nkt,kj->ntj", q[..., 0], n2)
    second = -2 * dots[1] + np.einsum("nkt,kj->ntj", q[..., 1], n2)
    cross = 2 * np.einsum("nkt,kij->ntij", q[..., 2], uu)
    return first[..., :, None] + second[..., None, :] + cross


def fit_sprite(frame: np.ndarray, bands: np.ndarray, palette: np.ndarray, bbox: tuple[int, int, int, int]) -> tuple:
    """Least-squares sprite over blurs, sizes, shapes, patterns, colour pairs and positions near bbox.

    The model is background + a * (colour1 - background) + b * (colour2 - background).
    Returns (cost, (size, shape, pattern, colour1, colour2) indices).
    """
    h, w = frame.shape[:2]
    pad = max(SIZES.values()) + 2 * _MARGIN + 4
    res = np.pad(band_residual(frame, bands), ((0, 0), (pad, pad), (pad, pad)))
    u = palette[None] - bands[:, None]
    best, n_sp = (np.inf, None), len(SHAPES) * len(PATTERNS)
    for si, size in enumerate(SIZE_NAMES):
        lin_t, quad_t = _templates(SIZES[size])
        side = lin_t.shape[-1]
        tops, lefts = _offsets(bbox[0], bbox[2], SIZES[size]), _offsets(bbox[1], bbox[3], SIZES[size])
        win = np.lib.stride_tricks.sliding_window_view(res, (side, side), axis=(1, 2))
        win = win[:, tops[0] + pad : tops[-1] + pad + 1, lefts[0] + pad : lefts[-1] + pad + 1]
        # (6 * N, T * 2); einsum rather than a BLAS matmul, whose threads stall on a busy machine
        lin = np.einsum("np,mp->nm", win.reshape(-1, side * side), lin_t.reshape(-1, side * side))
        lin = lin.reshape(6, -1, len(lin_t), 2)
        cost = _pair_costs(lin, _band_sums(quad_t, tops, lefts, h, w), u)
        cost[..., np.arange(6), np.arange(6)] = np.inf
        i = int(np.argmin(cost))
        if cost.flat[i] < best[0]:
            _, t, c1, c2 = np.unravel_index(i, cost.shape)
            best = (float(cost.flat[i]), (si, (t % n_sp) // len(PATTERNS), t % len(PATTERNS), c1, c2))
    return best
