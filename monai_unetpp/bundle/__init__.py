# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Helpers that the UNet++ MONAI bundles call: atomic checkpoints, resuming and a progress bar."""

from __future__ import annotations

from .checkpoint import BestCheckpointSaver, TrainingStateCheckpoint, atomic_save, collect_state
from .handlers import ClassMetricsReport, ProgressBar
from .utils import to_bool

__all__ = [
    "BestCheckpointSaver",
    "ClassMetricsReport",
    "ProgressBar",
    "TrainingStateCheckpoint",
    "atomic_save",
    "collect_state",
    "to_bool",
]
