"""3-axis rotary position embedding (t, y, x) with frequency-aware temporal scaling (FLEX).

Head dimensions are split into rotary pairs: head_dim/8 pairs for time, the rest shared by y and x.
Cached keys are stored *without* rotation; rotation is applied when a context is assembled, so a
video longer than the training horizon can rescale its temporal frequencies at any time.

FLEX (Frequency-aware Length EXtension, arXiv 2602.14027): a temporal component whose wavelength
is longer than the training horizon never completed a period in training, so its positions are
interpolated by s = max_distance / horizon; components with many periods inside the horizon are
left to extrapolate; those in between are blended linearly (a ramp over 1..4 periods).
"""

from __future__ import annotations

import math

import torch

TIME_BASE = 100.0
SPACE_BASE = 10.0


def pair_split(head_dim: int) -> tuple[int, int, int]:
    """Rotary pairs given to (t, y, x)."""
    pairs = head_dim // 2
    nt = max(1, head_dim // 8)
    ny = (pairs - nt) // 2
    return nt, ny, pairs - nt - ny


def temporal_freqs(nt: int, horizon: int, max_distance: float, scaling: str, device: torch.device | str | None = None) -> torch.Tensor:
    """(nt,) angular frequencies of the temporal axis, FLEX-scaled for long videos, made on ``device``
    (None: the default device). Computed in float64 where the device has it (not MPS)."""
    dtype = torch.float32 if torch.device(device if device is not None else "cpu").type == "mps" else torch.float64
    freqs = TIME_BASE ** (-torch.arange(nt, dtype=dtype, device=device) / nt)
    scale = max(1.0, max_distance / horizon)
    if scaling == "none" or scale == 1.0:
        return freqs.float()
    periods = horizon * freqs / (2 * math.pi)  # periods seen inside the training horizon
    keep = ((periods - 1.0) / 3.0).clamp(0.0, 1.0)  # 0: interpolate fully, 1: extrapolate
    return (keep * freqs + (1 - keep) * freqs / scale).float()


def rope_tables(pos: torch.Tensor, head_dim: int, t_freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pos (..., N, 3) -> cos, sin (..., N, head_dim/2). Every table is made on pos's device (t_freqs is
    moved there if it is elsewhere), so CUDA or any other device's positions never meet a CPU tensor."""
    _, ny, nx = pair_split(head_dim)
    t_freqs = t_freqs.to(pos.device)
    fy = SPACE_BASE ** (-torch.arange(ny, dtype=torch.float32, device=pos.device) / ny)
    fx = SPACE_BASE ** (-torch.arange(nx, dtype=torch.float32, device=pos.device) / nx)
    ang = torch.cat([pos[..., 0:1] * t_freqs, pos[..., 1:2] * fy, pos[..., 2:3] * fx], -1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, N, hd); cos/sin (B or 1, N, hd/2) -> rotated x."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1)
    return out.flatten(-2)
