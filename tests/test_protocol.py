"""The generator protocol: the StoryWorld backend implements it, and generating through it gives
exactly the reference frames, bit for bit, for every strategy."""

import json
import re

import pytest
from portable_frames import GOLDEN, STRATEGIES, portable_hashes

from inflvg.protocol import Generator, Tokenizer, VideoCache, load_backend


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


@pytest.fixture(scope="module")
def portable() -> dict[str, list[str]]:
    return portable_hashes()


@pytest.mark.parametrize("name", STRATEGIES)
def test_frames_are_bit_identical_to_the_reference(portable, name):
    """Hashes of the frames every strategy made with the shipped weights (``tests/portable_frames.py``,
    under numerics that are the same on every x86-64 CPU): a change that moves a frame by one bit
    in any strategy fails here. (Before the generator protocol, commit 1dda5e6, and after it the
    benchmark's per-video figures were equal for every strategy: docs/RESULTS.md.)"""
    assert portable[name] == json.loads(GOLDEN.read_text())[name]
