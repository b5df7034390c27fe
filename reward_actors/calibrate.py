"""Calibrate the default reward models against the world readers on generated held-out videos.

    python -m reward_actors.calibrate --split heldout --seed 0 --out results/calibration.json

The shipped generator (``inflvg.protocol.load_backend("storyworld")``) makes each prompt set's
video under oracle-K, random-K and sliding-window context (same noise), so scenes range from
consistent to not. The prompt sets are StoryWorld stories as the service sees them
(``inflvg.world.eps.prompt_set_of``: free text plus the subject tags the prompts name); this
script alone also keeps each story, the ground truth the readers' side reads. Then:
- alignment: every generated scene is scored against its own prompt and against the same prompt
  with the background swapped; the reader's value is the share of frames whose read background is
  the prompt's. Spearman over all (scene, prompt) pairs.
- identity: every returning scene is scored against a history of earlier scenes, under two
  protocols. *Production* (``spearman_identity``, ``spearman_identity_scene_vote``): the history
  the service uses, chosen from the prompts alone (``reward_actors.history``: the earlier scenes
  about the subject the scene's prompt names, by its tag). *Ground truth*
  (``..._ground_truth_history``): the earlier scenes of the scene's true character
  (``inflvg.world.story.subject_history``), as before. The readers' value always reads ground
  truth: the same sampled frames as the reward (up to 8 of the new scene, 8 of the true
  character's history), the subject read in each frame, and the mean attribute agreement over
  every (new, history) pair of frames that both show one, as alignment's value is a mean over
  frames. Spearman. Also reported, ``spearman_identity_scene_vote``: against the agreement between
  one per-attribute vote over each scene's frames (the benchmark's identity measure), which throws
  away how consistently a blurred subject reads. ``identity_history_scenes_differ`` counts the
  scenes whose production history differs from the ground-truth one; the untagged variant of the
  same prompt sets (no tags: ``inflvg.subjects`` reads the subject words off the text) reports
  the share of scenes whose history equals the ground-truth one
  (``untagged_history_matches_ground_truth``) and its own Spearman.
- wrong character: on the oracle videos, each returning scene whose video showed another
  character earlier is spoiled by copying that character's latest earlier scene into it; the
  share of such scenes the production identity reward scores below the unspoiled scene
  (``identity_wrong_character_scored_lower``). A reward that compared with whichever earlier
  character is nearest would score the spoiled scene as high.
- combined (production protocol): per prompt set, is the oracle video's mean combined reward
  above the random one's?
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, cast

import numpy as np
from scipy.stats import spearmanr

from inflvg import cli
from inflvg.context import make_strategy
from inflvg.generate import generate
from inflvg.prompts import PromptSet
from inflvg.protocol import load_backend
from inflvg.subjects import subject_scenes
from inflvg.validate import positive_int
from inflvg.world.eps import prompt_set_of
from inflvg.world.readers import attribute_agreement, read_background, read_scene, read_subject
from inflvg.world.story import SPLITS, Story, sample_story, subject_history
from inflvg.world.vocab import BACKGROUND_NAMES, BACKGROUNDS

from .alignment import AlignmentScorer
from .artifacts import ArtifactScorer
from .combine import combine
from .config import RewardConfig
from .history import video_scene_batch
from .identity import IdentityScorer, sample_frames
from .types import SceneBatch, ScoreResult

STRATEGIES = ("oracle", "random", "window")
PROTOCOLS = ("text", "ground_truth", "untagged")  # where the reward's history comes from


def swap_background(prompt: str, current: str, rng: np.random.Generator) -> str:
    other = rng.choice([b for b in BACKGROUND_NAMES if b != current])
    head = prompt[: prompt.rindex(BACKGROUNDS[current][2] + " " + current)]
    return f"{head}{BACKGROUNDS[other][2]} {other}"


def ground_truth_scenes(story: Story, scene: int) -> list[int]:
    """The earlier scenes of ``scene``'s true character (what ``story.subject_history`` concatenates)."""
    return [i for i in range(scene) if story.scenes[i].character == story.scenes[scene].character]


def history_scenes(story: Story, ps: PromptSet, untagged: PromptSet) -> dict[str, list[list[int]]]:
    """Per protocol, per scene, the earlier scenes the identity reward's history is made of."""
    n = len(story.scenes)
    return {
        "text": [subject_scenes(ps, i) for i in range(n)],
        "ground_truth": [ground_truth_scenes(story, i) for i in range(n)],
        "untagged": [subject_scenes(untagged, i) for i in range(n)],
    }


