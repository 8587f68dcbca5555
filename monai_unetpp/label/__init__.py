# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""UNet++ in MONAI Label: infer and train tasks and a ``TaskConfig`` for radiology-style apps.

The tasks need MONAI Label (``pip install "monai-unetpp[label]"``), an optional extra, so they are imported on
first use: ``python -m monai_unetpp.label.make_app`` and ``import monai_unetpp.label`` work without it, and so do
the checks of :mod:`monai_unetpp.label.guards` (a request's image, the training pairs), which bundles use too.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

__all__ = [
    "CheckedCacheDataset",
    "ImageRequestError",
    "LoadDatastoreImaged",
    "TrainingDataError",
    "UNetPlusPlusInferTask",
    "UNetPlusPlusSegmentation",
    "UNetPlusPlusTrainTask",
    "check_training_pairs",
]

_MODULE_OF = {
    "UNetPlusPlusInferTask": "infer",
    "UNetPlusPlusSegmentation": "config",
    "UNetPlusPlusTrainTask": "train",
    # guards need no MONAI Label: a bundle's configs use them as they run anywhere
    "CheckedCacheDataset": "guards",
    "ImageRequestError": "guards",
    "LoadDatastoreImaged": "guards",
    "TrainingDataError": "guards",
    "check_training_pairs": "guards",
}


def __getattr__(name: str) -> Any:
    if name == "PathSafeSpacingd":
        warnings.warn(
            "monai_unetpp.label.PathSafeSpacingd moved to monai_unetpp.transforms.PathSafeSpacingd; use that name "
            '(in bundle configs: "_target_": "monai_unetpp.transforms.PathSafeSpacingd"). The old name goes in '
            "the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from ..transforms import PathSafeSpacingd

        return PathSafeSpacingd
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
