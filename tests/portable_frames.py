"""Hashes of the frames the shipped weights make for 4 held-out prompt sets, under numerics that
are the same on every x86-64 CPU, so a bit-identity check holds on any machine of the suite.

    python tests/portable_frames.py --write      # remake tests/data/golden_frames.json (after a deliberate change)

Float kernels differ by instruction set: the same code gave other bytes for 2 of the 4 videos on an
AVX2 machine than on the AVX-512 one the hashes were first made on. This process therefore runs
ATen's baseline kernels (ATEN_CPU_CAPABILITY=default), MKL's processor-independent code path
(MKL_CBWR=COMPATIBLE, Intel's conditional numerical reproducibility), oneDNN's SSE4.1 kernels
and one thread; these variables are read when torch loads, so the test runs this file as a subprocess (``PORTABLE_ENV``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "golden_frames.json"
STRATEGIES = ("full", "window", "sink_window", "far", "random", "prompt_match", "oracle")
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1"}  # fmt: skip


def frame_hashes(names: tuple[str, ...]) -> dict[str, list[str]]:
    """Per strategy, a hash of each video's frames (4 held-out prompt sets of seed 0 in one batch, noise seed 0)."""
    import numpy as np
    import torch

    from inflvg.context import make_strategy
    from inflvg.generate import generate
    from inflvg.protocol import load_backend
    from inflvg.world import sample_prompt_set

    torch.set_num_threads(1)
    gen = load_backend("storyworld")
    prompt_sets = [sample_prompt_set(i, "heldout", 8, 4, f"heldout-{i}") for i in range(4)]
    out = {}
    for name in names:
        res = generate(gen, prompt_sets, make_strategy(name), seed=0)
        out[name] = [hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest()[:16] for f in res.frames]
    return out


def portable_hashes(names: tuple[str, ...] = STRATEGIES) -> dict[str, list[str]]:
    """``frame_hashes`` run in a fresh process under ``PORTABLE_ENV``."""
    cmd = [sys.executable, __file__, *names]
    done = subprocess.run(cmd, env={**os.environ, **PORTABLE_ENV}, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--write"]:
        GOLDEN.write_text(json.dumps(portable_hashes(), indent=1) + "\n")
        print(f"wrote {GOLDEN}")
    else:
        print(json.dumps(frame_hashes(tuple(args) or STRATEGIES)))
