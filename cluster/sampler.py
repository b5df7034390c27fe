"""Prompt-set sampling with a position that checkpoints save and resume restores.

Two sources: StoryWorld's training split (the default; draw i is story ``seed * 1_000_003 + i``)
or the rows of a prompt file, epoch after epoch, each epoch in its own seeded shuffle. Either
way draw i depends only on (seed, i), so the position is all a checkpoint needs and resuming
continues the same sequence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inflvg.prompts import PromptSet, load_prompts
from inflvg.world import prompt_set_of, sample_prompt_set
from inflvg.world.story import sample_long_story


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class PromptSampler:
    seed: int
    n_scenes: int
    """Scenes of a StoryWorld prompt set; a prompt file's rows keep their own counts."""
    cast_size: int
    prompts: str | None = None
    """A prompt file (EPS .jsonl) to draw from instead of StoryWorld."""
    position: int = 0
    split: str = "train"
    long: bool = False
    """StoryWorld stories as the long-video benchmark draws them (``sample_long_story``: returns at least 5 scenes apart)."""
    rows: list[PromptSet] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.prompts is not None:
            self.rows = load_prompts(self.prompts)

    def draw(self, i: int) -> PromptSet:
        if not self.rows:
            seed, name = self.seed * 1_000_003 + i, f"{self.split}-{self.seed}-{i}"
            if self.long:
                return prompt_set_of(sample_long_story(seed, self.split, self.n_scenes, self.cast_size), name)
            return sample_prompt_set(seed, self.split, self.n_scenes, self.cast_size, name)
        epoch, k = divmod(i, len(self.rows))
        return self.rows[int(np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))[k])]

    def next(self, n: int) -> list[PromptSet]:
        out = [self.draw(i) for i in range(self.position, self.position + n)]
        self.position += n
        return out

    def state(self) -> dict:
        return {"position": self.position, "prompts_digest": file_digest(self.prompts) if self.prompts else None}

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint's position; a checkpoint of another prompt file is refused."""
        mine = file_digest(self.prompts) if self.prompts else None
        if state.get("prompts_digest") != mine:
            raise ValueError(f"the checkpoint was trained on other prompts (digest {state.get('prompts_digest')}) than "
                             f"{self.prompts or 'the StoryWorld split'} ({mine}); resume with the same prompts or use --resume none")  # fmt: skip
        self.position = int(state["position"])
