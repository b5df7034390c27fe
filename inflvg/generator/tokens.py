"""Frames <-> tokens. Full-resolution tokens are p x p patches; long-term tokens are
(p*m) x (p*m) patches (FAR-style asymmetric patchify: fewer, coarser tokens for distant frames).

Every token carries a position (t, y, x): frame index and its centre in full-patch units.
"""

from __future__ import annotations

import torch


def patchify(frames: torch.Tensor, side: int) -> torch.Tensor:
    """(B, H, W, 3) float -> (B, (H/side)*(W/side), side*side*3)."""
    b, h, w, c = frames.shape
    x = frames.reshape(b, h // side, side, w // side, side, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // side) * (w // side), side * side * c)


def unpatchify(tokens: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """(B, N, side*side*3) -> (B, size, size, 3)."""
    b, _ = tokens.shape[:2]
    g = size // side
    x = tokens.reshape(b, g, g, side, side, 3).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, size, size, 3)


def grid_positions(size: int, patch: int, merge: int) -> torch.Tensor:
    """(N, 2) (y, x) token centres in full-patch units for tokens made of merge x merge patches."""
    g = size // (patch * merge)
    yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    centre = (merge - 1) / 2.0
    return torch.stack([yy * merge + centre, xx * merge + centre], -1).reshape(-1, 2).float()


def with_time(yx: torch.Tensor, t: int) -> torch.Tensor:
    """(N, 2) -> (N, 3) positions of frame t."""
    return torch.cat([torch.full((yx.shape[0], 1), float(t), device=yx.device), yx], 1)


def to_unit(frames_u8) -> torch.Tensor:
    """uint8 frames (numpy or tensor) -> float in [-1, 1]."""
    return torch.as_tensor(frames_u8).float().div(127.5).sub(1.0)


def to_uint8(frames: torch.Tensor):
    """float frames in [-1, 1] -> uint8 numpy."""
    return frames.clamp(-1, 1).add(1.0).mul(127.5).round().to(torch.uint8).cpu().numpy()
