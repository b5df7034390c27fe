"""StoryWorld's prompt grammar: stories to prompt sets and, for prompts in the grammar, back.

A StoryWorld prompt determines its scene (``character B jumps on the beach``), so a prompt set
written in the grammar carries its own ground truth: ``ground_truth`` parses it back into a
``Story`` (None for free text). Errors name the row, the key and what is expected.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..prompts import PromptSet
from .render import Identity
from .story import Scene, Story, sample_story
from .vocab import ACTIONS, BACKGROUNDS, COLOUR_NAMES, PATTERNS, SHAPES, SIZE_NAMES

_ACTION_BY_PHRASE = {phrase: name for name, phrase in ACTIONS.items()}
_SUBJECT = re.compile(r"^character [A-H](?![\w])")
_PROMPT = re.compile(
    r"^character (?P<letter>[A-H])"
    r"(?:, a (?P<size>\w+) (?P<c1>\w+) and (?P<c2>\w+) (?P<pattern>\w+) (?P<shape>\w+),)?"
    r" (?P<action>" + "|".join(map(re.escape, _ACTION_BY_PHRASE)) + r")"
    r" (?P<prep>in the|on the|at) (?P<bg>\w+)$"
)


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
        cast=tuple(cast[who] for who in letters),
        scenes=tuple(Scene(letters.index(who), bg, act, first) for who, bg, act, first in scenes),
        seed=seed,
        letters=tuple(letters),
    )


def subject_tag(prompt: str) -> str | None:
    """The subject a StoryWorld prompt names, read from its text ("character B"), or None."""
    m = _SUBJECT.match(prompt.strip())
    return m[0] if m else None


def prompt_set_of(story: Story, set_id: str) -> PromptSet:
    """A story's prompts as a PromptSet, its subject tags parsed from the prompt text."""
    prompts = tuple(story.prompts())
    return PromptSet(set_id, prompts, tuple(subject_tag(p) for p in prompts))


def sample_prompt_set(seed: int, split: str, n_scenes: int, cast_size: int, set_id: str) -> PromptSet:
    """The prompt set of ``sample_story(seed, split, n_scenes, cast_size)``: StoryWorld as a source of prompt sets."""
    return prompt_set_of(sample_story(seed, split, n_scenes, cast_size), set_id)


@lru_cache(maxsize=4096)
def ground_truth(ps: PromptSet) -> Story | None:
    """The StoryWorld story a prompt set describes (cast identities, scene layout), or None when
    its prompts are not StoryWorld's grammar. Only the oracle, the world readers, the benchmark
    and the reward models' training and calibration scripts may call this."""
    try:
        return parse_row({str(i): p for i, p in enumerate(ps.scenes)}, 0, ps.id)
    except ValueError:
        return None
