"""Scores keyed by scene content and model version, so a repeated scene is not scored twice."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from .types import SceneBatch


def scene_key(batch: SceneBatch, i: int) -> str:
    """sha256 over the scene's frames, prompt and history (bytes and shapes)."""
    h = hashlib.sha256()
    for arr in (batch.frames[i], None if batch.history is None else batch.history[i]):
        if arr is None:
            h.update(b"none")
        else:
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update(batch.prompts[i].encode())
    return h.hexdigest()


class ScoreCache:
    """LRU map (model version, scene key) -> (score, valid, reason). Masked scores are not cached,
    so a transient failure is retried next time."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], tuple[float, bool, str | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, version: str, key: str):
        item = self._items.get((version, key))
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end((version, key))
        self.hits += 1
        return item

    def put(self, version: str, key: str, score: float, valid: bool, reason: str | None) -> None:
        if not valid:
            return
        self._items[(version, key)] = (score, valid, reason)
        self._items.move_to_end((version, key))
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
