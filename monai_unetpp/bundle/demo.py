# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Train a UNet++ bundle on its synthetic demo data, evaluate it and segment the demo's test images: one command.

Usage (from the repository root)::

    python -m monai_unetpp.bundle.demo                                          # 3D bundle
    python -m monai_unetpp.bundle.demo --bundle bundles/unetpp_2d_segmentation  # 2D bundle
    python -m monai_unetpp.bundle.demo --epochs 100 --set learning_rate=0.002   # longer, other settings

It runs the bundle's own configs, exactly as ``python -m monai.bundle run`` would, in three steps:

1. ``configs/train.json``: writes the demo data into ``<bundle>/data`` if that folder is empty, trains, keeps the
   best model in ``<bundle>/models/model.pt``;
2. ``configs/train.json`` + ``configs/evaluate.json``: per-class Dice and HD95 on the validation cases, saved in
   ``<bundle>/eval/metrics_per_class.csv``;
3. ``configs/inference.json``: segments the test images into ``<bundle>/eval/*_seg.nii.gz``.

The settings in :data:`DEMO_SETTINGS` (a narrower network, smaller patches, fewer epochs than the bundle's
defaults) make this finish in a few minutes on a 2-core CPU; on a GPU the same command uses CUDA and mixed
precision and finishes far sooner.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

__all__ = ["DEMO_SETTINGS", "find_bundle", "run_demo", "main"]

DEMO_SETTINGS: dict[int, dict[str, Any]] = {
    3: {
        "features": [8, 16, 32, 64],
        "patch_size": [32, 32, 32],
        "batch_size": 2,
        "num_samples": 4,
        "epochs": 20,
        "learning_rate": 0.003,
        "num_workers": 2,
        "sw_batch_size": 4,
    },
    2: {
        "features": [16, 32, 64, 128],
        "patch_size": [96, 96],
        "batch_size": 8,
        "num_samples": 2,
        "epochs": 30,
        "learning_rate": 0.003,
        "num_workers": 2,
        "sw_batch_size": 8,
    },
}
"""Overrides of the bundle configs, per spatial rank, sized for a 2-core CPU."""

_DEFAULT_BUNDLE = Path("bundles") / "unetpp_3d_segmentation"


def find_bundle(bundle: str | Path | None = None) -> Path:
    """The bundle folder: ``bundle`` if given, else ``bundles/unetpp_3d_segmentation`` in the working directory or
    in the source checkout this package runs from."""
    candidates = (
        [Path(bundle)] if bundle is not None else [_DEFAULT_BUNDLE, Path(__file__).parents[2] / _DEFAULT_BUNDLE]
    )
    for candidate in candidates:
        if (candidate / "configs" / "train.json").is_file():
            return candidate.absolute()
    raise FileNotFoundError(
        f"no bundle (configs/train.json) at {', '.join(str(c) for c in candidates)}; run from the repository root "
        "or pass --bundle PATH to a bundle folder such as bundles/unetpp_3d_segmentation."
    )


def _workflow(bundle: Path, files: Sequence[str], workflow_type: str | None, settings: dict[str, Any]) -> None:
    configs = bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **settings,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def run_demo(bundle: str | Path | None = None, **overrides: Any) -> list[dict[str, str]]:
    """Train, evaluate and run inference with a bundle on its demo data.

    Args:
        bundle: the bundle folder; see :func:`find_bundle`.
        overrides: config overrides applied to all three steps, over :data:`DEMO_SETTINGS`
            (e.g. ``epochs=100``, ``dataset_dir="/data/Task09_Spleen"``).

    Returns:
        The rows of ``eval/metrics_per_class.csv``: one per class with its mean Dice and HD95.
    """
    root = find_bundle(bundle)
    spatial_dims = json.loads((root / "configs" / "train.json").read_text())["spatial_dims"]
    settings = {**DEMO_SETTINGS.get(spatial_dims, {}), **overrides}
    _workflow(root, ["train.json"], "train", settings)
    _workflow(root, ["train.json", "evaluate.json"], None, settings)
    _workflow(root, ["inference.json"], "infer", settings)
    with open(root / "eval" / "metrics_per_class.csv", newline="") as f:
        return list(csv.DictReader(f))


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monai_unetpp.bundle.demo",
        description="Train a UNet++ bundle on its synthetic demo data, evaluate it and segment the test images.",
    )
    parser.add_argument("--bundle", help=f"bundle folder (default: {_DEFAULT_BUNDLE})")
    parser.add_argument("--epochs", type=int, help="number of training epochs (default: the demo's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="any config override, value as JSON, e.g. --set learning_rate=0.002 --set 'patch_size=[64,64,48]'",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects ID=VALUE, got {item!r}.")
        overrides[key] = _parse_value(value)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs

    start = time.perf_counter()
    root = find_bundle(args.bundle)
    rows = run_demo(root, **overrides)
    minutes, seconds = divmod(time.perf_counter() - start, 60)
    dice = [float(row["val_mean_dice"]) for row in rows]
    print(f"\nUNet++ demo finished in {int(minutes)} min {seconds:.0f} s ({root.name})")
    print("validation Dice: " + ", ".join(f"{row['class']} {float(row['val_mean_dice']):.3f}" for row in rows))
    print(f"mean validation Dice: {sum(dice) / len(dice):.3f}")
    print(f"model: {root / 'models' / 'model.pt'}")
    print(f"predictions: {root / 'eval'}/*_seg.nii.gz")
    print(f"pictures: {root / 'eval'}/*_montage.png, {root / 'runs' / 'training_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
