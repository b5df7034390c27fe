"""The generator protocol: everything outside a generator backend speaks to it, never to a
model's internals (rollout workers, serving, refinement, the benchmark, the reward side).

A backend generates B videos block by block (a block: the frames denoised together, one frame
for the StoryWorld model, three latent frames for Self-Forcing-style Wan models). Its cache
holds the fixed-budget layout,

    context = sink (first frames)  +  K tokens selected from the long-term pool
              + window (last W frames)  +  the block being made,

and at every scene change the caller reads the pool's candidates (features and geometry),
chooses K of them with a context strategy and hands the choice back with ``VideoCache.select``.

    gen = load_backend("storyworld")
    cache = gen.new_cache(n_videos=B, n_frames=T, frames_per_scene=F, ctx=gen.spec.context, full_history=False, uses_sink=True)
    prompts = gen.encode_prompts(texts)                         # PromptEmbedding, rows per (video, scene)
    cache.select(np.full((B, K), -1))                           # at each scene change
    latents = gen.next_block(cache, prompts.index(rows), noise, shared_noise=False)
    rgb = gen.decode(latents)                                   # (B, F, H, W, 3) uint8
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .config import ContextConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GeneratorSpec:
    """What a caller may know about a backend without touching it."""

    backend: str
    """Registry name of the backend ('storyworld', ...)."""
    frame_shape: tuple[int, int]
    """(H, W) of a decoded RGB frame in pixels."""
    frames_per_block: int
    """Frames made together by one ``next_block``; scene lengths are multiples of it."""
    frames_per_scene: int
    """Frames per scene the backend was trained with (a request may ask for others)."""
    horizon_frames: int
    """Frames the backend was trained on; longer videos extrapolate positions."""
    grid: tuple[int, int]
    """(rows, cols) of a frame's long-term tokens; need not be square."""
    tokens_per_frame: int
    """Full-resolution tokens of a frame (what the sink and the window keep of it)."""
    d_feature: int
    """Width of a candidate token's features (``Pool.features``)."""
    d_prompt: int
    """Width of a prompt token (``PromptEmbedding.tokens``)."""
    kv_bytes_per_token: int
    """Bytes of one cached token's keys and values over all layers."""
    parameters: int
    context: ContextConfig
    """The budget (K, window, sink) the backend was trained with."""

    @property
    def long_tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class PromptEmbedding:
    """Prompts as the backend's text encoder sees them, with word ids for shared-word tests."""

    tokens: torch.Tensor  # (B, L, d_prompt) float
    mask: torch.Tensor  # (B, L) bool, True on real tokens (attention mask)
    word_ids: torch.Tensor  # (B, L) int64, the same id for the same word in any prompt, 0 where no word

    def index(self, rows: torch.Tensor) -> PromptEmbedding:
        return PromptEmbedding(self.tokens[rows], self.mask[rows], self.word_ids[rows])


@dataclass(frozen=True)
class Pool:
    """The long-term pool's candidate tokens at a scene change. Each frame's tokens are listed
    together, frames in time order, a frame's tokens in row-major order on its grid."""

    features: torch.Tensor  # (B, N, d_feature) the backend's features of every candidate
    frame: np.ndarray  # (N,) int64 frame index of each candidate
    scene: np.ndarray  # (N,) int64 scene index of each candidate
    row: np.ndarray  # (N,) int64 row on the frame's long-term grid
    col: np.ndarray  # (N,) int64 column on it
    grid: tuple[int, int]  # (rows, cols)

    @property
    def size(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class PromptQuery:
    """A scene's prompt as one attention query against the pool's candidates, built by the backend
    from its own projections (``Generator.prompt_query``): a candidate's relevance is the
    attention logit ``scores`` gives it, summed over heads and averaged over the prompt's tokens
    (the mean of logits is the logit of the mean query, so one vector per video suffices)."""

    vector: torch.Tensor  # (B, d_feature) the query, scaled by 1/sqrt(head_dim)
    offset: torch.Tensor  # (B,) the part of the logit no candidate changes (biases), so that scores are the logits themselves
    standardize: bool  # standardise each feature over its channels first (a LayerNorm without affine; the affine is in vector)
    eps: float = 1e-5  # that LayerNorm's epsilon

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, N, d_feature) -> (B, N) float32 logits of the query against each candidate."""
        import torch  # the protocol module itself imports no torch

        f = features.float()
        if self.standardize:
            f = (f - f.mean(-1, keepdim=True)) / (f.var(-1, unbiased=False, keepdim=True) + self.eps).sqrt()
        return torch.einsum("bnd,bd->bn", f, self.vector.float().to(f.device)) + self.offset.float().to(f.device)[:, None]


@runtime_checkable
class Tokenizer(Protocol):
    def word_ids(self, prompts: list[str]) -> torch.Tensor:
        """(B,) prompts -> (B, L) int64 word ids aligned with ``encode_prompts``' tokens: equal
        words get equal ids (also words outside the vocabulary), 0 on specials and punctuation."""
        ...

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` that the text encoder has no embedding for."""
        ...


