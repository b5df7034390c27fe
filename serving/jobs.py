"""The ``Job`` record that crosses from the HTTP ingress to a generator replica, and how a
validated request becomes one (its prompts a free-text ``PromptSet``, errors naming the field)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from inflvg.context import make_strategy
from inflvg.prompts import PromptSet, RowError, row_scenes, subjects_problem


class FieldError(ValueError):
    """A request value the schema accepts but the server cannot serve; answered 4xx naming ``field``."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class Job:
    request_id: str
    prompt_set: PromptSet
    """The request's prompts; its id is ``request_id``."""
    strategy: str
    seed: int
    frames_per_scene: int | None
    """None: the generator's own."""
    budget_k: int | None
    """None: the generator's own."""
    refine_steps: int
    scores: bool
    submitted: float
    """time.time() when the ingress accepted the request."""
    deadline: float
    """time.time() after which no one waits for the answer."""

    def batch_key(self) -> tuple:
        """Jobs with equal keys are generated in one batch. Every row of a batch gets the noise
        of ``seed`` (``shared_noise``), so a video depends only on its own request, never on its
        batch-mates (up to float rounding: a batched matmul may round a pixel one level apart).
        Two kinds run alone: refinement (its own policy) and 'random', whose draws come from one
        generator shared by the batch's rows."""
        if self.refine_steps or self.strategy == "random":
            return ("alone", self.request_id)
        return (self.prompt_set.n_scenes, self.frames_per_scene, self.budget_k, self.strategy, self.seed)

    @property
    def n_frames(self) -> int | None:
        return None if self.frames_per_scene is None else self.prompt_set.n_scenes * self.frames_per_scene


def prompt_field(where: str, i: int) -> str:
    """How a client names prompt ``i``: ``scenes[2]`` or ``row["2"]``."""
    return f"scenes[{i}]" if where == "scenes" else f'row["{i}"]'


def prompt_set_of(scenes: list[str] | None, row: dict[str, str] | None, set_id: str, subjects: list | None = None) -> PromptSet:
    """The request's prompts (a list, or an EPS row ``{"0": ..., "1": ...}``) and optional subject
    tags as a PromptSet. Any text is a prompt; a blank one or one holding a control character
    raises FieldError naming it (``scenes[2]`` or ``row["2"]``), a row whose keys are not
    "0".."n-1" names ``row``, tags that do not fit the scenes name ``subjects``."""
    where = "scenes" if scenes is not None else "row"
    try:
        texts = row_scenes(row if scenes is None else {str(i): p for i, p in enumerate(scenes)})
    except RowError as e:
        raise FieldError(where if e.key is None else prompt_field(where, int(e.key)), str(e)) from None
    problem = subjects_problem(subjects, texts)
    if problem:
        raise FieldError("subjects", problem)
    return PromptSet(set_id, texts, None if subjects is None else tuple(subjects))


def check_strategy(strategy: str, ps: PromptSet) -> None:
    """Refuse, before any work, a strategy that cannot run on these prompts (the oracle on free
    text: it reads StoryWorld's ground truth); FieldError on ``strategy``."""
    if strategy == "learned":
        return
    try:
        make_strategy(strategy).check([ps])
    except ValueError as e:
        raise FieldError("strategy", str(e).replace(f"prompt set {ps.id!r}", "this request's prompt set")) from None


def make_job(req, strategy: str, timeout_s: float) -> Job:
    """A validated request (``schema.request_model``) -> Job; FieldError when its prompts or its
    strategy cannot be served (``check_strategy``)."""
    now, request_id = time.time(), uuid.uuid4().hex
    job = Job(
        request_id=request_id, prompt_set=prompt_set_of(req.scenes, req.row, request_id, req.subjects), strategy=strategy, seed=req.seed,
        frames_per_scene=req.frames_per_scene, budget_k=req.budget_k, refine_steps=req.refine_steps, scores=req.scores,
        submitted=now, deadline=now + timeout_s,
    )  # fmt: skip
    check_strategy(strategy, job.prompt_set)
    return job
