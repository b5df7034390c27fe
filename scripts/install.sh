#!/usr/bin/env bash
# The one install of the project and its pinned stack, run by the Makefile ($(VENV)/.installed) and
# by both images (docker/Dockerfile, docker/Dockerfile.gpu):
#
#   scripts/install.sh --venv .venv            create the venv (python3 -m venv) and install into it, dev extras included
#   scripts/install.sh --python python --no-dev --torch-index https://download.pytorch.org/whl/cpu
#                                              into an existing interpreter (an image's), without the dev extras
#
# 1. torch==2.13.0 first, pinned: on a CPU machine it resolves to the local CPU wheel, where an
#    unpinned torch would pull a newer build with gigabytes of CUDA packages. --torch-index URL takes
#    torch (and its matching torchvision) from that index instead: .../whl/cpu, .../whl/cu128.
# 2. DS_BUILD_OPS=0 pip install -c constraints.txt -e ".[dev]" (-e . with --no-dev): constraints.txt
#    keeps every later install on that torch.
# 3. scripts/install_torchvision_shim.py: a no-op unless torchvision's CUDA wheel meets CPU torch.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
VENV="" PY="" EXTRAS="[dev]" TORCH_INDEX=""
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV=${2:?--venv DIR}; shift 2 ;;
    --python) PY=${2:?--python INTERPRETER}; shift 2 ;;
    --torch-index) TORCH_INDEX=${2:?--torch-index URL}; shift 2 ;;
    --no-dev) EXTRAS=""; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if { [ -n "$VENV" ] && [ -n "$PY" ]; } || { [ -z "$VENV" ] && [ -z "$PY" ]; }; then
  echo "install.sh: give exactly one of --venv DIR (created here) or --python INTERPRETER (installed into)" >&2
  exit 2
fi

if [ -n "$VENV" ]; then
  python3 -m venv "$VENV"
  PY=$VENV/bin/python
fi
"$PY" -m pip install -q --upgrade pip
if [ -n "$TORCH_INDEX" ]; then
  # torch and the torchvision built for it, both from that index (no shim needed then)
  "$PY" -m pip install -q --index-url "$TORCH_INDEX" torch==2.13.0 torchvision==0.28.0
else
  # torch first, pinned: it resolves to the local CPU wheel where there is one
  "$PY" -m pip install -q torch==2.13.0
fi
DS_BUILD_OPS=0 "$PY" -m pip install -q -c constraints.txt -e ".$EXTRAS"
# only where torchvision's CUDA wheel meets CPU torch; a no-op elsewhere
"$PY" scripts/install_torchvision_shim.py
