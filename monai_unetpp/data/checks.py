# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Dataset checks that run before training, so that bad data fails with a clear message instead of mid-epoch."""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .demo import DEMO_NAME_PREFIX
from .readers import CorruptImageError, check_image_data, read_dicom_series, sitk_affine

__all__ = [
    "DatasetError",
    "ImageInfo",
    "UNLABELLED_SPLITS",
    "as_paths",
    "check_dataset",
    "demo_settings_hint",
    "image_info",
    "read_label_array",
]

UNLABELLED_SPLITS: tuple[str, ...] = ("test", "testing")
"""Split names whose cases may come without a label."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MAX_LISTED = 20


class DatasetError(ValueError):
    """A dataset that cannot be trained on; ``problems`` lists every problem found, one line each."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        shown = self.problems[:_MAX_LISTED]
        lines = [message, *(f"  - {p}" for p in shown)]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ImageInfo:
    """What a MONAI reader will see in a file: spatial shape (at most 3 axes), number of channels, RAS affine."""

    spatial_shape: tuple[int, ...]
    channels: int
    affine: np.ndarray


def image_info(path: str | os.PathLike) -> ImageInfo:
    """Read the shape and affine of an image from its header (nibabel for NIfTI, SimpleITK for the other formats;
    a folder is read as a DICOM series), without loading the voxels of a single file.

    The spatial rank follows MONAI's readers: at most three axes are spatial, the rest are channels, so a NIfTI of
    shape (H, W, 1) has three spatial axes.
    """
    path = Path(path)
    if path.is_dir():
        return _sitk_info(read_dicom_series(path))
    if path.name.lower().endswith(_NIFTI_SUFFIXES):
        image = nib.load(path)
        shape = tuple(int(s) for s in image.shape)
        rank = min(len(shape), 3)
        return ImageInfo(shape[:rank], int(np.prod(shape[rank:], dtype=int)), np.asarray(image.affine, np.float64))
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    reader.ReadImageInformation()
    return _sitk_info(reader)


def _sitk_info(image: sitk.Image | sitk.ImageFileReader) -> ImageInfo:
    size = tuple(int(s) for s in image.GetSize())
    rank = min(len(size), 3)
    # an image (a DICOM series, read whole) and a file's reader name their components differently
    components = (
        image.GetNumberOfComponentsPerPixel() if isinstance(image, sitk.Image) else image.GetNumberOfComponents()
    )
    channels = int(np.prod(size[rank:], dtype=int)) * int(components)
    return ImageInfo(size[:rank], channels, sitk_affine(image))


def read_label_array(path: Path) -> np.ndarray:
    """The voxels of a label file (NIfTI with nibabel, a DICOM series folder, any other SimpleITK format)."""
    if path.is_dir():
        return sitk.GetArrayFromImage(read_dicom_series(path))
    if path.name.lower().endswith(_NIFTI_SUFFIXES):
        return np.asanyarray(nib.load(path).dataobj)
    return sitk.GetArrayFromImage(sitk.ReadImage(os.fspath(path)))


