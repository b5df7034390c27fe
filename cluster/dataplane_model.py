"""The records of one training step at a generator's shapes, built by the real code without allocating
the large arrays, and the serialized size of any record.

Shapes come from the real classes: the generator's ``GeneratorSpec`` (a Wan preset is built on the meta
device: no weights), its tokenizer on the real prompt texts (L), ``policy.candidate_features`` on meta
tensors (the policy's input width D = d_feature + N_EXTRA + 2L), ``Transition``/``Rollout`` filled with
zero-stride numpy views (``np.broadcast_to``: ``nbytes`` is the full size, no memory is used), and the
learner's padded batch from ``collate_transitions`` on the meta device.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import cast

import numpy as np
import torch

from inflvg.policy import candidate_features
from inflvg.prompts import PromptSet
from inflvg.protocol import Generator, Pool, load_backend
from inflvg.rollout import Rollout, Transition, collate_transitions
from inflvg.sampling import request_seeds


def wire_bytes(obj) -> int:
    """Serialized size of ``obj`` as Ray stores an object: pickle protocol 5 with every contiguous numpy
    buffer out of band, i.e. the in-band pickle plus the raw buffers (Ray's cloudpickle writes the same
    bytes for classes a module defines; its object store adds up to 64 bytes of alignment a buffer)."""
    buffers: list[pickle.PickleBuffer] = []
    inband = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(inband) + sum(b.raw().nbytes for b in buffers)


def arrays(obj) -> Iterator[np.ndarray]:
    """Every numpy array reachable through dataclass fields, lists, tuples and dict values."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            yield from arrays(getattr(obj, f.name))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from arrays(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from arrays(v)


def skeleton(obj):
    """``obj`` with every array of more than one element replaced by a (1, ..., 1, last axis) zero array
    of its dtype: what is left to pickle is the framing (classes, field names, scalars, strings)."""
    if isinstance(obj, np.ndarray):
        return obj if obj.size <= 1 else np.zeros((1,) * (obj.ndim - 1) + obj.shape[-1:], obj.dtype)
    if is_dataclass(obj) and not isinstance(obj, type):
        out = copy.copy(obj)  # no __post_init__: a frozen record's checks need not hold for the skeleton
        for f in fields(obj):
            object.__setattr__(out, f.name, skeleton(getattr(obj, f.name)))
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(skeleton(v) for v in obj)
    if isinstance(obj, dict):
        return {k: skeleton(v) for k, v in obj.items()}
    return obj


def modelled_bytes(obj) -> int:
    """Serialized size of ``obj`` without serializing its arrays: the framing of its skeleton, measured,
    plus every array's ``nbytes`` (zero-stride views count at their full logical size)."""
    skel = skeleton(obj)
    return wire_bytes(skel) + sum(a.nbytes for a in arrays(obj)) - sum(a.nbytes for a in arrays(skel))


def zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A read-only array of ``shape`` that uses one element of memory (what the model fills records with)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def spec_generator(name: str, weights: str | None = None) -> Generator:
    """The backend whose spec and tokenizer the model reads: StoryWorld as shipped (it is small); a Wan
    preset built on the meta device (no weights: its 1.4 B parameters take no memory)."""
    if not name.startswith("wan"):
        return load_backend(name, weights)
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

    from inflvg.wan.backend import WanGenerator
    from inflvg.wan.config import preset
    from inflvg.wan.model import CausalWan
    from inflvg.wan.text import WanText, tiny_encoder, tiny_tokenizer

    cfg = preset(name)
    with torch.device("meta"):  # the layout of backend.random_parts; only the tokenizer ever runs
        model = CausalWan(cfg)
        tok = tiny_tokenizer(cfg.max_prompt_tokens)
        text = WanText(tok, tiny_encoder(len(tok), cfg.text_dim), cfg.max_prompt_tokens)
        vae = AutoencoderKLWan(base_dim=cfg.vae_base_dim, z_dim=cfg.latent_channels, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
    return cast("Generator", WanGenerator(cfg, model, text, vae, device="meta"))


def _numpy_dtype(t: torch.Tensor) -> np.dtype:
    return torch.empty((), dtype=t.dtype).numpy().dtype


def model_transition(gen: Generator, prompt: str, scene: int, pool_size: int, budget_k: int) -> Transition:
    """The ``Transition`` ``LearnedStrategy`` records for one video at a scene change with ``pool_size``
    candidates: prompt length from the backend's tokenizer, features through ``candidate_features``."""
    spec = gen.spec
    length = gen.tokenizer.word_ids([prompt]).shape[1]
    rows, cols = spec.grid
    cell = np.arange(pool_size) % (rows * cols)
    pool = Pool(features=torch.empty(1, pool_size, spec.d_feature, device="meta"), frame=np.zeros(pool_size, np.int64),
                scene=np.zeros(pool_size, np.int64), row=cell // cols, col=cell % cols, grid=spec.grid)  # fmt: skip
    feats = candidate_features(pool.features, pool, max(scene, 1) * spec.frames_per_scene, torch.empty(1, pool_size, length, device="meta"))
    return Transition(
        scene=scene, features=zeros(tuple(feats.shape[1:]), _numpy_dtype(feats)),
        prompt_tokens=zeros((length, spec.d_prompt), np.float32),  # LearnedStrategy records tokens .float(), mask .bool()
        prompt_mask=zeros((length,), np.bool_), chosen=zeros((budget_k,), np.int64), logp_old=-1.0,
    )  # fmt: skip


def model_rollouts(gen: Generator, prompt_sets: list[PromptSet], group_size: int, pools: tuple[int, ...], budget_k: int,
                   frames_per_scene: int, families: list[str], scored: bool = True,
                   frame_shape: tuple[int, int] | None = None) -> list[Rollout]:  # fmt: skip
    """The P * G rollouts of a step as ``RolloutWorker.rollout`` returns them (``scored``: after
    ``score_rollouts`` filled ``scores``), one transition per scene change with pool ``pools[s - 1]``;
    frames of ``frame_shape`` (as ``RolloutConfig.frames_short_side`` leaves them), else the generator's."""
    height, width = frame_shape or gen.spec.frame_shape
    out = []
    for index, ps in enumerate(prompt_sets):
        if ps.n_scenes != len(pools) + 1:
            raise ValueError(f"prompt set {ps.id} has {ps.n_scenes} scenes; the pools name {len(pools)} scene changes")
        transitions = [model_transition(gen, ps.scenes[s], s, n, budget_k) for s, n in enumerate(pools, 1)]
        noise, sel = request_seeds(1 << 31, 1 << 31, index, group_size)
        frames = zeros((ps.n_scenes * frames_per_scene, height, width, 3), np.uint8)
        for g in range(group_size):
            scores = {f: np.zeros(ps.n_scenes, np.float32) for f in families} if scored else {}
            out.append(Rollout(
                prompt_set_id=ps.id, group_id=index, rollout_index=g, policy_version=1, noise_seed=noise, selection_seed=sel[g],
                scene_rewards=np.zeros(ps.n_scenes, np.float32), scores=scores, transitions=list(transitions),
                prompts=list(ps.scenes), frames=frames,
            ))  # fmt: skip
    return out


def collated_bytes(rollouts: list[Rollout]) -> int:
    """Bytes of the padded ``TransitionBatch`` the learner builds from all of a step's transitions
    (``collate_transitions``, run on the meta device)."""
    transitions = [t for r in rollouts for t in r.transitions]
    if not transitions:
        return 0
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", UserWarning)  # torch.from_numpy of a read-only view: nothing is written
        batch = collate_transitions(transitions)
    return sum(t.numel() * t.element_size() for t in vars(batch).values())
