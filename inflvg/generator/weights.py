"""Saving and loading generator weights together with the configs they were trained with."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..config import ContextConfig, GeneratorConfig, WorldConfig
from .model import Generator

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "generator.pt"


def save_generator(model: Generator, world: WorldConfig, ctx: ContextConfig, path: str | Path, meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "generator_config": asdict(model.cfg),
        "world_config": asdict(world),
        "context_config": asdict(ctx),
        "state_dict": model.state_dict(),
        "meta": meta,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written weights file


def _weights_path(path: str | Path | None) -> Path:
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"generator weights not found at {str(path)!r}; pass an existing file, or remake the "
            f"shipped ones with `python -m inflvg.generator.train --out {DEFAULT_WEIGHTS}`"
        )
    return path


def read_configs(path: str | Path | None = None) -> dict:
    """The configs saved with the weights (no model is built)."""
    blob = torch.load(_weights_path(path), map_location="cpu", weights_only=True)
    return {k: blob[k] for k in ("generator_config", "world_config", "context_config")}


def load_generator(path: str | Path | None = None, device: str = "cpu", strict: bool = True):
    """-> (Generator in eval mode, WorldConfig, ContextConfig, meta). Default: the shipped weights.

    strict=False lets training continue from weights that predate a newly added parameter
    (it keeps its initialisation); everything else loads strictly."""
    path = _weights_path(path)
    blob = torch.load(path, map_location=device, weights_only=True)
    world = WorldConfig(**blob["world_config"])
    model = Generator(GeneratorConfig(**blob["generator_config"]), world.frame_size)
    _missing, unexpected = model.load_state_dict(blob["state_dict"], strict=strict)
    if unexpected:
        raise ValueError(f"generator weights at {str(path)!r} hold parameters this model lacks: {unexpected[:5]}")
    model.to(device).eval().requires_grad_(False)
    return model, world, ContextConfig(**blob["context_config"]), blob["meta"]
