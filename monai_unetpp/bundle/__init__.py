# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Helpers that the UNet++ MONAI bundles call: atomic checkpoints, resuming, a progress bar, a per-class metrics
report, command-line flags; ``python -m monai_unetpp.bundle.demo`` trains a bundle on its demo data end to end."""

from __future__ import annotations

from ..utils import to_bool
from .checkpoint import BestCheckpointSaver, TrainingStateCheckpoint, atomic_save, collect_state
from .handlers import ClassMetricsReport, ProgressBar

__all__ = [
    "BestCheckpointSaver",
    "ClassMetricsReport",
    "ProgressBar",
    "TrainingStateCheckpoint",
    "atomic_save",
    "collect_state",
    "to_bool",
]
