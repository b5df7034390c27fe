"""The closed vocabulary of StoryWorld: what a character, a background and an action can be.

Character colours are saturated and background colours muted, so that a character can be
told from any background by colour alone (the world readers rely on this).
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 240),
    "yellow": (245, 220, 30),
    "magenta": (225, 45, 225),
    "cyan": (30, 225, 225),
}
COLOUR_NAMES = tuple(COLOURS)
PATTERNS = ("plain", "striped", "dotted", "checked")
SIZES = {"small": 10, "large": 14}  # sprite side in pixels
SIZE_NAMES = tuple(SIZES)

# name -> (sky rgb, ground rgb, preposition used in prompts)
BACKGROUNDS = {
    "desert": ((186, 160, 120), (150, 118, 72), "in the"),
    "beach": ((120, 150, 182), (196, 180, 134), "on the"),
    "forest": ((42, 84, 52), (66, 52, 32), "in the"),
    "snow": ((176, 180, 194), (226, 226, 232), "in the"),
    "night": ((16, 16, 44), (36, 36, 56), "at"),
    "city": ((112, 112, 122), (72, 72, 78), "in the"),
    "meadow": ((128, 164, 196), (82, 128, 62), "in the"),
    "cave": ((54, 42, 42), (96, 74, 62), "in the"),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)

# name -> verb phrase; the motion itself lives in render.action_offsets
ACTIONS = {
    "bounce": "bounces",
    "slide_left": "slides left",
    "slide_right": "slides right",
    "jump": "jumps",
    "hover": "hovers",
    "zigzag": "zigzags",
}
ACTION_NAMES = tuple(ACTIONS)

LETTERS = tuple("ABCDEFGH")


def prompt_words() -> list[str]:
    """Every word a StoryWorld prompt can contain, for the tokenizer's vocabulary."""
    words = {"a", "and", "character", ",", "the"}
    words.update(SHAPES, COLOURS, PATTERNS, SIZES, (letter.lower() for letter in LETTERS))
    for _, _, prep in BACKGROUNDS.values():
        words.update(prep.split())
    words.update(BACKGROUNDS)
    for phrase in ACTIONS.values():
        words.update(phrase.split())
    return sorted(words)
