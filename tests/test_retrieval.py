"""The published context-selection methods (memflow, rag, fademem): valid selections, the ranking
each method promises on hand-built pools, the backends' prompt queries equal to the attention
logits the models compute, and generation end to end on both backends."""

import numpy as np
import pytest
import torch

from inflvg.context import STRATEGIES, make_strategy
from inflvg.context.base import SelectionState
from inflvg.context.retrieval import FADE_ALPHA, FadeMem, allocate
from inflvg.generate import generate
from inflvg.prompts import PromptSet, load_prompts
from inflvg.protocol import Pool, PromptQuery, load_backend
from inflvg.world import sample_prompt_set

NEW = ["memflow", "rag", "fademem"]
GRID = (4, 4)
N_TOK = GRID[0] * GRID[1]


def pool_of(frames, features: torch.Tensor, fps: int = 4, grid=GRID) -> Pool:
    n = grid[0] * grid[1]
    frames = np.asarray(frames)
    tok = np.tile(np.arange(n), len(frames))
    return Pool(features, np.repeat(frames, n), np.repeat(frames, n) // fps, tok // grid[1], tok % grid[1], grid)


def prompt_sets(b: int, n_scenes: int = 8) -> list[PromptSet]:
    return [sample_prompt_set(i, "heldout", n_scenes, 4, f"h{i}") for i in range(b)]


def state_of(pool: Pool, k: int, b: int, scene: int = 6, fps: int = 4, query=None, latest=None) -> SelectionState:
    frames = np.zeros((b, scene * fps, 32, 32, 3), np.uint8)
    return SelectionState(scene, prompt_sets(b), fps, k, pool, frames, np.random.default_rng(0), query, latest)


def check_valid(sel: np.ndarray, b: int, k: int, pool_size: int) -> None:
    assert sel.shape == (b, k) and sel.dtype == np.int64
    for row in sel:
        used = row[row >= 0]
        assert ((row >= -1) & (row < pool_size)).all() and len(set(used.tolist())) == len(used) == min(k, pool_size)
        assert (row[len(used) :] == -1).all()  # the chosen first, then the empty slots


def random_state(k: int, b: int = 3, n_frames: int = 17, d: int = 8, seed: int = 0) -> SelectionState:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n_frames * N_TOK, d, generator=g)
    query = PromptQuery(torch.randn(b, d, generator=g), torch.zeros(b), standardize=False)
    return state_of(pool_of(np.arange(1, 1 + n_frames), feats), k, b, query=query, latest=torch.randn(b, N_TOK, d, generator=g))


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("k", [0, 1, 7, 40, 17 * N_TOK, 17 * N_TOK + 9])
def test_selections_are_valid_distinct_pool_indices_up_to_k(name, k):
    strategy = make_strategy(name)
    assert name in STRATEGIES and strategy.budgeted and strategy.uses_sink and not strategy.needs_ground_truth
    st = random_state(k)
    check_valid(strategy.select(st), st.n_videos, k, st.pool_size)
    empty = state_of(pool_of([], torch.zeros(2, 0, 8)), k, 2, scene=1)  # the first scene: nothing to choose from
    assert (strategy.select(empty) == -1).all() and strategy.select(empty).shape == (2, k)


def test_memflow_ranks_the_key_matching_the_prompt_query_first_per_video():
    b, d, n_frames = 2, 16, 6
    g = torch.Generator().manual_seed(1)
    feats = 0.1 * torch.randn(b, n_frames * N_TOK, d, generator=g)
    target = [37, 70]  # video b's prompt query points at candidate target[b], and less at the second
    second = [5, 90]
    query = torch.zeros(b, d)
    for v in range(b):
        query[v, v] = 1.0
        feats[v, target[v], v] = 3.0
        feats[v, second[v], v] = 2.0
    st = state_of(pool_of(np.arange(1, 1 + n_frames), feats), 4, b, query=PromptQuery(query, torch.zeros(b), standardize=False))
    sel = make_strategy("memflow").select(st)
    check_valid(sel, b, 4, st.pool_size)
    assert sel[:, 0].tolist() == target and sel[:, 1].tolist() == second
    with pytest.raises(ValueError, match=r"needs SelectionState\.prompt_query"):
        make_strategy("memflow").select(state_of(st.pool, 4, b))


