# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""A deterministic synthetic segmentation dataset in the Medical Segmentation Decathlon layout.

Each case is a "body" (large ellipsoid, background class) holding one structure per foreground class:

- class 1 ``organ``: a large rotated ellipsoid;
- class 2 ``lesion``: a small bright sphere inside the organ;
- classes 3 and up ``structure_<k>``: boxes and spheres placed away from the organ.

Intensities are MR-like (roughly 0 to 1000, float32): every class has its own mean, varied per case, with partial
volume blur at the edges, a smooth multiplicative bias field and Gaussian noise, so that a network has to learn shape
and context rather than one global threshold. Volumes are written as NIfTI with a non-trivial affine (LPS-like
negative in-plane axes, anisotropic spacing, an origin offset) and labels as uint8 with the same affine.

Default sizes (chosen so that a small UNet++ learns the organ within a few minutes on two CPU cores):

- 3D: 16 training + 4 test volumes of 64 x 64 x 48 voxels at 1.5 x 1.5 x 2.0 mm (96 mm cube);
- 2D: 40 training + 8 test images of 128 x 128 pixels at 0.8 x 0.8 mm, stored as 2D NIfTI of shape (H, W), which
  ``LoadImaged`` + ``EnsureChannelFirstd`` turn into (1, H, W).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ..utils import atomic_folder

__all__ = ["DEMO_DEFAULTS", "DEMO_NAME_PREFIX", "make_demo_dataset", "demo_label_names"]

DEMO_DEFAULTS: dict[int, dict] = {
    3: {"shape": (64, 64, 48), "spacing": (1.5, 1.5, 2.0), "origin": (60.0, 72.0, -40.0), "cases": 16, "test": 4},
    2: {"shape": (128, 128), "spacing": (0.8, 0.8), "origin": (40.0, 60.0), "cases": 40, "test": 8},
}
"""Per spatial rank: shape (voxels), spacing (mm), origin (mm), number of training and of test cases."""

DEMO_NAME_PREFIX = "UNetPlusPlusDemo"
"""The ``name`` of a demo's dataset.json starts with this."""

_MAX_CLASSES = 10
_BACKGROUND, _BODY, _ORGAN, _LESION = 40.0, 200.0, 450.0, 800.0
_STRUCTURE_MEANS = (320.0, 620.0, 950.0, 540.0, 720.0, 280.0, 880.0)  # classes 3.. ; distinct from body and organ
_NOISE_STD = 35.0


def demo_label_names(num_classes: int) -> list[str]:
    """Names of the demo's classes: ``background``, ``organ``, ``lesion``, then ``structure_3``, ..."""
    names = ["background", "organ", "lesion"]
    return (names + [f"structure_{k}" for k in range(3, num_classes)])[:num_classes]