def frames_of(frames: np.ndarray, fps: int, scenes: list[int]) -> np.ndarray | None:
    return np.concatenate([frames[i * fps : (i + 1) * fps] for i in scenes]) if scenes else None


def reader_alignment(frames: np.ndarray, prompt_background: str) -> float:
    return float(np.mean([BACKGROUND_NAMES[read_scene(f[None]).background] == prompt_background for f in frames]))


def reader_identity_votes(story: Story, frames: np.ndarray, fps: int, scene: int) -> float:
    """Attribute agreement of the scene-vote readings, now against each earlier scene of the true
    character, mean; nan at the character's first appearance."""
    read = lambda i: read_scene(frames[i * fps : (i + 1) * fps]).subject  # noqa: E731
    earlier = ground_truth_scenes(story, scene)
    if not earlier:
        return float("nan")
    now = read(scene)
    return float(np.mean([attribute_agreement(now, read(i)) for i in earlier]))


def reader_identity_pairs(story: Story, frames: np.ndarray, fps: int, scene: int, k_new: int = 8, k_history: int = 8) -> float:
    """Mean attribute agreement over (new, history) frame pairs, the frames sampled as the identity
    reward samples them and read one by one, the history the true character's earlier scenes;
    nan when either side shows no subject (or the character first appears)."""
    def readings(clip: np.ndarray, k: int) -> list:
        return [r for r in (read_subject(f, read_background(f)) for f in sample_frames(clip, k)) if r is not None]

    new = readings(frames[scene * fps : (scene + 1) * fps], k_new)
    history = subject_history(story, frames, fps, scene)
    old = [] if history is None else readings(history, k_history)
    if not new or not old:
        return float("nan")
    return float(np.mean([attribute_agreement(a, b) for a in new for b in old]))


def generate_all(prompt_sets: list[PromptSet], seed: int, batch: int = 16) -> tuple[dict[str, np.ndarray], int]:
    gen = load_backend("storyworld")
    out = {}
    for name in STRATEGIES:
        parts = []
        for start in range(0, len(prompt_sets), batch):
            res = generate(gen, prompt_sets[start : start + batch], make_strategy(name), seed=seed + start)
            parts.append(res.frames)
        out[name] = np.concatenate(parts)
        print(f"  generated {len(prompt_sets)} videos with {name}", file=sys.stderr, flush=True)
    return out, gen.spec.frames_per_scene


def identity_by_protocol(ident: IdentityScorer, prompts: list[str], frames: np.ndarray, fps: int,
                         histories: dict[str, list[list[int]]]) -> dict[str, ScoreResult]:  # fmt: skip
    """The identity reward of every scene of one video under each protocol's history; a (scene,
    history) pair two protocols share is scored once."""
    n = len(prompts)
    items = sorted({(i, tuple(h[i])) for h in histories.values() for i in range(n) if h[i]})
    scored = {}
    if items:
        res = ident.score(SceneBatch([frames[i * fps : (i + 1) * fps] for i, _ in items], [prompts[i] for i, _ in items],
                                     [frames_of(frames, fps, list(h)) for _, h in items]))  # fmt: skip
        scored = {item: (res.scores[k], res.reasons[k]) for k, item in enumerate(items)}
    out = {}
    for name, h in histories.items():
        pairs = [scored[(i, tuple(h[i]))] if h[i] else (np.nan, "no history") for i in range(n)]
        scores = np.array([s for s, _ in pairs], np.float64)
        out[name] = ScoreResult(scores, ~np.isnan(scores), [r for _, r in pairs], ident.name, ident.version)
    return out


def wrong_character_scenes(story: Story, scene: int) -> int | None:
    """The latest earlier scene of another character than ``scene``'s, at a returning scene; else None."""
    if not ground_truth_scenes(story, scene):
        return None
    others = [i for i in range(scene) if story.scenes[i].character != story.scenes[scene].character]
    return others[-1] if others else None


def _spearman(model: list, reader: list, nan_policy: str = "omit") -> float:
    # [0] is .statistic, which scipy's runtime-made result class hides from type checkers
    return float(cast(float, spearmanr(model, reader, nan_policy=nan_policy)[0]))


