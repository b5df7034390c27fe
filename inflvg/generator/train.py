"""Train the tiny generator on StoryWorld's training split (teacher forcing, random contexts).

    python -m inflvg.generator.train --minutes 20 --out inflvg/weights/generator.pt
    python -m inflvg.generator.train --preset recall --seed 0     # a stage of the shipped weights' recipe (make generator)

Each step renders fresh training stories, encodes every frame once (full-resolution and
compressed), then denoises a few target frames per video, each against its own randomly
drawn fixed-budget context (see contexts.py). Seeded: the same seed and step count give the
same weights on the same machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated

import numpy as np
import torch

from .. import cli
from ..config import ContextConfig, GeneratorConfig, WorldConfig
from ..world.story import Story, render_story, sample_long_story, sample_story
from .contexts import Mixture, choose_targets, target_context
from .model import Context, Generator
from .tokens import to_unit
from .weights import load_generator, save_generator

SUBJECT_WEIGHT = 4.0  # extra loss weight on the subject's pixels (about 10% of a frame, all of its identity)


@dataclass(frozen=True)
class TrainConfig:
    minutes: float = 20.0
    """Wall-clock budget; training stops at the first step past it (or at max_steps)."""
    max_steps: int = 1_000_000
    videos_per_step: int = 4
    targets_per_video: int = 16
    lr: float = 2e-3
    warmup_steps: int = 200
    seed: int = 0
    threads: int = 2
    save_every: int = 200
    """Steps between checkpoints written to the output path (atomically)."""
    decay_steps: int = 0
    """If positive, the learning rate falls along a cosine to ``final_lr_fraction`` of ``lr`` over
    this many steps of the run (then stays there); 0 keeps it constant after warm-up."""
    final_lr_fraction: float = 0.05
    text_steps: int = 0
    """The first steps train drawing from the description alone: the first frame of every
    first-appearance scene, with an empty context. The full recipe then adds memory to a
    generator that already draws what a prompt describes."""
    text_videos_per_step: int = 16
    """Stories per text step; each gives its cast's first-appearance frames (64 with 4 characters)."""
    mixture: Mixture = field(default_factory=Mixture)
    """What the targets of a step are and what their long-term selections hold."""
    context_noise: float = 0.1
    """Frames encoded as context get Gaussian noise of a std drawn per frame from [0, this] (in the
    [-1, 1] pixel range), so the generator meets imperfect past frames, as its own are, in training."""
    long_scenes: int = 0
    """If positive, context steps train on stories of this many scenes drawn the way the long
    benchmark draws them (``sample_long_story``: a cast of 8, returns at least 5 scenes apart), so
    the generator meets far frame positions and a larger cast; 0: the world's own stories."""