@runtime_checkable
class VideoCache(Protocol):
    """The KV cache of B videos being generated, in the fixed-budget layout."""

    n_videos: int
    next_frame: int
    """Index of the first frame of the next block."""
    context_tokens: int
    """Past tokens the last block attended to."""

    def pool(self) -> Pool:
        """The candidates a selection may choose from now."""
        ...

    def select(self, selected: np.ndarray) -> None:
        """(B, K) pool indices (-1: empty slot): the long-term context of the blocks that follow."""
        ...

    def latest_features(self) -> torch.Tensor | None:
        """(B, n, d_feature) the newest frame's candidate features (it is still in the window, not
        in the pool; the same kind of features as ``Pool.features``); None before the first frame."""
        ...

    def reindex(self, rows: np.ndarray) -> None:
        """(B,) source video of each video: video b continues from video rows[b]'s history (keys,
        values, features, selection), as the branches of a tree rollout continue from the kept one."""
        ...


@runtime_checkable
class Generator(Protocol):
    spec: GeneratorSpec
    tokenizer: Tokenizer
    device: torch.device
    """Where the backend computes; a policy acting on its features lives there too."""

    def encode_prompts(self, prompts: list[str]) -> PromptEmbedding:
        """(P,) prompts -> their embedding (rows in input order)."""
        ...

    def prompt_query(self, prompts: PromptEmbedding) -> PromptQuery:
        """(B,) prompt rows -> each as a query against the candidates' features, from the model's own
        projections at the layer the features come from (used by prompt-driven retrieval, ``memflow``)."""
        ...

    def new_cache(self, n_videos: int, n_frames: int, frames_per_scene: int, ctx: ContextConfig, full_history: bool,
                  uses_sink: bool) -> VideoCache:  # fmt: skip
        """An empty cache for ``n_videos`` videos of ``n_frames`` frames."""
        ...

    def next_block(self, cache: VideoCache, prompts: PromptEmbedding, noise: torch.Generator, shared_noise: bool) -> torch.Tensor:
        """Generate the next block of every video (prompts: (B,) rows, one per video) into the
        cache -> its latents (B, frames_per_block, ...). Noise comes from ``noise``; with
        ``shared_noise`` every video gets the same noise."""
        ...

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, F, ...) -> (B, F, H, W, 3) uint8 RGB."""
        ...


BACKENDS = {"storyworld": "inflvg.generator.backend", "wan-tiny": "inflvg.wan.backend", "wan-1.3b": "inflvg.wan.backend"}
"""Registry name -> the module whose ``load(name, weights, device)`` and ``widths(name, weights)`` serve it."""


def _module(name: str):
    import importlib

    if name not in BACKENDS:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def load_backend(name: str = "storyworld", weights: str | None = None, device: str = "cpu") -> Generator:
    """A backend by registry name, its weights from a local path (None: the shipped ones, or random
    weights for a preset that ships none)."""
    return _module(name).load(name, weights, device)


def backend_widths(name: str = "storyworld", weights: str | None = None) -> tuple[int, int]:
    """(d_feature, d_prompt) a policy for this backend needs, without building the backend."""
    return _module(name).widths(name, weights)
