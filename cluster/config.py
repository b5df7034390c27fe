"""The training service's typed configuration and its presets.

Each role receives only its own sub-config: rollout workers a RolloutConfig, reward actors a
RewardConfig, the learner a LearnerConfig.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from inflvg.validate import at_least, boolean, number, one_of, positive_int
from learner.config import LearnerConfig
from reward_actors.config import AlignmentConfig, ArtifactConfig, IdentityConfig, RewardConfig
from rollout_workers.config import RolloutConfig


@dataclass(frozen=True)
class ServiceConfig:
    run_name: str = "storyworld"
    """Name of the run: outputs go to <output_root>/<run_name>/ and MLflow logs under it."""
    steps: int = 120
    """GRPO steps (sample, roll out, score, update, sync)."""
    prompt_sets_per_step: int = 4
    """P: prompt sets per step; each is rolled out group_size times (rollout.group_size)."""
    n_scenes: int = 8
    """Scenes per StoryWorld training video (a prompt file's rows keep their own counts)."""
    cast_size: int = 4
    """Characters per StoryWorld training video."""
    long_stories: bool = False
    """StoryWorld training stories drawn as the long-video benchmark draws its own (returns at least 5 scenes
    apart, ``sample_long_story``): with n_scenes 16 and cast_size 8, the curriculum's second stage."""
    prompts: str | None = None
    """A prompt file (EPS .jsonl, free text, optional subject tags) to train on; None: StoryWorld's training split."""
    init_policy: str | None = None
    """A policy file (a run's policy.pt) the learner starts from instead of its seeded initial weights: the
    next stage of a curriculum, e.g. longer videos after the default ones. Its PolicyConfig must be the learner's."""
    seed: int = 0
    """Seeds the prompt sampler and each step's generator noise and selections (learner.seed seeds the policy)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """The rollout workers: generator, group size G, replicas and their Ray resources."""
    rewards: RewardConfig = field(default_factory=RewardConfig)
    """The reward actors (alignment, identity, artifacts) and how their scores combine."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """The learner: policy architecture, optimiser, GRPO constants, DeepSpeed and its Ray resources."""
    topology: Literal["separate", "hybrid"] = "separate"
    """'separate': one learner actor; the rollouts travel to it with their candidate features and the new
    weights are pushed back. 'hybrid': every rollout replica is also a DeepSpeed data-parallel learner
    rank (``cluster/hybrid.py``): the features stay where they were made, only advantages travel,
    gradients are all-reduced and nothing is broadcast; ``rollout.replicas`` ranks, each a whole
    learner (``learner.*`` applies to every rank; ``learner_num_cpus`` and ``learner_resources`` do not)."""
    learner_num_cpus: float = 0.5
    """CPUs Ray reserves for the learner actor ('separate')."""
    learner_resources: tuple[tuple[str, float], ...] = ()
    """Custom Ray resources the learner actor needs, e.g. (("learner_node", 1.0),) to place it on the nodes that
    offer them (``ray start --resources '{"learner_node": 1}'``); () places it anywhere."""
    learner_max_restarts: int = 2
    """Times Ray restarts a learner that died; the driver then resumes from the last checkpoint in the same job."""
    call_timeout_s: float = 1800.0
    """Seconds a driver call to the learner may take (an update, a checkpoint) before the job stops with an error naming it."""
    checkpoint_every: int = 10
    """Steps between checkpoints (and always after the last step)."""
    keep_checkpoints: int = 3
    """Checkpoints kept under <run>/checkpoints/: after each save all but the newest this many are
    deleted (never the one ``latest`` names); 0 keeps them all."""
    rollout_parquet: bool = False
    """Write each step's scored rollouts, without their frames, to <run>/rollouts/step-000003.parquet
    (one row per rollout; ``inflvg.rollout.read_parquet`` or ``ray.data.read_parquet`` reads them)."""
    video_every: int = 20
    """Steps between sample videos logged to MLflow as artifacts."""
    output_root: str = "runs"
    """The local run folder <output_root>/<run_name>/ (the default MLflow store, sample videos), and the
    storage root when ``storage`` is None."""
    storage: str | None = None
    """Where <storage>/<run_name>/{config.json, steps.jsonl, checkpoints/, policy.pt, rollouts/} go, read and
    written by whichever node holds the work: a folder, or any pyarrow.fs URI (s3://bucket/runs, gs://...,
    file:///mnt/shared/runs). On more than one node use a URI or a folder mounted on every node. None: output_root."""
    tracking_uri: str | None = None
    """MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else a SQLite file in the run folder."""

    def __post_init__(self) -> None:
        for name in ("steps", "prompt_sets_per_step", "n_scenes", "cast_size", "checkpoint_every", "video_every"):
            positive_int(self, name)
        at_least(self, "keep_checkpoints", 0, "use 0 to keep every checkpoint")
        at_least(self, "learner_max_restarts", 0, "-1 (forever) is not allowed: a crash loop must end")
        number(self, "call_timeout_s", 1, fix="give the seconds a learner call may take, e.g. 1800")
        boolean(self, "rollout_parquet")
        boolean(self, "long_stories")
        one_of(self, "topology", ("separate", "hybrid"))
        if self.topology == "hybrid" and self.learner.zero_stage > 2:
            raise ValueError("ServiceConfig.topology='hybrid' needs learner.zero_stage <= 2 (ZeRO-3 gathers the parameters "
                             "in every forward, which the rollout policy does not); use --learner.zero-stage 2")  # fmt: skip
        if self.topology == "hybrid" and self.rollout_parquet:
            raise ValueError("ServiceConfig.rollout_parquet needs topology='separate': hybrid ranks keep the candidate "
                             "features, so the driver holds no transitions to write")  # fmt: skip
        if self.prompts is not None and (not isinstance(self.prompts, str) or not Path(self.prompts).is_file()):
            raise ValueError(f"ServiceConfig.prompts must be the path of an existing prompt file (.jsonl), got {self.prompts!r}")
        if not all(isinstance(name, str) and isinstance(amount, (int, float)) and amount > 0 for name, amount in self.learner_resources):
            raise ValueError(f"ServiceConfig.learner_resources must be (name, amount > 0) pairs, e.g. (('learner_node', 1.0),), "
                             f"got {self.learner_resources!r}")  # fmt: skip
        if self.init_policy is not None and (not isinstance(self.init_policy, str) or not Path(self.init_policy).is_file()):
            raise ValueError(f"ServiceConfig.init_policy must be the path of an existing policy file (a run's policy.pt), "
                             f"got {self.init_policy!r}")  # fmt: skip
        if self.storage is not None and (not isinstance(self.storage, str) or not self.storage):
            raise ValueError(f"ServiceConfig.storage must be a folder or a pyarrow.fs URI such as s3://bucket/runs, got {self.storage!r}")
        if not self.run_name or "/" in self.run_name:
            raise ValueError(f"ServiceConfig.run_name must be a non-empty name without '/', got {self.run_name!r}")


# On a 2-core laptop every role shares the cores: reservations are fractions so that all fit.
LAPTOP_REWARDS = RewardConfig(
    alignment=AlignmentConfig(num_cpus=0.25), identity=IdentityConfig(num_cpus=0.25), artifacts=ArtifactConfig(num_cpus=0.25)
)


def debug() -> ServiceConfig:
    """The whole loop in about a minute on a laptop CPU: 3 steps of 2 prompt sets x 2 rollouts, 4 scenes."""
    return ServiceConfig(
        run_name="debug", steps=3, prompt_sets_per_step=2, n_scenes=4, checkpoint_every=1, video_every=2,
        rollout=RolloutConfig(group_size=2, num_cpus=0.5), learner=LearnerConfig(zero_stage=0, minibatch_size=16),
        rewards=LAPTOP_REWARDS,
    )  # fmt: skip


def storyworld() -> ServiceConfig:
    """The default training, at most 30 minutes on 2 CPU cores: 130 steps of 4 prompt sets x 4 rollouts."""
    # batch-scaled advantages: the selection moves the reward of a returning character's scene
    # and barely any other, and per-group scaling made that noise the signal. lr 3e-3 with 4
    # epochs per batch drifted (KL to the acting policy blew up after ~80 steps); 2e-3 x 2 did not
    learner = LearnerConfig(lr=2e-3, epochs=2, minibatch_size=128, advantage_scale="batch")
    return ServiceConfig(steps=130, rollout=RolloutConfig(num_cpus=0.5), rewards=LAPTOP_REWARDS, learner=learner)


def gpu() -> ServiceConfig:
    """A starting point that fits ONE node of 1 GPU and 16 CPUs: every role shares the one GPU by fractions.

    GPU (sum 1.0): 4 rollout replicas x 0.125 + the bf16 ZeRO-2 learner on NCCL 0.375 + the alignment
    CLIP 0.125; the identity (ONNX, CPU onnxruntime by default) and artifact (numpy) scorers take none.
    CPUs (sum 13 of 16): 4 rollout x 2 + learner 2 + 3 reward replicas x 1, leaving room for the driver.

    On a node (or cluster) of N GPUs keep the learner at 0.375 (``LearnerConfig.num_gpus`` is at most 1:
    one learner process drives one device) and give the rollout replicas the rest, e.g. N = 8:
    ``--rollout.replicas 30 --rollout.num-gpus 0.25`` (30 x 0.25 + 0.375 + 0.125 = 8) and enough CPUs for
    them (each reserves ``--rollout.num-cpus``: 30 x 2 + 5 = 65); more reward replicas with
    ``--rewards.alignment.replicas``, each counted at ``--rewards.alignment.num-gpus``. Ray does not
    start an actor whose reservation no node can hold, so a sum over the node is a job that waits forever.
    """
    base = ServiceConfig(run_name="gpu", steps=500, prompt_sets_per_step=16)
    return replace(
        base,
        rollout=RolloutConfig(group_size=8, replicas=4, num_cpus=2, num_gpus=0.125, threads=2),
        learner=LearnerConfig(zero_stage=2, dtype="bf16", num_gpus=0.375, minibatch_size=256, backend="nccl"),
        learner_num_cpus=2,
        rewards=RewardConfig(alignment=AlignmentConfig(num_gpus=0.125)),
    )


PRESETS: dict[str, Callable[[], ServiceConfig]] = {"debug": debug, "storyworld": storyworld, "gpu": gpu}
"""The named configurations ``--preset NAME`` starts from."""


def preset(name: str) -> ServiceConfig:
    """The preset ``name``: debug, storyworld or gpu (see ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose {', '.join(PRESETS)}")
    return PRESETS[name]()


def to_json(cfg: ServiceConfig) -> str:
    """The whole config as JSON (tuples as lists), as a run writes it to <run>/config.json."""
    return json.dumps(asdict(cfg), indent=2) + "\n"
