#!/usr/bin/env bash
# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
#
# The GPU measurement in one command, for a machine with an NVIDIA GPU and Python 3.10+ (under 8 minutes on one
# H200): installs what the run needs where it is missing, then runs benchmarks/benchmark.py on CUDA in fp32, bf16
# autocast and bf16 + torch.compile (training step 2 x 96^3, 3D sliding window over 256 x 256 x 160, ROI 96, final
# and mean mode, pruned depths) and writes the results as JSON.
#
#   bash benchmarks/gpu_check.sh                 # -> benchmarks/results/gpu.json
#   OUT=/some/folder bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --quick         # tiny networks on CPU: checks the script itself in a minute
#
# Environment: PYTHON (default python3; a venv's python is used as it is), OUT (results folder), PIP_ARGS (extra pip
# arguments, e.g. "--no-index --find-links /wheels" on a machine without internet), TIME_LIMIT (seconds, 450).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
TIME_LIMIT=${TIME_LIMIT:-450}
QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (the only option is --quick)" >&2; exit 2 ;;
    esac
done

"$PYTHON" - <<'EOF' || { echo "gpu_check.sh: needs Python 3.10 or newer as \$PYTHON" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF

# torch and MONAI pinned to the versions the package is tested with; the package itself from this checkout
if ! "$PYTHON" -c "import torch, monai" 2>/dev/null; then
    # shellcheck disable=SC2086  # PIP_ARGS is a list of arguments
    "$PYTHON" -m pip install ${PIP_ARGS:-} "torch==2.13.0" "monai==1.6.1"
fi
if ! "$PYTHON" -c "import monai_unetpp" 2>/dev/null; then
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install ${PIP_ARGS:-} --no-deps -e .
fi

mkdir -p "$OUT"
if [ "$QUICK" = 1 ]; then
    "$PYTHON" benchmarks/benchmark.py --quick --device cpu --skip-2d --precisions fp32 --json "$OUT/gpu_check_quick.json"
    echo "gpu_check.sh: wrote $OUT/gpu_check_quick.json"
    exit 0
fi

"$PYTHON" - <<'EOF' || exit 1
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check.sh: torch {torch.__version__} sees no CUDA GPU; install a CUDA build of torch 2.13.0, or run --quick")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu_nvidia_smi.csv" || true

# 3D only: the training step and the 256 x 256 x 160 sliding window are what the GPU targets are stated in
timeout "$TIME_LIMIT" "$PYTHON" benchmarks/benchmark.py --device cuda --skip-2d \
    --precisions fp32 bf16 bf16+compile --json "$OUT/gpu.json"
echo "gpu_check.sh: wrote $OUT/gpu.json"
