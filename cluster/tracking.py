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


class Tracker:
    """One MLflow run per training run; resuming continues the same MLflow run."""

    def __init__(self, cfg, run_dir: Path, tracking_uri: str):
        import mlflow

        self.mlflow, self.run_dir = mlflow, run_dir
        mlflow.set_tracking_uri(tracking_uri)
        if tracking_uri.startswith("sqlite:") and mlflow.get_experiment_by_name("inflvg") is None:
            # a run's own SQLite store keeps its artifacts beside it, not in the job's working directory
            mlflow.create_experiment("inflvg", artifact_location=(run_dir / "mlartifacts").resolve().as_uri())
        mlflow.set_experiment("inflvg")
        id_file = run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else None
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else cfg.run_name)
        if run_id is None:
            id_file.write_text(self.run.info.run_id)
            mlflow.log_params(flatten(cfg))
        self.uri = tracking_uri

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

    def finish(self) -> str:
        run_id = self.run.info.run_id
        self.mlflow.end_run()
        return run_id
