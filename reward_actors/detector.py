"""Subject detectors for the identity reward: a frame in, a square crop of its subject out (or None).

``StoryWorldDetector`` is analytic (numpy): StoryWorld backgrounds are two flat muted bands and
characters are saturated, so the subject is the largest blob of pixels far from their band's
colour. Its crop has a fixed side (a fraction of the frame), centred on the blob, so a
character's size survives the resize to the recognition network's input.

``InsightFaceDetector`` wraps insightface's own detector (SCRFD) from a local ONNX file or
model-pack folder, for real footage; crops are aligned with its five keypoints when it has them.
``make_detector`` picks one from a config string.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inflvg.world.readers import band_colours
from inflvg.world.readers_fit import box_count, horizon_row, largest_component

from .device import onnx_providers

FG_DISTANCE = 40.0  # a pixel this far from its band's colour is not background
MIN_SUBJECT_PIXELS = 8
CROP_FRACTION = 0.625  # crop side / frame side: 20 px of a 32 px frame holds the largest sprite (14 px)


def square_crop(frame: np.ndarray, centre: tuple[float, float], side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (side, side, 3) uint8 window centred at (cy, cx), edge-padded at borders."""
    top = round(centre[0] - side / 2.0)
    left = round(centre[1] - side / 2.0)
    p = side  # enough padding for any centre inside the frame
    padded = np.pad(frame, ((p, p), (p, p), (0, 0)), mode="edge")
    return padded[top + p : top + p + side, left + p : left + p + side].copy()


def background_distance(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float colour distance of each pixel to its band's median colour.

    Within a row of the horizon either band counts, so a blurred horizon is not foreground.
    """
    h = frame.shape[0]
    hz = horizon_row(h)
    x = frame.astype(np.float32)
    d = np.linalg.norm(x[None] - band_colours(frame)[:, None, None, :], axis=-1)  # (2, H, W)
    own = np.where((np.arange(h) < hz)[:, None], d[0], d[1])
    near = (np.abs(np.arange(h) - hz + 0.5) <= 1.5)[:, None]
    return np.where(near, d.min(0), own)


class StoryWorldDetector:
    """Analytic StoryWorld subject detector (no model)."""

    name = "storyworld"

    def __init__(self, crop_fraction: float = CROP_FRACTION, min_pixels: int = MIN_SUBJECT_PIXELS):
        self.crop_fraction = crop_fraction
        self.min_pixels = min_pixels

    def bbox(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        """(H, W, 3) uint8 -> (y0, x0, y1, x1) of the subject blob, end exclusive; None if none."""
        fg = background_distance(frame) > FG_DISTANCE
        comp = largest_component(fg & (box_count(fg) >= 4))  # drop isolated noise pixels
        if comp.sum() < self.min_pixels:
            return None
        ys, xs = np.nonzero(comp)
        return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1

    def crop_box(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """(H, W, 3) uint8 and a subject box -> (S, S, 3) uint8 crop, S = crop_fraction * H (or the box)."""
        y0, x0, y1, x1 = box
        side = max(round(self.crop_fraction * frame.shape[0]), y1 - y0 + 2, x1 - x0 + 2)
        return square_crop(frame, ((y0 + y1) / 2.0, (x0 + x1) / 2.0), side)

    def crop(self, frame: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (S, S, 3) uint8 RGB crop of the subject, or None."""
        box = self.bbox(frame)
        return None if box is None else self.crop_box(frame, box)


class InsightFaceDetector:
    """insightface's face detector (SCRFD) from a local ONNX file or model-pack folder.

    The crop is the ArcFace-aligned face (``face_align.norm_crop``) when the detector gives
    keypoints, else a square around the box enlarged by ``margin``; the highest-scoring face wins.
    """

    def __init__(self, path: str, det_size: tuple[int, int] = (640, 640), det_thresh: float = 0.5, crop_size: int = 112, margin: float = 1.3,
                 device: str = "cpu"):  # fmt: skip
        from insightface.app import FaceAnalysis
        from insightface.model_zoo import model_zoo
        from insightface.model_zoo.retinaface import RetinaFace
        from insightface.model_zoo.scrfd import SCRFD

        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(
                f"insightface detector not found at {p}: pass a local SCRFD .onnx file or a model-pack folder holding one (nothing is downloaded)"
            )
        providers = onnx_providers(device)  # CPU only unless the replica reserved a GPU
        if p.is_dir():
            model = FaceAnalysis(name=str(p.resolve()), allowed_modules=["detection"], providers=providers).det_model
        else:
            model = model_zoo.get_model(str(p), providers=providers)
        if not isinstance(model, (SCRFD, RetinaFace)):  # insightface's detection models (taskname "detection")
            raise ValueError(f"{p} is not an insightface detection model (insightface routed it to {type(model).__name__})")
        model.prepare(0 if device == "cuda" else -1, input_size=tuple(det_size), det_thresh=det_thresh)  # -1: CPU provider only
        self.model, self.name = model, f"insightface:{p.name}"
        self.crop_size, self.margin = crop_size, margin

    def crop(self, frame: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (crop_size, crop_size, 3) uint8 RGB face crop, or None."""
        from insightface.utils import face_align

        bgr = np.ascontiguousarray(frame[..., ::-1])
        boxes, kpss = self.model.detect(bgr, max_num=1)
        if len(boxes) == 0:
            return None
        if kpss is not None and len(kpss):
            return face_align.norm_crop(bgr, landmark=kpss[0], image_size=self.crop_size)[..., ::-1].copy()
        x0, y0, x1, y1 = boxes[0, :4]
        side = max(round(self.margin * max(x1 - x0, y1 - y0)), 2)
        return square_crop(frame, ((y0 + y1) / 2.0, (x0 + x1) / 2.0), side)


def make_detector(spec: str, device: str = "cpu") -> StoryWorldDetector | InsightFaceDetector:
    """'storyworld' -> the analytic detector (numpy, no model); otherwise a local insightface detector
    path, run on ``device``."""
    if spec == "storyworld":
        return StoryWorldDetector()
    return InsightFaceDetector(spec, device=device)
