"""Train the tiny StoryWorld CLIP behind the default alignment reward, then calibrate and evaluate it.

    OMP_NUM_THREADS=1 python -m reward_actors.train_clip --minutes 8 --out reward_actors/weights/clip_storyworld.pt
    OMP_NUM_THREADS=1 python -m reward_actors.train_clip --eval-only --out reward_actors/weights/clip_storyworld.pt

Contrastive InfoNCE (CLIP, learnable temperature) between single TRAIN-split frames and their
scene prompts. Three things make it a reward for *generated* frames of referential prompts:
- frames are augmented like generator output (blur, noise, colour shifts);
- a prompt is a positive for every frame it truthfully describes: "character B jumps in the
  desert" names no identity, so it matches any jumping subject in the desert (multi-positive
  targets), while "character B, a small red ... triangle, ..." matches only that identity;
- each frame also meets hard negatives: its own prompt with the background (2/3) or the action
  (1/3) changed.
After training, sigmoid(slope * cos + offset) is fitted on fresh train stories (prompt vs a
one-attribute edit of it) and stored in the checkpoint. Weights are saved in fp16 (3.5 MiB).

Time: the first command took 10.5 min wall on a shared 2-core CPU where it got half a core:
8 min of training (459 steps of 256 frames; the step count follows the time budget, so it
varies with the machine), 0.5 min rendering and calibration, 2 min held-out evaluation (which
is also all of `--eval-only`). Held-out figures it printed (64 stories, 512 scenes):
background retrieval top-1 1.00 clean / 1.00 degraded / 0.95 rough; Spearman(score, fraction
of frames on the right background) 0.86 / 0.86 / 0.80.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import lru_cache
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from inflvg import cli
from inflvg.config import WorldConfig
from inflvg.validate import positive_int
from inflvg.world import render_story, sample_story
from inflvg.world.readers import corrupt
from inflvg.world.story import Story
from inflvg.world.vocab import ACTION_NAMES, BACKGROUND_NAMES

from .alignment import CONFIG_PATH, AlignmentScorer, logistic_fit, register_model
from .types import SceneBatch

N_BG, N_ACT = len(BACKGROUND_NAMES), len(ACTION_NAMES)
LR = 2e-3
CONDITIONS = ("clean", "degrade", "rough")  # held-out frames as rendered, and two imitations of generator output


def other(index, n: int, rng: np.random.Generator):
    """A uniformly drawn index in [0, n) different from `index` (int or array)."""
    return (index + rng.integers(1, n, np.shape(index) or None)) % n


def edit(story: Story, i: int, background: str | None = None, action: str | None = None) -> str:
    """Prompt of scene i with its background and/or action replaced (prepositions follow)."""
    sc = story.scenes[i]
    new = dataclasses.replace(sc, background=background or sc.background, action=action or sc.action)
    return dataclasses.replace(story, scenes=(*story.scenes[:i], new, *story.scenes[i + 1 :])).prompt(i)


def _cosines(scorer: AlignmentScorer, frames: list, prompts: list, chunk: int = 512) -> np.ndarray:
    """(N,) scene cosines, 512 scenes per call: bounded memory, same values (scoring is per scene)."""
    parts = range(0, len(frames), chunk)
    return np.concatenate([scorer.cosines(SceneBatch(frames[i : i + chunk], prompts[i : i + chunk])) for i in parts])


def render_pool(n_stories: int, first_seed: int, split: str) -> dict:
    """Every scene of n stories: frames (S, 4, H, W, 3) uint8 and per-scene labels (S,)."""
    world, frames, rows = WorldConfig(), [], []
    for seed in range(first_seed, first_seed + n_stories):
        story = sample_story(seed, split, world.n_scenes, world.cast_size)
        video = render_story(story, world)
        frames.append(video.frames.reshape(world.n_scenes, world.frames_per_scene, *video.frames.shape[1:]))
        rows += [(story, i) for i in range(world.n_scenes)]
    sc = [s.scenes[i] for s, i in rows]
    who = [s.cast[c.character] for (s, _), c in zip(rows, sc, strict=True)]
    identity = {ident: k for k, ident in enumerate(sorted(set(who), key=str))}
    return {
        "frames": np.concatenate(frames),
        "rows": rows,
        "bg": np.array([BACKGROUND_NAMES.index(c.background) for c in sc]),
        "act": np.array([ACTION_NAMES.index(c.action) for c in sc]),
        "ident": np.array([identity[w] for w in who]),
        "ref": np.array([not c.first_appearance for c in sc]),
    }


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) float in 0..255 -> same, like generator output: blur, colour shift, noise."""
    b = x.shape[0]
    sigma = torch.rand(b, generator=gen) * 1.0 + 1e-3  # blur sigma in [0, 1] pixels
    taps = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (B*3, 5)
    y = x.reshape(1, b * 3, *x.shape[2:])
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), k[:, None, None, :], groups=b * 3)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), k[:, None, :, None], groups=b * 3).reshape(x.shape)
    shift = (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 16  # +-8 levels per channel
    noise = torch.randn(x.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 12
    return (y + shift + noise).clamp(0, 255)


def batch_targets(pool: dict, scenes: np.ndarray, neg_bg: np.ndarray, neg_act: np.ndarray) -> torch.Tensor:
    """(B, 2B) bool: text j truthfully describes image i (texts = B prompts, then B edited ones)."""
    bg = np.concatenate([pool["bg"][scenes], neg_bg])
    act = np.concatenate([pool["act"][scenes], neg_act])
    ref = np.concatenate([pool["ref"][scenes]] * 2)
    ident = np.concatenate([pool["ident"][scenes]] * 2)
    i = scenes
    ok = (pool["bg"][i][:, None] == bg) & (pool["act"][i][:, None] == act)
    ok &= ref[None] | (pool["ident"][i][:, None] == ident[None])
    return torch.from_numpy(ok)


def multi_positive_nce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row of logits (R, C) against the uniform distribution over its True targets."""
    p = targets.float() / targets.float().sum(1, keepdim=True)
    return -(p * logits.log_softmax(1)).sum(1).mean()


def sample_batch(pool: dict, batch: int, rng, gen: torch.Generator, mean, std) -> tuple:
    """-> images (B, 3, H, W) augmented and normalised, 2B prompts (true, then edited), targets (B, 2B)."""
    scenes = rng.integers(len(pool["rows"]), size=batch)
    frames = pool["frames"][scenes, rng.integers(pool["frames"].shape[1], size=batch)]  # (B, H, W, 3)
    x = (augment(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), gen) - mean) / std
    swap_bg = rng.random(batch) < 2 / 3
    neg_bg = np.where(swap_bg, other(pool["bg"][scenes], N_BG, rng), pool["bg"][scenes])
    neg_act = np.where(swap_bg, pool["act"][scenes], other(pool["act"][scenes], N_ACT, rng))
    rows = [pool["rows"][k] for k in scenes]
    prompts = [story.prompt(i) for story, i in rows]
    prompts += [edit(story, i, BACKGROUND_NAMES[b], ACTION_NAMES[a]) for (story, i), b, a in zip(rows, neg_bg, neg_act, strict=True)]
    return x, prompts, batch_targets(pool, scenes, neg_bg, neg_act)


def train(model, tokenizer, pool: dict, minutes: float, batch: int, seed: int) -> int:
    """Contrastive training for `minutes` of wall time (cosine lr over that time); returns steps."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    tokens = lru_cache(maxsize=None)(lambda p: tokenizer([p])[0])
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1) * 255
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    start, step = time.time(), 0
    while (progress := (time.time() - start) / (60 * minutes)) < 1:
        for g in opt.param_groups:
            g["lr"] = LR * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * progress))
        x, prompts, targets = sample_batch(pool, batch, rng, gen, mean, std)
        img = model.encode_image(x, normalize=True)  # (B, D)
        txt = model.encode_text(torch.stack([tokens(p) for p in prompts]), normalize=True)  # (2B, D)
        logits = model.logit_scale.exp() * img @ txt.T  # (B, 2B)
        # image -> all texts (hard negatives included); true texts -> images
        loss = multi_positive_nce(logits, targets) + multi_positive_nce(logits[:, :batch].T, targets[:, :batch].T)
        opt.zero_grad(set_to_none=True)
        (loss / 2).backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if step % 100 == 0:
            temp = 1 / model.logit_scale.exp().item()
            print(f"step {step} loss {loss.item() / 2:.3f} temperature {temp:.4f} {time.time() - start:.0f}s", flush=True)
        step += 1
    return step


