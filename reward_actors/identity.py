"""Identity-consistency reward (InfLVG): ArcFace cosine between the subject now and in the history.

For each scene with history, up to ``frames_new`` frames of the new scene and ``frames_history``
frames of the history are sampled evenly, the subject is detected in each, all crops of the
batch are embedded in one insightface ``get_feat`` call, and the score is the mean over every
(new, history) pair of the cosine clipped to [0, 1]. Frames without a detectable subject are
dropped and counted; a scene with no history or no subject on one side is masked with a reason.

The recognition model loads through ``insightface.model_zoo.get_model``, the loader of real
ArcFace packs: by default the shipped StoryWorld network (``train_identity.py``), or a local
ONNX file or model-pack folder (e.g. antelopev2's ``glintr100.onnx``). Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .detector import make_detector
from .device import onnx_providers
from .types import SceneBatch, ScoreResult

if TYPE_CHECKING:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

DEFAULT_RECOGNITION = Path(__file__).resolve().parent / "weights" / "identity_storyworld.onnx"


def _session_kwargs(num_threads: int, providers: list[str] | None = None) -> dict:
    kwargs: dict = {} if providers is None else {"providers": providers}
    if num_threads <= 0:
        return kwargs
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    return {**kwargs, "sess_options": opts}


def load_recognition(path: str | Path, num_threads: int = 0, device: str = "cpu") -> ArcFaceONNX:
    """A local ONNX file or model-pack folder -> insightface ``ArcFaceONNX`` (has ``get_feat``), its
    onnxruntime session on ``device`` ('cpu', or 'cuda' through CUDAExecutionProvider).

    A folder is either an insightface V2 package (``manifest.json``; its recognition task) or a
    legacy pack of ONNX files routed by input shape, as ``FaceAnalysis`` does (first recognition
    model in name order).
    """
    from insightface.model_zoo import model_zoo
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.package_manifest import has_model_package_manifest

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"identity recognition model not found at {p}: pass a local ArcFace .onnx file or an insightface model-pack folder "
            "(nothing is downloaded)"
        )
    kwargs = _session_kwargs(num_threads, onnx_providers(device))
    if p.is_file():
        candidates = [p]
    elif has_model_package_manifest(p):
        model = model_zoo.get_model(str(p.resolve()), model_task="recognition", **kwargs)
        if not isinstance(model, ArcFaceONNX):  # what insightface builds for a package's recognition task
            raise ValueError(f"{p}: insightface built {type(model).__name__} for the package's recognition task, not ArcFaceONNX")
        return model
    else:
        candidates = sorted(p.glob("*.onnx"))
    for onnx_file in candidates:
        model = model_zoo.get_model(str(onnx_file.resolve()), **kwargs)
        if isinstance(model, ArcFaceONNX):  # the one model class insightface routes recognition ("taskname") to
            return model
    raise ValueError(
        f"no insightface recognition model in {p}: insightface routes ONNX files with one square input of side >= 112 "
        "(a multiple of 16) to ArcFaceONNX"
    )


def sample_frames(frames: np.ndarray, k: int) -> np.ndarray:
    """(F, H, W, 3) -> (min(F, k), H, W, 3) frames evenly spaced over the scene, ends included."""
    if len(frames) <= k:
        return frames
    return frames[np.unique(np.linspace(0, len(frames) - 1, k).round().astype(int))]


class IdentityScorer:
    """Per-scene identity consistency in [0, 1] for a ``SceneBatch`` with history. ``device`` ('cpu' or
    'cuda') is where the ONNX recognition model (and an insightface detector) run."""

    def __init__(
        self, recognition: str | None = None, detector: str = "storyworld", frames_new: int = 8, frames_history: int = 8, num_threads: int = 0,
        device: str = "cpu",
    ):  # fmt: skip
        if frames_new < 1 or frames_history < 1:
            raise ValueError(f"frames_new and frames_history must be >= 1, got {frames_new}, {frames_history}")
        self.device = device
        self.model = load_recognition(DEFAULT_RECOGNITION if recognition is None else recognition, num_threads, device)
        self.detector = make_detector(detector, device)
        self.frames_new, self.frames_history = frames_new, frames_history
        onnx_file = Path(str(self.model.model_file))  # the path insightface loaded (never None for ArcFaceONNX)
        self.name = f"arcface:{onnx_file.stem}"
        self.version = hashlib.sha256(onnx_file.read_bytes()).hexdigest()[:12]

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """N RGB uint8 crops (any sizes) -> (N, D) float32 L2-normalised embeddings, one get_feat call."""
        bgr = [np.ascontiguousarray(c[..., ::-1]) for c in crops]  # insightface takes BGR images
        feats = np.asarray(self.model.get_feat(bgr), np.float32).reshape(len(crops), -1)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def _crops(self, frames: np.ndarray, k: int) -> tuple[list[np.ndarray], int]:
        """-> (subject crops of up to k sampled frames, number of sampled frames without a subject)."""
        sampled = sample_frames(frames, k)
        crops = [c for c in (self.detector.crop(f) for f in sampled) if c is not None]
        return crops, len(sampled) - len(crops)

    def score(self, batch: SceneBatch) -> ScoreResult:
        """N scenes -> ScoreResult with (N,) scores: mean over new x history crop pairs of clip(cos, 0, 1)."""
        n = len(batch)
        history = batch.history if batch.history is not None else [None] * n
        reasons: list = [None] * n
        crops: list[np.ndarray] = []
        spans: dict[int, tuple[int, int, int]] = {}  # scene -> (start, n_new, n_history) in crops
        dropped = 0
        for i in range(n):
            past = history[i]
            if past is None:
                reasons[i] = "no history"
                continue
            new, miss_new = self._crops(batch.frames[i], self.frames_new)
            old, miss_old = self._crops(past, self.frames_history)
            dropped += miss_new + miss_old
            if not new:
                reasons[i] = "no subject detected in the new scene"
            elif not old:
                reasons[i] = "no subject detected in the history"
            else:
                spans[i] = (len(crops), len(new), len(old))
                crops += new + old
        scores = np.full(n, np.nan)
        if crops:
            feats = self.embed(crops)  # (total crops, D)
            for i, (s, a, b) in spans.items():
                cos = feats[s : s + a] @ feats[s + a : s + a + b].T  # (a, b)
                scores[i] = float(np.clip(cos, 0.0, 1.0).mean())
        counts = {"frames_without_subject": dropped, "frames_compared": len(crops), "scenes_masked": n - len(spans)}
        return ScoreResult(scores, ~np.isnan(scores), reasons, self.name, self.version, counts)
