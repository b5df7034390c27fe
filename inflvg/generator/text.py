"""Scene-prompt encoder: a word-level tokenizer over StoryWorld's closed vocabulary and a small
BERT from ``transformers`` (imported here, lazily, so ``import inflvg`` stays light)."""

from __future__ import annotations

import re

import torch
from torch import nn

from ..world.vocab import prompt_words

SPECIALS = ("[PAD]", "[UNK]", "[CLS]")


class WordTokenizer:
    """Lower-cases, splits on spaces and commas; unknown words map to [UNK]."""

    def __init__(self, words: list[str] | None = None):
        self.vocab = list(SPECIALS) + (words if words is not None else prompt_words())
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, prompts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, max_len) long, mask (B, max_len) bool."""
        ids = torch.zeros(len(prompts), max_len, dtype=torch.long)
        for b, p in enumerate(prompts):
            words = ["[CLS]"] + re.findall(r"[a-z]+|,", p.lower())
            row = [self.index.get(w, 1) for w in words][:max_len]
            ids[b, : len(row)] = torch.tensor(row)
        return ids, ids != 0


class TextEncoder(nn.Module):
    def __init__(self, d_text: int, n_layers: int, max_len: int):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.tokenizer = WordTokenizer()
        self.max_len = max_len
        cfg = BertConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=d_text,
            num_hidden_layers=n_layers,
            num_attention_heads=max(1, d_text // 32),
            intermediate_size=4 * d_text,
            max_position_embeddings=max_len,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.bert = BertModel(cfg, add_pooling_layer=False)

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> hidden (B, L, d_text), mask (B, L) bool, token ids (B, L) long."""
        ids, mask = self.tokenizer(prompts, self.max_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.bert(input_ids=ids, attention_mask=mask.long())
        return out.last_hidden_state, mask, ids

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
