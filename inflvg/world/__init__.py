"""StoryWorld: procedural multi-scene videos with EPS-style prompts and per-frame ground truth."""

from .eps import ground_truth, prompt_set_of, sample_prompt_set
from .render import Identity
from .story import SPLITS, Story, Video, render_story, sample_story, split_of

__all__ = ["SPLITS", "Identity", "Story", "Video", "ground_truth", "prompt_set_of", "render_story", "sample_prompt_set", "sample_story", "split_of"]
