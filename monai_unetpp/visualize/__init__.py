# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Pictures for training and inference: per-case PNG montages and training-curve PNGs."""

from ._figure import new_figure, save_figure
from .curves import CurvePlotHandler, plot_curves
from .montage import SLICE_MODES, SaveMontageD, SaveMontaged, montage_figure, montage_size, save_montage
from .montage_handler import MontageHandler

__all__ = [
    "SLICE_MODES",
    "CurvePlotHandler",
    "MontageHandler",
    "SaveMontageD",
    "SaveMontaged",
    "montage_figure",
    "montage_size",
    "new_figure",
    "plot_curves",
    "save_figure",
    "save_montage",
]