def calibrate(scorer: AlignmentScorer, n_stories: int, first_seed: int) -> dict:
    """Fit the score map on fresh train stories: each scene's prompt (1) vs a one-attribute edit (0)."""
    rng, world = np.random.default_rng(first_seed), WorldConfig()
    frames, prompts, labels = [], [], []
    for seed in range(first_seed, first_seed + n_stories):
        story = sample_story(seed, "train", world.n_scenes, world.cast_size)
        video = render_story(story, world).frames.reshape(world.n_scenes, world.frames_per_scene, 32, 32, 3)
        for i, sc in enumerate(story.scenes):
            scene = np.stack([corrupt(f, "degrade", rng) for f in video[i]]) if rng.random() < 0.5 else video[i]
            other_bg = BACKGROUND_NAMES[other(BACKGROUND_NAMES.index(sc.background), N_BG, rng)]
            other_act = ACTION_NAMES[other(ACTION_NAMES.index(sc.action), N_ACT, rng)]
            wrong = edit(story, i, background=other_bg) if rng.random() < 2 / 3 else edit(story, i, action=other_act)
            frames += [scene, scene]
            prompts += [story.prompt(i), wrong]
            labels += [1.0, 0.0]
    return logistic_fit(_cosines(scorer, frames, prompts), np.array(labels))


