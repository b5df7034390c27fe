"""Scene-prompt encoder: a word-level tokenizer over StoryWorld's closed vocabulary and a small
BERT from ``transformers`` (imported here, lazily, so ``import inflvg`` stays light)."""

from __future__ import annotations

import re
import zlib

import torch
from torch import nn

from ..world.vocab import prompt_words

SPECIALS = ("[PAD]", "[UNK]", "[CLS]")


class WordTokenizer:
    """Lower-cases, splits into words and commas; unknown words map to [UNK] for the encoder.

    Implements the protocol's ``Tokenizer``: ``word_ids`` gives an unknown word an id of its
    own past the vocabulary (a CRC of the word), so free-text prompts still share words."""

    def __init__(self, max_len: int, words: list[str] | None = None):
        self.max_len = max_len
        self.vocab = list(SPECIALS) + (words if words is not None else prompt_words())
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @staticmethod
    def split(prompt: str) -> list[str]:
        return re.findall(r"[a-z]+|,", prompt.lower())

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, max_len) long, mask (B, max_len) bool."""
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for b, p in enumerate(prompts):
            row = [self.index.get(w, 1) for w in ["[CLS]", *self.split(p)]][: self.max_len]
            ids[b, : len(row)] = torch.tensor(row)
        return ids, ids != 0

    def word_ids(self, prompts: list[str]) -> torch.Tensor:
        """-> (B, max_len) int64 aligned with ``__call__``: 0 on [CLS], padding and commas."""
        out = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for b, p in enumerate(prompts):
            row = [0] + [0 if w == "," else self.index.get(w, len(self.vocab) + zlib.crc32(w.encode()) % 2**30) for w in self.split(p)]
            row = row[: self.max_len]
            out[b, : len(row)] = torch.tensor(row)
        return out

    def unknown_words(self, prompt: str) -> list[str]:
        """Words (letters and digits, any script) outside the vocabulary; ``split`` reads none of their
        digits or non-ASCII letters either."""
        return [w for w in re.findall(r"[^\W_]+", prompt.lower()) if w not in self.index]


class TextEncoder(nn.Module):
    def __init__(self, d_text: int, n_layers: int, max_len: int):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.tokenizer = WordTokenizer(max_len)
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
        ids, mask = self.tokenizer(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.bert(input_ids=ids, attention_mask=mask.long())
        return out.last_hidden_state, mask, ids

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
