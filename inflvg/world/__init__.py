"""StoryWorld: procedural multi-scene videos with EPS-style prompts and per-frame ground truth."""

from .eps import load_eps, save_eps
from .render import Identity
from .story import SPLITS, Story, Video, render_story, sample_story, split_of

__all__ = ["Identity", "SPLITS", "Story", "Video", "load_eps", "render_story", "sample_story", "save_eps", "split_of"]
