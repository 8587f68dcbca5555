# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""UNet++ in MONAI Label: infer and train tasks and a ``TaskConfig`` for radiology-style apps.

The tasks need MONAI Label (``pip install "monai-unetpp[label]"``); they are imported on first use so that
:py:class:`PathSafeSpacingd` stays usable with MONAI alone. ``python -m monai_unetpp.label.make_app DIR`` writes
a ready-to-start app.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["PathSafeSpacingd", "UNetPlusPlusInferTask", "UNetPlusPlusSegmentation", "UNetPlusPlusTrainTask"]

_MODULE_OF = {
    "PathSafeSpacingd": "transforms",
    "UNetPlusPlusInferTask": "infer",
    "UNetPlusPlusSegmentation": "config",
    "UNetPlusPlusTrainTask": "train",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
