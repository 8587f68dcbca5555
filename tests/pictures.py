"""Checks that a PNG written by the package is a real picture of the expected size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_png(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.std() > 10, "the PNG is (almost) one flat colour"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, "the PNG has (almost) no colours"


def assert_real_picture(path: str | Path, size: tuple[int, int]) -> None:
    """``path`` is a PNG of ``size`` (width, height) pixels with real content."""
    pixels = read_png(path)
    assert pixels.shape == (size[1], size[0], 3), f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels, not {size}"
    assert_not_blank(pixels)
