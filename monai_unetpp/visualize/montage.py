# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""PNG montages of a case: image, label and prediction overlays on axial, coronal and sagittal slices."""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform

from ._figure import new_figure, save_figure

__all__ = ["SLICE_MODES", "montage_figure", "montage_size", "save_montage", "SaveMontaged", "SaveMontageD"]

SLICE_MODES = ("centroid", "middle")
#: (name, axis the slice is taken along) for volumes in RAS-like order: axis 0 left-right, 1 posterior-anterior,
#: 2 inferior-superior, as MONAI's ``Orientationd(axcodes="RAS")`` leaves them.
VIEWS_3D = (("axial", 2), ("coronal", 1), ("sagittal", 0))
TITLE_PX = 18
PANEL_MARGIN_PX = 3
LEGEND_ROW_PX = 22
LEGEND_PAD_PX = 8
LEGEND_ENTRY_PX = 150

ArrayLike = np.ndarray | torch.Tensor


def montage_size(spatial_dims: int, has_label: bool, num_classes: int, panel_size: int = 256) -> tuple[int, int]:
    """Width and height in pixels of the PNG that :py:func:`save_montage` writes.

    One row per view (3 for 3D, 1 for 2D), one column per panel (image, label if given, prediction) of
    ``panel_size`` pixels each, and a legend strip of ``ceil((num_classes - 1) / entries_per_row)`` rows of 22 pixels
    plus 8 pixels of padding, where ``entries_per_row = max(1, width // 150)``; no strip for background only.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    width = (3 if has_label else 2) * panel_size
    legend_rows = math.ceil(max(num_classes - 1, 0) / max(1, width // LEGEND_ENTRY_PX))
    legend_px = legend_rows * LEGEND_ROW_PX + LEGEND_PAD_PX if legend_rows else 0
    rows = len(VIEWS_3D) if spatial_dims == 3 else 1
    return width, rows * panel_size + legend_px


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy() if not isinstance(x, MetaTensor) else x.as_tensor().detach().cpu().numpy()
    return np.asarray(x)


def _as_index(seg: ArrayLike, name: str, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Channel-first one-hot / probabilities (argmax over channels) or one channel of class indices -> indices."""
    arr = _as_numpy(seg)
    if arr.shape[1:] != spatial_shape:
        raise ValueError(
            f"{name} must be channel-first with the image's spatial shape {spatial_shape}, got shape {arr.shape}; "
            "draw the montage before inverting the prediction to the original image space (before Invertd)."
        )
    index = arr.argmax(0) if arr.shape[0] > 1 else np.rint(arr[0])
    if index.min() < 0:
        raise ValueError(f"{name} holds negative class indices (min {index.min()}); expected 0 = background, 1, 2 ...")
    return index.astype(np.int64)


def _class_names(class_names: Sequence[str] | Mapping[int, str] | None, num_classes: int) -> list[str]:
    names = [f"class {k}" for k in range(num_classes)]
    if isinstance(class_names, Mapping):
        for k, v in class_names.items():
            if 0 <= int(k) < num_classes:
                names[int(k)] = str(v)
    elif class_names is not None:
        names[: len(class_names)] = [str(v) for v in class_names][:num_classes]
    return names


def _colour_table(num_classes: int, alpha: float) -> np.ndarray:
    """RGBA per class index; background (0) transparent. tab10 up to 10 classes, tab20 up to 20, then hsv."""
    cmap = colormaps["tab10" if num_classes <= 11 else "tab20" if num_classes <= 21 else "hsv"]
    table = np.zeros((num_classes, 4))
    for k in range(1, num_classes):
        table[k, :3] = cmap(((k - 1) % cmap.N) if cmap.N < 256 else (k - 1) / (num_classes - 1))[:3]
        table[k, 3] = alpha
    return table


