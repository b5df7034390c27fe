"""Pixels of StoryWorld: sprites for identities, flat two-band backgrounds, motion of actions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .vocab import BACKGROUNDS, COLOURS, SIZES

HORIZON_FRACTION = 0.625  # sky above, ground below


@dataclass(frozen=True)
class Identity:
    """Who a character is: what the first prompt that names it describes."""

    shape: str
    colour1: str
    colour2: str
    pattern: str
    size: str

    def describe(self) -> str:
        return f"a {self.size} {self.colour1} and {self.colour2} {self.pattern} {self.shape}"

    def attributes(self) -> tuple[str, str, str, str, str]:
        return (self.shape, self.colour1, self.colour2, self.pattern, self.size)


@cache
def shape_mask(shape: str, side: int) -> np.ndarray:
    """(side, side) bool silhouette of a shape."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    c = side / 2.0
    if shape == "circle":
        m = (yy - c) ** 2 + (xx - c) ** 2 <= c * c
    elif shape == "square":
        m = np.ones((side, side), bool)
    elif shape == "triangle":  # apex up: half-width grows linearly with the row
        m = np.abs(xx - c) <= yy / 2.0
    elif shape == "diamond":
        m = np.abs(xx - c) + np.abs(yy - c) <= c
    elif shape == "cross":
        arm = side / 6.0
        m = (np.abs(xx - c) <= arm) | (np.abs(yy - c) <= arm)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m


@cache
def pattern_mask(pattern: str, side: int, shape: str) -> np.ndarray:
    """(side, side) bool: True where the sprite shows its second colour."""
    yy, xx = np.mgrid[0:side, 0:side]
    if pattern == "plain":  # second colour as a one-pixel outline
        m = shape_mask(shape, side)
        inner = np.zeros_like(m)
        inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        return m & ~inner
    if pattern == "striped":
        return (yy // 2) % 2 == 1
    if pattern == "dotted":
        return (yy % 4 >= 2) & (xx % 4 >= 2)
    if pattern == "checked":
        return ((yy // 2) + (xx // 2)) % 2 == 1
    raise ValueError(f"unknown pattern {pattern!r}")


@cache
def sprite(identity: Identity) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (s, s, 3) uint8, mask (s, s) bool) of a character."""
    side = SIZES[identity.size]
    mask = shape_mask(identity.shape, side)
    second = pattern_mask(identity.pattern, side, identity.shape)
    rgb = np.zeros((side, side, 3), np.uint8)
    rgb[:] = COLOURS[identity.colour1]
    rgb[second] = COLOURS[identity.colour2]
    rgb[~mask] = 0
    return rgb, mask


@cache
def background(name: str, size: int, width: int | None = None) -> np.ndarray:
    """(size, width or size, 3) uint8 template of a named background."""
    sky, ground, _ = BACKGROUNDS[name]
    img = np.empty((size, width or size, 3), np.uint8)
    horizon = round(size * HORIZON_FRACTION)
    img[:horizon] = sky
    img[horizon:] = ground
    return img


def action_offsets(action: str, n_frames: int) -> np.ndarray:
    """(n_frames, 2) float pixel offsets (dy, dx) of a character during one scene."""
    s = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    zero = np.zeros_like(s)
    if action == "bounce":
        return np.stack([-4.0 * np.abs(np.sin(2 * np.pi * s)), zero], 1)
    if action == "slide_left":
        return np.stack([zero, 5.0 - 10.0 * s], 1)
    if action == "slide_right":
        return np.stack([zero, -5.0 + 10.0 * s], 1)
    if action == "jump":
        return np.stack([-6.0 * np.sin(np.pi * s), zero], 1)
    if action == "hover":
        return np.stack([-1.0 * np.sin(2 * np.pi * s), zero], 1)
    if action == "zigzag":
        return np.stack([2.0 * s, 3.0 * np.where(np.arange(n_frames) % 2 == 0, -1.0, 1.0)], 1)
    raise ValueError(f"unknown action {action!r}")


def paste(frame: np.ndarray, identity: Identity, cy: float, cx: float) -> np.ndarray:
    """Draw a character centred at (cy, cx) in place; returns its (H, W) bool mask."""
    rgb, mask = sprite(identity)
    side = mask.shape[0]
    top, left = round(cy - side / 2), round(cx - side / 2)
    h, w = frame.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, h), min(left + side, w)
    full = np.zeros((h, w), bool)
    if y1 <= y0 or x1 <= x0:
        return full
    sub = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    frame[y0:y1, x0:x1][sub] = rgb[y0 - top : y1 - top, x0 - left : x1 - left][sub]
    full[y0:y1, x0:x1] = sub
    return full
