"""Make the CUDA-only torchvision wheel importable next to a CPU build of torch, only where needed.

torchvision 0.28.0 (the one release that matches torch 2.13.0, needed by open_clip and pulled in
by transformers) is published as a CUDA build; with CPU torch its import fails with
"operator torchvision::nms does not exist", because its Python side registers fake kernels for
ops whose schemas live in its CUDA library. Defining those two schemas before torchvision's first
import is enough for transforms and models. This script checks a fresh interpreter; only if the
import fails that way does it install a tiny import hook (a .pth file in site-packages) that
defines the schemas the moment torchvision is first imported. Elsewhere (CUDA torch) it does nothing.

    python scripts/install_torchvision_shim.py
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

HOOK_MODULE = "_torchvision_cpu_schemas"
HOOK = '''"""Installed by scripts/install_torchvision_shim.py: defines torchvision's nms/qnms op schemas
just before torchvision's first import, for the CUDA torchvision wheel on CPU torch."""
import importlib.abc
import sys

_LIBS = []


class _DefineSchemas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            lib = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                lib.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _LIBS.append(lib)
        return None


sys.meta_path.insert(0, _DefineSchemas())
'''


def torchvision_import_error() -> str:
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True, check=False)  # the exit status is the answer
    return "" if probe.returncode == 0 else probe.stderr


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    err = torchvision_import_error()
    if not err:
        print("torchvision imports as it is; no shim needed")
        return 0
    if "torchvision::nms does not exist" not in err:
        print(err, file=sys.stderr)
        print("torchvision fails to import for another reason; not shimming", file=sys.stderr)
        return 1
    (site / f"{HOOK_MODULE}.py").write_text(HOOK)
    (site / f"{HOOK_MODULE}.pth").write_text(f"import {HOOK_MODULE}\n")
    if torchvision_import_error():
        print("torchvision still fails to import after the shim", file=sys.stderr)
        return 1
    print(f"installed the torchvision CPU shim in {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
