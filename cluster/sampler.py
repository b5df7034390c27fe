"""Prompt-set sampling with a position that checkpoints save and resume restores."""

from __future__ import annotations

from dataclasses import dataclass

from inflvg.world.story import Story, sample_story


@dataclass
class PromptSampler:
    """Training-split stories in a fixed order from ``seed``: the i-th prompt set is always the same."""

    seed: int
    n_scenes: int
    cast_size: int
    position: int = 0
    split: str = "train"

    def next(self, n: int) -> list[tuple[str, Story]]:
        out = []
        for i in range(self.position, self.position + n):
            out.append((f"{self.split}-{self.seed}-{i}", sample_story(self.seed * 1_000_003 + i, self.split, self.n_scenes, self.cast_size)))
        self.position += n
        return out

    def state(self) -> dict:
        return {"position": self.position}

    def restore(self, state: dict) -> None:
        self.position = int(state["position"])
