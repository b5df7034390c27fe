"""The one record that crosses process boundaries: a ``Rollout`` carries
everything the learner needs to recompute log-probs without the generator.

Arrays are numpy; in Arrow/Parquet each array is a struct {data: raw bytes, shape, dtype}, so a
round trip is exact (bit for bit, NaN included). pyarrow is imported inside the functions that
use it, so importing the core stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class Transition:
    """One scene change of one video: the action (K pool tokens) and what the policy saw."""

    scene: int  # index of the scene whose context this selection fills
    features: np.ndarray  # (N, D) float32 candidate features the policy saw (D = d_feature + policy.N_EXTRA + 2L)
    prompt_tokens: np.ndarray  # (L, d_prompt) float32 prompt embedding tokens
    prompt_mask: np.ndarray  # (L,) bool, True on real prompt tokens
    chosen: np.ndarray  # (K,) int64 pool indices in pick order, -1 for an empty slot
    logp_old: float  # Plackett-Luce log-prob of ``chosen`` under the acting policy (fp32 value)


@dataclass
class Rollout:
    """One generated video of a GRPO group, with its per-scene rewards and selections."""

    prompt_set_id: str  # which prompt set (story) was generated
    group_id: int  # the GRPO group: rollouts of one prompt set at one step, same noise seed
    rollout_index: int  # position inside the group, 0..G-1
    policy_version: int  # version of the weights that acted
    noise_seed: int  # generator noise seed (shared inside a group)
    selection_seed: int  # seed of the policy's Gumbel noise (differs inside a group)
    scene_rewards: np.ndarray  # (S,) float32 total reward per scene, NaN where masked
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # component -> (S,) float32, NaN where masked
    transitions: list[Transition] = field(default_factory=list)  # one per scene change with a non-empty pool
    prompts: list[str] = field(default_factory=list)  # (S,) scene prompts
    frames: np.ndarray | None = None  # (T, H, W, 3) uint8 video, optional
    history_from: int = -1  # tree rollouts: rollout_index of the group's kept branch, whose frames are the history of every scene; -1: its own


@dataclass
class TransitionBatch:
    """Transitions padded into tensors for the learner."""

    features: torch.Tensor  # (M, N_max, D) float32, zeros on padding
    valid: torch.Tensor  # (M, N_max) bool, True on real candidates
    prompt_tokens: torch.Tensor  # (M, L_max, d_prompt) float32
    prompt_mask: torch.Tensor  # (M, L_max) bool
    chosen: torch.Tensor  # (M, K_max) int64, -1 for empty slots
    logp_old: torch.Tensor  # (M,) float32


def collate_transitions(transitions: list[Transition]) -> TransitionBatch:
    """Pad M transitions (pools and prompts of different sizes) into one ``TransitionBatch``."""
    if not transitions:
        raise ValueError("collate_transitions needs at least one transition")
    m = len(transitions)
    n = max(t.features.shape[0] for t in transitions)
    length = max(t.prompt_tokens.shape[0] for t in transitions)
    k = max(t.chosen.shape[0] for t in transitions)
    d, dp = transitions[0].features.shape[1], transitions[0].prompt_tokens.shape[1]
    out = TransitionBatch(
        features=torch.zeros(m, n, d), valid=torch.zeros(m, n, dtype=torch.bool),
        prompt_tokens=torch.zeros(m, length, dp), prompt_mask=torch.zeros(m, length, dtype=torch.bool),
        chosen=torch.full((m, k), -1, dtype=torch.long),
        logp_old=torch.tensor([t.logp_old for t in transitions], dtype=torch.float32),
    )  # fmt: skip
    for i, t in enumerate(transitions):
        ni, li, ki = t.features.shape[0], t.prompt_tokens.shape[0], t.chosen.shape[0]
        out.features[i, :ni] = torch.from_numpy(t.features)
        out.valid[i, :ni] = True
        out.prompt_tokens[i, :li] = torch.from_numpy(t.prompt_tokens)
        out.prompt_mask[i, :li] = torch.from_numpy(t.prompt_mask)
        out.chosen[i, :ki] = torch.from_numpy(t.chosen)
    return out


def group_rollouts(rollouts: list[Rollout]) -> list[list[Rollout]]:
    """Rollouts -> groups (sorted by group_id), each sorted by rollout_index; all of one size G."""
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group_id, []).append(r)
    out = [sorted(groups[g], key=lambda r: r.rollout_index) for g in sorted(groups)]
    sizes = {len(g) for g in out}
    if len(sizes) > 1:
        raise ValueError(f"every GRPO group must hold the same number of rollouts, got sizes {sorted(sizes)}")
    return out


def _array_type():
    import pyarrow as pa

    return pa.struct([("data", pa.large_binary()), ("shape", pa.list_(pa.int64())), ("dtype", pa.string())])


def _schema():
    import pyarrow as pa

    arr = _array_type()
    transition = pa.struct([
        ("scene", pa.int64()), ("features", arr), ("prompt_tokens", arr), ("prompt_mask", arr),
        ("chosen", arr), ("logp_old", pa.float64()),
    ])  # fmt: skip
    return pa.schema([
        ("prompt_set_id", pa.string()), ("group_id", pa.int64()), ("rollout_index", pa.int64()),
        ("policy_version", pa.int64()), ("noise_seed", pa.int64()), ("selection_seed", pa.int64()),
        ("scene_rewards", arr), ("scores", pa.list_(pa.struct([("name", pa.string()), ("value", arr)]))),
        ("transitions", pa.list_(transition)), ("prompts", pa.list_(pa.string())), ("frames", arr), ("history_from", pa.int64()),
    ])  # fmt: skip


def _pack(a: np.ndarray | None) -> dict | None:
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    return {"data": a.tobytes(), "shape": list(a.shape), "dtype": a.dtype.str}


def _decode(d: dict) -> np.ndarray:
    """A packed array of a field ``_row`` always fills (everything but ``frames``)."""
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def _unpack(d: dict | None) -> np.ndarray | None:
    if d is None:
        return None
    return _decode(d)


_ARRAYS = ("features", "prompt_tokens", "prompt_mask", "chosen")
_SCALARS = ("prompt_set_id", "group_id", "rollout_index", "policy_version", "noise_seed", "selection_seed", "history_from")


def _row(r: Rollout) -> dict:
    row = {f: getattr(r, f) for f in _SCALARS}
    row.update(scene_rewards=_pack(r.scene_rewards), frames=_pack(r.frames), prompts=list(r.prompts))
    row["scores"] = [{"name": k, "value": _pack(v)} for k, v in r.scores.items()]
    row["transitions"] = [
        {"scene": t.scene, "logp_old": float(t.logp_old), **{f: _pack(getattr(t, f)) for f in _ARRAYS}} for t in r.transitions
    ]
    return row


def to_arrow(rollouts: list[Rollout]):
    """Rollouts -> pyarrow.Table, one row per rollout (schema: ``_schema()``)."""
    import pyarrow as pa

    return pa.Table.from_pylist([_row(r) for r in rollouts], schema=_schema())


def from_arrow(table) -> list[Rollout]:
    """pyarrow.Table from ``to_arrow`` -> rollouts, arrays bit-for-bit equal to the originals."""
    out = []
    for row in table.to_pylist():
        transitions = [
            Transition(scene=t["scene"], logp_old=t["logp_old"], **{f: _decode(t[f]) for f in _ARRAYS})
            for t in row["transitions"]
        ]
        out.append(Rollout(
            **{f: row[f] for f in _SCALARS},
            scene_rewards=_decode(row["scene_rewards"]), scores={s["name"]: _decode(s["value"]) for s in row["scores"]},
            transitions=transitions, prompts=list(row["prompts"]), frames=_unpack(row["frames"]),
        ))  # fmt: skip
    return out


def write_parquet(rollouts: list[Rollout], path: str | Path, filesystem=None) -> None:
    """One row per rollout at ``path``: local, or a path inside ``filesystem`` (a ``pyarrow.fs.FileSystem``)."""
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    filesystem = filesystem or pafs.LocalFileSystem()
    filesystem.create_dir(str(Path(path).parent), recursive=True)
    pq.write_table(to_arrow(rollouts), str(path), filesystem=filesystem)


def read_parquet(path: str | Path) -> list[Rollout]:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no rollout file at {path}; write one with write_parquet(rollouts, path)")
    return from_arrow(pq.read_table(path))
