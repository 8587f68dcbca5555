# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Matplotlib figures drawn off-screen and written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure", "is_main_process"]

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
    path = Path(filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised ``torch.distributed`` job."""
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)
