# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The dataset fingerprint: MONAI Auto3DSeg's ``DataAnalyzer`` run on the cases the bundles would train on."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..data.checks import DatasetError
from ..data.datalist import prepare_dataset

__all__ = ["dataset_modality", "fingerprint", "training_cases"]


def _split_dataset_argument(dataset: str | os.PathLike) -> tuple[Path, Path | None]:
    """A folder (Decathlon layout, or imagesTr/ + labelsTr/) or a datalist JSON: ``(dataset_dir, datalist)``."""
    path = Path(dataset).expanduser().absolute()
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DatasetError(
                f"dataset {path} is a file but not a datalist JSON; give a dataset folder (dataset.json or "
                "imagesTr/ + labelsTr/) or a MONAI datalist .json."
            )
        return path.parent, path
    if not path.is_dir():
        raise DatasetError(f"dataset {path} does not exist; give a dataset folder or a datalist JSON.")
    return path, None


def training_cases(dataset: str | os.PathLike, spatial_dims: int = 3) -> list[dict]:
    """The labelled cases of a dataset folder or datalist, read as the bundles read them
    (:func:`monai_unetpp.data.prepare_dataset`): training and validation lists together, absolute paths."""
    root, datalist = _split_dataset_argument(dataset)
    # the classes are what the fingerprint measures: the bundles' class-count check is not run here
    lists = prepare_dataset(root, spatial_dims=spatial_dims, datalist=datalist, val_fraction=0.0, check=False)
    cases = [c for c in lists["training"] + lists["validation"] if c.get("label")]
    if not cases:
        raise DatasetError(f"dataset {dataset} has no labelled cases to fingerprint; add training images with labels.")
    return cases


def dataset_modality(dataset: str | os.PathLike) -> str | None:
    """The modality that the dataset's ``dataset.json`` declares for its first channel (``modality`` or nnU-Net
    v2's ``channel_names``), or None where it declares none."""
    root, datalist = _split_dataset_argument(dataset)
    for candidate in (datalist, root / "dataset.json"):
        if candidate is None or not candidate.is_file():
            continue
        try:
            description = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        for key in ("modality", "channel_names"):
            value = description.get(key) if isinstance(description, dict) else None
            if isinstance(value, dict) and value:
                return str(value.get("0", next(iter(value.values()))))
    return None


def fingerprint(
    dataset: str | os.PathLike,
    work_dir: str | os.PathLike | None = None,
    *,
    spatial_dims: int = 3,
    device: str = "cpu",
    worker: int = 0,
) -> dict[str, Any]:
    """The fingerprint of a dataset: ``monai.apps.auto3dseg.DataAnalyzer``'s statistics (shapes, spacings,
    intensities, foreground intensities, label statistics) of its labelled cases, in Auto3DSeg's format.

    Args:
        dataset: a dataset folder (Decathlon layout with ``dataset.json``, or ``imagesTr/`` + ``labelsTr/``) or a
            MONAI datalist JSON, as the bundles take them.
        work_dir: where the datalist given to DataAnalyzer and its ``data_stats.yaml`` are written; None: a
            temporary folder, removed afterwards.
        spatial_dims: of the images, 3 or 2.
        device: where DataAnalyzer computes (``"cpu"`` or ``"cuda"``).
        worker: DataAnalyzer's data-loading processes.

    Returns:
        DataAnalyzer's result, ``{"stats_summary": ..., "stats_by_cases": [...]}``.

    Examples::

        >>> stats = fingerprint("/data/Task09_Spleen", work_dir="plan_work")  # doctest: +SKIP
        >>> stats["stats_summary"]["image_stats"]["spacing"]["median"]  # doctest: +SKIP
    """
    from monai.apps.auto3dseg import DataAnalyzer

    cases = training_cases(dataset, spatial_dims)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(work_dir if work_dir is not None else scratch)
        folder.mkdir(parents=True, exist_ok=True)
        datalist = folder / "fingerprint_datalist.json"
        datalist.write_text(json.dumps({"training": [{"image": c["image"], "label": c["label"]} for c in cases]}))
        analyzer = DataAnalyzer(
            str(datalist),
            dataroot="",
            output_path=str(folder / "data_stats.yaml"),
            device=device,
            worker=worker,
        )
        return analyzer.get_all_case_stats()
