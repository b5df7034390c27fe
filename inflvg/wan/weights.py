"""Real Wan weights from local paths: the causal transformer from a Self-Forcing / CausVid /
LongLive style checkpoint, the VAE from a diffusers-layout folder. Nothing is downloaded.

Those projects save ``torch.save({"generator": state_dict, "generator_ema": state_dict, ...})``
where each state dict belongs to a wrapper whose ``model`` is Wan's own ``WanModel`` (or its
causal subclass), so keys read ``model.blocks.0.self_attn.q.weight``. ``wan_name`` maps each
parameter of diffusers' ``WanTransformer3DModel`` to that layout; loading checks every key and
shape and names the first that does not fit.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# diffusers name -> Wan name, applied in order (the first matching fragment wins per position)
_FRAGMENTS = (
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("proj_out.", "head.head."),
    ("attn1.to_out.0.", "self_attn.o."), ("attn2.to_out.0.", "cross_attn.o."),
    ("attn1.to_", "self_attn."), ("attn2.to_", "cross_attn."), ("attn1.", "self_attn."), ("attn2.", "cross_attn."),
    ("norm2.", "norm3."),  # diffusers' cross-attention norm is Wan's norm3
    ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."),
)  # fmt: skip
STATE_KEYS = ("generator_ema", "generator", "model", "state_dict")
"""Where a checkpoint keeps its state dict, in order of preference (EMA weights first)."""


def wan_name(key: str) -> str:
    """A parameter name of diffusers' WanTransformer3DModel -> its name in Wan's own layout."""
    if key == "scale_shift_table":
        return "head.modulation"
    if key.endswith(".scale_shift_table"):
        return key.replace(".scale_shift_table", ".modulation")
    for old, new in _FRAGMENTS:
        if old in key:
            return key.replace(old, new, 1)
    return key


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A Self-Forcing / CausVid / LongLive style file -> its transformer's state dict in Wan's layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Wan transformer checkpoint {str(path)!r} not found; weights are never downloaded")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(path)
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in STATE_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a state dict, or a dict holding one under one of {STATE_KEYS}")
    if all(k.startswith("model.") for k in obj):
        obj = {k[len("model."):]: v for k, v in obj.items()}
    return obj


def load_transformer(net, path: str | Path) -> None:
    """Load a causal checkpoint into diffusers' WanTransformer3DModel ``net``; every key and
    shape is checked first, and the first problem is a ValueError that names the key."""
    state = read_checkpoint(path)
    expected = {wan_name(k): k for k in net.state_dict()}
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks {len(missing)} key(s) this model needs, first {missing[0]!r} "
                         f"(diffusers name {expected[missing[0]]!r}); is it a Wan2.1 transformer of this preset?")  # fmt: skip
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ValueError(f"{path}: the checkpoint holds {len(unexpected)} key(s) this model does not have, first "
                         f"{unexpected[0]!r}")  # fmt: skip
    own = net.state_dict()
    for k, d in expected.items():
        if tuple(state[k].shape) != tuple(own[d].shape):
            raise ValueError(f"{path}: key {k!r} has shape {tuple(state[k].shape)} in the checkpoint, the model expects "
                             f"{tuple(own[d].shape)}: the checkpoint is for other dimensions than this preset")  # fmt: skip
    net.load_state_dict({d: state[k] for k, d in expected.items()})


def find_checkpoint(folder: Path) -> Path:
    """The one ``.pt`` / ``.pth`` / ``.safetensors`` file at the top of a Wan weights folder."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".pt", ".pth", ".safetensors"))
    if len(files) != 1:
        raise ValueError(f"Wan weights folder {str(folder)!r} must hold exactly one causal transformer checkpoint "
                         f"(.pt, .pth or .safetensors) at its top level, found {[p.name for p in files]}")  # fmt: skip
    return files[0]


def load_vae(folder: str | Path):
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

    folder = Path(folder) / "vae"
    if not folder.is_dir():
        raise FileNotFoundError(f"Wan weights folder has no vae/ at {str(folder)!r} (AutoencoderKLWan, diffusers layout)")
    return AutoencoderKLWan.from_pretrained(folder, local_files_only=True)


def offline() -> None:
    """Hugging Face libraries must not reach the network for anything."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
