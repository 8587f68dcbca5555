#!/usr/bin/env python
# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Our planner beside nnU-Net v2's experiment planning (fingerprint + plan, 3d_fullres) on the same datasets.

    .venv/bin/pip install --no-deps nnunetv2    # a benchmark, not a dependency; see docs/planning.md for its deps
    .venv/bin/python benchmarks/nnunet_plans.py --work /tmp/nnunet_compare [--gpu-memory 8]

Datasets: the synthetic demo set (``monai_unetpp.data.make_demo_dataset``, 16 + 4 volumes of 64 x 64 x 48 at
1.5 x 1.5 x 2 mm), the MNI152 brain-tissue set (``monai_unetpp.data.brain.prepare_mni152_dataset``, 2 mm) and the
synthetic anisotropic CT-like set (``monai_unetpp.plan.synthetic``, 0.8 x 0.8 x 5 mm, 8 cases). Each is written
once under ``--work``, linked into an nnU-Net raw folder (``DatasetNNN_Name``), fingerprinted and planned by nnU-Net
(``extract_fingerprints`` + ``plan_experiments`` with ``ExperimentPlanner``, its default, for the same GPU memory
target) and by ``monai_unetpp.plan``. nnU-Net lists axes in its arrays' order (z, y, x for NIfTI read by
SimpleITK); the table lists both planners in our order (the RAS x, y, z of the bundles' ``Orientationd``).
Prints a Markdown table (the one in docs/planning.md) and writes it with both plans as JSON to ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DATASETS = {
    501: "Demo",
    502: "BrainMNI152",
    503: "AnisotropicCT",
}


def _write_datasets(work: Path) -> dict[int, Path]:
    from monai_unetpp.data import make_demo_dataset
    from monai_unetpp.data.brain import prepare_mni152_dataset
    from monai_unetpp.plan.synthetic import ANISOTROPIC_CT, make_synthetic_dataset

    folders = {501: work / "demo", 502: work / "brain", 503: work / "anisotropic_ct"}
    if not (folders[501] / "dataset.json").is_file():
        make_demo_dataset(folders[501])
    prepare_mni152_dataset(folders[502])
    if not (folders[503] / "dataset.json").is_file():
        make_synthetic_dataset(folders[503], num_cases=8, seed=0, **ANISOTROPIC_CT)
    return folders


def _nnunet_raw(dataset_id: int, folder: Path, raw: Path, modality: str) -> None:
    """Link the labelled cases into nnU-Net v2's raw layout (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz)."""
    from monai_unetpp.plan import training_cases

    target = raw / f"Dataset{dataset_id:03d}_{DATASETS[dataset_id]}"
    (target / "imagesTr").mkdir(parents=True, exist_ok=True)
    (target / "labelsTr").mkdir(exist_ok=True)
    cases = training_cases(folder)
    label_values: set[int] = set()
    import nibabel as nib
    import numpy as np

    for i, case in enumerate(cases):
        image = Path(case["image"][0] if isinstance(case["image"], list) else case["image"])
        name = f"case_{i:03d}"
        for source, link in (
            (image, target / "imagesTr" / f"{name}_0000.nii.gz"),
            (Path(case["label"]), target / "labelsTr" / f"{name}.nii.gz"),
        ):
            if not link.exists():
                link.symlink_to(source)
        label_values |= {int(v) for v in np.unique(np.asarray(nib.load(case["label"]).dataobj))}
    labels = {"background": 0, **{f"class_{v}": v for v in sorted(label_values) if v}}
    description = {
        "channel_names": {"0": modality},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (target / "dataset.json").write_text(json.dumps(description, indent=2))


def _nnunet_plan(dataset_id: int, gpu_memory: float) -> dict:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunetv2.paths import nnUNet_preprocessed

    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True, clean=True, verbose=False)
    plan_experiments([dataset_id], gpu_memory_target_in_gb=gpu_memory)
    folder = Path(nnUNet_preprocessed) / f"Dataset{dataset_id:03d}_{DATASETS[dataset_id]}"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    # nnU-Net's axes are (z, y, x): reverse them into ours
    strides = [list(reversed(s)) for s in arch["strides"][1:]]  # its first stage does not pool
    return {
        "spacing": list(reversed(config["spacing"])),
        "patch_size": list(reversed(config["patch_size"])),
        "batch_size": config["batch_size"],
        "pool_per_axis": [sum(1 for s in strides if s[d] == 2) for d in range(3)],
        "strides": strides,
        "first_kernel": list(reversed(arch["kernel_sizes"][0])),
        "features": arch["features_per_stage"],
        "normalization": [
            n + (" (non-zero)" if mask else "")
            for n, mask in zip(config["normalization_schemes"], config["use_mask_for_norm"], strict=True)
        ],
        "median_shape": list(reversed(config["median_image_size_in_voxels"])),
    }


def _our_plan(folder: Path, gpu_memory: float) -> dict:
    from monai_unetpp.plan import dataset_modality, fingerprint, make_plan

    plan = make_plan(fingerprint(folder), modality=dataset_modality(folder), gpu_memory_gib=gpu_memory)
    return {
        "spacing": plan.spacing,
        "patch_size": plan.patch_size,
        "batch_size": plan.batch_size,
        "pool_per_axis": [sum(1 for s in plan.strides if s[d] == 2) for d in range(3)],
        "strides": plan.strides,
        "first_kernel": plan.kernel_sizes[0],
        "features": plan.features,
        "normalization": plan.intensity["scheme"] + (" (non-zero)" if plan.intensity.get("nonzero") else ""),
        "median_shape": plan.median_shape,
        "predicted_memory_gib": plan.predicted_memory_gib,
    }


def _axes(values) -> str:
    return " x ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="nnunet_compare", help="where datasets and nnU-Net's folders go")
    parser.add_argument("--gpu-memory", type=float, default=8.0, help="GPU memory target of both planners, GiB")
    args = parser.parse_args(argv)
    work = Path(args.work).absolute()
    for name in ("raw", "preprocessed", "results"):
        (work / f"nnUNet_{name}").mkdir(parents=True, exist_ok=True)
        os.environ[f"nnUNet_{name}"] = str(work / f"nnUNet_{name}")
    try:
        import nnunetv2  # noqa: F401  (after the environment: nnunetv2.paths reads it on import)
    except ImportError:
        print(
            "nnunetv2 is not installed: .venv/bin/pip install --no-deps nnunetv2 (see the docstring)", file=sys.stderr
        )
        return 2
    folders = _write_datasets(work)
    modalities = {501: "MR", 502: "MR", 503: "CT"}
    rows = {}
    for dataset_id, folder in folders.items():
        _nnunet_raw(dataset_id, folder, work / "nnUNet_raw", modalities[dataset_id])
        rows[DATASETS[dataset_id]] = {
            "nnU-Net": _nnunet_plan(dataset_id, args.gpu_memory),
            "monai_unetpp": _our_plan(folder, args.gpu_memory),
        }
    (work / "plans.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| dataset | planner | spacing (mm) | median shape | patch | batch | pooling per axis | first kernel | "
        "widths | normalisation |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, plans in rows.items():
        for planner, p in plans.items():
            norm = p["normalization"] if isinstance(p["normalization"], str) else ", ".join(p["normalization"])
            lines.append(
                f"| {dataset} | {planner} | {_axes(p['spacing'])} | {_axes(p['median_shape'])} | "
                f"{_axes(p['patch_size'])} | {p['batch_size']} | {_axes(p['pool_per_axis'])} | "
                f"{_axes(p['first_kernel'])} | {'-'.join(map(str, p['features']))} | {norm} |"
            )
    table = "\n".join(lines)
    (work / "plans.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