def _slice_indices(index: np.ndarray | None, shape: tuple[int, ...], slice_mode: str) -> list[int]:
    """Per axis: the slice nearest the foreground centroid that holds foreground (``"centroid"``), else the middle.

    The centroid alone can fall between two structures; moving to the nearest slice with foreground keeps every
    view showing some of it.
    """
    if slice_mode != "centroid" or index is None or not (index > 0).any():
        return [s // 2 for s in shape]
    foreground = index > 0
    chosen = []
    for axis, coords in enumerate(np.nonzero(foreground)):
        occupied = np.flatnonzero(foreground.any(axis=tuple(a for a in range(foreground.ndim) if a != axis)))
        chosen.append(int(occupied[np.argmin(np.abs(occupied - coords.mean()))]))
    return chosen


def _plane(volume: np.ndarray, axis: int | None, index: int | None) -> np.ndarray:
    """The slice ``index`` along ``axis`` of a 3D volume; a 2D plane (``axis`` None) as is."""
    return volume if axis is None else np.take(volume, index, axis=axis)


def montage_figure(
    image: ArrayLike,
    pred: ArrayLike,
    label: ArrayLike | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    spacing: Sequence[float] | None = None,
    slice_mode: str = "centroid",
    image_channel: int = 0,
    panel_size: int = 256,
    alpha: float = 0.45,
) -> Figure:
    """Draw a case as a matplotlib ``Figure`` of :py:func:`montage_size` pixels; see :py:func:`save_montage`."""
    if slice_mode not in SLICE_MODES:
        raise ValueError(f"slice_mode must be one of {SLICE_MODES}, got {slice_mode!r}.")
    img = _as_numpy(image)
    if img.ndim not in (3, 4):
        raise ValueError(
            f"image must be channel-first (C, H, W) or (C, H, W, D), got shape {img.shape}; add a channel with "
            "EnsureChannelFirstd."
        )
    if not 0 <= image_channel < img.shape[0]:
        raise ValueError(f"image_channel {image_channel} is out of range for an image with {img.shape[0]} channels.")
    spatial_dims = img.ndim - 1
    vol = img[image_channel].astype(np.float32)
    pred_arr = _as_numpy(pred)
    pred_idx = _as_index(pred_arr, "pred", vol.shape)
    label_idx = None if label is None else _as_index(label, "label", vol.shape)
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * spatial_dims
    if len(spacing) != spatial_dims:
        raise ValueError(f"spacing needs {spatial_dims} values for a {spatial_dims}D image, got {spacing}.")

    num_classes = max(
        len(class_names) if class_names is not None else 0,
        int(pred_idx.max()) + 1,
        int(label_idx.max()) + 1 if label_idx is not None else 0,
        pred_arr.shape[0] if pred_arr.shape[0] > 1 else 0,
        2,
    )
    names = _class_names(class_names, num_classes)
    colours = _colour_table(num_classes, alpha)
    lo, hi = np.percentile(vol, (0.5, 99.5))
    hi = hi if hi > lo else lo + 1.0

    columns: list[tuple[str, np.ndarray | None]] = [("image", None)]
    if label_idx is not None:
        columns.append(("label", label_idx))
    columns.append(("prediction", pred_idx))
    width, height = montage_size(spatial_dims, label_idx is not None, num_classes, panel_size)
    fig = new_figure(width, height)
    legend_px = height - panel_size * (len(VIEWS_3D) if spatial_dims == 3 else 1)

    centre = _slice_indices(label_idx if label_idx is not None else pred_idx, vol.shape, slice_mode)
    views = [(name, axis, centre[axis]) for name, axis in VIEWS_3D] if spatial_dims == 3 else [("", None, None)]
    for row, (view, axis, k) in enumerate(views):
        if axis is None:  # 2D: MONAI's readers put the picture's x on axis 0; show it across, top row first
            plane_axes, origin = (0, 1), "upper"
        else:
            plane_axes, origin = tuple(a for a in range(3) if a != axis), "lower"
        aspect = spacing[plane_axes[1]] / spacing[plane_axes[0]]
        for col, (title, seg) in enumerate(columns):
            rect = (
                (col * panel_size + PANEL_MARGIN_PX) / width,
                (legend_px + (len(views) - 1 - row) * panel_size + PANEL_MARGIN_PX) / height,
                (panel_size - 2 * PANEL_MARGIN_PX) / width,
                (panel_size - TITLE_PX - 2 * PANEL_MARGIN_PX) / height,
            )
            ax = fig.add_axes(rect)
            ax.set_axis_off()
            ax.set_title(f"{title} {view} {k}" if view else title, fontsize=9, pad=2)
            ax.imshow(
                _plane(vol, axis, k).T,
                cmap="gray",
                vmin=lo,
                vmax=hi,
                origin=origin,
                aspect=aspect,
                interpolation="nearest",
            )
            if seg is not None:
                ax.imshow(
                    colours[_plane(seg, axis, k)].transpose(1, 0, 2),
                    origin=origin,
                    aspect=aspect,
                    interpolation="nearest",
                )
    if legend_px:
        ax = fig.add_axes((0.0, 0.0, 1.0, legend_px / height))
        ax.set_axis_off()
        handles = [Patch(facecolor=colours[k, :3], label=f"{k}: {names[k]}") for k in range(1, num_classes)]
        ax.legend(handles=handles, loc="center", ncol=max(1, width // LEGEND_ENTRY_PX), frameon=False, fontsize=9)
    return fig


def save_montage(
    filename: str | os.PathLike,
    image: ArrayLike,
    pred: ArrayLike,
    label: ArrayLike | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    spacing: Sequence[float] | None = None,
    slice_mode: str = "centroid",
    image_channel: int = 0,
    panel_size: int = 256,
    alpha: float = 0.45,
) -> Path:
    """Write a PNG montage of one case: the image, the label overlay (if given) and the prediction overlay.

    3D cases get three rows, axial, coronal and sagittal slices through the foreground centroid of the label (of
    the prediction when there is no label; middle slices when both are empty); 2D cases get one row. Class colours
    are listed in a legend below the panels, background left transparent. The PNG is
    :py:func:`montage_size` pixels and replaced atomically.

    Args:
        filename: the PNG to write; parent folders are created.
        image: channel-first ``(C, H, W)`` or ``(C, H, W, D)``, numpy or torch (``MetaTensor`` included).
        pred: channel-first prediction with the image's spatial shape: ``C > 1`` channels of one-hot, probabilities
            or logits (argmax is taken) or one channel of class indices.
        label: the reference segmentation in the same forms as ``pred``, or None.
        class_names: names by class index, background first (a list) or ``{index: name}``; missing ones are
            ``"class k"``.
        spacing: voxel size per spatial axis for the aspect ratio; None means isotropic.
        slice_mode: ``"centroid"`` (foreground centroid) or ``"middle"``. Defaults to ``"centroid"``.
        image_channel: which image channel to show. Defaults to 0.
        panel_size: pixels per panel side. Defaults to 256.
        alpha: overlay opacity. Defaults to 0.45.

    Returns:
        The path written.

    Examples::

        >>> save_montage("case_montage.png", image, pred, label, class_names=["background", "liver", "tumour"])
    """
    fig = montage_figure(image, pred, label, class_names, spacing, slice_mode, image_channel, panel_size, alpha)
    return save_figure(fig, filename)


class SaveMontaged(MapTransform):
    """Dictionary transform writing :py:func:`save_montage` PNGs, e.g. in a bundle's inference post-processing.

    Place it where image and prediction still share the image's preprocessed grid: after the activation and before
    ``Invertd``. The PNG is ``{output_dir}/{case}_{output_postfix}.png`` where ``case`` is the image file's name
    without extension, read from the ``MetaTensor`` meta (or the ``{key}_{meta_key_postfix}`` dictionary);
    cases without a file name are numbered. The data passes through unchanged.

    Args:
        keys: the image key and the prediction key, in that order. Defaults to ``("image", "pred")``.
        output_dir: folder for the PNGs. Defaults to ``"./montages"``.
        label_key: key of the reference segmentation, drawn when the data has it; None never draws one.
        class_names: names by class index, background first, or ``{index: name}``.
        output_postfix: appended to the case name. Defaults to ``"montage"``.
        slice_mode, image_channel, panel_size, alpha: as in :py:func:`save_montage`.
        meta_key_postfix: suffix of the meta dictionary key for images that are not ``MetaTensor``.
        allow_missing_keys: skip cases without the image or prediction instead of raising.

    Examples::

        >>> SaveMontaged(keys=("image", "pred"), label_key="label", output_dir="eval/montages",
        ...              class_names=["background", "spleen"])
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "pred"),
        output_dir: str | os.PathLike = "./montages",
        label_key: str | None = "label",
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        output_postfix: str = "montage",
        slice_mode: str = "centroid",
        image_channel: int = 0,
        panel_size: int = 256,
        alpha: float = 0.45,
        meta_key_postfix: str = "meta_dict",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, pred_key), got {self.keys}.")
        if slice_mode not in SLICE_MODES:
            raise ValueError(f"slice_mode must be one of {SLICE_MODES}, got {slice_mode!r}.")
        self.output_dir = Path(output_dir)
        self.label_key = label_key
        self.class_names = class_names
        self.output_postfix = output_postfix
        self.options = {
            "slice_mode": slice_mode,
            "image_channel": image_channel,
            "panel_size": panel_size,
            "alpha": alpha,
        }
        self.meta_key_postfix = meta_key_postfix
        self._unnamed = 0

    def _case_name(self, meta: Mapping) -> str:
        source = meta.get("filename_or_obj")
        if isinstance(source, (list, tuple)):
            source = source[0] if source else None
        if source:
            name = Path(str(source)).name
            return Path(name[: -len(".gz")] if name.endswith(".gz") else name).stem
        self._unnamed += 1
        return f"case_{self._unnamed - 1}"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key, pred_key = self.keys
        if image_key not in d or pred_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"SaveMontaged needs keys {image_key!r} and {pred_key!r}, the data has {list(d)}.")
        image = d[image_key]
        meta = image.meta if isinstance(image, MetaTensor) else d.get(f"{image_key}_{self.meta_key_postfix}", {})
        spatial_dims = len(image.shape) - 1
        affine = meta.get("affine")
        spacing = None if affine is None else affine_to_spacing(torch.as_tensor(affine), r=spatial_dims).tolist()
        label = d.get(self.label_key) if self.label_key is not None else None
        filename = self.output_dir / f"{self._case_name(meta)}_{self.output_postfix}.png"
        save_montage(filename, image, d[pred_key], label, self.class_names, spacing, **self.options)
        return d


SaveMontageD = SaveMontaged
