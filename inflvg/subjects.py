"""Which earlier scenes are about the subject a scene's prompt names, from the prompts alone.

Tags first: a prompt set whose file tags its scenes (``PromptSet.subjects``) is matched by
tag. Without tags, the subject is read off the text. English prompts name their subject first
("A golden retriever runs ...", "The man in a black suit sits ...", "character B jumps ..."),
so a scene's *subject words* are the informative words of its leading phrase: up to three
words after dropping stop words, ending at the first comma or at the first verb-like word
(-s, -ing, -ed) after the first; a single letter after a kept word is a name ("character A").
Words that every scene's subject words share are dropped too ("character" in StoryWorld); if
that leaves every scene without words, every scene names the same subject. Two scenes share
their subject when one's subject words contain the other's (tags must be equal).
Trailing boilerplate (", face the camera", on every InfLVG prompt) never reaches the leading
phrase, so it cannot make scenes match. The rule is a heuristic: a file with tags is exact.
"""

from __future__ import annotations

import re

from .prompts import PromptSet

STOP_WORDS = frozenset(
    "a an the this that these those its his her their our my your same another other again now then later meanwhile "
    "still once more also here there is are was were be being been it he she they we you i of in on at to for with "
    "from by into onto over under near as and or but while".split()
)
MAX_SUBJECT_WORDS = 3


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters and digits, any script)."""
    return re.findall(r"[^\W_]+", text.lower())


def _verb_like(word: str) -> bool:
    return (word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3) or word.endswith("ing") or (
        word.endswith("ed") and len(word) > 4
    )


def leading_words(prompt: str) -> tuple[str, ...]:
    """The informative words of a prompt's leading phrase (see the module docstring)."""
    out: list[str] = []
    previous_kept = False
    for w in words(prompt.split(",", maxsplit=1)[0]):
        if w in STOP_WORDS and not (len(w) == 1 and previous_kept):  # "character A", "Plan B": a letter names
            previous_kept = False
            continue
        if (out and _verb_like(w)) or len(out) == MAX_SUBJECT_WORDS:
            break
        out.append(w)
        previous_kept = True
    return tuple(out)


def subject_keys(ps: PromptSet) -> list[frozenset[str] | None]:
    """Per scene, the set of words naming its subject; None where a scene names none."""
    if ps.subjects is not None:
        return [None if tag is None else frozenset(words(tag)) for tag in ps.subjects]
    lead = [frozenset(leading_words(p)) for p in ps.scenes]
    common = frozenset.intersection(*lead) if len(lead) > 1 else frozenset()
    keys = [k - common for k in lead]
    if len(keys) > 1 and not any(keys) and common:  # every scene names the same subject
        return [common] * len(keys)
    return [k or None for k in keys]


def same_subject(a: frozenset[str] | None, b: frozenset[str] | None, exact: bool) -> bool:
    """Tags (``exact``) match when equal; subject words when one holds the other ("the retriever")."""
    if a is None or b is None:
        return False
    return a == b if exact else (a <= b or b <= a)


def subject_scenes(ps: PromptSet, scene: int, keys: list | None = None) -> list[int]:
    """The scenes before ``scene`` about the subject ``scene`` names, in order; [] at a first appearance.
    ``keys``: ``subject_keys(ps)``, when the caller already has them."""
    keys = subject_keys(ps) if keys is None else keys
    return [i for i in range(scene) if same_subject(keys[i], keys[scene], exact=ps.subjects is not None)]