@dataclass
class _Tally:
    """What ``calibrate`` gathers over every generated video, for its report."""

    a_model: list = field(default_factory=list)  # alignment reward, per (scene, prompt) pair
    a_reader: list = field(default_factory=list)  # the readers' alignment, same pairs
    mean_reward: dict[str, list] = field(default_factory=lambda: {s: [] for s in STRATEGIES})  # per strategy, per video
    i_model: dict[str, list] = field(default_factory=lambda: {p: [] for p in PROTOCOLS})  # identity reward, per protocol
    i_pairs: dict[str, list] = field(default_factory=lambda: {p: [] for p in PROTOCOLS})  # frame-pair readers, same scenes
    i_votes: dict[str, list] = field(default_factory=lambda: {p: [] for p in PROTOCOLS})  # scene-vote readers, same scenes
    trap_true: list = field(default_factory=list)  # production identity reward of each wrong-character scene
    trap_spoiled: list = field(default_factory=list)  # the same scene spoiled with the other character's


def _tally_scenes(tally: _Tally, story: Story, frames: np.ndarray, fps: int, batch: SceneBatch, swapped: list[str],
                  alignment: tuple[np.ndarray, np.ndarray], identities: dict[str, ScoreResult]) -> None:  # fmt: skip
    """Per scene: the alignment reward of its own and its swapped prompt (``alignment``) beside the
    readers' value, and its identity reward under each protocol beside the readers'."""
    own, wrong = alignment
    readers: dict[int, tuple[float, float]] = {}
    for i, sc in enumerate(story.scenes):
        tally.a_model += [own[i], wrong[i]]
        tally.a_reader += [reader_alignment(batch.frames[i], sc.background), reader_alignment(batch.frames[i], swapped[i].split()[-1])]
        for protocol, res in identities.items():
            if not res.valid[i]:
                continue
            if i not in readers:  # the readers read ground truth, whichever history the reward used
                readers[i] = (reader_identity_pairs(story, frames, fps, i), reader_identity_votes(story, frames, fps, i))
            tally.i_model[protocol].append(res.scores[i])
            tally.i_pairs[protocol].append(readers[i][0])
            tally.i_votes[protocol].append(readers[i][1])


def _tally_wrong_character(tally: _Tally, ident: IdentityScorer, story: Story, frames: np.ndarray, fps: int, batch: SceneBatch,
                           production: ScoreResult) -> None:  # fmt: skip
    """Spoil each returning scene whose video showed another character earlier with that character's
    latest earlier scene; tally the production identity reward before and after."""
    spoiled, rows = frames.copy(), []
    for i in range(len(story.scenes)):
        other = wrong_character_scenes(story, i)
        if other is not None and production.valid[i]:
            spoiled[i * fps : (i + 1) * fps] = frames[other * fps : (other + 1) * fps]
            rows.append(i)
    if rows:  # the rows' prompts and production history, their frames spoiled
        res = ident.score(dataclasses.replace(batch.subset(rows), frames=[spoiled[i * fps : (i + 1) * fps] for i in rows]))
        tally.trap_true += [production.scores[i] for i in rows]
        tally.trap_spoiled += list(res.scores)


