# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""``python -m monai_unetpp.plan DATASET --out plan.yaml``: fingerprint a dataset, plan its UNet++ training, write the
plan as a config fragment of the 3D (or 2D) bundle, its choices beside it, and print them as a table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from .fingerprint import dataset_modality, fingerprint
from .planner import DEFAULT_GPU_MEMORY_GIB, make_plan, summary_path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the planner's command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m monai_unetpp.plan", description=__doc__)
    parser.add_argument("dataset", help="dataset folder (dataset.json, or imagesTr/ + labelsTr/) or datalist JSON")
    parser.add_argument("--out", default="plan.yaml", help="the plan fragment to write (default: plan.yaml)")
    parser.add_argument("--gpu-memory", type=float, default=DEFAULT_GPU_MEMORY_GIB, help="GPU memory in GiB")
    parser.add_argument("--modality", help="CT or MR (default: dataset.json's, else recognised from intensities)")
    parser.add_argument("--spatial-dims", type=int, default=3, choices=(2, 3))
    parser.add_argument("--base-features", type=int, default=32, help="width of level 0 (default 32)")
    parser.add_argument("--max-features", type=int, help="cap of the widths (default 320 in 3D, 512 in 2D)")
    parser.add_argument("--max-levels", type=int, default=5, help="at most this many levels (default 5)")
    parser.add_argument("--work-dir", help="keep DataAnalyzer's datalist and data_stats.yaml here")
    args = parser.parse_args(argv)

    try:
        modality = args.modality or dataset_modality(args.dataset)
        stats = fingerprint(args.dataset, args.work_dir, spatial_dims=args.spatial_dims)
        plan = make_plan(
            stats,
            modality=modality,
            gpu_memory_gib=args.gpu_memory,
            spatial_dims=args.spatial_dims,
            base_features=args.base_features,
            max_features=args.max_features,
            max_levels=args.max_levels,
        )
    except ValueError as error:  # DatasetError included: the message names the file or argument and the fix
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = plan.to_yaml(args.out)
    fingerprint_file = out.with_name(f"{out.stem}_fingerprint.yaml")
    fingerprint_file.write_text(yaml.safe_dump(stats["stats_summary"], sort_keys=False))
    print(plan.table())
    print(
        f"\nwrote {out} (bundle fragment), {summary_path(out).name} (choices) and {fingerprint_file.name} (fingerprint)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
