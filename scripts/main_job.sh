#!/usr/bin/env bash
# The main job: train the 3D UNet++ bundle on its synthetic demo data, evaluate it and segment the demo's test
# volumes, then print the validation Dice. A few minutes on a 2-core CPU; on a GPU it runs with CUDA and mixed
# precision. It runs in demo/unetpp_3d_segmentation, a copy of the bundle with the demo's settings in its configs
# (data, models, eval, runs inside it), which serves as it is.
# Usage: bash scripts/main_job.sh [--bundle unetpp_2d_segmentation] [--epochs N] [--set ID=VALUE ...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh" | tail -n 1)"
cd "$root"
exec "$venv/bin/python" -m monai_unetpp.bundle.demo "$@"