def _look(frames: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    return frames if condition == "clean" else np.stack([corrupt(f, condition, rng) for f in frames])


def background_retrieval(scorer: AlignmentScorer, n_stories: int, condition: str, rng) -> dict:
    """Held-out scenes: does the true prompt beat the same prompt with each other background?

    pairwise: fraction of (scene, wrong background) pairs won; top1: scenes where it beats all 7.
    """
    world, frames, prompts, ref = WorldConfig(), [], [], []
    for seed in range(n_stories):
        story = sample_story(seed, "heldout", world.n_scenes, world.cast_size)
        video = render_story(story, world).frames.reshape(world.n_scenes, world.frames_per_scene, 32, 32, 3)
        for i, sc in enumerate(story.scenes):
            scene = _look(video[i], condition, rng)
            for bg in [sc.background] + [b for b in BACKGROUND_NAMES if b != sc.background]:
                frames.append(scene)
                prompts.append(edit(story, i, background=bg))
            ref.append(not sc.first_appearance)
    cos = _cosines(scorer, frames, prompts).reshape(-1, N_BG)  # (scenes, 8), true prompt first
    wins, ref, score = cos[:, :1] > cos[:, 1:], np.array(ref), scorer.to_score(cos)
    return {
        "mean_score_true": float(score[:, 0].mean()),
        "mean_score_wrong": float(score[:, 1:].mean()),
        "pairwise": float(wins.mean()),
        "top1": float(wins.all(1).mean()),
        "top1_referential": float(wins[ref].all(1).mean()),
        "top1_first_appearance": float(wins[~ref].all(1).mean()),
    }


def background_fraction_spearman(scorer: AlignmentScorer, n_stories: int, condition: str, rng) -> float:
    """Spearman(score, fraction of a scene's 8 frames on the right background) over held-out scenes.

    k ~ U{0..8} frames of each scene are swapped for the same frames rendered on a wrong background.
    """
    from scipy.stats import spearmanr

    world, frames, prompts, fraction = WorldConfig(frames_per_scene=8), [], [], []
    for seed in range(n_stories):
        story = sample_story(seed, "heldout", world.n_scenes, world.cast_size)
        wrong_bg = [BACKGROUND_NAMES[other(BACKGROUND_NAMES.index(sc.background), N_BG, rng)] for sc in story.scenes]
        moved = tuple(dataclasses.replace(sc, background=b) for sc, b in zip(story.scenes, wrong_bg, strict=True))
        wrong = dataclasses.replace(story, scenes=moved)
        shape = (world.n_scenes, world.frames_per_scene, 32, 32, 3)
        right_frames, wrong_frames = (render_story(s, world).frames.reshape(shape) for s in (story, wrong))
        for i in range(world.n_scenes):
            k = rng.integers(0, world.frames_per_scene + 1)
            scene = right_frames[i].copy()
            swap = rng.choice(world.frames_per_scene, k, replace=False)
            scene[swap] = wrong_frames[i][swap]
            frames.append(_look(scene, condition, rng))
            prompts.append(story.prompt(i))
            fraction.append(1 - k / world.frames_per_scene)
    # rank-invariant to the score map; [0] is .statistic, which scipy's runtime-made result class hides from type checkers
    return float(cast(float, spearmanr(_cosines(scorer, frames, prompts), fraction)[0]))


def evaluate(scorer: AlignmentScorer, n_stories: int, seed: int) -> dict:
    """Background retrieval and background-fraction Spearman on held-out stories, per frame condition."""
    rng = np.random.default_rng([seed, 123])
    return {
        c: {
            "retrieval": background_retrieval(scorer, n_stories, c, rng),
            "spearman_background_fraction": background_fraction_spearman(scorer, n_stories, c, rng),
        }
        for c in CONDITIONS
    }


def save(model, path: str, calibration: dict | None) -> None:
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "calibration": calibration}, path)