def _report(tally: _Tally, histories: list[dict[str, list[list[int]]]], models: dict[str, list[str]]) -> dict:
    """The calibration figures of a tally (``calibrate``'s report, less its arguments)."""
    above = np.array(tally.mean_reward["oracle"]) > np.array(tally.mean_reward["random"])
    trap_true, trap_spoiled = np.array(tally.trap_true), np.array(tally.trap_spoiled)
    trap_ok = ~np.isnan(trap_spoiled)
    n_scenes = sum(len(h["text"]) for h in histories)
    differ = lambda p: sum(a != b for h in histories for a, b in zip(h[p], h["ground_truth"], strict=True))  # noqa: E731
    i_model, i_pairs, i_votes = tally.i_model, tally.i_pairs, tally.i_votes
    return {
        "spearman_alignment": _spearman(tally.a_model, tally.a_reader, nan_policy="propagate"),
        "spearman_identity": _spearman(i_model["text"], i_pairs["text"]),
        "spearman_identity_scene_vote": _spearman(i_model["text"], i_votes["text"]),
        "spearman_identity_ground_truth_history": _spearman(i_model["ground_truth"], i_pairs["ground_truth"]),
        "spearman_identity_scene_vote_ground_truth_history": _spearman(i_model["ground_truth"], i_votes["ground_truth"]),
        "spearman_identity_untagged_history": _spearman(i_model["untagged"], i_pairs["untagged"]),
        "spearman_identity_scene_vote_untagged_history": _spearman(i_model["untagged"], i_votes["untagged"]),
        "identity_history_scenes": n_scenes,
        "identity_history_scenes_differ": differ("text"),
        "untagged_history_scenes_differ": differ("untagged"),
        "untagged_history_matches_ground_truth": 1.0 - differ("untagged") / n_scenes,
        "identity_wrong_character_scenes": int(trap_ok.sum()),
        "identity_wrong_character_scored_lower": float(np.mean(trap_spoiled[trap_ok] < trap_true[trap_ok])) if trap_ok.any() else float("nan"),
        "identity_wrong_character_mean_scores": {"own": float(np.mean(trap_true[trap_ok])) if trap_ok.any() else float("nan"),
                                                  "spoiled": float(np.mean(trap_spoiled[trap_ok])) if trap_ok.any() else float("nan")},
        "oracle_above_random": float(above.mean()),
        "mean_combined_reward": {k: float(np.mean(v)) for k, v in tally.mean_reward.items()},
        "alignment_pairs": len(tally.a_model),
        "identity_pairs": len(i_model["text"]), "identity_pairs_unread": int(np.isnan(i_pairs["text"]).sum()),
        "identity_pairs_ground_truth_history": len(i_model["ground_truth"]),
        "identity_pairs_unread_ground_truth_history": int(np.isnan(i_pairs["ground_truth"]).sum()),
        "identity_pairs_untagged_history": len(i_model["untagged"]),
        "models": models,
    }  # fmt: skip


def calibrate(split: str, seed: int, n_sets: int, identity: str | None = None) -> dict:
    stories = [sample_story(seed + i, split, 8, 4) for i in range(n_sets)]
    prompt_sets = [prompt_set_of(story, f"{split}-{seed + i}") for i, story in enumerate(stories)]
    untagged = [dataclasses.replace(ps, subjects=None) for ps in prompt_sets]
    histories = [history_scenes(story, ps, un) for story, ps, un in zip(stories, prompt_sets, untagged, strict=True)]
    videos, fps = generate_all(prompt_sets, seed)
    align, ident, art = AlignmentScorer(), IdentityScorer(identity), ArtifactScorer()
    weights = dict(RewardConfig().weights)
    rng = np.random.default_rng(seed)
    tally = _Tally()
    for name, frames_all in videos.items():
        for story, ps, hist, frames in zip(stories, prompt_sets, histories, frames_all, strict=True):
            batch = video_scene_batch([frames], ps, fps)  # the production batch: history chosen from the prompts
            identities = identity_by_protocol(ident, batch.prompts, frames, fps, hist)
            results = {"alignment": align.score(batch), "identity": identities["text"], "artifacts": art.score(batch)}
            tally.mean_reward[name].append(float(np.nanmean(combine(results, weights).total)))
            swapped = [swap_background(p, sc.background, rng) for p, sc in zip(batch.prompts, story.scenes, strict=True)]
            a_swapped = align.score(SceneBatch(batch.frames, swapped)).scores
            _tally_scenes(tally, story, frames, fps, batch, swapped, (results["alignment"].scores, a_swapped), identities)
            if name == "oracle":
                _tally_wrong_character(tally, ident, story, frames, fps, batch, identities["text"])
    models = {"alignment": [align.name, align.version], "identity": [ident.name, ident.version], "artifacts": [art.name, art.version]}
    return {"split": split, "seed": seed, "prompt_sets": n_sets} | _report(tally, histories, models)


@dataclass(frozen=True)
class CalibrateArgs:
    """The calibration's arguments (``python -m reward_actors.calibrate --help``)."""

    split: Annotated[str, cli.choice(SPLITS)] = "heldout"
    """StoryWorld split the prompt sets are drawn from."""
    seed: int = 0
    """Prompt set i is story seed + i; also seeds the generated videos' noise."""
    prompt_sets: int = 48
    """Prompt sets (8 scenes, 4 characters each) generated under each context strategy."""
    identity: str | None = None
    """Identity recognition model (ONNX file or model-pack folder); None: the shipped one."""
    out: str = "results/calibration.json"
    """Where the report goes (JSON)."""

    def __post_init__(self) -> None:
        positive_int(self, "prompt_sets")


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse(CalibrateArgs, argv, prog="python -m reward_actors.calibrate", description=__doc__)
    start = time.time()
    report = calibrate(args.split, args.seed, args.prompt_sets, args.identity)
    report["seconds"] = round(time.time() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
