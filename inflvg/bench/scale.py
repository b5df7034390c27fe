"""Cost by video length on any generator, per block: does a fixed budget keep a block's cost flat?

    python -m inflvg.bench.scale --generator wan-tiny --lengths 1,16 --out results/scale.json

For each strategy, one video of the longest length (its shorter lengths are its prefixes) and,
alongside, 1x videos block for block, so both sides of a ratio see the same load (as
``inflvg.bench.run.run_timing`` does for the quality benchmark); ``--repeats`` such runs, each
with its own noise. Per length L: ``ms_per_block.L`` is the median of the generator's block step
over the L-th horizon, the selection at scene changes included and the VAE decode excluded
(``decode_ms_per_block``); ``ms_ratio_to_1x.L`` divides it by the 1x blocks made meanwhile. Both
are medians over the repeats, with their range (``..._range``). Per scene change at the longest
length: ``kv_bytes_gathered`` (the K selected tokens' keys and values; what travels to the device
when the pool is in host memory; for ``full`` the whole history it attends to) and
``kv_bytes_whole_history``. ``peak_memory_bytes``: the process's peak (CUDA: allocated on the device).
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from .. import cli
from ..context import make_strategy
from ..protocol import BACKENDS, load_backend
from ..validate import positive_int
from .run import BenchSetup, run_timing

STRATEGIES = ("full", "window", "sink_window", "far", "random", "prompt_match", "memflow", "rag", "fademem")


def _median(runs: list[dict], key: str, scale: float = 1.0) -> tuple[dict, dict]:
    """Per length, the median over repeats of runs[i][key][L] * scale, and the [min, max] range."""
    lengths = runs[0][key]
    values = {L: [r[key][L] * scale for r in runs] for L in lengths}
    return {L: float(np.median(v)) for L, v in values.items()}, {L: [min(v), max(v)] for L, v in values.items()}


def measure(gen, name: str, lengths: list[int], seed: int, repeats: int) -> dict:
    """One strategy's entry (see the module docstring)."""
    runs = [run_timing(BenchSetup(gen, gen.spec.context, seed + r), make_strategy(name), lengths) for r in range(repeats)]
    block, longest = gen.spec.frames_per_block, str(max(lengths))
    ms, ms_range = _median(runs, "ms_per_frame", block)
    ratio, ratio_range = _median(runs, "ms_ratio_to_1x")
    entry = {
        "ms_per_block": ms, "ms_per_block_range": ms_range, "ms_ratio_to_1x": ratio, "ms_ratio_to_1x_range": ratio_range,
        "decode_ms_per_block": _median(runs, "decode_ms_per_frame", block)[0],
        "context_tokens": runs[0]["context_tokens"],
        "kv_bytes_gathered": runs[0]["kv_bytes_per_transition"].get(longest),
        "kv_bytes_whole_history": runs[0]["history_kv_bytes_per_transition"].get(longest),
    }  # fmt: skip
    if name == "full":  # no selection: every block attends to the whole history, nothing is gathered from a pool
        history = runs[0]["context_tokens"][longest] * gen.spec.kv_bytes_per_token
        entry["kv_bytes_gathered"] = entry["kv_bytes_whole_history"] = float(history)
    return entry


def peak_memory_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def markdown(result: dict) -> str:
    lengths = result["config"]["lengths"]
    head = ("| strategy | " + " | ".join(f"ms/block {L}x" for L in lengths)
            + f" | {max(lengths)}x/1x | decode ms/block | KV bytes gathered | whole history |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in result["strategies"].items():
        ms = [f"{s['ms_per_block'][str(L)]:.1f}" for L in lengths]
        ratio, decode = s["ms_ratio_to_1x"][str(max(lengths))], s["decode_ms_per_block"][str(lengths[0])]
        gathered, whole = (f"{s[k]:,.0f}" if s[k] is not None else "-" for k in ("kv_bytes_gathered", "kv_bytes_whole_history"))
        rows.append(f"| {name} | " + " | ".join(ms) + f" | {ratio:.2f} | {decode:.1f} | {gathered} | {whole} |")
    return "\n".join(rows) + f"\n\nPeak memory: {result['peak_memory_bytes']:,} bytes.\n"


@dataclass(frozen=True)
class ScaleArgs:
    """The scale benchmark's arguments (``python -m inflvg.bench.scale --help``)."""

    generator: Annotated[str, cli.choice(BACKENDS)] = "wan-tiny"
    """The generator by name."""
    weights: str | None = None
    """The generator's weights; None: the shipped ones (random for the Wan presets)."""
    lengths: Annotated[tuple[int, ...], cli.comma(int, "1,16")] = (1, 16)
    """Video lengths as multiples of the generator's horizon (comma-separated)."""
    strategies: Annotated[tuple[str, ...], cli.comma(str, "full,window")] = STRATEGIES
    """Strategies to time (comma-separated)."""
    device: str = "cpu"
    """torch device of the generator and the strategies (cpu, cuda, cuda:1, ...)."""
    seed: int = 0
    """Seed of the first run's noise and prompt sets; repeat r uses seed + r."""
    repeats: int = 3
    """Runs per strategy, each with its own noise."""
    threads: int = 1
    """torch threads."""
    out: str = "results/scale.json"
    """Where the results go: FILE.json and FILE.md (table) beside it."""

    def __post_init__(self) -> None:
        positive_int(self, "repeats")
        positive_int(self, "threads")
        if not self.lengths or min(self.lengths) < 1:
            raise ValueError(f"ScaleArgs.lengths must be positive integers, got {self.lengths!r}; e.g. --lengths 1,16")
        for name in self.strategies:
            make_strategy(name)


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse(ScaleArgs, argv, prog="python -m inflvg.bench.scale", description=__doc__)
    lengths = sorted(set(args.lengths))
    names = [make_strategy(n).name for n in args.strategies]
    try:
        gen = load_backend(args.generator, args.weights, args.device)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    torch.set_num_threads(args.threads)
    start = time.time()
    result = {"config": {"generator": args.generator, "weights": args.weights, "lengths": lengths, "device": args.device,
                         "threads": args.threads, "repeats": args.repeats, "frames_per_block": gen.spec.frames_per_block, "grid": list(gen.spec.grid),
                         "budget_k": gen.spec.context.budget_k, "kv_bytes_per_token": gen.spec.kv_bytes_per_token},
              "strategies": {}}  # fmt: skip
    for name in names:
        print(f"timing {name} up to {max(lengths)}x", file=sys.stderr, flush=True)
        result["strategies"][name] = measure(gen, name, lengths, args.seed, args.repeats)
    result["peak_memory_bytes"] = peak_memory_bytes(args.device)
    result["seconds"] = round(time.time() - start)
    cli.write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
