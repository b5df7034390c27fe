"""The learner role: a DeepSpeed engine over the ``SelectionPolicy``, updated with GRPO
(Shao et al. 2024) on the selections of InfLVG rollouts (arXiv 2505.17574).

``Learner`` is a plain class: ``ray.remote(Learner)`` makes it an actor (``cluster/`` does, with
``num_gpus`` from the config), and tests use it in-process. One instance is one DeepSpeed rank;
alone it sets up its own world of one on loopback.

    learner = Learner(cfg)
    metrics = learner.update(rollouts)          # credit -> clipped GRPO epochs -> version + 1
    version, state_dict = learner.weights()     # cpu fp32, for ray.put -> rollout workers
    path = learner.save_checkpoint(root, driver_state)   # root: a folder or a storage URI; atomic
    learner.load_checkpoint(root)                        # resumes exactly
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import torch

from inflvg.policy import SelectionPolicy
from inflvg.rollout import Rollout, TransitionBatch
from inflvg.storage import Storage, write_atomic
from inflvg.update import Shard, grpo_update, shard_update

from . import checkpoint as ckpt
from .config import LearnerConfig

ENGINE_TAG = "engine"  # DeepSpeed's sub-directory (its "tag") inside one checkpoint directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _world_of_one_env() -> None:
    """Rendezvous variables for a single process, unless a launcher set a larger world. A world of
    one always takes a fresh loopback port: inherited values (a Ray worker inherits its driver's
    environment) may name a port that another process already holds."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))


def warn_stale_build_locks(root: Path | None = None, older_than_s: float = 300.0) -> list[Path]:
    """torch's build locks (``<root>/<python_device>/<op>/lock``) older than ``older_than_s``, each named on
    stderr. DeepSpeed compiles an op with g++ at the first start (about 45 s); a process killed
    during that compile leaves its lock behind and every later learner waits on it without a word,
    so say which file to delete. (Only said: a lock that old may still be a live compile on a loaded machine.)"""
    import sys

    from torch.utils.cpp_extension import get_default_build_root

    root = Path(root or os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    stale = [p for p in root.glob("*/*/lock") if time.time() - p.stat().st_mtime > older_than_s]
    for p in stale:
        print(f"learner: a build lock from {time.ctime(p.stat().st_mtime)} may hold this start: {p}; "
              "if no other process is compiling that op, delete the file", file=sys.stderr, flush=True)  # fmt: skip
    return stale


def deepspeed_config(cfg: LearnerConfig, world_size: int) -> dict:
    """The DeepSpeed config dict of a ``LearnerConfig``: one optimizer step per minibatch."""
    config = {
        "train_micro_batch_size_per_gpu": cfg.minibatch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": cfg.minibatch_size * world_size,
        # torch's AdamW: the policy is small, and it needs no compiled op on any accelerator
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "torch_adam": True}},
        "zero_optimization": {"stage": cfg.zero_stage},
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": cfg.dtype == "bf16"},
        "steps_per_print": 2**31 - 1,
    }
    if cfg.dtype == "bf16":
        config["communication_data_type"] = "fp32"  # sum gradients across ranks in fp32, not bf16
    return config


