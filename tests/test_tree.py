"""Tree rollouts: G branches of each scene from one shared history (``generate(tree=True)``,
``RolloutConfig.mode='tree'``), the caches' ``reindex`` under them, and scoring against the kept branch."""

import numpy as np
import pytest
import torch

from cluster.dataplane import scene_batch_bytes
from cluster.dataplane_model import wire_bytes
from cluster.sampler import PromptSampler
from cluster.scoring import scene_batch
from inflvg.context.base import ContextStrategy, SelectionState
from inflvg.generate import generate
from inflvg.policy import PolicyConfig, PromptEmbedder, SelectionPolicy
from inflvg.protocol import load_backend
from inflvg.rollout import from_arrow, to_arrow
from inflvg.sampling import request_seeds, sample_group
from reward_actors.config import RewardConfig
from reward_actors.history import named_history
from rollout_workers.config import RolloutConfig

SCENES = 4


class Replay(ContextStrategy):
    """Selections given in advance: ``picks[scene]`` is (B, K), or (K,) for every video."""

    name = "replay"

    def __init__(self, picks: dict[int, np.ndarray]):
        self.picks = picks

    def select(self, state: SelectionState) -> np.ndarray:
        sel = np.asarray(self.picks[state.scene])
        return np.broadcast_to(sel, (state.n_videos, sel.shape[-1])).copy()


def _picks(gen, n_videos: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Random distinct pool tokens per video and scene (the pool at scene s holds the frames that left the window)."""
    spec, fps = gen.spec, gen.spec.frames_per_scene
    out = {0: np.full((n_videos, spec.context.budget_k), -1)}
    for s in range(1, SCENES):
        n = max(0, s * fps - spec.context.sink_frames - spec.context.window_frames) * spec.long_tokens_per_frame
        k = min(n, spec.context.budget_k)
        out[s] = np.stack([np.concatenate([rng.choice(n, k, replace=False), np.full(spec.context.budget_k - k, -1)]) for _ in range(n_videos)])
    return out


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal frames up to float rounding of another batch size: at most 1 level apart, in under 0.1% of values."""
    d = np.abs(a.astype(np.int16) - b)
    return bool(d.max() <= 1 and (d > 0).mean() < 1e-3)


def test_a_tree_branch_is_the_kept_history_plus_its_own_selection(lively_gen):
    """Branch g of scene s in a tree equals a plain video whose selections before s are branch 0's and at s is g's."""
    ps = PromptSampler(3, SCENES, 3).next(1)[0]
    picks = _picks(lively_gen, 3, np.random.default_rng(0))
    tree = generate(lively_gen, [ps] * 3, Replay(picks), seed=7, shared_noise=True, tree=True).frames
    fps = lively_gen.spec.frames_per_scene
    assert any(not np.array_equal(tree[0, -fps:], tree[g, -fps:]) for g in (1, 2))  # the branches differ by their selections
    for s in range(1, SCENES):
        for g in (1, 2):
            chain = {i: picks[i][0] for i in range(s)} | {s: picks[s][g]} | {i: picks[i][0] for i in range(s + 1, SCENES)}
            plain = generate(lively_gen, [ps], Replay(chain), seed=7, shared_noise=True).frames[0]
            assert same(plain[: s * fps], tree[0, : s * fps])  # the history is branch 0's
            assert same(plain[s * fps : (s + 1) * fps], tree[g, s * fps : (s + 1) * fps]), (s, g)
    with pytest.raises(ValueError, match=r"\[prompt_set\] \* G"):
        generate(lively_gen, PromptSampler(3, SCENES, 3).next(2), Replay(picks), tree=True)


@pytest.mark.parametrize("backend", ["storyworld", "wan-tiny"])
def test_reindex_makes_every_video_continue_from_the_chosen_one(backend, lively_gen):
    """After reindex([1, 1]) the two videos hold video 1's pool and make the same frames from the same noise."""
    gen = lively_gen if backend == "storyworld" else load_backend("wan-tiny")
    spec = gen.spec
    n_frames = 8 * spec.frames_per_scene
    cache = gen.new_cache(2, n_frames, spec.frames_per_scene, spec.context, False, True)
    text = gen.encode_prompts(PromptSampler(1, 1, 3).next(2)[0].scenes[:1] * 2)
    noise = torch.Generator().manual_seed(0)
    while cache.pool().size == 0:  # until frames have left the window
        gen.next_block(cache, text, noise, shared_noise=False)
    before = cache.pool().features.clone()
    assert not torch.equal(before[0], before[1])
    cache.reindex(np.array([1, 1]))
    cache.select(np.zeros((2, 2), np.int64))
    assert torch.equal(cache.pool().features[0], before[1]) and torch.equal(cache.pool().features[1], before[1])
    latents = gen.next_block(cache, text, noise, shared_noise=True)
    assert torch.equal(latents[0], latents[1])


def test_tree_rollouts_share_the_pool_and_score_against_the_kept_branch(lively_gen):
    """Every branch of a scene change saw the same candidates (one history); branch g's history for the
    identity reward is branch 0's earlier scenes, not its own; the record keeps it through Arrow."""
    spec = lively_gen.spec
    torch.manual_seed(0)
    policy = SelectionPolicy(PolicyConfig(d_feature=spec.d_feature, d_prompt=spec.d_prompt, d_model=16, n_heads=2, hidden=32)).eval()
    ps = PromptSampler(4, 6, 3).next(1)[0]
    noise, sel = request_seeds(1, 2, 0, 3)
    embed = PromptEmbedder(lively_gen)
    tree = sample_group(lively_gen, policy, embed, ps, 0, noise, sel, spec.context, tree=True)
    plain = sample_group(lively_gen, policy, embed, ps, 0, noise, sel, spec.context)
    assert [r.history_from for r in tree] == [0, 0, 0] and [r.history_from for r in plain] == [-1, -1, -1]
    last = [r.transitions[-1].features for r in tree]
    assert all(np.array_equal(last[0], f) for f in last[1:])  # one shared history at every scene change
    assert not all(np.array_equal(plain[0].transitions[-1].features, r.transitions[-1].features) for r in plain[1:])
    batch, n, fps = scene_batch(tree, {ps.id: ps}), ps.n_scenes, spec.frames_per_scene
    kept = [named_history(tree[0].frames, ps, fps, s) for s in range(n)]
    own = [named_history(tree[1].frames, ps, fps, s) for s in range(n)]
    assert any(h is not None for h in kept)
    for s in range(n):  # branch 1's scenes: its frames, branch 0's history
        assert np.array_equal(batch.frames[n + s], tree[1].frames[s * fps : (s + 1) * fps])
        assert (batch.history[n + s] is None and kept[s] is None) or np.array_equal(batch.history[n + s], kept[s])
    assert any(k is not None and not np.array_equal(k, o) for k, o in zip(kept, own, strict=True))  # not its own history
    with pytest.raises(ValueError, match="score a group whole"):
        scene_batch(tree[1:], {ps.id: ps})
    identity = RewardConfig().identity
    assert (scene_batch_bytes(tree, {ps.id: ps}, wire_bytes, "identity", identity)
            == scene_batch_bytes(plain, {ps.id: ps}, wire_bytes, "identity", identity))  # the data-plane model too  # fmt: skip
    assert [r.history_from for r in from_arrow(to_arrow(tree))] == [0, 0, 0]


def test_rollout_mode_is_checked():
    assert RolloutConfig(mode="tree").mode == "tree"
    with pytest.raises(ValueError, match=r"RolloutConfig\.mode must be 'trajectory' or 'tree'"):
        RolloutConfig(mode="bush")
