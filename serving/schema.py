"""The HTTP contract: request and response models (pydantic), with the bounds of a ServeConfig.

The request model is built per config so that the OpenAPI schema states the same bounds the
server enforces. Requests are strict: a wrong type is refused, never coerced.
"""

import re
from typing import Annotated, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from inflvg.config import WorldConfig
from inflvg.context import STRATEGIES
from inflvg.prompts import CONTROL_CHARS
from inflvg.world import sample_prompt_set

from .config import ServeConfig

STRATEGY_NAMES = ("learned", *STRATEGIES)
FORMATS = {"mp4": "video/mp4", "gif": "image/gif"}
MAX_SEED = 2**31 - 1


# the same rule as inflvg.prompts.CONTROL_CHARS, as a JSON-schema (ECMA) pattern
PROMPT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
SURROGATES = re.compile(r"[\ud800-\udfff]")


def example_scenes(seed: int, n_scenes: int) -> list[str]:
    """Prompts of a held-out StoryWorld story (identities the generator never saw in training):
    one source of example prompts, read as text only."""
    return list(sample_prompt_set(seed, "heldout", n_scenes, WorldConfig().cast_size, f"storyworld-heldout-{seed}").scenes)


def request_model(cfg: ServeConfig) -> type[BaseModel]:
    """The body of POST /v1/videos, bounded by ``cfg``."""

    class Bounded:  # a type alias may be declared only at module or class scope, and this one holds cfg's bound
        Prompt: TypeAlias = Annotated[str, StringConstraints(min_length=1, max_length=cfg.max_prompt_chars), AfterValidator(_check_prompt),
                                      Field(json_schema_extra={"pattern": PROMPT_PATTERN})]  # fmt: skip

    Prompt = Bounded.Prompt

    class VideoRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True,
                                  json_schema_extra={"examples": [{"scenes": [*example_scenes(0, min(3, cfg.max_scenes))]}]})  # fmt: skip

        scenes: list[Prompt] | None = Field(None, min_length=1, max_length=cfg.max_scenes, description=(
            "One free-text prompt per scene, one line each (no control characters), e.g. 'A golden retriever runs "
            "across a wet lawn, face the camera'. The response counts the words the generator's tokenizer does not "
            "know (unknown_words): the shipped StoryWorld generator knows only StoryWorld's vocabulary, whose "
            "prompts describe a character in its first scene ('character B, a small red and blue striped triangle, "
            "bounces in the desert') and name it later ('character B jumps on the beach'); GET /v1/example gives some."
        ))  # fmt: skip
        row: dict[str, Prompt] | None = Field(None, min_length=1, max_length=cfg.max_scenes, description=(
            'The same prompts as an EPS row (InfLVG\'s format): {"0": prompt, "1": prompt, ...}.'))  # fmt: skip
        subjects: list[Prompt | None] | None = Field(None, min_length=1, max_length=cfg.max_scenes, description=(
            "Optional: per scene, the subject it is about as the prompts name it (e.g. 'golden retriever'), or null. "
            "prompt_match and the identity score use the tags; without them the subject is read off each prompt's "
            "leading phrase."))  # fmt: skip
        frames_per_scene: int | None = Field(None, ge=1, le=cfg.max_frames_per_scene, description="Default: the generator's own.")
        seed: int = Field(0, ge=0, le=MAX_SEED, description="Noise seed: the same request with the same seed gives the same video.")
        budget_k: int | None = Field(None, ge=1, le=cfg.max_budget_k,
                                     description="Long-term tokens kept per scene change; default: the generator's own.")  # fmt: skip
        # a Literal built at runtime from STRATEGIES' names (so the schema follows the registry): valid for pydantic,
        # which reads annotations at runtime, though not a static type form
        strategy: Literal[STRATEGY_NAMES] | None = Field(None, description=(  # pyright: ignore[reportInvalidTypeForm]
            "Context strategy; default: 'learned' when a policy is loaded or refine_steps > 0, else 'far'. 'oracle' reads "
            "StoryWorld's ground truth, so it takes only prompts in StoryWorld's grammar (free text gets 422)."))  # fmt: skip
        format: Literal["mp4", "gif"] = "mp4"
        refine_steps: int = Field(0, ge=0, le=cfg.max_refine_steps,
                                  description="Test-time GRPO steps on this prompt set before generating (strategy 'learned').")  # fmt: skip
        scores: bool = Field(False, description="Score every scene with the reward models (alignment, identity, artifacts).")
        stream: bool = Field(False, description="Answer application/x-ndjson: progress events, then the result (or an error) as the last line.")

        @model_validator(mode="after")
        def one_prompt_source(self) -> "VideoRequest":
            if (self.scenes is None) == (self.row is None):
                raise ValueError("give the scene prompts either in 'scenes' (a list of strings) or in 'row' (an EPS-style object), "
                                 "exactly one of them")  # fmt: skip
            return self

    return VideoRequest


