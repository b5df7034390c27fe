"""Alignment reward: open_clip image-text cosine between a scene's frames and its prompt.

Default: the tiny StoryWorld CLIP (architecture ``clip_config.json``, weights
``weights/clip_storyworld.pt``, trained by ``python -m reward_actors.train_clip``). Real use:
any open_clip architecture name (e.g. 'ViT-L-14') or the path of an open_clip model config
.json, plus a local checkpoint file. Nothing is ever downloaded; a missing file or an unknown
name raises at construction, so a randomly initialised model can never score silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F

from .types import SceneBatch, ScoreResult

CONFIG_PATH = Path(__file__).with_name("clip_config.json")
WEIGHTS_PATH = Path(__file__).parent / "weights" / "clip_storyworld.pt"


def register_model(model_name: str) -> str:
    """Resolve an open_clip architecture name or config .json path to a registered name."""
    import open_clip

    if model_name.endswith(".json"):
        path = Path(model_name)
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config {path} not found")
        missing = {"embed_dim", "vision_cfg", "text_cfg"} - json.loads(path.read_text()).keys()
        if missing:
            raise ValueError(f"{path} is not an open_clip model config: missing keys {sorted(missing)}")
        open_clip.add_model_config(path)  # registered under the file's stem
        return path.stem
    if model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {model_name!r}: pass a name from open_clip.list_models() "
            f"(e.g. 'ViT-L-14') or the path of an open_clip model config .json"
        )
    return model_name


def file_digest(paths: list[Path], salt: str) -> str:
    """Short sha256 of a salt string and the bytes of files, read in 16 MiB chunks."""
    h = hashlib.sha256(salt.encode())
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:12]


def read_calibration(checkpoint: Path) -> dict | None:
    """The {'slope', 'offset'} that train_clip stores next to its state_dict, else None."""
    if checkpoint.suffix in (".safetensors", ".npz", ".npy"):
        return None
    try:  # mmap: a multi-GB checkpoint is not read twice
        obj = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError):  # legacy, TorchScript or pickled-object files: none
        return None
    return obj.get("calibration") if isinstance(obj, dict) else None


def preprocess(frames: np.ndarray, size: int, mean: tuple, std: tuple, device: str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float32, normalised as the model was trained.

    Shortest side resized to ``size`` (bicubic, antialiased), centre crop, then (x - mean) / std,
    as open_clip's own transform does, in torch ops on the whole stack at once.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    m = torch.tensor(mean, dtype=x.dtype, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def even_indices(n_frames: int, k: int) -> np.ndarray:
    """Up to k frame indices spread evenly over [0, n_frames), first and last included."""
    return np.linspace(0, n_frames - 1, min(n_frames, k)).round().astype(int)


class _ClipModel(Protocol):
    """What this scorer uses of an open_clip model (``create_model`` is annotated as returning any
    ``nn.Module``; CLIP, CustomTextCLIP and CoCa all have these)."""

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...


class AlignmentScorer:
    """Scores how well each scene's frames match its prompt with an open_clip model.

    Score of a scene = m(mean over sampled frames of cos(image embedding, prompt embedding)).
    m is sigmoid(slope * cos + offset) when the checkpoint carries a calibration (train_clip
    fits one: the probability that the prompt, rather than a one-attribute edit of it, describes
    the scene); otherwise m(cos) = (cos + 1) / 2. Both are monotone and map into [0, 1].
    """

    def __init__(
        self,
        model_name: str | None = None,
        checkpoint: str | None = None,
        frames_per_scene: int = 8,
        device: str = "cpu",
    ) -> None:
        if frames_per_scene < 1:
            raise ValueError(f"frames_per_scene must be >= 1, got {frames_per_scene}")
        if model_name is None and checkpoint is None:
            model_name, checkpoint = str(CONFIG_PATH), str(WEIGHTS_PATH)
        if model_name is None or checkpoint is None:
            raise ValueError("pass both model_name and a local checkpoint path (or neither for the StoryWorld default)")
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise FileNotFoundError(f"open_clip checkpoint {ckpt} not found; weights are never downloaded")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a Hugging Face text tower must come from the local cache
        import open_clip

        registered = register_model(model_name)
        try:  # an absolute path is never mistaken for a pretrained tag (which would download)
            model = open_clip.create_model(
                registered, pretrained=str(ckpt.resolve()), device=device, require_pretrained=True, pretrained_text=False
            ).eval()
        except RuntimeError as e:
            raise ValueError(f"checkpoint {ckpt} does not load into open_clip model {registered!r}: {e}") from e
        self.model = cast(_ClipModel, model)
        self.tokenizer = open_clip.get_tokenizer(registered)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"]
        self.image_size = size if isinstance(size, int) else size[0]
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.calibration = read_calibration(ckpt)
        self.frames_per_scene, self.device = frames_per_scene, device
        self.name = f"open_clip:{registered}"
        files = [Path(model_name), ckpt] if model_name.endswith(".json") else [ckpt]
        self.version = f"{registered}@{file_digest(files, registered)}"

    @torch.inference_mode()
    def encode_frames(self, frames: list) -> tuple[torch.Tensor, list[int]]:
        """N scenes of (F_i, H, W, 3) uint8 -> ((sum k_i, D) unit embeddings, [k_i]), one forward."""
        picked = [f[even_indices(len(f), self.frames_per_scene)] for f in frames]
        counts = [len(p) for p in picked]
        stacks = [preprocess(p, self.image_size, self.mean, self.std, self.device) for p in picked]
        return self.model.encode_image(torch.cat(stacks), normalize=True), counts

    @torch.inference_mode()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """N prompts -> (N, D) unit embeddings, one forward."""
        return self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True)

    def cosines(self, batch: SceneBatch) -> np.ndarray:
        """(N,) float64 mean image-prompt cosine of each scene."""
        if len(batch) == 0:
            return np.zeros(0)
        images, counts = self.encode_frames(batch.frames)  # (sum k_i, D)
        texts = self.encode_prompts(batch.prompts)  # (N, D)
        owner = torch.repeat_interleave(torch.arange(len(batch), device=texts.device), torch.tensor(counts, device=texts.device))
        per_frame = (images * texts[owner]).sum(-1).double()  # (sum k_i,)
        sums = torch.zeros(len(batch), dtype=torch.float64, device=texts.device).index_add_(0, owner, per_frame)
        return (sums / torch.tensor(counts, dtype=torch.float64, device=texts.device)).cpu().numpy()

    def to_score(self, cos: np.ndarray) -> np.ndarray:
        """Monotone map of cosines in [-1, 1] to scores in [0, 1] (see the class docstring)."""
        if self.calibration is None:
            return (cos + 1.0) / 2.0
        z = self.calibration["slope"] * cos + self.calibration["offset"]
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, batch: SceneBatch) -> ScoreResult:
        """One score per scene of the batch; a non-finite embedding masks its scene."""
        cos = self.cosines(batch)
        valid = np.isfinite(cos)
        scores = np.where(valid, self.to_score(np.nan_to_num(cos)), np.nan)
        reasons = [None if v else "non-finite CLIP embedding" for v in valid]
        n_frames = sum(len(even_indices(len(f), self.frames_per_scene)) for f in batch.frames)
        return ScoreResult(scores, valid, reasons, self.name, self.version, {"frames_scored": n_frames})


def logistic_fit(x: np.ndarray, y: np.ndarray, ridge: float = 1.0, steps: int = 50) -> dict:
    """p(y=1 | x) = sigmoid(slope * x + offset) by Newton's method; x, y (N,) -> {'slope', 'offset'}.

    The ridge penalty on the slope keeps it finite when positives and negatives separate.
    """
    X = np.stack([x, np.ones_like(x)], 1)  # (N, 2)
    penalty = np.diag([ridge, 0.0])
    w = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-X @ w))
        hess = X.T @ (X * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(2)
        w -= np.linalg.solve(hess, X.T @ (p - y) + penalty @ w)
    if not all(math.isfinite(v) for v in w):
        raise ValueError(f"calibration fit diverged: {w}")
    return {"slope": float(w[0]), "offset": float(w[1])}
