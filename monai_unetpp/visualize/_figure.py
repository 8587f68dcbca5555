# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Matplotlib figures drawn off-screen and written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..utils import atomic_file

__all__ = ["new_figure", "save_figure"]

DPI = 100


def new_figure(width_px: int, height_px: int) -> Figure:
    """A figure of exactly ``width_px`` x ``height_px`` pixels on the Agg canvas.

    ``Figure`` with its own ``FigureCanvasAgg`` never touches pyplot's global state or the session's backend, so it
    is safe in servers, threads and headless training jobs.
    """
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, filename: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG so that readers never see a half-written file (temporary file, then ``os.replace``)."""
    with atomic_file(filename) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(filename)
