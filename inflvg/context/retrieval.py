"""Published context-selection methods, adapted to this cache: at each scene change it keeps K tokens
chosen from the long-term pool (besides the sink and the window) and never merges or rewrites
them. Each strategy below says what its paper does, what was changed to fit that, and why.

``memflow``  MemFlow (arXiv 2512.14699): the current prompt retrieves the stored keys it attends to most.
``rag``      LongLive-RAG (arXiv 2606.02553): the past frames most similar to the latest one, as
             ``[sink | retrieved | local]``.
``fademem``  FadeMem (arXiv 2606.10671): a fixed budget spread "dense near, sparse far", by a power law of age.

All three run on any backend (they read only ``Pool``, ``SelectionState`` and the generator's own
projections), select per video, and never read StoryWorld's ground truth.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .base import ContextStrategy, SelectionState, pad_selection

FADE_ALPHA = 1.0  # FadeMem's decay exponent: a past frame's share of the budget is proportional to age ** -FADE_ALPHA


def _empty(state: SelectionState) -> np.ndarray:
    return pad_selection([[] for _ in range(state.n_videos)], state.budget_k)


def _missing(name: str, field: str) -> ValueError:
    return ValueError(f"strategy {name!r} needs SelectionState.{field}, which the generation loop (inflvg.generate) fills; "
                      f"a hand-built state must give it")  # fmt: skip


class MemFlow(ContextStrategy):
    """MemFlow's Narrative Adaptive Memory, training-free as in the paper: before a chunk is made,
    the text of its prompt is the query, the memory bank's stored keys are the keys, and the entries
    with the highest relevance Aggregate(Softmax(Q_text K^T / sqrt(d))) are kept.

    Adapted: (1) the query. Each backend builds it from its own projections at the layer the pool's
    features come from (``Generator.prompt_query``): on Wan the features are layer ``feature_layer``'s
    self-attention keys, and the prompt's tokens go through that layer's query projection (and
    norm_q), averaged over the prompt's tokens: MemFlow's Q_text. Text tokens never pass through a
    self-attention in Wan, so this is the logit the layer would give each cached key for the prompt
    as a query, not one the model computes. On StoryWorld the features are the last block's output,
    which no attention reads; the query is the reverse of that block's cross-attention (a visual
    token's cross-attention query against the prompt's keys, averaged over the prompt's tokens), so
    a candidate's score is the logit with which it would attend to the current prompt, exactly as
    the block computes it (LayerNorm included). (2) The unit. MemFlow keeps whole frames (the
    aggregate over a frame's tokens) and then activates the most relevant tokens of the bank
    (Sparse Memory Activation); this cache's unit is the token, so the K candidates with the highest
    logit are kept, which is the two steps in one. The softmax over candidates is monotonic, so
    ranking by the logit is the same. Ties keep the order torch.topk gives."""

    name, reads_prompt_query = "memflow", True

    def select(self, state: SelectionState) -> np.ndarray:
        import torch  # here, not at import: the core's import stays light (tests/test_config.py)
        k = min(state.budget_k, state.pool_size)
        if k == 0:
            return _empty(state)
        if state.prompt_query is None:
            raise _missing(self.name, "prompt_query")
        scores = state.prompt_query.scores(state.pool.features)  # (B, N)
        return pad_selection(torch.topk(scores, k, dim=1).indices.cpu().numpy().tolist(), state.budget_k)


class LongLiveRAG(ContextStrategy):
    """LongLive-RAG: every finished block is embedded by a small retrieval encoder; for each new
    block the most similar past blocks go between the sink and the local window,
    ``[sink | retrieved | local]``, with the generator frozen. This cache has exactly that layout
    (the sink, K retrieved tokens, the window).

    Adapted: their encoder is trained; here the embedding is training-free and the generator's own:
    the mean of a past frame's candidate features (``Pool.features``). The query is the same
    embedding of the newest frame made (``SelectionState.latest_features``, still in the window),
    the similarity is cosine, and the retrieval unit is the frame (the pool's unit; on Wan a block
    is three of them). Frames are taken best first, whole, until K tokens are filled; the last one
    that does not fit gives its tokens most similar to the query. Retrieval runs at each scene
    change, when this cache selects, not at every block. Ties go to the newer frame."""

    name, reads_latest = "rag", True

    def select(self, state: SelectionState) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        pool, budget = state.pool, state.budget_k
        if pool.size == 0 or budget == 0:
            return _empty(state)
        if state.latest_features is None:
            raise _missing(self.name, "latest_features")
        feats = pool.features.float()  # (B, N, d)
        frames, starts, inverse, sizes = np.unique(pool.frame, return_index=True, return_inverse=True, return_counts=True)
        inv = torch.as_tensor(inverse, device=feats.device)
        counts = torch.bincount(inv, minlength=len(frames)).to(feats.dtype)
        emb = torch.zeros(feats.shape[0], len(frames), feats.shape[2], device=feats.device).index_add_(1, inv, feats) / counts[:, None]
        query = state.latest_features.float().to(feats.device).mean(1)  # (B, d)
        frame_sim = F.cosine_similarity(emb, query[:, None], dim=-1).cpu().numpy()  # (B, n_frames)
        members = [np.arange(a, a + n) for a, n in zip(starts, sizes, strict=True)]  # the pool lists a frame's tokens together
        chosen = []
        for b in range(state.n_videos):
            newest_first = np.arange(len(frames))[::-1]
            order = newest_first[np.argsort(-frame_sim[b, newest_first], kind="stable")]
            picks: list[int] = []
            for i in order:
                room = budget - len(picks)
                if room <= 0:
                    break
                idx = members[i]
                if len(idx) > room:  # the last frame, in part: its tokens most like the query
                    sim = F.cosine_similarity(feats[b, idx[0] : idx[-1] + 1], query[b][None], dim=-1).cpu().numpy()
                    idx = idx[np.argsort(-sim, kind="stable")[:room]]
                picks.extend(idx.tolist())
            chosen.append(picks)
        return pad_selection(chosen, budget)


class FadeMem(ContextStrategy):
    """FadeMem: a fixed memory budget kept "dense near, sparse far", the density of what is kept
    falling off as a power law of age.

    Adapted: the budget is the cache's K tokens, allocated over the past frames in the pool with
    weight age ** -alpha (age: frames between a past frame and the first frame of the scene about
    to be made; alpha = ``FADE_ALPHA``, 1.0), largest remainders rounding to whole tokens, and a
    frame's share capped at its token count (the surplus goes to the others in proportion).
    Within a frame its tokens are spread evenly over the grid (a sub-grid of the pool's rows and
    columns, in the grid's aspect), so a far frame keeps a coarse view of the whole picture rather
    than one corner. This cache selects and never merges, so a frame's fading is fewer kept tokens,
    not coarser ones. Deterministic; the same choice for every video of a batch (it reads only the
    pool's geometry)."""

    name = "fademem"
    alpha = FADE_ALPHA

    def select(self, state: SelectionState) -> np.ndarray:
        pool = state.pool
        if pool.size == 0 or state.budget_k == 0:
            return _empty(state)
        frames, starts, sizes = np.unique(pool.frame, return_index=True, return_counts=True)
        age = np.maximum(state.scene * state.frames_per_scene - frames, 1).astype(np.float64)
        quota = allocate(state.budget_k, age**-self.alpha, sizes)
        picks: list[int] = []
        for i in np.argsort(age, kind="stable"):  # youngest first
            if quota[i]:
                span = slice(starts[i], starts[i] + sizes[i])
                picks.extend((spread(pool.row[span], pool.col[span], pool.grid, int(quota[i])) + int(starts[i])).tolist())
        return pad_selection([picks] * state.n_videos, state.budget_k)


def allocate(k: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Split min(k, sum(caps)) whole tokens over frames in proportion to ``weights``, none above its
    cap: the share of a capped frame goes to the others in proportion; then largest remainders
    (ties to the larger weight)."""
    k = int(min(k, caps.sum()))
    share, free = np.zeros(len(weights)), np.ones(len(weights), bool)
    while True:
        left = k - share[~free].sum()
        want = np.where(free, left * weights / weights[free].sum(), 0.0)
        over = free & (want > caps)
        if not over.any():
            share[free] = want[free]
            break
        share[over], free = caps[over], free & ~over
    base = np.floor(share + 1e-9).astype(np.int64)
    extra = k - int(base.sum())
    for i in np.lexsort((-weights, -(share - base)))[:extra]:
        base[i] += 1
    return base


def spread(rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int], c: int) -> np.ndarray:
    """Of a frame's tokens at (rows, cols) on ``grid``, the positions (into those arrays) of ``c``
    spread evenly over the grid."""
    where = np.full(grid[0] * grid[1], -1, np.int64)
    where[rows * grid[1] + cols] = np.arange(len(rows))
    cells = [j for j in _spread_cells(grid, min(c, len(rows))) if where[j] >= 0]
    if len(cells) < c:  # a frame missing some cells: the rest in grid order
        taken = set(cells)
        cells += [int(j) for j in np.flatnonzero(where >= 0) if j not in taken]
    return where[np.asarray(cells[:c], np.int64)]


@lru_cache(maxsize=256)
def _spread_cells(grid: tuple[int, int], c: int) -> list[int]:
    """``c`` cells (row-major indices) evenly over a rows x cols grid: the centres of an r x q
    sub-grid in the grid's aspect, r * q >= c, thinned evenly to c."""
    rows, cols = grid
    if c <= 0:
        return []
    q = min(cols, int(np.ceil(np.sqrt(c * cols / rows))))
    r = min(rows, int(np.ceil(c / q)))
    ys = ((np.arange(r) + 0.5) * rows / r).astype(np.int64)
    xs = ((np.arange(q) + 0.5) * cols / q).astype(np.int64)
    sub = (ys[:, None] * cols + xs[None, :]).ravel()
    return sub[((np.arange(c) + 0.5) * len(sub) / c).astype(np.int64)].tolist()
