"""Encode generated frames as a video a browser plays: MP4 (H.264, yuv420p) or GIF (the HTTP API,
the sample videos logged to MLflow). PyAV and Pillow are imported only when encoding."""

from __future__ import annotations

import io

import numpy as np


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest neighbour: (T, H, W, 3) -> (T, H*factor, W*factor, 3). Keeps the pixels crisp."""
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def short_side_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) scaled so that the shorter side is at most ``short_side`` (None: unchanged), aspect kept."""
    scale = 1.0 if short_side is None else min(1.0, short_side / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink(frames: np.ndarray, short_side: int | None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> frames whose shorter side is at most ``short_side`` (antialiased bilinear,
    as a reward model's preprocessing resizes); already small enough or None: the same array."""
    size = short_side_shape(frames.shape[1], frames.shape[2], short_side)
    if size == frames.shape[1:3]:
        return frames
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """(T, H, W, 3) uint8, H and W even -> MP4 bytes. yuv420p (4:2:0, what browsers decode) needs
    even sizes. The index sits at the end: clients get the whole file at once anyway."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def encode_gif(frames: np.ndarray, fps: int) -> bytes:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return buf.getvalue()


def encode(frames: np.ndarray, fmt: str, factor: int, fps: int) -> bytes:
    """(T, H, W, 3) uint8 frames -> bytes of the video in ``fmt`` ('mp4' or 'gif'), upscaled by ``factor``."""
    big = upscale(frames, factor)
    return encode_mp4(big, fps) if fmt == "mp4" else encode_gif(big, fps)
