# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Synthetic datasets of chosen geometry and modality, in the Decathlon layout, to exercise the planner's rules:
an anisotropic CT-like set (Hounsfield units, thick slices, a small structure) and an isotropic MR-like one."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["ANISOTROPIC_CT", "ISOTROPIC_MR", "make_synthetic_dataset"]

#: 0.8 x 0.8 x 5 mm CT: air, a soft-tissue body, an organ and a small lesion (about 6 mm) in it
ANISOTROPIC_CT = {"modality": "CT", "spacing": (0.8, 0.8, 5.0), "shape": (160, 160, 24)}
#: 1 mm isotropic MR: zero background, a head-sized body, a structure
ISOTROPIC_MR = {"modality": "MR", "spacing": (1.0, 1.0, 1.0), "shape": (64, 64, 64)}


def make_synthetic_dataset(
    dataset_dir: str | os.PathLike,
    modality: str,
    spacing: Sequence[float],
    shape: Sequence[int],
    num_cases: int = 4,
    seed: int = 0,
) -> Path:
    """Write ``num_cases`` labelled 3D cases (``imagesTr/``, ``labelsTr/``, ``dataset.json``) of the given geometry.

    Labels: 0 background, 1 organ (an ellipsoid of about a third of the body), 2 lesion (a sphere of 3 mm radius
    inside it). CT intensities are HU: air -1000, body 40, organ 60, lesion 120, noise of 15; MR intensities are 0
    outside the body, then 300, 500, 800 with noise of 30 and a smooth bias. Case sizes vary by up to 10 %.

    Examples::

        >>> make_synthetic_dataset("/tmp/ct", **ANISOTROPIC_CT)  # doctest: +SKIP
    """
    modality = modality.upper()
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', got {modality!r}.")
    root = Path(dataset_dir).expanduser().absolute()
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty; write the synthetic dataset into a new or empty folder.")
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing, float)
    training = []
    for case in range(num_cases):
        case_shape = [max(8, int(round(s * rng.uniform(0.9, 1.1)))) for s in shape]
        image, label = _case(case_shape, spacing, modality, rng)
        affine = np.diag([*spacing, 1.0])
        name = f"case_{case:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    description = {
        "name": f"synthetic_{modality}_{'x'.join(f'{s:g}' for s in spacing)}",
        "modality": {"0": modality},
        "channel_names": {"0": modality},
        "labels": {"0": "background", "1": "organ", "2": "lesion"},
        "numTraining": num_cases,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return root


def _case(shape: list[int], spacing: np.ndarray, modality: str, rng: np.random.Generator) -> tuple:
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    extent = np.array(shape) * spacing / 2
    body = (x / (0.9 * extent[0])) ** 2 + (y / (0.8 * extent[1])) ** 2 + (z / (1.2 * extent[2])) ** 2 <= 1
    centre = rng.uniform(-0.15, 0.15, 3) * extent
    radii = np.array([0.35, 0.3, 0.6]) * extent
    organ = (
        ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    ) <= 1
    organ &= body
    lesion_at = centre + rng.uniform(-0.3, 0.3, 3) * radii
    lesion_radius = max(3.0, float(spacing.max()) * 0.7)  # at least one voxel across the thick slices
    lesion = ((x - lesion_at[0]) ** 2 + (y - lesion_at[1]) ** 2 + (z - lesion_at[2]) ** 2) <= lesion_radius**2
    lesion &= organ
    label = np.zeros(shape, np.uint8)
    label[organ] = 1
    label[lesion] = 2
    if modality == "CT":
        values = np.array([-1000.0, 40.0, 60.0, 120.0])
        image = np.where(body, values[1], values[0])
        image[organ] = values[2]
        image[lesion] = values[3]
        image += rng.normal(0, 15.0, shape)
        return np.clip(image, -1024, 3071).astype(np.int16), label
    image = np.where(body, 300.0, 0.0)
    image[organ] = 500.0
    image[lesion] = 800.0
    bias = 1 + 0.1 * x / extent[0]
    image = np.where(body, image * bias + rng.normal(0, 30.0, shape), 0.0)
    return image.astype(np.float32), label
