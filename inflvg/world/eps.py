"""EPS-style prompt sets: ``.jsonl`` with one video per row and keys "0", "1", ... per scene.

Rows are parsed back into ``Story`` objects so that every strategy, oracle included, can run on
a user's prompt file. Errors name the file, the row, the key and what is expected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .render import Identity
from .story import Scene, Story
from .vocab import ACTIONS, BACKGROUNDS, COLOUR_NAMES, PATTERNS, SHAPES, SIZE_NAMES

_ACTION_BY_PHRASE = {phrase: name for name, phrase in ACTIONS.items()}
_PROMPT = re.compile(
    r"^character (?P<letter>[A-H])"
    r"(?:, a (?P<size>\w+) (?P<c1>\w+) and (?P<c2>\w+) (?P<pattern>\w+) (?P<shape>\w+),)?"
    r" (?P<action>" + "|".join(map(re.escape, _ACTION_BY_PHRASE)) + r")"
    r" (?P<prep>in the|on the|at) (?P<bg>\w+)$"
)


def save_eps(stories: list[Story], path: str | Path) -> None:
    with open(path, "w") as f:
        for story in stories:
            f.write(json.dumps({str(i): p for i, p in enumerate(story.prompts())}) + "\n")


def _check_word(value: str, allowed: tuple[str, ...], what: str, where: str) -> str:
    if value not in allowed:
        raise ValueError(f"{where}: unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def _parse_identity(m: re.Match, where: str) -> Identity:
    return Identity(
        shape=_check_word(m["shape"], SHAPES, "shape", where),
        colour1=_check_word(m["c1"], COLOUR_NAMES, "colour", where),
        colour2=_check_word(m["c2"], COLOUR_NAMES, "colour", where),
        pattern=_check_word(m["pattern"], PATTERNS, "pattern", where),
        size=_check_word(m["size"], SIZE_NAMES, "size", where),
    )


def parse_row(row: dict, seed: int, where: str) -> Story:
    """One EPS row -> Story. ``where`` names the row in error messages."""
    if not isinstance(row, dict) or not row:
        raise ValueError(f"{where}: expected a JSON object with keys \"0\", \"1\", ...; got {type(row).__name__}")
    keys = [str(i) for i in range(len(row))]
    if sorted(row, key=lambda k: (len(k), k)) != keys:
        raise ValueError(f"{where}: keys must be consecutive scene numbers \"0\"..\"{len(row) - 1}\", got {list(row)}")
    cast: dict[str, Identity] = {}
    scenes = []
    for k in keys:
        text = row[k]
        at = f"{where}, key {k!r}"
        m = _PROMPT.match(text.strip().rstrip(".")) if isinstance(text, str) else None
        if m is None:
            raise ValueError(
                f"{at}: cannot parse prompt {text!r}; expected 'character B, a small red and blue "
                f"striped triangle, bounces in the desert' or 'character B jumps on the beach'"
            )
        letter, bg = m["letter"], _check_word(m["bg"], tuple(BACKGROUNDS), "background", at)
        first = letter not in cast
        if m["shape"] is not None:
            ident = _parse_identity(m, at)
            if not first and cast[letter] != ident:
                raise ValueError(f"{at}: character {letter} was described differently before")
            cast[letter] = ident
        elif first:
            raise ValueError(f"{at}: character {letter} is referred to before it is described")
        scenes.append((letter, bg, _ACTION_BY_PHRASE[m["action"]], first))
    letters = list(cast)
    return Story(
        cast=tuple(cast[l] for l in letters),
        scenes=tuple(Scene(letters.index(l), bg, act, first) for l, bg, act, first in scenes),
        seed=seed,
        letters=tuple(letters),
    )


def load_eps(path: str | Path, seed: int = 0) -> list[Story]:
    """Stories of an EPS ``.jsonl``; row i gets position seed ``seed + i``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} does not exist")
    stories = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            stories.append(parse_row(row, seed + len(stories), where))
    if not stories:
        raise ValueError(f"prompt file {str(path)!r} holds no rows")
    return stories