def build_context(model: Generator, kv_full, full_row, kv_long, n_frames, contexts, vids) -> Context:
    """Gather each target's sink + long-term + window tokens from the encoded frames.

    kv_full (L, 2, NF, n_full, d); full_row[(b, f)] -> row; kv_long (L, 2, B*T, n_long, d).
    """
    n_full, n_long = model.tokens_per_frame, model.long_tokens_per_frame
    L, _, n_rows, _, d = kv_full.shape
    if n_rows == 0:  # every target is a video's first frame: no full-resolution frame to gather, all slots masked
        kv_full = kv_full.new_zeros(L, 2, 1, n_full, d)
    full_idx, full_t, long_idx, long_t, long_j = [], [], [], [], []
    for b, c in zip(vids, contexts, strict=True):
        frames = c.sink + c.window
        full_idx.append([full_row.get((b, f), -1) if f >= 0 else -1 for f in frames])
        full_t.append(frames)
        long_idx.append([b * n_frames + f if f >= 0 else -1 for f, _ in c.long])
        long_t.append([f for f, _ in c.long])
        long_j.append([j for _, j in c.long])
    full_idx, long_idx = torch.tensor(full_idx), torch.tensor(long_idx)
    long_j = torch.tensor(long_j)
    m, n_slots = full_idx.shape
    full = kv_full[:, :, full_idx.clamp(min=0)].reshape(L, 2, m, n_slots * n_full, d)
    flat_long = kv_long.reshape(L, 2, -1, d)
    long = flat_long[:, :, (long_idx.clamp(min=0) * n_long + long_j.clamp(min=0))]  # (L, 2, m, K, d)
    ns = len(contexts[0].sink)
    kv = torch.cat([full[:, :, :, : ns * n_full], long, full[:, :, :, ns * n_full :]], 3)
    full_pos = torch.cat(
        [torch.tensor(full_t).float().repeat_interleave(n_full, 1)[..., None], model.full_yx.repeat(1, n_slots, 1).expand(m, -1, -1)], -1
    )
    long_pos = torch.cat([torch.tensor(long_t).float()[..., None], model.long_yx[long_j.clamp(min=0)]], -1)
    pos = torch.cat([full_pos[:, : ns * n_full], long_pos, full_pos[:, ns * n_full :]], 1)
    full_valid = (full_idx >= 0).repeat_interleave(n_full, 1)
    valid = torch.cat([full_valid[:, : ns * n_full], long_idx >= 0, full_valid[:, ns * n_full :]], 1)
    return Context(kv=kv, pos=pos, valid=valid)


def training_stories(world: WorldConfig, tc: TrainConfig, seed: int, n: int) -> list[Story]:
    """The n training stories of a context step: the world's, or long ones (``TrainConfig.long_scenes``)."""
    if tc.long_scenes > 0:
        return [sample_long_story(seed + i, "train", tc.long_scenes) for i in range(n)]
    return [sample_story(seed + i, "train", world.n_scenes, world.cast_size) for i in range(n)]


def train_step(model, world: WorldConfig, ctx_cfg: ContextConfig, tc: TrainConfig, seed: int, rng) -> torch.Tensor:
    stories = training_stories(world, tc, seed, tc.videos_per_step)
    n_scenes = len(stories[0].scenes)
    videos = [render_story(s, world) for s in stories]
    frames = to_unit(np.stack([v.frames for v in videos]))  # (B, T, H, W, 3)
    n_vid, n_frames = frames.shape[:2]
    scene_of = torch.tensor(np.stack([v.scene for v in videos]))  # (B, T)
    text = model.encode_text([p for s in stories for p in s.prompts()])
    text_row = lambda b, f: b * n_scenes + int(scene_of[b, f])  # noqa: E731
    seen = noisy_context(frames, tc.context_noise)
    long_side = model.cfg.patch * model.cfg.merge
    vids, contexts = [], []
    for b, (story, video) in enumerate(zip(stories, videos, strict=True)):
        for t in choose_targets(story, world, tc.targets_per_video, rng, tc.mixture):
            vids.append(b)
            contexts.append(target_context(t, video, world, ctx_cfg, model.long_tokens_per_frame, long_side, rng, tc.mixture))
    t_freqs = model.t_freqs(max(model.cfg.horizon_frames, n_frames))  # FLEX-scaled as generation scales a video this long
    needed = sorted({(b, f) for b, c in zip(vids, contexts, strict=True) for f in c.sink + c.window if f >= 0})
    full_row = {bf: i for i, bf in enumerate(needed)}
    nb = torch.tensor([b for b, _ in needed], dtype=torch.long)
    nf = torch.tensor([f for _, f in needed], dtype=torch.long)
    rows = torch.tensor([text_row(b, f) for b, f in needed], dtype=torch.long)
    kv_full, _ = model.encode_frames(seen[nb, nf], nf, text.index(rows), long=False, t_freqs=t_freqs)
    all_t = torch.arange(n_frames).repeat(n_vid)
    all_rows = torch.tensor([text_row(b, f) for b in range(n_vid) for f in range(n_frames)])
    kv_long, _ = model.encode_frames(seen.reshape(-1, *seen.shape[2:]), all_t, text.index(all_rows), long=True, t_freqs=t_freqs)
    ctx = build_context(model, kv_full, full_row, kv_long, n_frames, contexts, vids)
    tb, tt = torch.tensor(vids), torch.tensor([c.t for c in contexts])
    x1 = frames[tb, tt]
    noise = torch.randn_like(x1)
    s = flow_times(len(tb), model.cfg.denoise_steps)
    xs = (1 - s)[:, None, None, None] * noise + s[:, None, None, None] * x1
    target_rows = torch.tensor([text_row(b, t) for b, t in zip(vids, tt.tolist(), strict=True)])
    clean = model.predict_clean(xs, s, tt, text.index(target_rows), ctx, t_freqs)
    masks = torch.as_tensor(np.stack([v.masks for v in videos]))[tb, tt]  # (M, H, W) subject pixels
    return subject_weighted_mse(clean, x1, masks)