def _check_prompt(text: str) -> str:
    """Free text, one line of it: not blank, no control characters (NUL, tab and newline
    included), valid Unicode (no lone surrogates, which no response could encode)."""
    if not text.strip():
        raise ValueError("a prompt must not be blank")
    if m := CONTROL_CHARS.search(text):
        raise ValueError(f"a prompt is one line of text without control characters; found {m[0]!r} at character {m.start()}")
    if m := SURROGATES.search(text):
        raise ValueError(f"a prompt must be valid Unicode text; found a lone surrogate ({m[0]!r}) at character {m.start()}")
    return text


class SceneInfo(BaseModel):
    index: int
    prompt: str
    first_frame: int
    n_frames: int
    selected_tokens: int | None = Field(description="Long-term tokens chosen at this scene change; null for 'full' (no budget).")
    context_tokens: int = Field(description="Most past tokens a frame of this scene attended to.")
    ms_per_frame: float
    unknown_words: int = Field(description="Words of this prompt the generator's tokenizer does not know (it reads them as unknown).")
    scores: dict[str, float | None] | None = Field(description="Reward components and total when asked; null where a model could not score.")


class RefineInfo(BaseModel):
    steps: int
    rewards: list[float | None] = Field(description="Mean reward after each refinement step.")


class VideoResponse(BaseModel):
    id: str
    format: Literal["mp4", "gif"]
    media_type: str
    video: str = Field(description="The encoded video, base64.")
    width: int
    height: int
    fps: int
    n_frames: int
    strategy: str
    frames_per_scene: int
    budget_k: int
    seed: int
    batch_size: int = Field(description="Requests generated together with this one.")
    timings_ms: dict[str, float] = Field(description="queue, refine, generate, score, encode, total.")
    unknown_words: int = Field(description="Words of all the prompts that the generator's tokenizer does not know (the scenes' sum).")
    scenes: list[SceneInfo]
    refine: RefineInfo | None


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[FieldProblem] = []


class Capability(BaseModel):
    name: str
    available: bool
    reason: str | None = Field(None, description="Why it is unavailable, or what it is limited to.")


class ModelsResponse(BaseModel):
    generator: dict[str, object]
    policy: str | None = Field(description="Where the learned policy came from (a file or an MLflow URI); null when none is loaded.")
    strategies: list[Capability]
    default_strategy: str
    formats: list[str]
    limits: dict[str, int | float]
    refiner: Capability = Field(description="What scores and refine_steps need: the reward models, and whether this server has them.")
    prompt_rows: int | None = Field(description="Rows of the server's prompt file (GET /v1/example?row=N); null when it has none.")


class ExampleResponse(BaseModel):
    id: str = Field(description="Where the prompts come from: '<file stem>-<row>' for a row of the server's prompt file, "
                                "'storyworld-heldout-<seed>' for a held-out StoryWorld story.")  # fmt: skip
    scenes: list[str]
    rows: int | None = Field(description="Rows of the server's prompt file; null when the example is StoryWorld's.")
