# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""What Auto3DSeg's algorithm generation writes into a ``unetpp_<fold>`` folder.

The folder is a copy of the ``unetpp`` template (scripts and ``configs/hyper_parameters.yaml``) into which the
generation copies the configs of the shipped 3D bundle ``unetpp_3d_segmentation`` (one config set for both) and
writes:

- ``datalist.json``: the fold's split of Auto3DSeg's datalist, ``training`` (the other folds), ``validation`` (this
  fold) and ``testing``, with absolute paths;
- ``configs/hyper_parameters.yaml``: the template's fragment with the plan of :func:`monai_unetpp.plan.make_plan`
  for Auto3DSeg's data statistics (``datastats.yaml``), the numbers of channels and classes and the data folder;
- ``configs/metadata.json``: the bundle's, with the task's channels and class names.

``configs/train.json`` + ``configs/hyper_parameters.yaml`` is then a MONAI bundle run that trains the fold, and
``configs/inference.json`` + ``configs/hyper_parameters.yaml`` one that segments the test list.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from ..bundle.demo import find_bundle
from ..plan import make_plan
from ..utils import atomic_file
from .params import bundle_ids

__all__ = [
    "BUNDLE",
    "DATALIST",
    "FRAGMENT",
    "bundle_fragment",
    "class_names",
    "copy_bundle",
    "fold_datalist",
    "read_config_file",
    "update_fragment",
    "write_algorithm",
]

BUNDLE = "unetpp_3d_segmentation"
"""The shipped bundle whose configs an algorithm folder runs."""
FRAGMENT = "hyper_parameters.yaml"
"""The config fragment, layered last on the bundle's configs, that holds what generation decided."""
DATALIST = "datalist.json"
"""The fold's datalist, in the algorithm folder."""

_FRAGMENT_HEADER = (
    "# Written by monai_unetpp.auto3dseg from Auto3DSeg's data statistics: the plan of monai_unetpp.plan.make_plan,\n"
    "# the task's channels and classes, and this fold's datalist. Layer it last on the bundle's configs:\n"
    "#   python -m monai.bundle run --config_file \"['configs/train.json','configs/hyper_parameters.yaml']\"\n"
)


def read_config_file(path: str | os.PathLike, what: str) -> dict:
    """A YAML or JSON mapping from ``path``.

    Raises:
        FileNotFoundError: when ``path`` is missing, naming ``what`` it should be.
        ValueError: when it is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    with open(path) as f:
        content = json.load(f) if path.suffix == ".json" else yaml.safe_load(f)
    if not isinstance(content, dict):
        raise ValueError(f"{what} {path} must hold a mapping, got {type(content).__name__}.")
    return content


def fold_datalist(datalist: str | os.PathLike | Mapping, dataroot: str | os.PathLike, fold: int) -> dict:
    """Auto3DSeg's datalist split for one fold, with absolute paths.

    Args:
        datalist: the datalist (a JSON file or its content) with ``training`` cases that carry a ``fold`` entry, as
            ``AutoRunner`` writes it into its work folder, and optional ``testing`` cases.
        dataroot: the folder that relative paths are relative to (Auto3DSeg's ``dataroot``).
        fold: the fold to validate on.

    Returns:
        ``{"training": [...], "validation": [...], "testing": [...]}``.

    Raises:
        ValueError: when a training case has no ``fold`` entry, or no case is in ``fold``; the message names the
            datalist.

    Examples::

        >>> fold_datalist({"training": [{"image": "a.nii.gz", "label": "la.nii.gz", "fold": 0},
        ...                             {"image": "b.nii.gz", "label": "lb.nii.gz", "fold": 1}]}, "/data", 1)
        {'training': [{'image': '/data/a.nii.gz', ...}], 'validation': [{'image': '/data/b.nii.gz', ...}], ...}
    """
    source = datalist if isinstance(datalist, Mapping) else read_config_file(datalist, "Auto3DSeg datalist")
    name = "the datalist" if isinstance(datalist, Mapping) else f"datalist {datalist}"
    root = Path(dataroot).expanduser().absolute()

    def absolute(case: Mapping) -> dict:
        resolved = dict(case)
        for key in ("image", "label"):
            value = resolved.get(key)
            if isinstance(value, (list, tuple)):
                resolved[key] = [str(root / v) for v in value]
            elif isinstance(value, str) and value:
                resolved[key] = str(root / value)
        return resolved

    training = source.get("training")
    if not isinstance(training, list) or not training:
        raise ValueError(f"{name} has no 'training' cases; Auto3DSeg needs labelled cases there.")
    unassigned = [case.get("image") for case in training if "fold" not in case]
    if unassigned:
        raise ValueError(
            f"{name}: {len(unassigned)} training case(s) have no 'fold' entry (e.g. {unassigned[0]}); use the copy "
            "that AutoRunner writes into its work folder, which assigns the folds."
        )
    validation = [absolute(case) for case in training if int(case["fold"]) == fold]
    if not validation:
        raise ValueError(f"{name} has no case in fold {fold}; its folds are {sorted({c['fold'] for c in training})}.")
    testing = [absolute({"image": c} if isinstance(c, str) else c) for c in source.get("testing", [])]
    return {
        "training": [absolute(case) for case in training if int(case["fold"]) != fold],
        "validation": validation,
        "testing": testing,
    }


def class_names(data_src: Mapping[str, Any], num_classes: int) -> list[str]:
    """The names of the classes, background first: Auto3DSeg's ``class_names`` (foreground classes, or all of them)
    or ``class_<k>``.

    Raises:
        ValueError: for ``class_names`` given as region entries (``{"name": ..., "index": [...]}``, Auto3DSeg's
            overlapping regions), which need sigmoid outputs: this algorithm segments exclusive classes.
    """
    names = data_src.get("class_names")
    if names is None:
        return ["background"] + [f"class_{k}" for k in range(1, num_classes)]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"class_names {names!r} of the Auto3DSeg input: the unetpp algorithm segments exclusive classes (softmax) "
            "and takes class_names as a list of names, one per foreground label (regions given as {'name': ..., "
            "'index': [...]} need sigmoid outputs); drop class_names or list the names."
        )
    if len(names) == num_classes - 1:
        return ["background", *names]
    if len(names) == num_classes:
        return list(names)
    raise ValueError(
        f"class_names {names} of the Auto3DSeg input name {len(names)} classes, but the labels hold {num_classes} "
        f"(background included); list {num_classes - 1} foreground names."
    )


def _gpu_memory_gib() -> float | None:
    """The memory of the smallest visible GPU in GiB; None without one (the planner's default budget)."""
    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())) / 2**30


