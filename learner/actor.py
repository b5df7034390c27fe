"""The learner role: a DeepSpeed engine over the ``SelectionPolicy``, updated with GRPO
(Shao et al. 2024) on the selections of InfLVG rollouts (arXiv 2505.17574).

``Learner`` is a plain class: ``ray.remote(Learner)`` makes it an actor (``cluster/`` does, with
``num_gpus`` from the config), and tests use it in-process. One instance is one DeepSpeed rank;
alone it sets up its own world of one on loopback.

    learner = Learner(cfg)
    metrics = learner.update(rollouts)          # credit -> clipped GRPO epochs -> version + 1
    version, state_dict = learner.weights()     # cpu fp32, for ray.put -> rollout workers
    path = learner.save_checkpoint(root, driver_state)   # atomic; load_checkpoint(root) resumes exactly
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch

from inflvg.policy import SelectionPolicy, plackett_luce_entropy, plackett_luce_log_prob
from inflvg.rollout import Rollout, Transition, TransitionBatch, collate_transitions, group_rollouts

from . import checkpoint as ckpt
from .config import LearnerConfig
from .grpo import advantage_stats, credit_transitions, grpo_loss, kl_k3, per_transition_credit, stack_scene_rewards

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


def _take(batch: TransitionBatch, idx: torch.Tensor, device: torch.device) -> TransitionBatch:
    """Rows ``idx`` of a batch on ``device``, candidate padding trimmed to the longest pool among them."""
    n = max(int(batch.valid[idx].sum(-1).max()), 1)
    return TransitionBatch(
        features=batch.features[idx, :n].to(device), valid=batch.valid[idx, :n].to(device),
        prompt_tokens=batch.prompt_tokens[idx].to(device), prompt_mask=batch.prompt_mask[idx].to(device),
        chosen=batch.chosen[idx].to(device), logp_old=batch.logp_old[idx].to(device),
    )  # fmt: skip


def _scene_reward_stats(groups: list[list[Rollout]]) -> dict[str, float]:
    """Counts over the (prompt set, scene) groups that hold an action (scene 0 usually holds none)."""
    scenes = sorted({t.scene for g in groups for r in g for t in r.transitions})
    rewards, real = stack_scene_rewards(groups)
    rewards, real = rewards[:, :, scenes], real[:, :, scenes]  # (P, G, S_acted)
    _, excluded = per_transition_credit(rewards)
    pairs = real[:, 0, :]  # (P, S_acted): the scene exists in that group's prompt set
    stats = advantage_stats(rewards.transpose(1, 2)[pairs], excluded.transpose(1, 2)[pairs])  # (pairs, G), groups along G
    return {
        "reward_mean": float(rewards[real].nanmean()) if real.any() else float("nan"),
        "zero_variance_fraction": stats["zero_variance_groups"] / max(stats["groups"], 1.0),
        "masked_rewards": stats["masked_rewards"],
    }


class Learner:
    """GRPO learner over a ``SelectionPolicy`` wrapped in a DeepSpeed engine (ZeRO 0-3, fp32/bf16)."""

    def __init__(self, cfg: LearnerConfig, init_weights: dict | None = None):
        t0 = time.perf_counter()
        if cfg.uses_gpu and not torch.cuda.is_available():
            raise RuntimeError(f"LearnerConfig.num_gpus={cfg.num_gpus} but CUDA is not available here; use num_gpus=0")
        self.cfg, self.version = cfg, 0
        if not cfg.uses_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read once, when deepspeed is first imported
        _world_of_one_env()
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
        self.engine, *_ = deepspeed.initialize(
            model=policy, model_parameters=policy.parameters(), config=deepspeed_config(cfg, world)
        )  # fmt: skip
        self.device = self.engine.device
        if self.reference is not None:
            self.reference.to(self.device)
        self.init_seconds = time.perf_counter() - t0

    def _frozen_copy(self, state_dict: dict) -> SelectionPolicy:
        """The KL reference: an fp32 copy outside DeepSpeed, never updated."""
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten: leave the caller's RNG be
            ref = SelectionPolicy(self.cfg.policy)
        ref.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return ref.requires_grad_(False).eval()

    def _logits(self, policy: torch.nn.Module, mb: TransitionBatch) -> torch.Tensor:
        """(M, N) logits, -inf on padding; inputs in the engine's dtype (the log-probs are fp32 anyway)."""
        dtype = torch.bfloat16 if policy is self.engine and self.cfg.dtype == "bf16" else torch.float32
        return policy(mb.features.to(dtype), mb.prompt_tokens.to(dtype), mb.prompt_mask, mb.valid)

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One GRPO update on complete groups of rollouts -> metrics (version is the new one).

        Per-transition credit: A[p, g, s] normalised across the G rollouts of prompt set p at scene
        s (``learner.grpo.credit_transitions``). Transitions without signal (masked reward,
        zero-variance group) are dropped; with none left, no step is taken and the version stays.
        With several ranks, each must get a share giving the same number of minibatch steps."""
        if not rollouts:
            raise ValueError("Learner.update needs rollouts: at least one complete GRPO group")
        t0 = time.perf_counter()
        groups = group_rollouts(rollouts)
        transitions, advantages, valid = credit_transitions(groups, scale=self.cfg.advantage_scale)
        used = [t for t, v in zip(transitions, valid.tolist()) if v]
        adv = advantages[valid]  # (M,)
        metrics = _scene_reward_stats(groups) if transitions else {}
        metrics.update(
            transitions=float(len(used)), transitions_total=float(len(transitions)),
            advantage_mean=float(adv.mean()) if len(used) else 0.0,
            advantage_std=float(adv.std(unbiased=False)) if len(used) else 0.0,
        )  # fmt: skip
        if used:
            metrics.update(self._optimise(collate_transitions(used), adv))
            self.version += 1
        metrics.update(version=self.version, seconds=time.perf_counter() - t0)
        return metrics

    def _optimise(self, batch: TransitionBatch, advantages: torch.Tensor) -> dict[str, float]:
        """``epochs`` shuffled passes of minibatch steps -> metrics averaged over the steps. The
        order is seeded by (seed, version), so a resumed learner repeats it exactly."""
        order = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.version)
        sums: dict[str, float] = defaultdict(float)
        steps = 0
        for _ in range(self.cfg.epochs):
            for idx in torch.randperm(len(advantages), generator=order).split(self.cfg.minibatch_size):
                for key, value in self._step(_take(batch, idx, self.device), advantages[idx].to(self.device)).items():
                    sums[key] += value
                steps += 1
        return {key: value / steps for key, value in sums.items()} | {"optimizer_steps": float(steps)}

    def _step(self, mb: TransitionBatch, advantages: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a minibatch of B transitions (advantages (B,)) -> its statistics."""
        logits = self._logits(self.engine, mb)  # (B, N)
        logp_new = plackett_luce_log_prob(logits, mb.chosen, mb.valid)  # (B,) fp32
        logp_ref = None
        if self.reference is not None:
            with torch.no_grad():
                logp_ref = plackett_luce_log_prob(self._logits(self.reference, mb), mb.chosen, mb.valid)
        loss, stats = grpo_loss(logp_new, mb.logp_old, advantages, logp_ref=logp_ref, beta=self.cfg.kl_beta, clip_eps=self.cfg.clip_eps)
        with torch.no_grad():
            stats["entropy"] = plackett_luce_entropy(logits.detach(), mb.chosen, mb.valid).mean().item()
            stats["kl_old"] = kl_k3(logp_new.detach(), mb.logp_old).mean().item()
        self.engine.backward(loss)
        local_norm = self._local_grad_norm()
        self.engine.step()
        norm = self.engine.get_global_grad_norm()  # None where DeepSpeed does not compute it (ZeRO-0 fp32)
        stats["grad_norm"] = float(norm) if norm is not None else local_norm
        return stats

    def _local_grad_norm(self) -> float:
        """Pre-clip gradient norm from ``.grad`` (ZeRO-0 fp32, single rank); NaN where grads live elsewhere."""
        grads = [p.grad.detach().float() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else float("nan")

    @torch.no_grad()
    def log_probs(self, transitions: list[Transition]) -> torch.Tensor:
        """Log-probs (M,) fp32 on CPU of the recorded selections under the current weights."""
        batch = collate_transitions(transitions)
        mb = _take(batch, torch.arange(len(transitions)), self.device)
        return plackett_luce_log_prob(self._logits(self.engine, mb), mb.chosen, mb.valid).cpu()

    def weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, state_dict) of CPU fp32 tensors, loadable into a ``SelectionPolicy``: the fp32
        master weights where DeepSpeed exposes them (ZeRO 1-3; gathered when ZeRO-3 partitions
        them), else the module's own weights (ZeRO-0: fp32, or bf16 upcast)."""
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        for name, p in self.engine.module.named_parameters():
            full = safe_get_full_fp32_param(p)
            state[name] = (p.detach() if full is None else full).float().cpu().clone()
        for name, b in self.engine.module.named_buffers():
            state[name] = b.detach().cpu().clone()
        return self.version, state

    def save_checkpoint(self, root: str | Path, driver_state: dict | None = None) -> str:
        """Write ``root/ckpt-<version>`` atomically (DeepSpeed's files: weights, optimizer, ZeRO
        shards; client state: version, KL reference; ``driver_state`` beside them), then move
        ``root/latest`` to it. Every rank must call it. Returns the checkpoint directory."""
        import deepspeed.comm as dist

        root, name = Path(root), ckpt.checkpoint_name(self.version)
        staging = root / f".tmp-{name}"
        if dist.get_rank() == 0:
            ckpt.staging_dir(root, name)
        dist.barrier()
        reference = None if self.reference is None else {k: v.cpu() for k, v in self.reference.state_dict().items()}
        client = {"version": self.version, "reference": reference}
        self.engine.save_checkpoint(str(staging), tag=ENGINE_TAG, client_state=client, save_latest=False)
        if dist.get_rank() == 0:
            meta = {"version": self.version, "saved_at": time.time(), "learner_config": asdict(self.cfg)}
            ckpt.write_atomic(staging / "meta.json", json.dumps(meta, indent=2).encode())
            if driver_state is not None:
                ckpt.save_driver_state(staging, driver_state)
            ckpt.commit_dir(staging, root / name)
            ckpt.set_latest(root, name)
        dist.barrier()
        return str(root / name)

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore weights, optimizer state, version and KL reference from a checkpoint root (its
        latest) or one checkpoint directory -> the restored version. Under ZeRO-3 call it on a fresh
        Learner (DeepSpeed cannot reload into an engine that has already partitioned and stepped)."""
        target = ckpt.resolve_checkpoint(path)
        saved = json.loads((target / "meta.json").read_text())["learner_config"]["policy"]
        if saved != asdict(self.cfg.policy):
            raise ValueError(f"checkpoint {target} holds a policy with config {saved}, this learner has {asdict(self.cfg.policy)}")
        load_path, client = self.engine.load_checkpoint(str(target), tag=ENGINE_TAG)
        if load_path is None:
            raise FileNotFoundError(f"DeepSpeed found no engine state in {target / ENGINE_TAG}")
        self.version = int(client["version"])
        if self.cfg.kl_beta > 0:
            # a checkpoint saved without a reference starts the KL term from the loaded weights
            reference = client["reference"] if client.get("reference") is not None else self.weights()[1]
            self.reference = self._frozen_copy(reference).to(self.device)
        return self.version