def make_demo_dataset(
    dataset_dir: str | os.PathLike,
    spatial_dims: int = 3,
    num_cases: int | None = None,
    num_test: int | None = None,
    shape: Sequence[int] | None = None,
    num_classes: int = 3,
    seed: int = 0,
) -> Path:
    """Write a synthetic multi-class segmentation dataset in the Medical Segmentation Decathlon layout.

    The folder gets ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/`` (test labels, for evaluation) and a
    ``dataset.json`` with ``labels``, ``modality``, ``channel_names``, ``training``, ``test``, ``numTraining`` and
    ``numTest``. Files are named ``demo_000.nii.gz``, ... (test cases continue the numbering). The output is a pure
    function of the arguments: the same seed gives byte-identical files.

    The data is written to a temporary sibling folder and moved into place in one rename, so that several processes
    (for example the ranks of a multi-GPU run) may call this at once: the first to finish wins, the others keep its
    files. ``dataset_dir`` must be missing or empty; existing files are never overwritten.

    Args:
        dataset_dir: the folder to create; it must not exist or be empty.
        spatial_dims: 3 for volumes, 2 for images. Defaults to 3.
        num_cases: number of training cases. Defaults to 16 (3D) or 40 (2D).
        num_test: number of test cases. Defaults to 4 (3D) or 8 (2D).
        shape: spatial shape in voxels. Defaults to (64, 64, 48) (3D) or (128, 128) (2D); every side at least 16.
        num_classes: number of classes including background, 2 to 10. Defaults to 3 (background, organ, lesion).
        seed: random seed. Defaults to 0.

    Returns:
        The dataset folder as an absolute Path.

    Raises:
        ValueError: for invalid arguments, or when ``dataset_dir`` exists and is not an empty folder.

    Examples::

        root = make_demo_dataset("/tmp/demo3d")  # 3D, 16 + 4 cases, 3 classes
        make_demo_dataset("/tmp/demo2d", spatial_dims=2, num_cases=8, num_test=2)
    """
    if spatial_dims not in DEMO_DEFAULTS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    defaults = DEMO_DEFAULTS[spatial_dims]
    num_cases = defaults["cases"] if num_cases is None else int(num_cases)
    num_test = defaults["test"] if num_test is None else int(num_test)
    shape = tuple(int(s) for s in (defaults["shape"] if shape is None else shape))
    if num_cases < 1 or num_test < 0:
        raise ValueError(f"need num_cases >= 1 and num_test >= 0, got num_cases={num_cases}, num_test={num_test}.")
    if len(shape) != spatial_dims or min(shape) < 16:
        raise ValueError(f"shape must have {spatial_dims} sides of at least 16 voxels, got {shape}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= _MAX_CLASSES:
        raise ValueError(
            f"num_classes must be a whole number from 2 to {_MAX_CLASSES} (background included), got {num_classes!r}."
        )

    target = Path(dataset_dir).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(
            f"{target} already exists and is not an empty folder; the demo dataset is only written to a new or empty "
            "folder. Choose another dataset_dir or remove the folder yourself."
        )
    return atomic_folder(
        target, lambda staging: _write_dataset(staging, spatial_dims, num_cases, num_test, shape, num_classes, seed)
    )


def _write_dataset(
    root: Path, spatial_dims: int, num_cases: int, num_test: int, shape: tuple[int, ...], num_classes: int, seed: int
) -> None:
    spacing = DEMO_DEFAULTS[spatial_dims]["spacing"]
    origin = DEMO_DEFAULTS[spatial_dims]["origin"]
    affine = _demo_affine(spacing, origin)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir()
    training, test = [], []
    # one child generator per case: a case's content does not depend on how many cases are written
    case_seeds = np.random.SeedSequence(seed).spawn(num_cases + num_test)
    for index, case_seed in enumerate(case_seeds):
        image, label = _synthesize_case(np.random.default_rng(case_seed), shape, spacing, num_classes)
        name = f"demo_{index:03d}.nii.gz"
        is_train = index < num_cases
        image_dir, label_dir = ("imagesTr", "labelsTr") if is_train else ("imagesTs", "labelsTs")
        _save_nifti(image, affine, root / image_dir / name)
        _save_nifti(label, affine, root / label_dir / name)
        if is_train:
            training.append({"image": f"./{image_dir}/{name}", "label": f"./{label_dir}/{name}"})
        else:
            test.append(f"./{image_dir}/{name}")
    names = demo_label_names(num_classes)
    description = {
        "name": f"{DEMO_NAME_PREFIX}{spatial_dims}D",
        "description": "Synthetic multi-class segmentation demo generated by monai_unetpp.data.make_demo_dataset",
        "reference": "monai_unetpp",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": f"{spatial_dims}D",
        "modality": {"0": "MR"},
        "channel_names": {"0": "MR"},
        "labels": {str(k): name for k, name in enumerate(names)},
        "spacing": list(spacing),
        "shape": list(shape),
        "seed": seed,
        "file_ending": ".nii.gz",
        "numTraining": num_cases,
        "numTest": num_test,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=4) + "\n")


def _demo_affine(spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """Scanner-like affine: in-plane axes pointing left and posterior (as DICOM-converted CT), an origin offset."""
    affine = np.eye(4)
    signs = (-1.0, -1.0, 1.0)
    for axis, (step, offset) in enumerate(zip(spacing, origin, strict=True)):
        affine[axis, axis] = signs[axis] * step
        affine[axis, 3] = offset
    return affine


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)  # nibabel's gzip writer sets mtime 0: files are reproducible byte for byte


