#!/usr/bin/env python
# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The planner's memory model against ``torch.cuda.max_memory_allocated``: one training step per configuration.

    python benchmarks/gpu_memory_check.py            # on a CUDA GPU: the configurations below, fp32 and amp
    python benchmarks/gpu_memory_check.py --quick    # anywhere: tiny configurations on the CPU (fp32 only)

Each row prints the measured peak (``monai_unetpp.plan.measure_training_memory``: on CUDA the allocator's
``max_memory_allocated`` of the second step, float16 autocast for amp; on the CPU the CPU allocator's running total
recorded by ``torch.profiler``), the prediction (``predict_training_memory``) and their ratio, with the device named.
The CUDA configurations are the sizes the planner chooses for real data (widths 32 to 320, patches of 0.5 to 2
million voxels, isotropic and anisotropic); ``--quick`` uses the sizes of tests/test_memory_model.py. The GPU run
takes about a minute and needs about 40 GiB of GPU memory for the largest row; ``--max-gib`` skips larger
predictions.
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from monai_unetpp.plan import measure_training_memory, predict_training_memory

WIDTHS = [32, 64, 128, 256, 320]
ANISOTROPIC = {"strides": [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]], "kernel_size": [[3, 3, 1], [3, 3, 1], 3, 3, 3]}
GPU_CONFIGS = {
    "96^3 b2": {"patch_size": [96, 96, 96], "batch_size": 2, "features": WIDTHS, "out_channels": 3},
    "128^3 b2": {"patch_size": [128, 128, 128], "batch_size": 2, "features": WIDTHS, "out_channels": 3},
    "112x112x80 b2 (MONAI widths)": {
        "patch_size": [112, 112, 80],
        "batch_size": 2,
        "features": [32, 32, 64, 128, 256],
        "out_channels": 4,
    },
    "96^3 b4": {"patch_size": [96, 96, 96], "batch_size": 4, "features": WIDTHS, "out_channels": 3},
    "128^3 b2 checkpointing": {
        "patch_size": [128, 128, 128],
        "batch_size": 2,
        "features": WIDTHS,
        "out_channels": 3,
        "checkpointing": True,
    },
    "256x256x24 b2 anisotropic": {"patch_size": [256, 256, 24], "batch_size": 2, "features": WIDTHS, "out_channels": 3}
    | ANISOTROPIC,
    "192x192x32 b4 anisotropic": {
        "patch_size": [192, 192, 32],
        "batch_size": 4,
        "features": WIDTHS,
        "out_channels": 2,
    }
    | ANISOTROPIC,
    "2D 512^2 b12": {
        "patch_size": [512, 512],
        "batch_size": 12,
        "features": [32, 64, 128, 256, 512],
        "out_channels": 3,
    },
}
QUICK_CONFIGS = {
    "24^3 b2": {"patch_size": [24, 24, 24], "batch_size": 2, "features": [8, 16, 32, 64], "out_channels": 3},
    "24^3 b2 checkpointing": {
        "patch_size": [24, 24, 24],
        "batch_size": 2,
        "features": [8, 16, 32, 64],
        "out_channels": 3,
        "checkpointing": True,
    },
    "32x32x8 b2 anisotropic": {
        "patch_size": [32, 32, 8],
        "batch_size": 2,
        "features": [4, 8, 16, 32],
        "out_channels": 3,
        "strides": [[2, 2, 1], [2, 2, 1], [2, 2, 2]],
        "kernel_size": [[3, 3, 1], [3, 3, 1], 3, 3],
    },
    "2D 64^2 b4": {"patch_size": [64, 64], "batch_size": 4, "features": [8, 16, 32, 64], "out_channels": 3},
}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny configurations on the CPU")
    parser.add_argument("--max-gib", type=float, default=120.0, help="skip configurations predicted above this")
    args = parser.parse_args(argv)
    if not args.quick and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --quick for the CPU check", file=sys.stderr)
        return 2
    device = "cpu" if args.quick else "cuda"
    name = _cpu_name() if args.quick else torch.cuda.get_device_name(0)
    if args.quick:
        torch.set_num_threads(1)
    configs = QUICK_CONFIGS if args.quick else GPU_CONFIGS
    precisions = ("fp32",) if args.quick else ("fp32", "amp")
    print(f"device: {name} ({device}), torch {torch.__version__}")
    print(f"{'configuration':<34} {'precision':<9} {'measured MiB':>12} {'predicted MiB':>13} {'ratio':>6}")
    worst = 0.0
    for label, config in configs.items():
        for precision in precisions:
            predicted = predict_training_memory(**config, precision=precision).total
            if predicted > args.max_gib * 2**30:
                print(f"{label:<34} {precision:<9} {'skipped':>12} {predicted / 2**20:>13.0f}")
                continue
            measured = measure_training_memory(**config, precision=precision, device=device)
            ratio = predicted / measured
            worst = max(worst, abs(ratio - 1))
            print(f"{label:<34} {precision:<9} {measured / 2**20:>12.1f} {predicted / 2**20:>13.1f} {ratio:>6.3f}")
            if device == "cuda":
                torch.cuda.empty_cache()
    print(f"largest error: {worst:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
