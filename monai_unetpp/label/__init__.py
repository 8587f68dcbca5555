# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""UNet++ in MONAI Label: infer and train tasks and a ``TaskConfig`` for radiology-style apps.

The tasks need MONAI Label (``pip install "monai-unetpp[label]"``), an optional extra, so they are imported on
first use: ``python -m monai_unetpp.label.make_app`` and ``import monai_unetpp.label`` work without it.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

__all__ = ["UNetPlusPlusInferTask", "UNetPlusPlusSegmentation", "UNetPlusPlusTrainTask"]

_MODULE_OF = {"UNetPlusPlusInferTask": "infer", "UNetPlusPlusSegmentation": "config", "UNetPlusPlusTrainTask": "train"}


def __getattr__(name: str) -> Any:
    if name == "PathSafeSpacingd":
        warnings.warn(
            "monai_unetpp.label.PathSafeSpacingd moved to monai_unetpp.transforms.PathSafeSpacingd; use that name "
            "(in bundle configs: \"_target_\": \"monai_unetpp.transforms.PathSafeSpacingd\"). The old name goes in "
            "the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from ..transforms import PathSafeSpacingd

        return PathSafeSpacingd
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
