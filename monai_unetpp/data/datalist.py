# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""One entry point from a dataset folder to MONAI data lists: Decathlon layout, plain image/label folders, or a
MONAI datalist JSON, with a synthetic demo written into a missing folder only when asked for (``demo=True``)."""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import to_bool
from .checks import DatasetError, check_dataset, demo_settings_hint
from .demo import make_demo_dataset
from .readers import SIMPLEITK_SUFFIXES

__all__ = ["prepare_dataset", "pair_images_and_labels", "SPLITS"]

SPLITS: tuple[str, str, str] = ("training", "validation", "test")
"""The keys of ``prepare_dataset``'s result."""
PATH_FIELDS: tuple[str, ...] = ("image", "label", "probabilities")
"""The case entries that hold file paths (or lists of them), made absolute against the dataset folder."""

logger = logging.getLogger("monai_unetpp")

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net: case_0000.nii.gz is channel 0


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    spatial_dims: int = 3,
    num_classes: int = 3,
    datalist: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    demo: bool = False,
    check: bool = True,
    fold: int | None = None,
    require: str | Sequence[str] = (),
    in_channels: int | None = None,
) -> dict[str, list[dict]]:
    """Find the data of a segmentation task and return its training, validation and test lists.

    ``dataset_dir`` is read, in this order of preference, as:

    1. a MONAI datalist JSON given by ``datalist``, with ``training`` and optional ``validation`` and
       ``testing``/``test`` lists of ``{"image": ..., "label": ...}`` (paths relative to ``dataset_dir`` or absolute,
       as ``monai.data.load_decathlon_datalist(..., base_dir=dataset_dir)``);
    2. a Medical Segmentation Decathlon folder with ``dataset.json`` (test images are paired with ``labelsTs/``
       files of the same name when that folder exists);
    3. ``imagesTr/`` + ``labelsTr/`` (and optional ``imagesTs/``, ``labelsTs/``) paired by file name; nnU-Net
       channel files ``case_0000.nii.gz``, ``case_0001.nii.gz`` pair with ``labelsTr/case.nii.gz`` as one
       multi-channel case. Hidden files (such as the ``._*`` files of macOS archives) are ignored.

    A missing or empty ``dataset_dir`` is an error (a mistyped path must not train on anything else), unless
    ``demo`` is True: then a synthetic demo set (:func:`make_demo_dataset`) is written there first, with a warning on
    the ``monai_unetpp`` logger (the bundles' ``--demo_data true``). Existing files are never modified. When the
    data has no validation list, a ``val_fraction`` share of the training cases (at least one) is set aside, chosen
    by ``seed`` (or the cases whose ``fold`` entry equals ``fold``).

    Results are cached per arguments and folder state, so bundle configs may call this once per section; each
    call returns a fresh copy.

    Args:
        dataset_dir: the dataset folder.
        spatial_dims: 2 or 3. Defaults to 3.
        num_classes: number of classes including background; checked against the data. Defaults to 3.
        datalist: a datalist JSON file (absolute, or relative to the working directory or to ``dataset_dir``).
        val_fraction: share of training cases held out for validation when the data has no validation list,
            in [0, 1). Defaults to 0.2.
        seed: seed of the validation split and of the demo data. Defaults to 0.
        demo: write the demo set when ``dataset_dir`` is missing or empty. Defaults to False: such a folder is a
            DatasetError.
        check: run :func:`check_dataset` on the result (and compare ``num_classes`` with the labels that the
            dataset's JSON declares). Defaults to True.
        fold: with datalists whose cases carry a ``fold`` entry (MONAI Auto3DSeg style), validate on that fold.
        require: splits that must hold at least one case, e.g. ``"test"`` for inference on the test list.
        in_channels: the number of image channels the network takes, checked against every case (with ``check``);
            None (default) does not check it.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``: lists of dicts with absolute ``image`` paths
        (a list of paths for multi-channel cases) and, where known, absolute ``label`` and ``probabilities`` (per-class
        probability maps, a list of paths) paths; other entries of the datalist are kept.

    Raises:
        DatasetError: when the folder is missing or empty (without ``demo``) or holds no dataset, the JSON is
            invalid, images and labels do not pair, a ``require``d split is empty, or the checks fail; the message
            names the files and the fix.

    Examples::

        # in a bundle config
        "datalists": "$monai_unetpp.data.prepare_dataset(@dataset_dir, spatial_dims=3, num_classes=3)",
        "train_files": "@datalists#training",
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if isinstance(val_fraction, (bool, str)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}.")
    root = Path(dataset_dir).expanduser().absolute()
    # a datalist found on its own may use absolute paths only: then dataset_dir need not exist
    required = [require] if isinstance(require, str) else list(require)
    unknown = [split for split in required if split not in SPLITS]
    if unknown:
        raise ValueError(f"require names splits {unknown}; the splits are {list(SPLITS)}.")
    if _find_datalist(datalist, root) is None and _is_missing_or_empty(root):
        if not to_bool(demo, "demo"):
            state = "is an empty folder" if root.exists() else "does not exist"
            raise DatasetError(
                f"dataset_dir {root} {state}: there is no dataset to read. Check the path (bundles: --dataset_dir), "
                "put a dataset there (dataset.json, or imagesTr/ + labelsTr/) or give a MONAI datalist (--datalist "
                "FILE); to use synthetic demo data instead, pass demo=True (bundles: --demo_data true, as python -m "
                "monai_unetpp.bundle.demo does), which writes it into that folder."
            )
        try:
            make_demo_dataset(root, spatial_dims=spatial_dims, num_classes=num_classes, seed=seed)
        except ValueError:
            if not (root / "dataset.json").is_file():
                raise
            # another process (e.g. a rank of a multi-GPU run) wrote the demo between our look and our write
        logger.warning(
            "dataset_dir %s was missing or empty: generated a synthetic %dD demo dataset there (%d classes). "
            "Point dataset_dir at real data to train on it.",
            root,
            spatial_dims,
            num_classes,
        )
    datalist_path = _resolve_datalist(datalist, root)
    result = _prepare_cached(
        root,
        spatial_dims,
        num_classes,
        datalist_path,
        val_fraction,
        seed,
        check,
        fold,
        in_channels,
        _state(root, datalist_path),
    )
    for split in required:
        if not result[split]:
            source = f"datalist {datalist_path}" if datalist_path is not None else f"dataset_dir {root}"
            raise DatasetError(f"{source} has no {split} cases, and this run needs them. {_ADD_CASES[split]}")
    return copy.deepcopy(result)


_ADD_CASES = {
    "training": "Add labelled cases (imagesTr/ + labelsTr/, or the 'training' list of the JSON).",
    "validation": "Add a 'validation' list to the JSON, or hold out training cases (val_fraction > 0).",
    "test": "Add images to segment (imagesTs/, or a 'test'/'testing' list in the JSON), or name them (bundles: "
    "--dataset#data \"[{'image': '/path/to/case.nii.gz'}]\").",
}


def _is_missing_or_empty(root: Path) -> bool:
    return not root.exists() or (root.is_dir() and not any(root.iterdir()))


def _find_datalist(datalist: str | os.PathLike | None, root: Path) -> Path | None:
    """The datalist file, as given or relative to ``root``; None when not given or not there."""
    if datalist is None or f"{datalist}" == "":
        return None
    path = Path(datalist).expanduser()
    candidates = (path,) if path.is_absolute() else (path, root / path)
    return next((c.absolute() for c in candidates if c.is_file()), None)


def _resolve_datalist(datalist: str | os.PathLike | None, root: Path) -> Path | None:
    found = _find_datalist(datalist, root)
    if found is None and datalist is not None and f"{datalist}" != "":
        raise DatasetError(f"datalist file {datalist} not found (looked in the working directory and in {root}).")
    return found


def _state(root: Path, datalist: Path | None) -> tuple:
    """Modification times of what the result depends on: a change refreshes the cache."""
    paths = [root, root / "dataset.json", *(root / sub for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"))]
    if datalist is not None:
        paths.append(datalist)
    return tuple(p.stat().st_mtime_ns if p.exists() else None for p in paths)


@functools.lru_cache(maxsize=32)
def _prepare_cached(
    root: Path,
    spatial_dims: int,
    num_classes: int,
    datalist: Path | None,
    val_fraction: float,
    seed: int,
    check: bool,
    fold: int | None,
    in_channels: int | None,
    state: tuple,
) -> dict[str, list[dict]]:
    if datalist is not None:
        description = _load_json(datalist)
        source = f"datalist {datalist}"
        lists = _lists_from_json(description, datalist, (root, datalist.parent), test_labels=None)
    elif (root / "dataset.json").is_file():
        description = _load_json(root / "dataset.json")
        source = f"Decathlon dataset {root}"
        lists = _lists_from_json(description, root / "dataset.json", (root,), test_labels=root / "labelsTs")
    elif (root / "imagesTr").is_dir():
        description = {}
        source = f"image/label folders in {root}"
        lists = {
            "training": pair_images_and_labels(root / "imagesTr", root / "labelsTr", require_labels=True),
            "validation": [],
            "test": pair_images_and_labels(root / "imagesTs", root / "labelsTs", require_labels=False)
            if (root / "imagesTs").is_dir()
            else [],
        }
    else:
        found = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else []
        raise DatasetError(
            f"dataset_dir {root} is not a dataset: expected dataset.json, or imagesTr/ and labelsTr/ folders "
            f"(Medical Segmentation Decathlon layout), but found {found or 'a file'}; point dataset_dir at the "
            "dataset folder or pass datalist= with a MONAI datalist JSON. Existing files are never modified."
        )
    if not lists["training"]:
        raise DatasetError(f"{source} has no training cases; add cases to its training list.")
    if lists["validation"] and fold is not None:
        raise DatasetError(f"fold={fold} was requested but {source} already has a validation list; drop one of them.")
    if not lists["validation"]:
        lists["training"], lists["validation"] = _split(lists["training"], val_fraction, seed, fold, source)
    _warn_overlap(lists)
    if check:
        try:
            _check_declared_labels(description, num_classes, source)
            check_dataset(lists, num_classes=num_classes, spatial_dims=spatial_dims, in_channels=in_channels)
        except DatasetError as error:
            hint = demo_settings_hint(description, root, spatial_dims, num_classes, in_channels)
            if hint is not None:
                raise DatasetError(f"{hint}\n{error.args[0]}", error.problems) from error
            raise
    logger.info(
        "%s: %d training, %d validation, %d test cases.",
        source,
        len(lists["training"]),
        len(lists["validation"]),
        len(lists["test"]),
    )
    return lists


def _load_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the JSON ({error}); fix or regenerate the file.") from error
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a JSON object with a 'training' list, got {type(content).__name__}.")
    return content


def _lists_from_json(
    description: dict, json_path: Path, bases: Sequence[Path], test_labels: Path | None
) -> dict[str, list]:
    if not isinstance(description.get("training"), list):
        raise DatasetError(f"{json_path}: no 'training' list of {{'image': ..., 'label': ...}} cases; add one.")
    lists = {}
    for split, keys in {"training": ("training",), "validation": ("validation",), "test": ("testing", "test")}.items():
        key = next((k for k in keys if k in description), None)
        cases = description.get(key, []) if key else []
        if not isinstance(cases, list):
            raise DatasetError(f"{json_path}: '{key}' must be a list of cases, got {type(cases).__name__}.")
        lists[split] = [_absolute_case(case, bases, json_path, key) for case in cases]
    if test_labels is not None and test_labels.is_dir():
        for case in lists["test"]:
            label = test_labels / Path(_first(case["image"])).name
            if "label" not in case and label.is_file():
                case["label"] = str(label)
    return lists


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


def _absolute_case(case: Any, bases: Sequence[Path], json_path: Path, key: str) -> dict:
    if isinstance(case, (str, os.PathLike)):  # Decathlon test lists hold bare image paths
        case = {"image": case}
    if not isinstance(case, Mapping) or "image" not in case:
        raise DatasetError(f"{json_path}: a '{key}' case must be a path or a dict with an 'image' entry, got {case!r}.")
    resolved = dict(case)
    for field in PATH_FIELDS:
        value = resolved.get(field)
        if isinstance(value, (list, tuple)):
            resolved[field] = [_absolute(v, bases) for v in value]
        elif value is not None:
            resolved[field] = _absolute(value, bases)
    return resolved


def _absolute(path: str | os.PathLike, bases: Sequence[Path]) -> str:
    """The path under the first base where it exists (under the first base when it exists nowhere, so that the
    checks name the expected place); absolute paths stay as they are."""
    candidates = [os.path.normpath(base / Path(path).expanduser()) for base in bases]
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


def _case_name(path: Path) -> str | None:
    """The file name without its image suffix; None for hidden files and unsupported files."""
    name = path.name
    if name.startswith("."):
        return None
    if path.is_dir():
        return name  # a DICOM series folder
    for suffix in sorted(SIMPLEITK_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith("." + suffix):
            return name[: -len(suffix) - 1]
    return None


def pair_images_and_labels(image_dir: Path, label_dir: Path, require_labels: bool = True) -> list[dict]:
    """Pair the images of a folder with the labels of another by file name.

    ``image_dir/case.nii.gz`` pairs with ``label_dir/case.nii.gz`` (any supported suffix on either side; folders
    are DICOM series). nnU-Net channel files ``case_0000.nii.gz``, ``case_0001.nii.gz`` with a label
    ``case.nii.gz`` form one case whose image is the list of channel files.

    Args:
        image_dir: the image folder.
        label_dir: the label folder.
        require_labels: raise when an image has no label. Labels without an image always raise.

    Returns:
        Cases sorted by name, with absolute ``image`` (a path or a list of channel paths) and ``label`` paths.

    Raises:
        DatasetError: naming the unpaired files, or when ``image_dir`` holds no images.
    """
    images = {name: p for p in sorted(Path(image_dir).iterdir()) if (name := _case_name(p))}
    labels = (
        {name: p for p in sorted(Path(label_dir).iterdir()) if (name := _case_name(p))}
        if Path(label_dir).is_dir()
        else {}
    )
    if not images:
        raise DatasetError(
            f"{image_dir} holds no images (supported: {', '.join(SIMPLEITK_SUFFIXES)} or DICOM folders)."
        )
    cases: dict[str, dict] = {}
    for name, path in images.items():
        match = _CHANNEL_SUFFIX.match(name)
        case = match["case"] if match and name not in labels and match["case"] in labels else name
        entry = cases.setdefault(case, {"image": []})
        entry["image"].append(str(path.absolute()))
    problems = []
    for case, entry in cases.items():
        entry["image"] = entry["image"][0] if len(entry["image"]) == 1 else entry["image"]
        if case in labels:
            entry["label"] = str(labels[case].absolute())
        elif require_labels:
            problems.append(f"{_first(entry['image'])}: image has no label {Path(label_dir) / case}.*; add the label.")
    problems += [
        f"{path}: label has no image in {image_dir}; add the image or remove the label."
        for name, path in labels.items()
        if name not in cases
    ]
    if problems:
        raise DatasetError(f"images in {image_dir} and labels in {label_dir} do not pair:", problems)
    return [cases[name] for name in sorted(cases)]


def _split(
    cases: list[dict], val_fraction: float, seed: int, fold: int | None, source: str
) -> tuple[list[dict], list[dict]]:
    if fold is not None:
        if not all("fold" in case for case in cases):
            raise DatasetError(f"fold={fold} was requested but the cases of {source} have no 'fold' entry.")
        validation = [case for case in cases if case["fold"] == fold]
        if not validation:
            folds = sorted({case["fold"] for case in cases})
            raise DatasetError(f"{source} has no case in fold {fold}; its folds are {folds}.")
        return [case for case in cases if case["fold"] != fold], validation
    if val_fraction == 0.0:
        return cases, []
    if len(cases) < 2:
        raise DatasetError(
            f"{source} has {len(cases)} training case: too few to hold one out for validation; add cases, give a "
            "validation list in the datalist, or pass val_fraction=0."
        )
    num_val = min(len(cases) - 1, max(1, math.ceil(val_fraction * len(cases))))
    held_out = set(np.random.default_rng(seed).permutation(len(cases))[:num_val].tolist())
    training = [case for index, case in enumerate(cases) if index not in held_out]
    validation = [case for index, case in enumerate(cases) if index in held_out]
    return training, validation


def _warn_overlap(lists: Mapping[str, Sequence[dict]]) -> None:
    seen = {str(_first(case["image"])) for case in lists["training"]}
    for split in ("validation", "test"):
        shared = seen.intersection(str(_first(case["image"])) for case in lists[split])
        if shared:
            logger.warning("%d %s case(s) are also training cases, e.g. %s.", len(shared), split, sorted(shared)[0])


def _check_declared_labels(description: Mapping[str, Any], num_classes: int, source: str) -> None:
    declared = description.get("labels")
    if isinstance(declared, Mapping) and declared and len(declared) != num_classes:
        raise DatasetError(
            f"{source} declares {len(declared)} labels {dict(declared)} but num_classes is {num_classes}; "
            f"set num_classes to {len(declared)}."
        )
