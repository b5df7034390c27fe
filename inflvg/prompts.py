"""Prompt sets: the free-text input of every part of the service.

A prompt set is one video: an id, one free-text prompt per scene, and optionally a subject tag
per scene (which named entity the scene is about, when the file says so). On disk it is an EPS
``.jsonl`` row as InfLVG publishes them, ``{"0": "A golden retriever runs ...", "1": ...}``,
plus an optional ``"subjects"`` list with one entry per scene (a tag, or null)::

    {"0": "A golden retriever runs across a wet lawn, face the camera",
     "1": "A grey tabby cat sleeps on a sofa, face the camera",
     "2": "The golden retriever shakes off the rain, face the camera",
     "subjects": ["golden retriever", "grey tabby cat", "golden retriever"]}

A tag names the subject as the prompts do: it must occur (case-insensitively, as whole words)
in at least one scene prompt of its row, which catches a misspelt tag before it silently
breaks the identity reward.

The scene count comes from the row. Videos generated together in one batch must have the same
number of scenes, so everything that batches (the benchmark, serving) groups prompt sets by
scene count; training rolls out one prompt set per GRPO group, so a file may mix scene counts.

Ground truth (StoryWorld's cast and scene layout) is not part of a prompt set: where it exists,
it lives beside it (``inflvg.world.eps.ground_truth``) and only the oracle strategy, the world
readers, the benchmark and the reward models' own training and calibration scripts read it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

SUBJECTS_KEY = "subjects"
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 controls, NUL, tab and newline included: a prompt is one line


@dataclass(frozen=True)
class PromptSet:
    """One video's prompts."""

    id: str
    """Unique name of the prompt set (a file's rows are ``<stem>-<row>``)."""
    scenes: tuple[str, ...]
    """One free-text prompt per scene, in order."""
    subjects: tuple[str | None, ...] | None = None
    """Per scene, the subject it is about (None: no tagged subject); None when the source has no tags."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"PromptSet.id must be a non-empty string, got {self.id!r}")
        problem = scene_problem(self.scenes) or subjects_problem(self.subjects, self.scenes)
        if problem:
            raise ValueError(f"PromptSet {self.id!r}: {problem}")

    @property
    def n_scenes(self) -> int:
        return len(self.scenes)

    def row(self) -> dict:
        """The EPS row of this prompt set (``save_prompts`` writes one per line)."""
        row: dict = {str(i): p for i, p in enumerate(self.scenes)}
        if self.subjects is not None:
            row[SUBJECTS_KEY] = list(self.subjects)
        return row


def scene_problem(scenes: object) -> str | None:
    """What is wrong with a sequence of scene prompts, or None."""
    if not isinstance(scenes, tuple) or not scenes:
        return "needs at least one scene prompt"
    for i, text in enumerate(scenes):
        if not isinstance(text, str):
            return f"scene {i} must be a string, got {type(text).__name__}"
        if not text.strip():
            return f"scene {i} is empty"
        if bad := CONTROL_CHARS.search(text):
            return f"scene {i} holds a control character ({bad[0]!r})"
    return None


def subjects_problem(subjects: object, scenes: tuple[str, ...]) -> str | None:
    """What is wrong with per-scene subject tags, or None."""
    if subjects is None:
        return None
    if not isinstance(subjects, (tuple, list)) or len(subjects) != len(scenes):
        return f"{SUBJECTS_KEY!r} must list one tag (a string, or null) per scene: {len(scenes)} entries, got {subjects!r:.80}"
    for i, tag in enumerate(subjects):
        if tag is None:
            continue
        if not isinstance(tag, str) or not tag.strip():
            return f"{SUBJECTS_KEY!r} entry {i} must be a non-empty string or null, got {tag!r}"
        if not any(_mentions(p, tag) for p in scenes):
            return f"subject tag {tag!r} (scene {i}) names a subject that no scene prompt mentions; tag it as the prompts name it"
    return None


def _mentions(prompt: str, tag: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(tag.strip().lower())}(?!\w)", prompt.lower()) is not None


class RowError(ValueError):
    """A problem with one EPS row; ``key`` names the key at fault ("2", "subjects"), None the row."""

    def __init__(self, key: str | None, message: str):
        super().__init__(message)
        self.key = key


def row_scenes(row: object) -> tuple[str, ...]:
    """An EPS row without its "subjects" key -> its scene prompts in order; RowError naming the key."""
    if not isinstance(row, dict):
        raise RowError(None, f"expected a JSON object with keys \"0\", \"1\", ...; got {type(row).__name__}")
    if not row:
        raise RowError(None, "the row holds no scenes; expected keys \"0\", \"1\", ...")
    expected = [str(i) for i in range(len(row))]
    if sorted(row, key=lambda k: (len(k), k)) != expected:
        unexpected = [k for k in row if k not in expected]
        raise RowError(None, f"unexpected key(s) {unexpected}; a row holds consecutive scene numbers \"0\"..\"{len(row) - 1}\" "
                             f"and optionally \"{SUBJECTS_KEY}\"")  # fmt: skip
    for k in expected:
        problem = scene_problem((row[k],))
        if problem:
            raise RowError(k, problem.replace("scene 0", "the prompt"))
    return tuple(row[k] for k in expected)


def parse_prompt_row(row: object, set_id: str, where: str) -> PromptSet:
    """One EPS row (parsed JSON) -> PromptSet; errors name ``where`` (file and line) and the key."""
    try:
        subjects = row.get(SUBJECTS_KEY) if isinstance(row, dict) else None
        scenes = row_scenes({k: v for k, v in row.items() if k != SUBJECTS_KEY} if isinstance(row, dict) else row)
        problem = subjects_problem(subjects, scenes)
        if problem:
            raise RowError(SUBJECTS_KEY, problem)
    except RowError as e:
        raise ValueError(f"{where}{'' if e.key is None else f', key {e.key!r}'}: {e}") from None
    return PromptSet(set_id, scenes, None if subjects is None else tuple(subjects))


def load_prompts(path: str | Path) -> list[PromptSet]:
    """Every row of an EPS ``.jsonl``, in file order; row n (0-based, blank lines skipped) is ``<stem>-<n>``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} does not exist")
    out: list[PromptSet] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            out.append(parse_prompt_row(row, f"{path.stem}-{len(out)}", where))
    if not out:
        raise ValueError(f"prompt file {str(path)!r} holds no rows")
    return out


def save_prompts(prompt_sets: list[PromptSet], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(ps.row()) + "\n" for ps in prompt_sets)
