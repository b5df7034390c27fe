"""Artifact reward from a vision-language judge (the InfLVG protocol).

The model is asked a yes/no question about each sampled frame of a scene; a frame's score is
P(yes) / (P(yes) + P(no)) from the next-token logits after the prompt, summed over the first
token ids of "yes"/"Yes" and "no"/"No" (with and without a leading space); a scene's score is
the mean over its sampled frames. The model loads with ``transformers`` Auto classes from a
LOCAL checkpoint folder only (config.json, weights, processor files); nothing is downloaded,
and a folder that cannot give a fully loaded model raises at construction.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub are imported
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from .types import SceneBatch, ScoreResult

DEFAULT_QUESTION = "Is this video frame free of visual artifacts such as distortion, flicker, blur or noise? Answer yes or no."
YES, NO = ("yes", "Yes", " yes", " Yes"), ("no", "No", " no", " No")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
EXPECTED = "a local transformers vision-language checkpoint folder (config.json, *.safetensors or *.bin weights, processor/tokenizer files)"


def weights_version(path: Path) -> str:
    """Short sha256 over the folder's weight files (names and contents, sorted)."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise ValueError(f"VLM judge: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {str(path)!r}; expected {EXPECTED}")
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def answer_ids(tokenizer, words: tuple[str, ...]) -> set[int]:
    """First token id of each word, leaving out the unknown token."""
    firsts = (tokenizer.encode(w, add_special_tokens=False)[:1] for w in words)
    return {t[0] for t in firsts if t} - {tokenizer.unk_token_id}


def frame_indices(n_frames: int, k: int) -> np.ndarray:
    """k evenly spaced frame indices in [0, n_frames), duplicates dropped: (<= k,) int."""
    return np.unique(np.linspace(0, n_frames - 1, k).round().astype(int))


