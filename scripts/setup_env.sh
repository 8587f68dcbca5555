#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install monai-unetpp with its test extras.
# Usage: bash scripts/setup_env.sh            -> .venv in the repository root (MONAI_UNETPP_VENV overrides)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MONAI_UNETPP_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# Installing torch first keeps pip from choosing a multi-GB CUDA build for the open `torch>=2.4` requirement where
# a CPU build lies at hand; MONAI_UNETPP_TORCH picks another (e.g. a CUDA build on a GPU machine). A torch that is
# already in the environment is kept.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q "${MONAI_UNETPP_TORCH:-torch==2.13.0}"
fi
stamp="$venv/.monai_unetpp-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q -e "$root[test,onnx]"
    touch "$stamp"
fi
echo "$venv"