def bundle_fragment(
    data_stats: Mapping[str, Any],
    modality: str | None = None,
    gpu_memory_gib: float | None = None,
) -> dict[str, Any]:
    """The 3D bundle's config ids for a dataset: the plan of :func:`monai_unetpp.plan.make_plan` for Auto3DSeg's
    data statistics (spacing, channels, classes, widths, strides, kernel sizes, patch, batch, class sampling and
    intensity transform).

    Args:
        data_stats: the content of Auto3DSeg's ``datastats.yaml`` (``DataAnalyzer``).
        modality: Auto3DSeg's ``modality`` (``ct``: CT, anything else: MR); None leaves it to the planner, which
            tells CT by its air values.
        gpu_memory_gib: the memory budget of the plan; None for the smallest visible GPU, or the planner's default
            without one.
    """
    options: dict[str, Any] = {"modality": modality}
    budget = _gpu_memory_gib() if gpu_memory_gib is None else gpu_memory_gib
    if budget is not None:
        options["gpu_memory_gib"] = float(budget)
    return dict(make_plan(dict(data_stats), spatial_dims=3, **options).to_bundle_config())


def copy_bundle(algo_dir: str | os.PathLike, bundle: str | os.PathLike = BUNDLE) -> None:
    """Copy the configs, docs and licence of ``bundle`` into the algorithm folder; its own
    ``configs/hyper_parameters.yaml`` stays."""
    source = find_bundle(bundle)
    target = Path(algo_dir)
    for item in ("configs", "docs"):
        shutil.copytree(source / item, target / item, dirs_exist_ok=True)
    shutil.copy2(source / "LICENSE", target / "LICENSE")


def _metadata(algo_dir: Path, names: Sequence[str], in_channels: int, modality: str | None) -> None:
    path = algo_dir / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    formats = meta["network_data_format"]
    formats["inputs"]["image"]["num_channels"] = in_channels
    formats["inputs"]["image"]["channel_def"] = {str(i): f"image_{i}" for i in range(in_channels)}
    if modality:
        formats["inputs"]["image"]["modality"] = modality.upper()
    formats["outputs"]["pred"]["num_channels"] = len(names)
    formats["outputs"]["pred"]["channel_def"] = {str(i): name for i, name in enumerate(names)}
    meta["label_classes"] = "single channel label map: " + ", ".join(f"{i} {n}" for i, n in enumerate(names))
    meta["pred_classes"] = f"{len(names)} channels: " + ", ".join(names)
    path.write_text(json.dumps(meta, indent=4) + "\n")


def update_fragment(algo_dir: str | os.PathLike, ids: Mapping[str, Any]) -> dict[str, Any]:
    """Set config ids in the algorithm folder's ``configs/hyper_parameters.yaml`` (written atomically).

    Returns:
        The fragment's ids after the update.
    """
    path = Path(algo_dir) / "configs" / FRAGMENT
    fragment = {**read_config_file(path, "the algorithm's config fragment"), **ids}
    with atomic_file(path) as tmp:
        tmp.write_text(_FRAGMENT_HEADER + yaml.safe_dump(fragment, sort_keys=False, default_flow_style=None))
    return fragment


def write_algorithm(algo_dir: str | os.PathLike, record: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """Write a generated algorithm folder's bundle configs, fragment and datalist.

    Args:
        algo_dir: the folder, a copy of the template.
        record: what generation decided (the result of :meth:`UnetppAlgo.fill_template_config`): the fragment's
            ids under :data:`FRAGMENT`, the fold's datalist under :data:`DATALIST`, and ``class_names``/``modality``.
        overrides: further Auto3DSeg parameters or config ids, written into the fragment over the record's.

    Returns:
        The record, with the overrides in its fragment.
    """
    algo_dir = Path(algo_dir)
    copy_bundle(algo_dir)
    fragment = update_fragment(algo_dir, {**record[FRAGMENT], **bundle_ids(overrides)})
    (algo_dir / DATALIST).write_text(json.dumps(record[DATALIST], indent=2) + "\n")
    _metadata(algo_dir, record["class_names"], int(fragment.get("in_channels", 1)), record.get("modality"))
    return {**record, FRAGMENT: fragment}