def as_paths(value: Any) -> list[Path]:
    """A case entry (one path or a list of them) as a list of Paths."""
    return [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _check_case(
    item: Mapping[str, Any],
    num_classes: int,
    spatial_dims: int,
    image_key: str,
    label_key: str,
    require_label: bool,
    affine_atol: float,
    in_channels: int | None,
) -> list[str]:
    problems: list[str] = []
    if not isinstance(item, Mapping) or not item.get(image_key):
        return [f"case {item!r} has no {image_key!r} entry: every case needs an image path."]
    name = item[image_key]
    label_value = item.get(label_key)
    if not label_value:
        if require_label:
            problems.append(
                f"{name}: image has no label (no {label_key!r} entry or no file in labelsTr with its name); "
                "add the label file or remove the image from the training data."
            )
        label_value = None

    image_infos: list[tuple[Path, ImageInfo]] = []
    for path in as_paths(name):
        if not path.exists():
            problems.append(f"{path}: image file not found; fix the path in the datalist or add the file.")
            continue
        try:
            info = image_info(path)
        except Exception as error:
            problems.append(f"{path}: unreadable image ({type(error).__name__}: {error}); replace the file.")
            continue
        if (problem := _data_problem(path)) is not None:
            problems.append(problem)
            continue
        if len(info.spatial_shape) != spatial_dims:
            problems.append(
                f"{path}: image has {len(info.spatial_shape)} spatial dimensions {info.spatial_shape}, "
                f"expected {spatial_dims}" + _rank_hint(info, spatial_dims)
            )
            continue
        image_infos.append((path, info))
    for (first, a), (other, b) in pairwise(image_infos):
        if a.spatial_shape != b.spatial_shape or not np.allclose(a.affine, b.affine, atol=affine_atol):
            problems.append(
                f"{other}: channel file does not match {first} in shape or affine; resample the channels "
                "of a case onto one grid."
            )
    if in_channels is not None and image_infos and len(image_infos) == len(as_paths(name)):
        problems.extend(_channel_problems(image_infos, in_channels))

    if label_value is None:
        return problems
    label_paths = as_paths(label_value)
    if len(label_paths) != 1:
        return [
            *problems,
            f"{name}: label must be one file, got {label_value!r}; merge the classes into one label map.",
        ]
    label_path = label_paths[0]
    if not label_path.exists():
        return [*problems, f"{label_path}: label file not found (for image {name}); fix the path or add the file."]
    try:
        label_info = image_info(label_path)
    except Exception as error:
        return [*problems, f"{label_path}: unreadable label ({type(error).__name__}: {error}); replace the file."]
    if (problem := _data_problem(label_path)) is not None:
        return [*problems, problem]
    try:
        values = read_label_array(label_path)
    except Exception as error:
        return [*problems, f"{label_path}: unreadable label ({type(error).__name__}: {error}); replace the file."]
    if len(label_info.spatial_shape) != spatial_dims or label_info.channels != 1:
        return [
            *problems,
            f"{label_path}: label has shape {label_info.spatial_shape} with {label_info.channels} "
            f"channels, expected {spatial_dims} spatial dimensions and one channel of class indices"
            + _rank_hint(label_info, spatial_dims),
        ]
    if image_infos:
        image_path, info = image_infos[0]
        if info.spatial_shape != label_info.spatial_shape:
            problems.append(
                f"{label_path}: label shape {label_info.spatial_shape} differs from image shape "
                f"{info.spatial_shape} ({image_path}); resample the label onto the image grid."
            )
        elif not np.allclose(info.affine, label_info.affine, atol=affine_atol):
            problems.append(
                f"{label_path}: label affine differs from the image's ({image_path}) by more than "
                f"{affine_atol} mm:\n{np.round(label_info.affine, 4)}\nvs\n{np.round(info.affine, 4)}\n"
                "    resample the label onto the image grid, or copy the image's header to the label if "
                "only the header is wrong."
            )
    problems.extend(_label_value_problems(values, label_path, num_classes))
    return problems


def _data_problem(path: Path) -> str | None:
    """The problem :func:`check_image_data` (the reader's own check) finds in a file, or None."""
    try:
        check_image_data(path)
    except (CorruptImageError, FileNotFoundError) as error:
        return str(error)
    return None


def _channel_problems(image_infos: Sequence[tuple[Path, ImageInfo]], in_channels: int) -> list[str]:
    found = sum(info.channels for _, info in image_infos)
    if found == in_channels:
        return []
    if len(image_infos) == 1:
        path, info = image_infos[0]
        where = f"{path}: image has {found} channel(s) (spatial shape {info.spatial_shape})"
    else:
        counts = ", ".join(f"{path.name}: {info.channels}" for path, info in image_infos)
        where = f"{image_infos[0][0]}: case has {found} channels over {len(image_infos)} files ({counts})"
    return [
        f"{where}, expected in_channels={in_channels}; set in_channels to {found} (the network's and the bundle's) "
        f"if every case has {found}, or give this case {in_channels} channel(s)."
    ]


def _rank_hint(info: ImageInfo, spatial_dims: int) -> str:
    if spatial_dims == 2 and len(info.spatial_shape) == 3 and info.spatial_shape[-1] == 1:
        return "; save 2D data as (H, W) without the trailing singleton axis (for example numpy's squeeze)."
    return f"; use {spatial_dims}D data or set spatial_dims to match the data."


def _label_value_problems(values: np.ndarray, path: Path, num_classes: int) -> list[str]:
    if values.size == 0:
        return [f"{path}: label is empty (no voxels); replace the file."]
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        return [
            f"{path}: label holds non-integer values (dtype {values.dtype}); labels must be class indices, "
            "save them as integers without interpolation."
        ]
    low, high = values.min(), values.max()
    if low >= 0 and high <= num_classes - 1:
        return []
    bad = np.unique(values[(values < 0) | (values > num_classes - 1)])
    shown = ", ".join(str(v) for v in bad[:10].tolist()) + (", ..." if len(bad) > 10 else "")
    return [
        f"{path}: label values [{shown}] are outside the declared classes 0..{num_classes - 1}; set num_classes "
        f"to at least {int(high) + 1} or remap the label values."
    ]


def check_dataset(
    items: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    num_classes: int,
    spatial_dims: int = 3,
    image_key: str = "image",
    label_key: str = "label",
    require_label: bool = True,
    affine_atol: float = 1e-3,
    num_workers: int | None = None,
    in_channels: int | None = None,
) -> Any:
    """Check a segmentation dataset before training and raise one ``DatasetError`` listing every problem.

    Each case is checked for: its image and label files exist and can be read, and NIfTI, NRRD and MetaImage files
    hold every voxel their header declares with intact compressed data (:func:`check_image_data`, the check
    ``SimpleITKReader`` runs); the image has ``spatial_dims`` spatial axes (trailing axes are channels, files of a
    multi-channel case share one grid) and, when ``in_channels`` is given, that many channels in all; the label is
    one channel with the image's shape and, within ``affine_atol`` mm, its affine; the label values are integers in
    ``0..num_classes - 1``. Image headers are read without the voxels (compressed files are decompressed once, to
    count and checksum their data); label voxels are read, in ``num_workers`` threads.

    Args:
        items: a list of cases (dicts with an image path or list of paths, and a label path), or a dict of such
            lists by split (as returned by ``prepare_dataset``), in which cases of the ``test``/``testing`` splits
            may come without label.
        num_classes: number of classes including background.
        spatial_dims: 2 or 3. Defaults to 3.
        image_key: the image key of a case. Defaults to "image".
        label_key: the label key of a case. Defaults to "label".
        require_label: whether every case (outside test splits) must have a label. Defaults to True.
        affine_atol: largest difference between image and label affine entries, in mm. Defaults to 1e-3.
        num_workers: threads reading files; defaults to the number of CPUs, at most 8.
        in_channels: the number of image channels the network takes (files of a multi-channel case add up); None
            (default) does not check it.

    Returns:
        ``items``, unchanged, so that a config can check and use a list in one expression.

    Raises:
        DatasetError: when there are no cases, or any problem above, naming each file and the fix.

    Examples::

        check_dataset([{"image": "img0.nii.gz", "label": "seg0.nii.gz"}], num_classes=3)
        check_dataset(prepare_dataset("/data/Task09_Spleen", num_classes=2, check=False), num_classes=2)
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a whole number >= 1 (background included), got {num_classes!r}.")
    if in_channels is not None:
        if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral) or in_channels < 1:
            raise ValueError(f"in_channels must be None (not checked) or a whole number >= 1, got {in_channels!r}.")
        in_channels = int(in_channels)
    if isinstance(items, Mapping):
        jobs = [
            (case, require_label and split not in UNLABELLED_SPLITS) for split, cases in items.items() for case in cases
        ]
        if not any(items.get(split) for split in items if split not in UNLABELLED_SPLITS):
            raise DatasetError(f"no labelled cases: the splits {sorted(items)} hold no training case; add cases.")
    else:
        jobs = [(case, require_label) for case in items]
        if not jobs:
            raise DatasetError("no cases to check: the case list is empty; point the datalist or dataset_dir at data.")
    workers = num_workers or min(8, os.cpu_count() or 1)

    def run(job: tuple[Mapping[str, Any], bool]) -> list[str]:
        case, needs_label = job
        return _check_case(case, num_classes, spatial_dims, image_key, label_key, needs_label, affine_atol, in_channels)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # gzip and file reads release the GIL
        problems = [p for found in pool.map(run, jobs) for p in found]
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in the dataset ({len(jobs)} cases checked):", problems)
    return items


def demo_settings_hint(
    description: Mapping[str, Any],
    dataset_dir: str | os.PathLike,
    spatial_dims: int,
    num_classes: int,
    in_channels: int | None = None,
) -> str | None:
    """A hint for a ``DatasetError`` on a folder of demo data that was generated with other settings, or None.

    ``description`` is the folder's ``dataset.json``. A demo (its ``name`` starts with ``UNetPlusPlusDemo``)
    records its spatial rank (``tensorImageSize``), its classes (``labels``) and its channels (``channel_names``);
    the hint names the recorded settings that differ from the requested ones. None when the folder holds no demo or
    the settings match: then the problem lies elsewhere (a damaged file, say) and "other settings" would mislead.

    Args:
        description: the dataset's JSON description.
        dataset_dir: the dataset folder, named in the hint.
        spatial_dims: the requested spatial rank.
        num_classes: the requested number of classes, background included.
        in_channels: the requested number of image channels; None does not compare it.

    Examples::

        hint = demo_settings_hint(json.loads(Path(root, "dataset.json").read_text()), root, 2, 3)
    """
    if not isinstance(description, Mapping) or not str(description.get("name", "")).startswith(DEMO_NAME_PREFIX):
        return None
    match = re.fullmatch(r"\s*(\d)\s*D\s*", str(description.get("tensorImageSize", "")))
    labels = description.get("labels")
    channels = description.get("channel_names") or description.get("modality")
    recorded = {
        "spatial_dims": int(match.group(1)) if match else None,
        "num_classes": len(labels) if isinstance(labels, Mapping) and labels else None,
        "in_channels": len(channels) if isinstance(channels, Mapping) and channels else None,
    }
    requested = {"spatial_dims": spatial_dims, "num_classes": num_classes, "in_channels": in_channels}
    differ = [key for key, value in requested.items() if value is not None and recorded[key] not in (None, value)]
    if not differ:
        return None
    settings = ", ".join(f"{key}={recorded[key]} (requested {requested[key]})" for key in differ)
    return (
        f"{os.fspath(dataset_dir)} holds demo data generated for other settings: {settings}; remove the folder or "
        "choose another dataset_dir to generate a matching demo."
    )