@dataclasses.dataclass(frozen=True)
class ClipArgs:
    """The CLIP training's arguments (``python -m reward_actors.train_clip --help``)."""

    minutes: float = 8.0
    """Training budget in wall-clock minutes."""
    out: str = "reward_actors/weights/clip_storyworld.pt"
    """Where the weights (and their calibration) are saved; with --eval-only, the weights evaluated."""
    stories: int = 1000
    """Training stories in the frame pool."""
    batch: int = 256
    """Frames per contrastive batch."""
    seed: int = 0
    """Seeds the weights, the pool's stories (seed * 100000, ...) and the evaluation's."""
    eval_stories: int = 64
    """Held-out stories of the evaluation."""
    eval_only: bool = False
    """Evaluate --out without training."""

    def __post_init__(self) -> None:
        for name in ("stories", "batch", "eval_stories"):
            positive_int(self, name)


def main(argv: list[str] | None = None) -> None:
    args = cli.parse(ClipArgs, argv, prog="python -m reward_actors.train_clip", description=__doc__)
    torch.set_num_threads(1)
    if not args.eval_only:
        import open_clip

        torch.manual_seed(args.seed)
        name, t0 = register_model(str(CONFIG_PATH)), time.time()
        model = open_clip.create_model(name).train()  # random init: this is what we train
        pool = render_pool(args.stories, args.seed * 100_000, "train")
        steps = train(model, open_clip.get_tokenizer(name), pool, args.minutes, args.batch, args.seed)
        save(model, args.out, None)
        calibration = calibrate(AlignmentScorer(str(CONFIG_PATH), args.out), 100, args.seed * 100_000 + 50_000)
        save(model, args.out, calibration)
        print(f"trained {steps} steps, calibrated {calibration} in {time.time() - t0:.0f}s -> {args.out}")
    print(json.dumps(evaluate(AlignmentScorer(str(CONFIG_PATH), args.out), args.eval_stories, args.seed), indent=1))


if __name__ == "__main__":
    main()