def test_rag_takes_whole_frames_most_like_the_latest_frame_then_the_best_tokens_of_the_next():
    b, d, n_frames = 2, 12, 8
    g = torch.Generator().manual_seed(2)
    basis = torch.eye(d)
    feats = torch.zeros(b, n_frames * N_TOK, d)
    for f in range(n_frames):  # frame f's tokens: direction f, plus noise
        feats[:, f * N_TOK : (f + 1) * N_TOK] = basis[f] + 0.01 * torch.randn(b, N_TOK, d, generator=g)
    best, runner_up = [2, 6], [5, 0]  # per video: the latest frame looks like frame best, then a little like runner_up
    latest = torch.zeros(b, N_TOK, d)
    for v in range(b):
        latest[v] = basis[best[v]] + 0.4 * basis[runner_up[v]]
        feats[v, runner_up[v] * N_TOK : (runner_up[v] + 1) * N_TOK, best[v]] += torch.linspace(0.0, 1.5, N_TOK)
    k = N_TOK + 5
    st = state_of(pool_of(np.arange(1, 1 + n_frames), feats), k, b, latest=latest)
    sel = make_strategy("rag").select(st)
    check_valid(sel, b, k, st.pool_size)
    for v in range(b):
        frames = st.pool.frame[sel[v]]
        assert (frames[:N_TOK] == best[v] + 1).all() and (frames[N_TOK:] == runner_up[v] + 1).all()
        # of the runner-up frame, the 5 tokens closest to the query: those leaning most towards frame best's direction
        assert sorted(sel[v, N_TOK:] - runner_up[v] * N_TOK) == list(range(N_TOK - 5, N_TOK))
    with pytest.raises(ValueError, match=r"needs SelectionState\.latest_features"):
        make_strategy("rag").select(state_of(st.pool, k, b))


def test_fademem_counts_fall_off_as_a_power_law_of_age_spread_over_the_grid():
    n_frames, fps, k = 20, 21, 40
    feats = torch.zeros(2, n_frames * N_TOK, 1)  # unread: the choice is the geometry's alone
    st = state_of(pool_of(np.arange(1, 1 + n_frames), feats, fps=fps), k, 2, scene=1, fps=fps)  # ages 20..1
    sel = make_strategy("fademem").select(st)
    check_valid(sel, 2, k, st.pool_size)
    assert (sel[0] == sel[1]).all()  # geometry only: the same for every video
    age = fps - np.arange(1, 1 + n_frames)
    counts = np.array([(st.pool.frame[sel[0]] == f).sum() for f in range(1, 1 + n_frames)])
    expected = k * age**-FADE_ALPHA / (age**-FADE_ALPHA).sum()
    assert np.abs(counts - expected).max() < 1 and counts.sum() == k
    by_age = counts[np.argsort(age)]
    assert (np.diff(by_age) <= 0).all() and by_age[0] == 11 and by_age[-1] == 0
    kept = by_age > 0
    slope = np.polyfit(np.log(np.sort(age)[kept]), np.log(by_age[kept]), 1)[0]
    assert -1.3 < slope < -0.7
    # the 4 tokens of a frame of age 3 sit on a 2x2 sub-grid, not in a corner
    f3 = np.flatnonzero(st.pool.frame[sel[0]] == fps - 3)
    cells = {(int(st.pool.row[sel[0, j]]), int(st.pool.col[sel[0, j]])) for j in f3}
    assert cells == {(1, 1), (1, 3), (3, 1), (3, 3)}
    steeper = FadeMem()
    steeper.alpha = 2.0
    counts2 = np.array([(st.pool.frame[steeper.select(st)[0]] == f).sum() for f in range(1, 1 + n_frames)])
    assert counts2[-1] > counts[-1] and counts2[0] <= counts[0]  # a steeper law: denser near, sparser far


def test_allocate_caps_a_frame_at_its_tokens_and_gives_the_surplus_to_the_others():
    assert allocate(40, np.array([1.0, 0.5, 1 / 3, 0.25]), np.full(4, 16)).tolist() == [16, 11, 7, 6]
    assert allocate(100, np.array([1.0, 0.5]), np.array([16, 16])).tolist() == [16, 16]


@pytest.fixture(scope="module")
def wan():
    return load_backend("wan-tiny")


