"""The generator protocol: the StoryWorld backend implements it, and generating through it gives
exactly the frames the tiny model made before the protocol existed."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from inflvg.context import make_strategy
from inflvg.generate import generate
from inflvg.protocol import Generator, Tokenizer, VideoCache, load_backend
from inflvg.world import sample_prompt_set

GOLDEN = Path(__file__).parent / "data" / "golden_frames.json"


@pytest.fixture(scope="module")
def shipped() -> Generator:
    return load_backend("storyworld")


def test_the_shipped_backend_implements_the_protocol(shipped):
    spec = shipped.spec
    assert isinstance(shipped, Generator) and isinstance(shipped.tokenizer, Tokenizer)
    cache = shipped.new_cache(2, 8, spec.frames_per_scene, spec.context, full_history=False, uses_sink=True)
    assert isinstance(cache, VideoCache) and cache.pool().size == 0
    assert (spec.frame_shape, spec.grid, spec.frames_per_block, spec.long_tokens_per_frame) == ((32, 32), (4, 4), 1, 16)
    assert spec.horizon_frames == 32 and spec.parameters > 1_000_000 and spec.d_feature == spec.d_prompt == 128


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match=re.escape("unknown generator 'wan'; choose one of storyworld, wan-tiny, wan-1.3b")):
        load_backend("wan")


@pytest.mark.parametrize("name", ["full", "window", "sink_window", "far", "random", "prompt_match"])
def test_frames_are_bit_identical_to_the_pre_protocol_generator(shipped, name):
    """Hashes of frames the shipped weights made at commit 1dda5e6 (before the protocol: the
    generation loop inside the model package, stories instead of prompt sets), 4 held-out
    prompt sets of seed 0 in one batch, noise seed 0. Strategies whose rule did not change must
    give the same bytes; oracle-K's did (it takes the subject's first scene alone: its own tests
    cover the rule)."""
    prompt_sets = [sample_prompt_set(i, "heldout", 8, 4, f"heldout-{i}") for i in range(4)]
    res = generate(shipped, prompt_sets, make_strategy(name), seed=0)
    got = [hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest()[:16] for f in res.frames]
    assert got == json.loads(GOLDEN.read_text())[name]