def _synthesize_case(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: Sequence[float], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    dims = len(shape)
    axes = [(np.arange(n) - (n - 1) / 2) * step for n, step in zip(shape, spacing, strict=True)]
    coords = np.meshgrid(*axes, indexing="ij", sparse=True)  # mm, centred on the volume
    half_extent = np.array([n * step / 2 for n, step in zip(shape, spacing, strict=True)])
    scale = float(half_extent.min())  # sizes are fractions of the smallest half side so that shapes stay inside

    label = np.zeros(shape, np.uint8)
    means = rng.uniform(0.85, 1.15, size=num_classes + 1)  # per-case contrast of each class (index -1: body)
    image = np.full(shape, _BACKGROUND, np.float32)
    body = _ellipsoid(coords, rng.uniform(-0.05, 0.05, dims) * scale, rng.uniform(0.85, 0.95, dims) * half_extent, rng)
    image[body] = _BODY * means[-1]

    organ_centre = rng.uniform(-0.15, 0.15, dims) * scale
    organ_radii = rng.uniform(0.35, 0.5, dims) * scale
    # structures 3.. go on a ring around the organ at random angles, so that they rarely touch it
    for k in range(3, num_classes):
        direction = rng.normal(size=dims)
        direction /= np.linalg.norm(direction)
        centre = organ_centre + direction * rng.uniform(0.62, 0.72) * scale
        size = rng.uniform(0.12, 0.2, dims) * scale
        mask = _box(coords, centre, size) if k % 2 else _ellipsoid(coords, centre, size, rng)
        mask &= body
        label[mask] = k
        image[mask] = _STRUCTURE_MEANS[(k - 3) % len(_STRUCTURE_MEANS)] * means[k]

    organ = _ellipsoid(coords, organ_centre, organ_radii, rng)
    label[organ] = 1
    image[organ] = _ORGAN * means[1]
    if num_classes > 2:
        offset = rng.uniform(-0.35, 0.35, dims) * organ_radii
        lesion = _ellipsoid(coords, organ_centre + offset, np.full(dims, rng.uniform(0.14, 0.2) * scale), None)
        lesion &= organ
        label[lesion] = 2
        image[lesion] = _LESION * means[2]

    image = _smooth(image, passes=2)  # partial-volume edges
    image *= _bias_field(coords, half_extent, rng)
    image += rng.normal(0.0, _NOISE_STD, size=shape).astype(np.float32)
    image *= np.float32(rng.uniform(0.8, 1.2))  # scanner gain
    return image.astype(np.float32), label


def _rotation(dims: int, rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        return np.eye(dims)
    q, r = np.linalg.qr(rng.normal(size=(dims, dims)))
    return q * np.sign(np.diag(r))


def _ellipsoid(coords, centre, radii, rng: np.random.Generator | None) -> np.ndarray:
    """Boolean mask of a randomly rotated ellipsoid (an axis-aligned sphere when ``rng`` is None)."""
    rotation = _rotation(len(coords), rng)
    shifted = [c - x for c, x in zip(coords, centre, strict=True)]
    total = 0.0
    for row, radius in zip(rotation, radii, strict=True):
        projected = sum(weight * axis for weight, axis in zip(row, shifted, strict=True))
        total = total + (projected / radius) ** 2
    return np.asarray(total <= 1.0)


def _box(coords, centre, half_sizes) -> np.ndarray:
    mask = True
    for axis, x, half in zip(coords, centre, half_sizes, strict=True):
        mask = mask & (np.abs(axis - x) <= half)
    return np.asarray(mask)


def _smooth(image: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication."""
    for _ in range(passes):
        for axis in range(image.ndim):
            padded = np.pad(image, [(1, 1) if a == axis else (0, 0) for a in range(image.ndim)], mode="edge")
            lo = np.take(padded, range(0, image.shape[axis]), axis=axis)
            mid = np.take(padded, range(1, image.shape[axis] + 1), axis=axis)
            hi = np.take(padded, range(2, image.shape[axis] + 2), axis=axis)
            image = (0.25 * lo + 0.5 * mid + 0.25 * hi).astype(np.float32)
    return image


def _bias_field(coords, half_extent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field between about 0.75 and 1.25: a linear ramp plus one slow cosine."""
    direction = rng.normal(size=len(coords))
    direction /= np.linalg.norm(direction)
    ramp = sum(d * c / h for d, c, h in zip(direction, coords, half_extent, strict=True))
    wave = np.cos(
        sum(rng.uniform(0.5, 1.5) * c / h for c, h in zip(coords, half_extent, strict=True)) + rng.uniform(0, 2 * np.pi)
    )
    field = 1.0 + rng.uniform(0.08, 0.15) * ramp + rng.uniform(0.03, 0.08) * wave
    return np.broadcast_to(field, tuple(len(np.ravel(c)) for c in coords)).astype(np.float32)
