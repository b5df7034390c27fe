"""The ``Job`` record that crosses from the HTTP ingress to a generator replica, and how a
validated request becomes one (prompts parsed into a StoryWorld story, errors naming the field)."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from inflvg.world.eps import parse_row
from inflvg.world.story import Story


class FieldError(ValueError):
    """A request value the schema accepts but the server cannot serve; answered 4xx naming ``field``."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class Job:
    request_id: str
    story: Story
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
        batch-mates. Two kinds run alone: refinement (its own policy) and 'random', whose draws
        come from one generator shared by the batch's rows."""
        if self.refine_steps or self.strategy == "random":
            return ("alone", self.request_id)
        return (len(self.story.scenes), self.frames_per_scene, self.budget_k, self.strategy, self.seed)

    @property
    def n_frames(self) -> int | None:
        return None if self.frames_per_scene is None else len(self.story.scenes) * self.frames_per_scene


def story_of(scenes: list[str] | None, row: dict[str, str] | None, seed: int) -> Story:
    """Parse the prompts with the StoryWorld grammar; a prompt outside it raises FieldError
    naming it (``scenes[2]`` or ``row["2"]``)."""
    where = "scenes" if scenes is not None else "row"
    row = {str(i): p for i, p in enumerate(scenes)} if scenes is not None else row
    try:
        return parse_row(row, seed, where)
    except ValueError as e:
        m = re.match(rf"{where}, key '(\d+)': (.*)", str(e), re.S)
        if m is None:
            raise FieldError(where, str(e).removeprefix(f"{where}: ")) from None
        field = f"scenes[{m[1]}]" if where == "scenes" else f'row["{m[1]}"]'
        raise FieldError(field, m[2]) from None


def make_job(req, strategy: str, timeout_s: float) -> Job:
    """A validated request (``schema.request_model``) -> Job."""
    now = time.time()
    return Job(
        request_id=uuid.uuid4().hex, story=story_of(req.scenes, req.row, req.seed), strategy=strategy, seed=req.seed,
        frames_per_scene=req.frames_per_scene, budget_k=req.budget_k, refine_steps=req.refine_steps, scores=req.scores,
        submitted=now, deadline=now + timeout_s,
    )  # fmt: skip
