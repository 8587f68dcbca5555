# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Helpers that the UNet++ MONAI bundles call: atomic checkpoints that carry their score, resuming, a guard of the
checkpoint folder, a progress bar, a per-class metrics report, command-line flags; ``python -m
monai_unetpp.bundle.demo`` trains a bundle on its demo data end to end."""

from __future__ import annotations

from ..utils import to_bool
from .checkpoint import (
    BEST_RECORD_KEY,
    BestCheckpointSaver,
    CheckpointCheck,
    CheckpointError,
    CheckpointGuard,
    TrainingStateCheckpoint,
    atomic_save,
    best_record,
    checked_checkpoint,
    collect_state,
    load_checkpoint,
)
from .distributed import validation_sampler
from .handlers import ClassMetricsReport, ProgressBar

__all__ = [
    "BEST_RECORD_KEY",
    "BestCheckpointSaver",
    "CheckpointCheck",
    "CheckpointError",
    "CheckpointGuard",
    "ClassMetricsReport",
    "ProgressBar",
    "TrainingStateCheckpoint",
    "atomic_save",
    "best_record",
    "checked_checkpoint",
    "collect_state",
    "load_checkpoint",
    "to_bool",
    "validation_sampler",
]
