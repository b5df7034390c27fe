"""MLflow: parameters, per-step metrics, sample videos as artifacts, the final policy as a model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from inflvg.video import encode


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """A nested config dataclass -> {'learner.lr': '0.0001', ...}."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = str(value)
    return out


EXPERIMENT = "inflvg"


class Tracker:
    """One MLflow run per attempt: a resumed run is a new MLflow run tagged with the checkpoint it
    resumed from (``inflvg.resumed_from``) and the run's name (``inflvg.run``), so every attempt's
    curves stay as they were logged. A run that raises ends FAILED (KILLED on Ctrl-C)."""

    def __init__(self, cfg, store_root: Path, tracking_uri: str, resumed_from: str | None = None):
        """``store_root``: where a SQLite store keeps its artifacts (beside the database)."""
        import mlflow

        self.mlflow, self.run_dir = mlflow, store_root / cfg.run_name
        mlflow.set_tracking_uri(tracking_uri)
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            # a SQLite store keeps its artifacts beside it, not in the job's working directory
            location = (store_root / "mlartifacts").resolve().as_uri() if tracking_uri.startswith("sqlite:") else None
            experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        # the UI then opens on the training runs and their charts, not the GenAI overview
        mlflow.MlflowClient().set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
        mlflow.set_experiment(experiment_id=experiment_id)
        tags = {"inflvg.run": cfg.run_name, **({"inflvg.resumed_from": resumed_from} if resumed_from else {})}
        self.run = mlflow.start_run(run_name=cfg.run_name, tags=tags)
        mlflow.log_params(flatten(cfg))
        self.uri, self.experiment_id = tracking_uri, experiment_id

    def charts_link(self) -> str:
        """Where the run's charts are: a browser link for an HTTP server, else the store and run id."""
        run_id = self.run.info.run_id
        if self.uri.startswith("http"):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}/model-metrics"
        return f"MLflow run {run_id} in {self.uri} (experiment '{EXPERIMENT}'; mlflow ui --backend-store-uri {self.uri})"

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
        self.mlflow.log_metrics(clean, step=step)

    def log_video(self, step: int, frames: np.ndarray, prompts: list[str]) -> None:
        path = self.run_dir / "videos" / f"step{step:05d}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(frames, "gif", factor=4, fps=4))
        path.with_suffix(".json").write_text(json.dumps({"step": step, "prompts": prompts}))
        self.mlflow.log_artifact(str(path), artifact_path="videos")
        self.mlflow.log_artifact(str(path.with_suffix(".json")), artifact_path="videos")

    def log_policy(self, policy_path: Path) -> str:
        """The policy file as an artifact (``runs:/<run>/policy/policy.pt``) and as an MLflow
        logged model (``mlflow.pytorch.load_model(uri)`` returns the SelectionPolicy; the
        ``inflvg`` package must be importable) -> the model's URI."""
        import mlflow.pytorch as mlflow_pytorch

        from inflvg.policy import load_policy

        self.mlflow.log_artifact(str(policy_path), artifact_path="policy")
        info = mlflow_pytorch.log_model(
            load_policy(policy_path), name="policy", pip_requirements=["torch==2.13.0"], serialization_format="pickle"
        )
        return info.model_uri

    def finish(self, status: str = "FINISHED") -> str:
        """End the run as FINISHED, FAILED or KILLED -> its id."""
        run_id = self.run.info.run_id
        self.mlflow.end_run(status=status)
        return run_id