def text_step(model, world: WorldConfig, tc: TrainConfig, seed: int) -> torch.Tensor:
    """Loss of drawing the first frame of first-appearance scenes from their prompt, no context."""
    stories = [sample_story(seed + i, "train", world.n_scenes, world.cast_size) for i in range(tc.text_videos_per_step)]
    fps, prompts, frames, masks = world.frames_per_scene, [], [], []
    for story in stories:
        video = render_story(story, world)
        for i, sc in enumerate(story.scenes):
            if sc.first_appearance:
                prompts.append(story.prompt(i))
                frames.append(video.frames[i * fps])
                masks.append(video.masks[i * fps])
    x1 = to_unit(np.stack(frames))
    s = flow_times(len(x1), model.cfg.denoise_steps)
    xs = (1 - s)[:, None, None, None] * torch.randn_like(x1) + s[:, None, None, None] * x1
    t = torch.zeros(len(x1))
    clean = model.predict_clean(xs, s, t, model.encode_text(prompts), None, model.t_freqs(model.cfg.horizon_frames))
    return subject_weighted_mse(clean, x1, torch.as_tensor(np.stack(masks)))


def subject_weighted_mse(clean: torch.Tensor, x1: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """clean, x1 (M, H, W, 3); masks (M, H, W) bool subject pixels, weighted 1 + SUBJECT_WEIGHT."""
    weight = (1.0 + SUBJECT_WEIGHT * masks.float())[..., None]
    return (weight * (clean - x1) ** 2).mean() / weight.mean()


def noisy_context(frames: torch.Tensor, max_std: float) -> torch.Tensor:
    """(B, T, H, W, 3) clean frames -> copies with Gaussian noise of a per-frame std in [0, max_std]."""
    if max_std <= 0:
        return frames
    std = torch.rand(frames.shape[:2]) * max_std
    return frames + std[:, :, None, None, None] * torch.randn_like(frames)


def learning_rate(tc: TrainConfig, run_step: int) -> float:
    """Linear warm-up, then constant or a cosine decay over ``tc.decay_steps``."""
    warm = min(1.0, (run_step + 1) / tc.warmup_steps)
    if tc.decay_steps <= 0:
        return tc.lr * warm
    frac = min(1.0, run_step / tc.decay_steps)
    low = tc.final_lr_fraction
    return tc.lr * warm * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * frac)))


def flow_times(n: int, steps: int) -> torch.Tensor:
    """Half uniform in [0, 1), half on the sampler's own Euler grid {0, 1/steps, ...}."""
    grid = torch.randint(0, steps, (n,)).float() / steps
    return torch.where(torch.rand(n) < 0.5, grid, torch.rand(n))


