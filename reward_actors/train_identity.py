"""Train the StoryWorld identity network (ArcFace) and export it as an insightface recognition model.

    python -m reward_actors.train_identity --steps 1500 --threads 2 --out reward_actors/weights/identity_storyworld.onnx
    python -m reward_actors.train_identity --evaluate reward_actors/weights/identity_storyworld.onnx

Classes are all training-split identities (what ``sample_identity(rng, "train")`` draws from).
A rendered sample puts a character on a random background at a random position, imitates a
generator's output (colour jitter, blur, noise), and is cropped by the same detector the reward
uses. By default three quarters of each batch are crops of the shipped generator's own
training-split videos, labelled with the identity the world readers read in their scene
(``identity_data.py``). The loss is ArcFace's additive angular margin (Deng et al. 2019, eq. 3), plus an optional
linear read-out of the five attributes from the embedding, which makes cosine similarity grade
with the number of shared attributes. The ONNX input is (N, 3, 112, 112) RGB in [-1, 1], what
``insightface.model_zoo.get_model`` routes to ``ArcFaceONNX`` (square, >= 112, mean/std 127.5).
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata, spearmanr
from torch import nn

from inflvg import cli
from inflvg.config import WorldConfig
from inflvg.validate import at_least, positive_int
from inflvg.world.readers import attribute_agreement, corrupt, read_scene
from inflvg.world.readers_fit import gaussian_blur
from inflvg.world.render import Identity, action_offsets, background, paste
from inflvg.world.story import render_story, sample_story, split_of
from inflvg.world.vocab import ACTION_NAMES, BACKGROUND_NAMES, COLOUR_NAMES, PATTERNS, SHAPES, SIZE_NAMES

from .detector import StoryWorldDetector
from .identity_data import GeneratedCrops, generated_crops
from .types import SceneBatch

INPUT_SIZE = 112
ATTRIBUTE_VALUES = (SHAPES, COLOUR_NAMES, COLOUR_NAMES, PATTERNS, SIZE_NAMES)


def identities(split: str) -> list[Identity]:
    """Every identity of a split, in a fixed order (class index = position)."""
    out = []
    for shape, c1, c2, pattern, size in itertools.product(SHAPES, COLOUR_NAMES, COLOUR_NAMES, PATTERNS, SIZE_NAMES):
        ident = Identity(shape, c1, c2, pattern, size)
        if c1 != c2 and split_of(ident) == split:
            out.append(ident)
    return out


def imitate_generator(frame: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 render -> (H, W, 3) uint8 with per-colour jitter, global shift, blur and noise."""
    x = frame.astype(np.float32)
    if rng.random() < 0.5:  # each flat colour off by its own amount, as "rough" renders are
        colours, which = np.unique(frame.reshape(-1, 3), axis=0, return_inverse=True)
        x += rng.uniform(-25, 25, (len(colours), 3))[which.ravel()].reshape(x.shape) * strength
    x += rng.normal(0, 8 * strength, 3)
    sigma = rng.uniform(0, 1.4 * strength)
    if sigma > 0.2:
        x = gaussian_blur(x, sigma)
    x += rng.normal(0, rng.uniform(0, 12 * strength), x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def render_frame(ident: Identity, rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A character on a random background at a position a scene could put it -> (frame, mask)."""
    frame = background(BACKGROUND_NAMES[rng.integers(len(BACKGROUND_NAMES))], size).copy()
    cy = (rng.uniform(0.45, 0.62) * size) + rng.uniform(-6, 2)  # scene base + action offsets
    cx = (rng.uniform(0.35, 0.65) * size) + rng.uniform(-5, 5)
    return frame, paste(frame, ident, cy, cx)


def to_input(crops: list[np.ndarray]) -> torch.Tensor:
    """N RGB uint8 crops -> (N, 3, 112, 112) float in [-1, 1], resized as cv2.dnn.blobFromImages does."""
    x = np.stack([cv2.resize(c, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR) for c in crops])
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() - 127.5) / 127.5


def make_batch(classes: list[Identity], n: int, rng: np.random.Generator, detector: StoryWorldDetector,
               generated: GeneratedCrops | None = None, generated_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """-> (x (n, 3, 112, 112), labels (n,)): freshly rendered, imitated, detected crops, and a
    ``generated_fraction`` of the batch drawn from the generator's own labelled crops."""
    n_gen = 0 if generated is None else round(generated_fraction * n)
    labels = rng.integers(len(classes), size=n - n_gen)
    crops = []
    for k in labels:
        frame, mask = render_frame(classes[k], rng)
        frame, (ys, xs) = imitate_generator(frame, rng), np.nonzero(mask)
        box = detector.bbox(frame) or (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)  # true box if augmentation hid it
        crops.append(detector.crop_box(frame, box))
    if n_gen and generated is not None:  # n_gen > 0 only with generated crops
        pick = rng.integers(len(generated.labels), size=n_gen)
        crops += [generated.crops[i] for i in pick]
        labels = np.concatenate([labels, generated.labels[pick]])
    return to_input(crops), torch.from_numpy(labels)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class IdentityNet(nn.Module):
    """(N, 3, 112, 112) RGB in [-1, 1] -> (N, dim) embedding (unnormalised, as ArcFace models give)."""

    def __init__(self, dim: int = 64, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(4),  # (N, 3, 28, 28): the crops hold ~20 source pixels, 112 is the loader's contract
            _block(3, width), _block(width, width), nn.MaxPool2d(2),  # (N, w, 14, 14)
            _block(width, 2 * width), _block(2 * width, 2 * width), nn.MaxPool2d(2),  # (N, 2w, 7, 7)
            _block(2 * width, 2 * width),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(2 * width * 49, dim), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ArcFaceLoss(nn.Module):
    """Additive angular margin: cross-entropy over s * cos(theta_y + m) and s * cos(theta_j)."""

    def __init__(self, dim: int, n_classes: int, scale: float = 24.0, margin: float = 0.3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-6, 1 - 1e-6)  # (N, C)
        cy = cos.gather(1, labels[:, None])  # (N, 1) cosine to the own class
        # past theta = pi - m, cos(theta + m) would grow again: use a linear penalty there instead
        target = torch.where(cy > np.cos(np.pi - self.margin), torch.cos(torch.acos(cy) + self.margin), cy - self.margin * np.sin(self.margin))
        logits = cos.scatter(1, labels[:, None], target) * self.scale
        return F.cross_entropy(logits, labels)


def attribute_targets(classes: list[Identity]) -> torch.Tensor:
    """(C, 5) index of each class's (shape, colour1, colour2, pattern, size) value."""
    return torch.tensor([[vals.index(a) for vals, a in zip(ATTRIBUTE_VALUES, c.attributes(), strict=True)] for c in classes])


def export_onnx(model: IdentityNet, out: Path) -> None:
    """Write the embedding network as a single-file ONNX with a dynamic batch axis."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(out), input_names=["input.1"], output_names=["embedding"],
            dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False, external_data=False, opset_version=17,
        )


def train(minutes: float, steps: int | None, seed: int, batch: int, attr_weight: float, lr: float, margin: float = 0.3,
          generated: GeneratedCrops | None = None, generated_fraction: float = 0.75) -> IdentityNet:  # fmt: skip
    """Train for ``steps`` (or as many as fit in ``minutes``, measured on the first 10); cosine lr.
    ``generated``: the generator's own labelled crops, a ``generated_fraction`` of every batch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    classes, detector = identities("train"), StoryWorldDetector()
    model, arc = IdentityNet(), ArcFaceLoss(64, len(classes))
    attrs, readout = attribute_targets(classes), nn.ModuleList(nn.Linear(64, len(v)) for v in ATTRIBUTE_VALUES)
    params = [*model.parameters(), *arc.parameters(), *readout.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    total, start, step = steps or 10**9, time.time(), 0
    while step < total:
        if steps is None and step == 10:  # fix the schedule from the measured speed
            total = max(20, int(minutes * 60 / ((time.time() - start) / 10)))
            print(f"schedule: {total} steps (reproduce with --steps {total})", flush=True)
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(step / total, 1.0))) if step >= 10 else lr * (step + 1) / 10
        arc.margin = margin * min(1.0, step / (0.2 * total))  # from-scratch ArcFace converges with the margin ramped in
        x, y = make_batch(classes, batch, rng, detector, generated, generated_fraction)
        emb = model(x)
        loss = arc(emb, y)
        aux = cast(torch.Tensor, sum(F.cross_entropy(head(emb), attrs[y, i]) for i, head in enumerate(readout))) / 5  # 5 heads: a tensor
        opt.zero_grad()
        (loss + attr_weight * aux).backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step == total:
            print(f"step {step}/{total} arcface {loss.item():.3f} attributes {aux.item():.3f} {time.time() - start:.0f}s", flush=True)
    print(f"trained {step} steps in {(time.time() - start) / 60:.1f} min", flush=True)
    return model.eval()


def _variant(ident: Identity, k: int, rng: np.random.Generator) -> Identity:
    """``ident`` with k of its five attributes changed (colour1 != colour2 kept)."""
    while True:
        attrs = list(ident.attributes())
        for i in rng.choice(5, k, replace=False):
            attrs[i] = rng.choice([v for v in ATTRIBUTE_VALUES[i] if v != attrs[i]])
        if attrs[1] != attrs[2]:
            return Identity(*attrs)


def render_scene(ident: Identity, rng: np.random.Generator, n_frames: int = 4, size: int = 32) -> np.ndarray:
    """(n_frames, size, size, 3) uint8 scene of ``ident`` with a random background and action."""
    bg, action = BACKGROUND_NAMES[rng.integers(len(BACKGROUND_NAMES))], ACTION_NAMES[rng.integers(len(ACTION_NAMES))]
    pos = np.array([rng.uniform(0.45, 0.62), rng.uniform(0.35, 0.65)]) * size + action_offsets(action, n_frames)
    frames = np.repeat(background(bg, size)[None], n_frames, 0)
    for f, (cy, cx) in zip(frames, pos, strict=True):
        paste(f, ident, cy, cx)
    return frames


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half)."""
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def verification(scorer, split: str, degrade: bool, hard: bool, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (cosines of same-character pairs, of different-character pairs): single detected crops,
    independent renders; "hard" different pairs differ in exactly one attribute."""
    pool, crops, same = identities(split), [], []
    for p in range(n_pairs):
        a = pool[rng.integers(len(pool))]
        b = a if p % 2 == 0 else (_variant(a, 1, rng) if hard else pool[rng.integers(len(pool))])
        pair = [render_frame(ident, rng)[0] for ident in (a, b)]
        pair = [scorer.detector.crop(corrupt(f, "degrade", rng) if degrade else f) for f in pair]
        if all(c is not None for c in pair):
            crops += pair
            same.append(a == b)
    feats = np.concatenate([scorer.embed(crops[i : i + 512]) for i in range(0, len(crops), 512)])
    cos = (feats[0::2] * feats[1::2]).sum(1)
    return cos[np.array(same)], cos[~np.array(same)]


def scene_pairs(n_stories: int, degrade: bool, rng: np.random.Generator) -> tuple[list, list, list]:
    """Held-out (new scene, history) pairs: history of the same character, of another cast member,
    and of variants of the subject with 1-4 attributes changed -> (news, histories, group labels)."""
    world, news, hists, groups = WorldConfig(), [], [], []
    for seed in range(n_stories):
        story = sample_story(seed, "heldout", world.n_scenes, world.cast_size)
        video = render_story(story, world)
        scenes = [video.frames[video.scene == j] for j in range(len(story.scenes))]
        if degrade:
            scenes = [np.stack([corrupt(f, "degrade", rng) for f in s]) for s in scenes]
        for j, sc in enumerate(story.scenes):
            ident = story.cast[sc.character]
            same = [k for k, o in enumerate(story.scenes) if o.character == sc.character and k != j]
            other = [k for k, o in enumerate(story.scenes) if o.character != sc.character]
            partners = [("same", scenes[k]) for k in same[:1]] + [("cast", scenes[k]) for k in rng.permutation(other)[:1]]
            for k in range(1, 5):
                v = render_scene(_variant(ident, k, rng), rng)
                partners.append((f"{k} changed", np.stack([corrupt(f, "degrade", rng) for f in v]) if degrade else v))
            news += [scenes[j]] * len(partners)
            groups += [g for g, _ in partners]
            hists += [h for _, h in partners]
    return news, hists, groups


def report(onnx: Path, seed: int = 0, n_pairs: int = 2000, n_stories: int = 16) -> dict:
    """Print held-out verification (AUC, accuracy at the threshold best on training identities)
    and the Spearman correlation of the identity score with the world readers' attribute agreement."""
    from .identity import IdentityScorer

    scorer, rng, out = IdentityScorer(str(onnx), num_threads=1), np.random.default_rng([seed, 99]), {}
    for degrade, hard in ((False, False), (True, False), (False, True), (True, True)):
        tag = ("degraded" if degrade else "clean") + (", 1-attribute negatives" if hard else "")
        tp, tn = verification(scorer, "train", degrade, hard, n_pairs, rng)
        thr = max(np.concatenate([tp, tn]), key=lambda t: (tp >= t).mean() + (tn < t).mean())
        hp, hn = verification(scorer, "heldout", degrade, hard, n_pairs, rng)
        acc = ((hp >= thr).sum() + (hn < thr).sum()) / (len(hp) + len(hn))
        out[tag] = {"auc": _auc(hp, hn), "accuracy": float(acc), "threshold": float(thr), "same": float(hp.mean()), "different": float(hn.mean())}
        print(f"verification held-out ({tag}): AUC {out[tag]['auc']:.3f} accuracy {acc:.3f} (threshold {thr:.2f} from train ids), "
              f"mean cos same {hp.mean():.2f} different {hn.mean():.2f}")
    for degrade in (False, True):
        news, hists, groups = scene_pairs(n_stories, degrade, rng)
        batch = SceneBatch(news, ["p"] * len(news), hists)
        parts = [scorer.score(batch.subset(list(range(i, min(i + 64, len(batch)))))) for i in range(0, len(batch), 64)]
        scores, ok = np.concatenate([r.scores for r in parts]), np.concatenate([r.valid for r in parts])
        agree = np.array([attribute_agreement(read_scene(a).subject, read_scene(b).subject) for a, b in zip(news, hists, strict=True)])
        rho = cast(float, spearmanr(scores[ok], agree[ok])[0])  # .statistic, hidden from type checkers by scipy's runtime-made class
        by = {g: float(np.nanmean(scores[np.array(groups) == g])) for g in dict.fromkeys(groups)}
        tag = "degraded" if degrade else "clean"
        out[f"spearman {tag}"] = {"spearman": float(rho), "pairs": int(ok.sum()), "masked": int((~ok).sum()), "mean score": by}
        means = ", ".join(f"{g} {v:.2f}" for g, v in by.items())
        print(f"spearman vs reader agreement ({tag}): {rho:.3f} over {ok.sum()} pairs ({(~ok).sum()} masked); mean score {means}")
    return out


@dataclass(frozen=True)
class IdentityArgs:
    """The identity network's training arguments (``python -m reward_actors.train_identity --help``)."""

    minutes: float = 8.0
    """Training budget; sets the number of steps (measured on the first 10)."""
    steps: int | None = None
    """Exact number of steps (overrides --minutes); None: as many as fit in --minutes."""
    seed: int = 0
    """Seeds the weights, the batches, the generator's crops and the evaluation."""
    batch: int = 128
    """Crops per batch."""
    lr: float = 3e-3
    """Peak learning rate (cosine schedule)."""
    attr_weight: float = 0.5
    """Weight of the attribute read-out loss (0: pure ArcFace)."""
    threads: int = 1
    """torch threads."""
    generated_videos: int = 768
    """Training-split videos the shipped generator makes for the generator-crop share of each batch (0: renders only)."""
    generated_fraction: float = 0.75
    """Share of each batch taken from the generator's crops."""
    out: Path = Path(__file__).resolve().parent / "weights" / "identity_storyworld.onnx"
    """Where the ONNX recognition model is written."""
    evaluate: Path | None = None
    """Only evaluate this ONNX on held-out identities (no training)."""
    json: Path | None = None
    """Also write the held-out figures to this file."""

    def __post_init__(self) -> None:
        positive_int(self, "batch")
        positive_int(self, "threads")
        at_least(self, "generated_videos", 0, "use 0 for rendered crops only")
        if self.steps is not None:
            positive_int(self, "steps", "or None to train for --minutes")


def main(argv: list[str] | None = None) -> None:
    args = cli.parse(IdentityArgs, argv, prog="python -m reward_actors.train_identity", description=__doc__)
    torch.set_num_threads(args.threads)
    if args.evaluate is None:
        generated = None
        if args.generated_videos > 0:
            generated = generated_crops(args.generated_videos, identities("train"), seed=args.seed)
            print(f"generator crops: {len(generated.labels)} from {generated.kept_scenes} scenes ({generated.skipped_scenes} scenes skipped)")
        model = train(args.minutes, args.steps, args.seed, args.batch, args.attr_weight, args.lr,
                      generated=generated, generated_fraction=args.generated_fraction)  # fmt: skip
        export_onnx(model, args.out)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    figures = report(args.evaluate or args.out, seed=args.seed)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
