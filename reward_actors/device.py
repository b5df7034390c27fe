"""Where a reward actor's model runs: on CUDA when its config reserves a GPU, else on CPU.

A replica that reserves ``num_gpus > 0`` and finds no CUDA fails at construction with an error
naming the config field (as ``LearnerConfig.num_gpus`` does in the learner), instead of scoring
on CPU beside a GPU it holds; one that reserves none never touches a GPU it was not given.
"""

from __future__ import annotations

CPU_PROVIDERS = ["CPUExecutionProvider"]
CUDA_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def reward_device(num_gpus: float, field: str, cuda_available: bool | None = None) -> str:
    """'cuda' when ``num_gpus`` > 0 (the replica reserved a GPU), else 'cpu'.

    ``field`` names the config field in the error (e.g. 'AlignmentConfig.num_gpus');
    ``cuda_available`` defaults to ``torch.cuda.is_available()`` (checked only when a GPU is reserved)."""
    if num_gpus <= 0:
        return "cpu"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        raise RuntimeError(
            f"{field}={num_gpus} reserves a GPU for this reward actor, but CUDA is not available in its process "
            f"(torch.cuda.is_available() is False); set {field}=0 to score on CPU, or run it on a node with a GPU"
        )
    return "cuda"


def onnx_providers(device: str, field: str = "IdentityConfig.num_gpus", available: list[str] | None = None) -> list[str]:
    """onnxruntime execution providers for ``device``: CPU only on 'cpu' (a GPU the replica did not
    reserve is never used), CUDA first on 'cuda', which needs onnxruntime-gpu."""
    if device == "cpu":
        return list(CPU_PROVIDERS)
    if device != "cuda":
        raise ValueError(f"ONNX reward models run on 'cpu' or 'cuda', got device={device!r}")
    if available is None:
        import onnxruntime

        available = list(onnxruntime.get_available_providers())
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(
            f"{field} > 0 runs the ONNX models on CUDA, but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {available}); install onnxruntime-gpu, or set {field}=0 to score on CPU"
        )
    return list(CUDA_PROVIDERS)