class Learner:
    """GRPO learner over a ``SelectionPolicy`` wrapped in a DeepSpeed engine (ZeRO 0-3, fp32/bf16)."""

    def __init__(self, cfg: LearnerConfig, init_weights: dict | None = None):
        t0 = time.perf_counter()
        if cfg.uses_gpu and not torch.cuda.is_available():
            raise RuntimeError(f"LearnerConfig.num_gpus={cfg.num_gpus} but CUDA is not available here; use num_gpus=0")
        self.cfg, self.version = cfg, 0
        self.scratch = Path(tempfile.mkdtemp(prefix="inflvg-learner-"))  # staging for checkpoints in a storage URI
        if not cfg.uses_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read once, when deepspeed is first imported
        _world_of_one_env()
        warn_stale_build_locks()
        import deepspeed
        from deepspeed import comm as dist

        deepspeed.init_distributed(dist_backend=cfg.resolved_backend(torch.cuda.is_available()), verbose=False)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            policy = SelectionPolicy(cfg.policy)
        if init_weights is not None:
            policy.load_state_dict(init_weights)
        self.reference = self._frozen_copy(policy.state_dict()) if cfg.kl_beta > 0 else None
        world = dist.get_world_size()
        # no model_parameters: DeepSpeed then optimises all of the module's parameters
        self.engine, *_ = deepspeed.initialize(model=policy, config=deepspeed_config(cfg, world))
        # a torch.device: DeepSpeed sets it from the local rank, which _world_of_one_env or the launcher provides
        self.device = cast(torch.device, self.engine.device)
        if self.reference is not None:
            self.reference.to(self.device)
        self.init_seconds = time.perf_counter() - t0

    def _frozen_copy(self, state_dict: dict) -> SelectionPolicy:
        """The KL reference: an fp32 copy outside DeepSpeed, never updated."""
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten: leave the caller's RNG be
            ref = SelectionPolicy(self.cfg.policy)
        ref.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return ref.requires_grad_(False).eval()

    @property
    def _module(self) -> torch.nn.Module:
        """The ``SelectionPolicy`` the engine wraps (DeepSpeed keeps the module it was given)."""
        return cast(torch.nn.Module, self.engine.module)

    def _logits(self, policy: torch.nn.Module, mb: TransitionBatch) -> torch.Tensor:
        """(M, N) logits, -inf on padding; inputs in the engine's dtype (the log-probs are fp32 anyway)."""
        dtype = torch.bfloat16 if policy is self.engine and self.cfg.dtype == "bf16" else torch.float32
        return policy(mb.features.to(dtype), mb.prompt_tokens.to(dtype), mb.prompt_mask, mb.valid)

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One GRPO update on complete groups of rollouts -> metrics (version is the new one).

        ``inflvg.update.grpo_update``, the update refinement runs too, with DeepSpeed taking
        each step; with no transition left to learn from, no step is taken and the version
        stays. With several ranks, each must get a share giving the same number of steps."""
        t0 = time.perf_counter()
        metrics = grpo_update(rollouts, lambda mb: self._logits(self.engine, mb), self._step, self.cfg.update,
                              self.version, self.device, self._reference_logits())  # fmt: skip
        if metrics["optimizer_steps"]:
            self.version += 1
        return metrics | {"version": self.version, "seconds": time.perf_counter() - t0}

    def update_shard(self, shard: Shard) -> dict[str, float]:
        """This rank's part of one GRPO update whose credit the driver computed (``inflvg.update.Shard``):
        every rank of the world calls it at once with its own shard, DeepSpeed all-reduces the
        gradients, and every rank ends with the same new weights -> this rank's metrics."""
        t0 = time.perf_counter()
        metrics = shard_update(shard, lambda mb: self._logits(self.engine, mb), self._step, self.cfg.update, self.version,
                               self.device, self._reference_logits(), self._zero_loss)  # fmt: skip
        if metrics["optimizer_steps"]:
            self.version += 1
        return metrics | {"version": self.version, "seconds": time.perf_counter() - t0}

    def gradients(self, shard: Shard) -> dict[str, torch.Tensor]:
        """The all-reduced gradient of the first minibatch of ``shard``'s update at the current
        weights, name -> full fp32 CPU tensor (gathered from the ZeRO partitions), without stepping:
        what every rank contributes to, for checking that W ranks compute what one rank does.
        Every rank calls it at once. The gradients are cleared afterwards."""
        from deepspeed.utils import safe_get_full_grad

        grads: dict[str, torch.Tensor] = {}

        def backward_only(loss: torch.Tensor) -> float:
            if grads:
                return float("nan")
            self.engine.backward(loss)
            for name, p in self._module.named_parameters():
                full = safe_get_full_grad(p)
                full = p.grad if full is None else full
                grads[name] = torch.zeros_like(p) if full is None else full.detach().float().cpu().clone()
            self.engine.zero_grad()
            opt = cast(Any, self.engine.optimizer)
            if hasattr(opt, "averaged_gradients"):  # ZeRO 1/2 hold the reduced partitions here until a step
                opt.averaged_gradients = {}
            return float("nan")

        shard_update(shard, lambda mb: self._logits(self.engine, mb), backward_only, replace(self.cfg.update, epochs=1),
                     self.version, self.device, self._reference_logits(), self._zero_loss)  # fmt: skip
        return grads

    def optimizer_state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds: AdamW's moments and, under ZeRO, the fp32 master
        partition (ZeRO 1/2 shard both over the ranks; ZeRO-0 holds them whole)."""
        opt = cast(Any, self.engine.optimizer)
        inner = getattr(opt, "optimizer", opt)
        tensors = [t for state in inner.state.values() for t in state.values() if torch.is_tensor(t) and t.dim() > 0]
        tensors += list(getattr(opt, "single_partition_of_fp32_groups", []))
        return sum(t.numel() * t.element_size() for t in tensors)

    def _reference_logits(self):
        ref = self.reference
        return None if ref is None else (lambda mb: self._logits(ref, mb))

    def _zero_loss(self) -> torch.Tensor:
        """0 times every parameter: a rank with no transitions in a minibatch still joins its all-reduce."""
        return sum((p.float().sum() * 0.0 for p in self._module.parameters()), torch.zeros((), device=self.device))

    def _step(self, loss: torch.Tensor) -> float:
        """Backward, clip and step through DeepSpeed -> the pre-clip gradient norm."""
        self.engine.backward(loss)
        local_norm = self._local_grad_norm()
        self.engine.step()
        norm = self.engine.get_global_grad_norm()  # None where DeepSpeed does not compute it (ZeRO-0 fp32)
        return float(norm) if norm is not None else local_norm

    def _local_grad_norm(self) -> float:
        """Pre-clip gradient norm from ``.grad`` (ZeRO-0 fp32, single rank); NaN where grads live elsewhere."""
        grads = [p.grad.detach().float() for p in self._module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else float("nan")

    def weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, state_dict) of CPU fp32 tensors, loadable into a ``SelectionPolicy``: the fp32
        master weights where DeepSpeed exposes them (ZeRO 1-3; gathered when ZeRO-3 partitions
        them), else the module's own weights (ZeRO-0: fp32, or bf16 upcast)."""
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        for name, p in self._module.named_parameters():
            full = safe_get_full_fp32_param(p)
            state[name] = (p.detach() if full is None else full).float().cpu().clone()
        for name, b in self._module.named_buffers():
            state[name] = b.detach().cpu().clone()
        return self.version, state

    def save_checkpoint(self, root: str | Path, driver_state: dict | None = None) -> str:
        """Write checkpoint ``ckpt-<version>`` into ``root`` (a local folder or a storage URI):
        DeepSpeed's files (weights, optimizer, ZeRO shards; client state: version, KL reference),
        ``driver_state`` and a manifest of checksums; then move ``root/latest`` to it. Every rank
        must call it. Returns the checkpoint's location (path or URI)."""
        import deepspeed.comm as dist

        store, name = Storage(root), ckpt.checkpoint_name(self.version)
        local_root = Path(store.root) if store.local else self.scratch / "checkpoints"
        staging = local_root / f".tmp-{name}"
        if dist.get_rank() == 0:
            ckpt.staging_dir(local_root, name)
        dist.barrier()
        reference = None if self.reference is None else {k: v.cpu() for k, v in self.reference.state_dict().items()}
        client = {"version": self.version, "reference": reference}
        self.engine.save_checkpoint(str(staging), tag=ENGINE_TAG, client_state=client, save_latest=False)
        location = store.location(name)
        if dist.get_rank() == 0:
            meta = {"version": self.version, "saved_at": time.time(), "learner_config": asdict(self.cfg)}
            write_atomic(staging / "meta.json", json.dumps(meta, indent=2).encode())
            if driver_state is not None:
                ckpt.save_driver_state(staging, driver_state)
            ckpt.write_manifest(staging)
            location = ckpt.publish(ckpt.commit_dir(staging, local_root / name), store)
            if not store.local:
                shutil.rmtree(local_root / name)
        dist.barrier()
        return location

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore weights, optimizer state, version and KL reference from a checkpoint root (its
        latest) or one checkpoint (a path or a storage URI), after checking every file against the
        manifest -> the restored version. Under ZeRO-3 call it on a fresh
        Learner (DeepSpeed cannot reload into an engine that has already partitioned and stepped)."""
        target = ckpt.fetch(path, self.scratch / "fetched")
        saved = json.loads((target / "meta.json").read_text())["learner_config"]["policy"]
        if saved != asdict(self.cfg.policy):
            raise ValueError(f"checkpoint {target} holds a policy with config {saved}, this learner has {asdict(self.cfg.policy)}")
        load_path, client = self.engine.load_checkpoint(str(target), tag=ENGINE_TAG)
        if target.is_relative_to(self.scratch):  # a downloaded copy
            shutil.rmtree(target)
        if load_path is None or client is None:  # DeepSpeed returns both or neither
            raise FileNotFoundError(f"DeepSpeed found no engine state in {target / ENGINE_TAG}")
        self.version = int(client["version"])
        if self.cfg.kl_beta > 0:
            # a checkpoint saved without a reference starts the KL term from the loaded weights
            reference = client["reference"] if client.get("reference") is not None else self.weights()[1]
            self.reference = self._frozen_copy(reference).to(self.device)
        return self.version
