# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The defaults of the MONAI Label model, shared by the tasks, the ``TaskConfig`` and ``make_app``."""

from __future__ import annotations

from ..networks.unetplusplus import DEFAULT_FEATURES

__all__ = ["DEFAULT_FEATURES", "MODEL_NAME", "ROI_SIZE", "SW_BATCH_SIZE", "TARGET_SPACING"]

#: The model name of ``make_app`` (``--conf models <name>``, the model files ``<name>.pt``).
MODEL_NAME = "segmentation_unetpp"
#: Patch and sliding-window size, voxels.
ROI_SIZE = (96, 96, 96)
#: Voxel size the network works at, mm.
TARGET_SPACING = (1.0, 1.0, 1.0)
#: Sliding windows per forward pass of the infer task (see docs/monai_label.md, "Inference time on CPU").
SW_BATCH_SIZE = 1
