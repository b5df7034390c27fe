"""The Wan backend's text side: a ``transformers`` tokenizer and ``UMT5EncoderModel``.

Real weights come from a local folder (umT5-XXL's tokenizer and encoder, as the diffusers layout
of Wan2.1 ships them: ``tokenizer/``, ``text_encoder/``). umT5's tokenizer cannot be downloaded
here, so ``wan-tiny`` builds a word-level one locally through the same ``transformers``
interface (``PreTrainedTokenizerFast``), and a randomly initialised encoder of small width.

Implements the protocol's ``Tokenizer``: ``word_ids`` gives each token its id, an unknown word an
id of its own past the vocabulary (a CRC of its text), and 0 to padding, special tokens and
punctuation; ``unknown_words`` lists the words the tokenizer maps to its unknown token.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import torch

from ..world.vocab import prompt_words

SPECIALS = ("<pad>", "</s>", "<unk>")
TINY_WORDS = (  # a few hundred common words beside StoryWorld's vocabulary, so free text is not all <unk>
    "a an the of in on at to and with by from into over under near by is are was its his her their this that "
    "man woman boy girl child dog cat horse bird fish fox rabbit owl sheep car bus train boat city street road "
    "house room kitchen window door table chair sofa bed garden park field lawn forest tree river lake sea beach "
    "mountain hill sky sun moon rain snow night day morning evening light dark red green blue yellow white black "
    "grey brown orange purple pink golden old young small large tall short long little big runs walks jumps sits "
    "stands sleeps flies swims plays reads looks turns waves smiles eats drinks holds carries opens closes face "
    "camera hair dress suit hat coat shirt shoes ball book cup flower water fire wind wave leaves grass sand"
).split()


def tiny_tokenizer(max_len: int):
    """A word-level tokenizer built locally through ``transformers`` (stands in for umT5's)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [*sorted(set(TINY_WORDS) | set(prompt_words()) - {","}), ",", "."]
    vocab = {w: i for i, w in enumerate(list(SPECIALS) + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_len)  # fmt: skip


def tiny_encoder(vocab_size: int, width: int):
    """A randomly initialised ``UMT5EncoderModel`` of output width ``width``."""
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=vocab_size, d_model=width, d_kv=max(8, width // 2), d_ff=2 * width, num_layers=2,
                     num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0)  # fmt: skip
    return UMT5EncoderModel(cfg)


def load_local(folder: str | Path):
    """(tokenizer, encoder) from ``folder/tokenizer`` and ``folder/text_encoder``; nothing is downloaded."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = Path(folder)
    for sub in ("tokenizer", "text_encoder"):
        if not (folder / sub).is_dir():
            raise FileNotFoundError(f"Wan weights folder {str(folder)!r} has no {sub}/ (the diffusers layout of Wan2.1: "
                                    f"tokenizer/, text_encoder/, vae/ beside the causal transformer checkpoint)")  # fmt: skip
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    enc = UMT5EncoderModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    return tok, enc


class WanText:
    """Tokenizer + umT5 encoder: prompts -> states (B, L, text_dim), padded positions zeroed as Wan does."""

    def __init__(self, tokenizer, encoder, max_len: int):
        self.tok, self.encoder, self.max_len = tokenizer, encoder.eval().requires_grad_(False), max_len
        self.unk = tokenizer.unk_token_id
        self.vocab_size = len(tokenizer)

    def ids(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok(list(prompts), padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].bool()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.ids(prompts)
        dev = next(self.encoder.parameters()).device
        states = self.encoder(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
        return states * mask.to(dev)[..., None], mask.to(dev)

    def word_ids(self, prompts: list[str]) -> torch.Tensor:
        enc = self.tok(list(prompts), padding="max_length", truncation=True, max_length=self.max_len, return_offsets_mapping=True)
        out = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for b, (ids, offsets, text) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], prompts, strict=True)):
            for i, (tid, (lo, hi)) in enumerate(zip(ids, offsets, strict=True)):
                piece = text[lo:hi].lower()
                if hi > lo and re.search(r"[^\W_]", piece):  # a word, not padding, a special token or punctuation
                    out[b, i] = tid if tid != self.unk else self.vocab_size + zlib.crc32(piece.encode()) % 2**30
        return out

    def unknown_words(self, prompt: str) -> list[str]:
        return [w for w in re.findall(r"[^\W_]+", prompt) if self.unk in self.tok(w, add_special_tokens=False)["input_ids"]]
