"""The context-selection policy of InfLVG (arXiv 2505.17574): at every scene change, score each
long-term pool token against the current scene prompt and choose K of them without replacement.

A selection is an ordered K-tuple drawn from the Plackett-Luce distribution over softmax scores,

    P(c_1..c_K | s) = prod_i exp(s_{c_i}) / sum_{j in R_i} exp(s_j),   R_i = valid \\ {c_1..c_{i-1}},

which Gumbel-top-K draws exactly (perturb every score with Gumbel noise, keep the K largest, in
order). The log-probability and entropy (``inflvg.plackett_luce``, O(N + K) for all K picks) are
computed in fp64 log-space and returned in fp32 whatever the policy's dtype: the released code
does it in bf16, where a sum over hundreds of candidates loses the small terms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .context.base import ContextStrategy, SelectionState
from .plackett_luce import plackett_luce_entropy, plackett_luce_log_prob  # noqa: F401  (the entropy: re-exported, the policy's API)
from .plackett_luce import valid_candidates as _valid
from .protocol import Generator, Pool
from .rollout import Transition
from .validate import number, positive_int

N_EXTRA = 3  # per-token inputs appended to the encoder features: relative age, row, column


@dataclass(frozen=True)
class PolicyConfig:
    d_feature: int = 128
    """Width of the generator's long-term token features (its d_model)."""
    d_prompt: int = 128
    """Width of the prompt embedding tokens (the generator's projected text tokens)."""
    d_model: int = 64
    """Width inside the policy."""
    n_heads: int = 4
    """Heads of the token -> prompt cross-attention."""
    hidden: int = 128
    """Hidden width of the scoring MLP."""
    temperature: float = 1.0
    """Logits are divided by it: > 1 flattens the selection distribution."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "temperature":
                positive_int(self, f.name)
        number(self, "temperature", 0, strict=True, fix="use 1.0 for plain softmax")
        if self.d_model % self.n_heads:
            raise ValueError(f"PolicyConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")


def word_overlap(now_ids: torch.Tensor, past_ids: torch.Tensor, pool_scenes: np.ndarray) -> torch.Tensor:
    """Which words of the current prompt each candidate's scene prompt also contains.

    now_ids (B, L); past_ids (B, S, L') for the scenes made so far, word ids from the backend's
    tokenizer (``Tokenizer.word_ids``: 0 where no word); pool_scenes (N,) the scene of each
    candidate -> (B, N, L) float32, 1 where current word l occurs in the candidate's scene prompt."""
    same = (now_ids[:, None, :, None] == past_ids[:, :, None, :]) & (past_ids[:, :, None, :] > 0)  # (B, S, L, L')
    in_scene = same.any(-1) & (now_ids[:, None, :] > 0)  # (B, S, L)
    return in_scene[:, torch.as_tensor(pool_scenes, dtype=torch.long, device=in_scene.device)].float()


def first_mention(overlap: torch.Tensor, pool_scenes: np.ndarray) -> torch.Tensor:
    """overlap (B, N, L) from ``word_overlap``, pool_scenes (N,) -> (B, N, L) float32, 1 where the
    candidate's scene is the earliest in the pool whose prompt contains current word l.

    A name's first mention is usually where its character was described and first drawn; later
    mentions were drawn from memory and may have come out wrong, and a return copied from them
    copies the mistake. The word overlap alone cannot tell the two apart, and at 16x a character
    has a dozen earlier scenes (docs/RESULTS.md, Quality at long horizons)."""
    scenes = torch.as_tensor(pool_scenes, dtype=torch.long, device=overlap.device)[None, :, None]  # (1, N, 1)
    has = overlap > 0
    earliest = torch.where(has, scenes, torch.iinfo(torch.long).max).amin(1, keepdim=True)  # (B, 1, L)
    return (has & (scenes == earliest)).float()


def candidate_features(features: torch.Tensor, pool: Pool, now_frame: int, overlap: torch.Tensor) -> torch.Tensor:
    """Backend features (B, N, d), the pool's geometry, word overlap (B, N, L) from ``word_overlap``
    -> the policy's candidate features (B, N, d + N_EXTRA + 2L), fp32.

    Extras: relative age (now - frame) / now in (0, 1], and the token's row and column on its
    frame's grid of long-term tokens (any shape), each in [0, 1]. Then the word overlap and each
    word's first mention (``first_mention``)."""
    b, n, _ = features.shape
    (rows, cols), frame = pool.grid, pool.frame
    age = (now_frame - frame.astype(np.float32)) / max(now_frame, 1)
    row, col = pool.row / max(rows - 1, 1), pool.col / max(cols - 1, 1)
    extras = torch.as_tensor(np.stack([age, row, col], -1), dtype=torch.float32, device=features.device).reshape(n, N_EXTRA)
    overlap = overlap.float().to(features.device)
    return torch.cat([features.float(), extras.expand(b, n, N_EXTRA), overlap, first_mention(overlap, pool.scene)], -1)


def _ranked(scores: torch.Tensor, k: int, valid: torch.Tensor) -> torch.Tensor:
    """Indices of the k largest valid scores (B, N) in order -> (B, k), -1 past the valid ones."""
    b, n = scores.shape
    out = torch.full((b, k), -1, dtype=torch.long, device=scores.device)
    m = min(k, n)
    if m:
        top = scores.masked_fill(~valid, float("-inf")).topk(m, -1)
        out[:, :m] = top.indices.masked_fill(~valid.gather(1, top.indices), -1)
    return out


def gumbel_top_k(logits, k: int, generator: torch.Generator | None = None, valid=None) -> torch.Tensor:
    """Gumbel-top-K: logits (B, N) -> (B, K) indices drawn from Plackett-Luce, -1 for empty slots.

    argsort(s + G), G_j = -log(-log U_j) i.i.d., is distributed as sequential softmax sampling
    without replacement (Yellott 1977; Kool et al. 2019). Noise comes from ``generator`` (CPU)."""
    dev = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape, generator=generator, device=dev).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))
    return _ranked(logits.float() + gumbel, k, _valid(logits, valid))