def test_storyworld_prompt_query_is_the_last_blocks_cross_attention_logit(tiny_gen):
    model = tiny_gen.model
    emb = tiny_gen.encode_prompts(["character B jumps on the beach", "character A, a big green circle, runs in the desert"])
    h = torch.randn(2, 10, model.cfg.d_model)
    blk = model.blocks[-1]
    with torch.no_grad():
        q = blk.heads(blk.cross_q(blk.norm_x(h)))  # (B, nh, N, hd)
        kk = blk.heads(blk.cross_kv(emb.tokens).chunk(2, -1)[0])  # (B, nh, L, hd)
        logits = (q @ kk.transpose(-1, -2)).sum(1) / model.head_dim**0.5  # (B, N, L), summed over heads
        m = emb.mask[:, None, :].float()
        want = (logits * m).sum(-1) / m.sum(-1)
        got = tiny_gen.prompt_query(emb).scores(h)
    assert torch.allclose(got, want, atol=1e-4)


def test_wan_prompt_query_is_the_feature_layers_self_attention_logit(wan):
    emb = wan.encode_prompts(["A golden retriever runs", "A grey tabby cat sleeps on a red sofa"])
    attn = wan.model.net.blocks[wan.cfg.feature_layer].attn1
    keys = torch.randn(2, 10, wan.cfg.dim)
    with torch.no_grad():
        q = attn.norm_q(attn.to_q(emb.tokens))  # (B, L, dim)
        logits = torch.einsum("bld,bnd->bnl", q, keys) / (wan.cfg.dim // wan.cfg.num_heads) ** 0.5
        m = emb.mask[:, None, :].float()
        want = (logits * m).sum(-1) / m.sum(-1)
        got = wan.prompt_query(emb).scores(keys)
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("backend", ["storyworld", "wan-tiny"])
def test_latest_features_are_the_newest_frames_features_the_pool_later_holds(tiny_gen, wan, backend):
    gen = tiny_gen if backend == "storyworld" else wan
    spec, f = gen.spec, gen.spec.frames_per_block
    cache = gen.new_cache(2, 8 * f, 2 * f, spec.context, full_history=False, uses_sink=True)
    assert cache.latest_features() is None
    emb, noise = gen.encode_prompts(["character B jumps on the beach"] * 2), torch.Generator().manual_seed(0)
    cache.select(np.full((2, 0), -1))
    latest = []
    for _ in range(8):
        gen.next_block(cache, emb, noise, shared_noise=False)
        latest.append(cache.latest_features().clone())  # pyright: ignore[reportOptionalMemberAccess]
    pool, n = cache.pool(), spec.long_tokens_per_frame
    newest_in_pool = int(pool.frame[-1])
    assert latest[0].shape == (2, n, spec.d_feature) and newest_in_pool >= f
    block, last = divmod(newest_in_pool, f)
    assert last == f - 1  # a whole block left the window: its newest frame was the latest one after that block
    assert torch.equal(latest[block], pool.features[:, -n:])


def check_generation(res, gen, n_videos: int, k: int) -> None:
    assert len(res.selections) == len(res.frames[0]) // gen.spec.frames_per_scene
    fed = 0
    for sc, sel in enumerate(res.selections):
        pool_size = max(0, sc * gen.spec.frames_per_scene - gen.spec.context.window_frames - gen.spec.context.sink_frames)
        check_valid(sel, n_videos, k, pool_size * gen.spec.long_tokens_per_frame)
        fed += int((sel >= 0).sum())
    assert fed > 0


@pytest.mark.parametrize("name", NEW)
def test_generates_end_to_end_on_storyworld(tiny, tiny_gen, name):
    world = tiny[1]
    sets = [sample_prompt_set(i, "heldout", world.n_scenes, world.cast_size, f"h{i}") for i in range(2)]
    res = generate(tiny_gen, sets, make_strategy(name), seed=3)
    assert res.frames.shape == (2, world.n_scenes * world.frames_per_scene, 32, 32, 3)
    check_generation(res, tiny_gen, 2, tiny_gen.spec.context.budget_k)


@pytest.mark.parametrize("name", NEW)
def test_generates_end_to_end_on_wan_tiny_with_free_text(wan, name):
    sets = [PromptSet(ps.id, ps.scenes[:4]) for ps in load_prompts("tests/data/free_text.jsonl")[:2]]
    res = generate(wan, sets, make_strategy(name), seed=1)
    assert res.frames.shape[:2] == (2, 4 * wan.spec.frames_per_scene)
    check_generation(res, wan, 2, wan.spec.context.budget_k)
    if name == "memflow":  # per-video retrieval: two different prompts, two different choices
        assert not (res.selections[-1][0] == res.selections[-1][1]).all()