class VLMJudge:
    """Batched yes/no artifact judge; ``score`` returns P(clean) per scene."""

    def __init__(self, path: str, question: str = DEFAULT_QUESTION, frames_per_scene: int = 4, device: str = "cpu", max_images: int = 32):
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"VLM judge: no model folder at {str(root)!r}; expected {EXPECTED}. Nothing is downloaded.")
        if not (root / "config.json").is_file():
            raise ValueError(f"VLM judge: {str(root)!r} has no config.json; expected {EXPECTED}")
        if frames_per_scene < 1 or max_images < 1:
            raise ValueError(f"VLM judge: frames_per_scene and max_images must be >= 1, got {frames_per_scene}, {max_images}")
        self.version = weights_version(root)
        self.question, self.frames_per_scene, self.device, self.max_images = question, frames_per_scene, device, max_images
        self.processor, self.model = self._load(root, device)
        raw = json.loads((root / "config.json").read_text())
        self.name = f"{self.model.config.model_type}:{raw.get('_name_or_path') or root.name}"
        tok = self.processor.tokenizer
        tok.padding_side = "right"  # real tokens keep positions 0..L-1, so batching cannot change them
        if tok.pad_token is None:  # padding is never read: logits are taken at the last real token
            tok.pad_token = tok.eos_token or tok.unk_token
        self.yes, no = answer_ids(tok, YES), answer_ids(tok, NO)
        self.yes, self.no = sorted(self.yes - no), sorted(no - self.yes)
        if not self.yes or not self.no:
            raise ValueError(f"VLM judge: the tokenizer of {str(root)!r} has no distinct tokens for yes/no")
        self.prompt = self._prompt()
        self._keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    @staticmethod
    def _load(root: Path, device: str):
        """(processor, model in eval mode on ``device``); raises ValueError naming the folder."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        try:
            processor = AutoProcessor.from_pretrained(str(root), local_files_only=True)
            # output_loading_info=True makes it a (model, info) pair, which transformers' annotation does not say; the
            # model stays Any: PreTrainedModel.to is wrapped (functools.wraps) in a way type checkers cannot bind
            loaded = AutoModelForImageTextToText.from_pretrained(str(root), local_files_only=True, dtype=dtype, output_loading_info=True)
            model, info = cast("tuple[Any, dict[str, Any]]", loaded)
        except Exception as e:  # re-raised naming the folder
            raise ValueError(
                f"VLM judge: cannot load a vision-language model + processor from {str(root)!r} ({type(e).__name__}: {e}); expected {EXPECTED}"
            ) from e
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ValueError(
                f"VLM judge: {str(root)!r} lacks weights for {len(missing)} parameters (e.g. {missing[:3]}); refusing to score with random weights"
            )
        if getattr(processor, "tokenizer", None) is None:
            raise ValueError(f"VLM judge: the processor in {str(root)!r} has no tokenizer; expected {EXPECTED}")
        return processor, model.to(device).eval()

    def _prompt(self) -> str:
        """The chat-formatted question when the processor has a chat template, else a plain prompt."""
        if getattr(self.processor, "chat_template", None):
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.question}]}]
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        token = getattr(self.processor, "image_token", None) or "<image>"
        return f"{token}\n{self.question}\nAnswer:"

    @torch.inference_mode()
    def p_yes(self, images: list) -> np.ndarray:
        """B PIL images -> (B,) float64 P(yes | yes or no), one forward pass (right padding)."""
        inputs = self.processor(images=images, text=[self.prompt] * len(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self.device, dtype=self.model.dtype)  # floating tensors only (pixel values)
        mask = inputs["attention_mask"]  # (B, L)
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)  # (B,) last real token
        if self._keep:
            keep = torch.unique(last)  # (U,) positions whose logits are needed
            logits = self.model(**inputs, logits_to_keep=keep).logits  # (B, U, V)
            last = torch.searchsorted(keep, last)
        else:
            logits = self.model(**inputs).logits  # (B, L, V)
        final = logits[torch.arange(len(images)), last].float()  # (B, V)
        margin = torch.logsumexp(final[:, self.yes], -1) - torch.logsumexp(final[:, self.no], -1)
        return torch.sigmoid(margin).double().cpu().numpy()

    def _scene_images(self, frames: np.ndarray) -> list:
        """(F, H, W, 3) uint8 -> up to ``frames_per_scene`` PIL images."""
        from PIL import Image

        return [Image.fromarray(frames[i]) for i in frame_indices(len(frames), self.frames_per_scene)]

    def _chunks(self, images: dict) -> list[list[int]]:
        """Scene indices grouped so each forward pass sees about ``max_images`` images."""
        out, cur, count = [], [], 0
        for i, ims in images.items():
            if cur and count + len(ims) > self.max_images:
                out, cur, count = [*out, cur], [], 0
            cur, count = [*cur, i], count + len(ims)
        return [*out, cur] if cur else out

    def score(self, batch: SceneBatch) -> ScoreResult:
        """N scenes -> (N,) P(clean); a scene the model fails on is masked with the reason."""
        n = len(batch)
        scores, images = np.full(n, np.nan), {}
        reasons: list[str | None] = [None] * n
        for i, frames in enumerate(batch.frames):
            try:
                images[i] = self._scene_images(frames)
            except Exception as e:  # noqa: BLE001 -- masked with the reason, never scored
                reasons[i] = f"vlm judge: frames unusable ({type(e).__name__}: {e})"
        for chunk in self._chunks(images):
            try:  # all scenes of the chunk in one forward pass ...
                p = self.p_yes([im for i in chunk for im in images[i]])
                sizes = np.cumsum([0] + [len(images[i]) for i in chunk])
                per_scene = {i: p[sizes[k] : sizes[k + 1]] for k, i in enumerate(chunk)}
            except Exception:  # noqa: BLE001 -- ... else scene by scene, to mask only the failing ones
                per_scene = {}
                for i in chunk:
                    try:
                        per_scene[i] = self.p_yes(images[i])
                    except Exception as e:  # noqa: BLE001
                        reasons[i] = f"vlm judge: model failed ({type(e).__name__}: {e})"
            for i, p in per_scene.items():
                if np.isfinite(p).all():
                    scores[i] = p.mean()
                else:
                    reasons[i] = "vlm judge: non-finite logits"
        valid = np.array([r is None for r in reasons], bool)
        counts = {"frames_judged": sum(len(images[i]) for i in np.flatnonzero(valid)), "scenes_masked": int(n - valid.sum())}
        return ScoreResult(scores, valid, reasons, self.name, self.version, counts)