def top_k(logits, k: int, valid=None) -> torch.Tensor:
    """The K highest-scoring valid candidates, best first: (B, N) -> (B, K), -1 for empty slots."""
    return _ranked(logits.float(), k, _valid(logits, valid))


class SelectionPolicy(nn.Module):
    """Scores candidates: (features (B, N, d_feature + N_EXTRA + 2L), prompt) -> logits (B, N), -inf on padding.

    tokens -> LayerNorm + linear; cross-attention from tokens (queries) to prompt tokens (keys/
    values, masked); residual; MLP head. A second term adds, for every word of the current prompt
    that the candidate's own scene prompt also contained, a learned weight of that word: a token
    made under "character B ..." can then be preferred when the prompt names character B, a
    match the MLP would otherwise have to learn as an interaction between token and prompt. A third
    term does the same for the scene where the word was first mentioned (``first_mention``), so that
    a return can prefer the character's first appearance over its later ones.
    All terms start at (or near) zero, so a fresh policy is close to uniform (random-K) and
    training moves it away from there."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.norm_feat = nn.LayerNorm(cfg.d_feature)
        self.token_in = nn.Linear(cfg.d_feature + N_EXTRA, cfg.d_model)
        self.prompt_in = nn.Sequential(nn.LayerNorm(cfg.d_prompt), nn.Linear(cfg.d_prompt, cfg.d_model))
        self.cross = nn.MultiheadAttention(cfg.d_model, cfg.n_heads, batch_first=True)
        self.head = nn.Sequential(
            nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.hidden), nn.GELU(),
            nn.Linear(cfg.hidden, 1, bias=False),  # softmax ignores a shared offset: a bias would never learn
        )  # fmt: skip
        out = self.head[-1]
        assert isinstance(out, nn.Linear)
        nn.init.normal_(out.weight, std=0.01)
        self.word_weight = nn.Linear(cfg.d_model, 1)
        nn.init.zeros_(self.word_weight.weight)
        nn.init.zeros_(self.word_weight.bias)
        self.first_weight = nn.Linear(cfg.d_model, 1)
        nn.init.zeros_(self.first_weight.weight)
        nn.init.zeros_(self.first_weight.bias)

    def forward(self, features, prompt_tokens, prompt_mask, valid=None) -> torch.Tensor:
        """features (B, N, d_feature + N_EXTRA + 2L) from ``candidate_features``, prompt_tokens (B, L, d_prompt),
        prompt_mask (B, L) bool (True on real tokens), valid (B, N) bool or None -> logits (B, N), -inf where invalid."""
        d, length = self.cfg.d_feature + N_EXTRA, prompt_tokens.shape[1]
        if features.shape[-1] != d + 2 * length:
            raise ValueError(f"candidate features are {features.shape[-1]} wide; this policy needs d_feature + N_EXTRA + "
                             f"2 x prompt length = {d} + 2 x {length}: build them with candidate_features")  # fmt: skip
        feats, extras = features[..., : self.cfg.d_feature], features[..., self.cfg.d_feature : d]
        overlap, first = features[..., d : d + length], features[..., d + length :]  # (B, N, L) each
        h = self.token_in(torch.cat([self.norm_feat(feats), extras], -1))  # (B, N, d_model)
        p = self.prompt_in(prompt_tokens)  # (B, L, d_model)
        attended, _ = self.cross(h, p, p, key_padding_mask=~prompt_mask.bool(), need_weights=False)
        pad = ~prompt_mask.bool()
        word = self.word_weight(p).squeeze(-1).masked_fill(pad, 0.0)  # (B, L)
        first_word = self.first_weight(p).squeeze(-1).masked_fill(pad, 0.0)  # (B, L)
        words = (overlap * word[:, None, :] + first * first_word[:, None, :]).sum(-1)  # (B, N)
        logits = (self.head(h + attended).squeeze(-1) + words) / self.cfg.temperature  # (B, N)
        return logits if valid is None else logits.masked_fill(~valid, float("-inf"))


class PromptEmbedder:
    """The backend's own prompt embedding and word ids (``Generator.encode_prompts``, ``tokenizer``).

    Calling it embeds the current prompts; ``word_ids`` only tokenizes, which is all the earlier
    scenes' prompts need (their shared words), so a scene change runs the text encoder over B
    prompts, not over every prompt so far."""

    def __init__(self, gen: Generator):
        self.gen = gen

    @torch.no_grad()
    def __call__(self, prompts: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """prompts (B,) -> (tokens (B, L, d_prompt), mask (B, L) bool, word ids (B, L) int64)."""
        emb = self.gen.encode_prompts(list(prompts))
        return emb.tokens, emb.mask, emb.word_ids

    def word_ids(self, prompts: list) -> torch.Tensor:
        """prompts (B,) -> word ids (B, L) int64, 0 where no word (the backend tokenizer's)."""
        return self.gen.tokenizer.word_ids(list(prompts))


@dataclass
class SelectionStep:
    """What the policy saw and did at one scene change, for a batch of B videos (CPU, fp32)."""

    scene: int
    features: torch.Tensor  # (B, N, d_feature + N_EXTRA + 2L) float32 candidate inputs the policy saw
    prompt_tokens: torch.Tensor  # (B, L, d_prompt) float32
    prompt_mask: torch.Tensor  # (B, L) bool
    chosen: torch.Tensor  # (B, K) int64, -1 for an empty slot
    logp_old: torch.Tensor  # (B,) float32 log-prob of ``chosen`` under the acting policy

    @property
    def pool_size(self) -> int:
        return self.features.shape[1]


class LearnedStrategy(ContextStrategy):
    """The learned policy as a context strategy: samples (or, with ``greedy``, takes the top) K
    pool tokens at each scene change and records a ``SelectionStep`` in ``transitions``.

    ``seed`` seeds the selection noise only, separate from the generator's noise seed, so that
    the rollouts of a GRPO group share their initial noise and differ by their selections. A
    list gives every video of the batch its own seed: row b draws the same Gumbel noise as a
    batch of one with ``seed[b]``, whatever the other rows (a group generated as one batch)."""

    name = "learned"

    def __init__(self, policy: SelectionPolicy, embed_prompts: PromptEmbedder, greedy: bool = False,
                 seed: int | list[int] | None = None, record: bool = True):  # fmt: skip
        self.policy, self.embed_prompts, self.greedy, self.record = policy, embed_prompts, greedy, record
        seeds = seed if isinstance(seed, list) else [seed]
        self.generators = [torch.Generator().manual_seed(s) if s is not None else None for s in seeds]
        self.transitions: list[SelectionStep] = []

    @torch.no_grad()
    def select(self, state: SelectionState) -> np.ndarray:
        b, k = state.n_videos, state.budget_k
        if state.pool_size == 0:  # nothing to choose: not an action
            return np.full((b, k), -1, np.int64)
        param = next(self.policy.parameters())
        now = state.scene * state.frames_per_scene
        tokens, mask, ids = self.embed_prompts(state.prompts)
        past_ids = self.embed_prompts.word_ids([ps.scenes[i] for ps in state.prompt_sets for i in range(state.scene)])
        overlap = word_overlap(ids, past_ids.to(ids.device).reshape(b, state.scene, -1), state.pool.scene)
        feats = candidate_features(state.pool.features.to(param.device), state.pool, now, overlap)
        tokens, mask = tokens.to(param.device).float(), mask.to(param.device).bool()
        logits = self.policy(feats.to(param.dtype), tokens.to(param.dtype), mask)  # records stay fp32
        chosen = top_k(logits, k) if self.greedy else self._sample(logits, k)
        if self.record:
            logp = plackett_luce_log_prob(logits, chosen)
            self.transitions.append(SelectionStep(state.scene, feats.cpu(), tokens.cpu(), mask.cpu(), chosen.cpu(), logp.cpu()))
        return chosen.cpu().numpy()

    def _sample(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        if len(self.generators) == 1:
            return gumbel_top_k(logits, k, self.generators[0])
        if len(self.generators) != logits.shape[0]:
            raise ValueError(f"LearnedStrategy got {len(self.generators)} seeds for a batch of {logits.shape[0]} videos; give one per video")
        return torch.cat([gumbel_top_k(logits[b : b + 1], k, g) for b, g in enumerate(self.generators)])

    def video_transitions(self) -> list[list[Transition]]:
        """The recorded steps split per video: element b lists video b's transitions in scene order."""
        if not self.transitions:
            return []
        out: list[list[Transition]] = [[] for _ in range(self.transitions[0].chosen.shape[0])]
        for st in self.transitions:
            for b, video in enumerate(out):
                video.append(Transition(
                    scene=st.scene, features=st.features[b].numpy(), prompt_tokens=st.prompt_tokens[b].numpy(),
                    prompt_mask=st.prompt_mask[b].numpy(), chosen=st.chosen[b].numpy(), logp_old=float(st.logp_old[b]),
                ))  # fmt: skip
        return out


def save_policy(policy: SelectionPolicy, path: str | Path) -> None:
    """Weights and config in one file (torch.save of plain types, loadable with weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(policy.cfg), "state_dict": policy.state_dict()}, path)


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> SelectionPolicy:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy checkpoint at {path}; write one with save_policy(policy, path)")
    blob = torch.load(path, map_location=device, weights_only=True)
    policy = SelectionPolicy(PolicyConfig(**blob["config"])).to(device)
    missing, unexpected = policy.load_state_dict(blob["state_dict"], strict=False)
    if unexpected or any(not k.startswith("first_weight.") for k in missing):
        raise ValueError(f"{path} is not a SelectionPolicy checkpoint of this version: missing {missing}, unexpected {unexpected}")
    return policy  # a checkpoint from before the first-mention term keeps it at zero, as it was trained