def train(world: WorldConfig, ctx_cfg: ContextConfig, gen_cfg: GeneratorConfig, tc: TrainConfig, out: str, init: str | None = None) -> dict:
    """Train from scratch, or continue from the weights at ``init`` (a fresh optimizer, warmed up again)."""
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    rng = np.random.default_rng(tc.seed)
    model = Generator(gen_cfg, world.frame_size)
    first_step, prior_seconds = 0, 0
    if init is not None:
        start_model, world, ctx_cfg, meta = load_generator(init, strict=False)
        model.load_state_dict(start_model.state_dict())
        first_step, prior_seconds = meta["steps"], meta["seconds"]
        if tc.max_steps <= first_step:
            raise ValueError(f"TrainConfig.max_steps={tc.max_steps} counts all steps, and {init} already has "
                             f"{first_step}: set --max-steps above {first_step} to train more")
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=0.01, betas=(0.9, 0.99))
    model.train().requires_grad_(True)
    start, step, ema = time.time(), first_step, None
    while step < tc.max_steps and time.time() - start < tc.minutes * 60:
        for g in opt.param_groups:
            g["lr"] = learning_rate(tc, step - first_step)
        seed = 1_000_000 + step * max(tc.videos_per_step, tc.text_videos_per_step)
        loss = text_step(model, world, tc, seed) if step < tc.text_steps else train_step(model, world, ctx_cfg, tc, seed, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        step += 1
        if step % 50 == 0:
            print(f"step {step:6d}  loss {ema:.4f}  {time.time() - start:7.0f}s", flush=True)
        if step % tc.save_every == 0:
            save_generator(model, world, ctx_cfg, out, _meta(step, start - prior_seconds, ema, tc))
    meta = _meta(step, start - prior_seconds, ema, tc)
    save_generator(model, world, ctx_cfg, out, meta)
    return meta


def _meta(step: int, start: float, loss: float | None, tc: TrainConfig) -> dict:
    """``start`` is shifted back by the seconds of earlier runs, so 'seconds' is the total."""
    return {"steps": step, "seconds": round(time.time() - start), "final_loss": loss, "train_config": asdict(tc)}


@dataclass(frozen=True)
class TrainArgs:
    """What ``python -m inflvg.generator.train`` runs: a TrainConfig's knobs, where to start and where to save."""

    minutes: float = TrainConfig.minutes
    """Wall-clock budget; training stops at the first step past it (or at --max-steps)."""
    max_steps: int = TrainConfig.max_steps
    """Training stops at this step, counted from the start of the first stage (--init's steps included)."""
    seed: int = 0
    """Base seed; the run is seeded with seed + seed_offset."""
    seed_offset: int = 0
    """Added to --seed: the recipe's later stages draw other stories than the earlier ones (recall +1, recall2 +2, ... long2 +5)."""
    threads: int = TrainConfig.threads
    """torch intra-op threads."""
    decay_steps: int = 0
    """Cosine learning-rate decay over this many steps of the run (0: constant after warm-up)."""
    lr: float = TrainConfig.lr
    """Peak AdamW learning rate."""
    warmup_steps: int = TrainConfig.warmup_steps
    """Steps of linear learning-rate warm-up at the start of the run."""
    text_steps: int = TrainConfig.text_steps
    """First steps: drawing from the description alone (no context)."""
    target_shares: Annotated[tuple[float, ...], cli.comma(float, "0.5,0.2,0.3")] = Mixture.targets
    """Shares of targets: return openings, first-appearance openings, any frame (comma-separated, summing to 1)."""
    long_shares: Annotated[tuple[float, ...], cli.comma(float, "0.65,0.15,0.1,0.1")] = Mixture.long
    """Shares of long-term selections: subject, random, newest, none (comma-separated, summing to 1)."""
    context_noise: float = TrainConfig.context_noise
    """Max std of the Gaussian noise on context frames (in the [-1, 1] pixel range)."""
    long_scenes: int = TrainConfig.long_scenes
    """Train on long stories of this many scenes (a cast of 8, returns at least 5 scenes apart); 0: the world's stories."""
    out: str = "inflvg/weights/generator.pt"
    """Where the weights are saved (every TrainConfig.save_every steps and at the end)."""
    init: str | None = None
    """Continue from these weights instead of starting from scratch (a fresh optimizer, warmed up again)."""

    def __post_init__(self) -> None:
        Mixture(self.target_shares, self.long_shares)  # pyright: ignore[reportArgumentType]  # its own checks: counts and sums
        if self.long_scenes < 0:
            raise ValueError(f"TrainArgs.long_scenes must be >= 0 (0: the world's 8-scene stories), got {self.long_scenes}")

    def train_config(self) -> TrainConfig:
        mixture = Mixture(self.target_shares, self.long_shares)  # pyright: ignore[reportArgumentType]
        return TrainConfig(
            minutes=self.minutes, max_steps=self.max_steps, seed=self.seed + self.seed_offset, threads=self.threads, lr=self.lr,
            warmup_steps=self.warmup_steps, decay_steps=self.decay_steps, context_noise=self.context_noise, text_steps=self.text_steps,
            long_scenes=self.long_scenes, mixture=mixture,
        )  # fmt: skip


# The recipe of the shipped weights (`make generator`): seven stages on one thread, each continuing
# the previous one's weights, about 130 minutes in all (docs/guide.md, The StoryWorld backend); the
# last two train on 16-scene stories with a cast of 8 (docs/RESULTS.md, A generator stage on long stories).
_STAGE = TrainArgs(threads=1, minutes=120.0)
_RECALL = replace(_STAGE, warmup_steps=30, decay_steps=400, target_shares=(0.7, 0.15, 0.15), long_shares=(0.85, 0.05, 0.05, 0.05))
_LONG = replace(_RECALL, lr=5e-4, long_scenes=16)
RECIPE: dict[str, TrainArgs] = {
    "text": replace(_STAGE, lr=1.5e-3, text_steps=800, max_steps=800, decay_steps=3000, out="runs/generator/text.pt"),
    "scenes": replace(_STAGE, lr=1.5e-3, max_steps=2400, decay_steps=2200, target_shares=(0.5, 0.2, 0.3), long_shares=(0.65, 0.15, 0.1, 0.1),
                      init="runs/generator/text.pt", out="runs/generator/scenes.pt"),
    "recall": replace(_RECALL, seed_offset=1, lr=1e-3, max_steps=2800, init="runs/generator/scenes.pt", out="runs/generator/recall.pt"),
    "recall2": replace(_RECALL, seed_offset=2, lr=5e-4, max_steps=3200, init="runs/generator/recall.pt", out="runs/generator/recall2.pt"),
    "recall3": replace(_RECALL, seed_offset=3, lr=5e-4, max_steps=3600, init="runs/generator/recall2.pt", out="runs/generator/recall3.pt"),
    "long": replace(_LONG, seed_offset=4, max_steps=4000, init="runs/generator/recall3.pt", out="runs/generator/long.pt"),
    "long2": replace(_LONG, seed_offset=5, max_steps=4400, init="runs/generator/long.pt", out="inflvg/weights/generator.pt"),
}  # fmt: skip
"""The stages of the recipe, in order, by name: ``--preset text`` ... ``--preset long2``."""

PRESET_HELP = ("A stage of the recipe of the shipped weights, run in this order: text (drawing from the prompt alone), "
               "scenes, recall, recall2, recall3, long, long2 (each continues the previous stage's weights; the last two on "
               "16-scene stories with a cast of 8); the other flags override it. "
               "Without it: TrainConfig's defaults.")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    stages = {name: (lambda a=a: a) for name, a in RECIPE.items()}
    args = cli.parse(TrainArgs, argv, prog="python -m inflvg.generator.train", description=__doc__, presets=stages, preset_help=PRESET_HELP)
    meta = train(WorldConfig(), ContextConfig(), GeneratorConfig(), args.train_config(), args.out, init=args.init)
    print(f"saved {args.out}: {meta['steps']} steps in {meta['seconds']} s, loss {meta['final_loss']:.4f}")


if __name__ == "__main__":
    main()
