# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The planning rules, each a small function of the fingerprint's numbers.

They follow nnU-Net's (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 2021, and ``nnunetv2/experiment_planning`` of MIC-DKFZ/nnUNet); where they differ the
docstring says why. ``docs/planning.md`` lists them with their justification.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ANISOTROPY_RATIO",
    "MIN_SIDE",
    "class_ratios",
    "feature_widths",
    "is_ct",
    "low_resolution_axis",
    "median_shape",
    "mask_for_normalisation",
    "shape_divisor",
    "target_spacing",
    "topology",
]

#: the low-resolution axis gets its own target spacing when it is more than this many times coarser than the others
#: (and has this many times fewer voxels): nnU-Net's ``anisotropy_threshold``
ANISOTROPY_RATIO = 3.0
#: a level is pooled on an axis only while that side stays at least this many voxels (nnU-Net's feature map minimum)
MIN_SIDE = 4
#: an axis is pooled, and gets a kernel of 3, only while its spacing is less than twice the finest
SPACING_FACTOR = 2.0
#: nnU-Net's foreground oversampling: a third of the patches is centred on a foreground class
FOREGROUND_SHARE = 1.0 / 3.0
#: CT is recognised by air: the 0.5th intensity percentile of the images at or below this (HU)
CT_AIR_HU = -500.0


def target_spacing(median: Sequence[float], tenth_percentile: Sequence[float], median_shape: Sequence[float]) -> list:
    """The voxel spacing to resample to: the median spacing on every axis, except for the low-resolution axis of an
    anisotropic dataset, which gets the 10th percentile of its spacings (but no finer than the other axes' coarsest).

    An axis is the low-resolution one when its median spacing is more than :data:`ANISOTROPY_RATIO` times the other
    axes' coarsest and its median size in voxels is that many times smaller than the others' smallest (nnU-Net's
    ``determine_fullres_target_spacing``): resampling it to the median would interpolate many slices of few cases,
    the 10th percentile keeps the resolution of the finer-sliced cases.

    Examples::

        >>> target_spacing([0.8, 0.8, 5.0], [0.7, 0.7, 3.0], [512, 512, 40])
        [0.8, 0.8, 3.0]
    """
    spacing = [float(s) for s in median]
    axis = low_resolution_axis(spacing, median_shape)
    if axis is not None:
        coarsest_other = max(s for d, s in enumerate(spacing) if d != axis)
        spacing[axis] = max(float(tenth_percentile[axis]), coarsest_other)
    return spacing


def low_resolution_axis(median: Sequence[float], median_shape: Sequence[float]) -> int | None:
    """The axis of an anisotropic dataset whose spacing is more than :data:`ANISOTROPY_RATIO` times the others'
    coarsest and whose size is that many times smaller than the others' smallest; None for other datasets.

    Examples::

        >>> low_resolution_axis([0.8, 0.8, 5.0], [512, 512, 40])
        2
    """
    axis = int(np.argmax(median))
    others = [d for d in range(len(median)) if d != axis]
    if not others:
        return None
    coarse = median[axis] > ANISOTROPY_RATIO * max(median[d] for d in others)
    few = median_shape[axis] * ANISOTROPY_RATIO < min(median_shape[d] for d in others)
    return axis if coarse and few else None


def median_shape(shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]], target: Sequence[float]) -> list:
    """The median over cases of each case's shape after resampling to ``target`` (per axis).

    Examples::

        >>> median_shape([[100, 100, 20], [120, 110, 30]], [[1, 1, 5], [1, 1, 5]], [1, 1, 2.5])
        [110, 105, 50]
    """
    resampled = np.asarray(shapes, float) * np.asarray(spacings, float) / np.asarray(target, float)[None]
    return [int(round(v)) for v in np.median(resampled, axis=0)]


def topology(spacing: Sequence[float], patch_size: Sequence[int], max_levels: int) -> tuple[list, list]:
    """The strides (one per-axis entry per downsampling) and kernel sizes (one per level) for a patch.

    Level by level, an axis is pooled (stride 2, else 1) while its side stays at least :data:`MIN_SIDE` voxels and
    its spacing at that level is less than :data:`SPACING_FACTOR` times the finest: a 5 mm axis beside 0.8 mm ones
    is kept until pooling has brought the others to about its spacing, so that every level sees a roughly isotropic
    neighbourhood in mm. A level's kernel is 3 on the axes whose spacing there is less than twice the finest and 1
    on the others (a 3x3x1 convolution does not mix slices 5 mm apart at full resolution); once 3, it stays 3. The
    deepest level is the last one that pooling reached, at most ``max_levels`` levels (nnU-Net's
    ``get_pool_and_conv_props``, with the UNet++ depth capped: its nested decoder costs grow with the square of the
    depth).

    Returns:
        ``(strides, kernel_sizes)``: ``len(kernel_sizes) == len(strides) + 1``; each entry one int per axis.

    Examples::

        >>> topology([0.8, 0.8, 3.0], [160, 160, 32], max_levels=5)
        ([[2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]])
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    size = [int(p) for p in patch_size]
    kernel = [1] * dims
    strides: list[list[int]] = []
    kernels: list[list[int]] = []
    while True:
        finest = min(current_spacing)
        kernel = [3 if kernel[d] == 3 or current_spacing[d] < SPACING_FACTOR * finest else 1 for d in range(dims)]
        kernels.append(list(kernel))
        if len(kernels) == max_levels:
            break
        fits = [d for d in range(dims) if size[d] >= 2 * MIN_SIDE]
        if not fits:
            break
        finest_fitting = min(current_spacing[d] for d in fits)
        pooled = [d for d in fits if current_spacing[d] < SPACING_FACTOR * finest_fitting]
        stride = [2 if d in pooled else 1 for d in range(dims)]
        strides.append(stride)
        for d in pooled:
            current_spacing[d] *= 2
            size[d] = math.ceil(size[d] / 2)
    return strides, kernels


def shape_divisor(strides: Sequence[Sequence[int]], dims: int) -> list[int]:
    """Per axis, the product of the strides: a patch side divisible by it is pooled without rounding."""
    return [math.prod(s[d] for s in strides) for d in range(dims)]


def feature_widths(levels: int, base: int, maximum: int) -> list[int]:
    """Widths ``base * 2**level``, capped at ``maximum`` (nnU-Net: 32 doubling to 320 in 3D, 512 in 2D).

    Examples::

        >>> feature_widths(5, 32, 320)
        [32, 64, 128, 256, 320]
    """
    return [min(base * 2**level, maximum) for level in range(levels)]


def is_ct(intensity_percentile_00_5: float) -> bool:
    """Whether images look like CT: air at about -1000 HU puts their 0.5th percentile below :data:`CT_AIR_HU`;
    MR and other modalities have no such values."""
    return float(intensity_percentile_00_5) <= CT_AIR_HU


def mask_for_normalisation(shape_voxels: float, cropped_voxels: float) -> bool:
    """Whether to z-score over the non-zero voxels only: when cropping to the non-zero region removes a quarter of
    the image or more (skull-stripped brains, masked scans), the zeros are no tissue and would skew the statistics
    (nnU-Net's ``use_mask_for_norm``)."""
    return cropped_voxels < 0.75 * shape_voxels


def class_ratios(foreground_fractions: Sequence[float]) -> list[float]:
    """The share of training patches centred on each class (background first), nnU-Net's sampling in expectation:
    two thirds of the patches at random places (so each class in proportion to its voxels) and one third centred on
    a foreground class chosen uniformly. Small structures get at least ``1 / (3 K)`` of the patches for ``K``
    foreground classes, whatever their size.

    Examples::

        >>> [round(r, 3) for r in class_ratios([0.9, 0.09, 0.01])]
        [0.6, 0.227, 0.173]
    """
    fractions = np.asarray(foreground_fractions, float)
    if fractions.size < 2:
        raise ValueError(f"class_ratios needs the background and at least one class, got {list(fractions)}.")
    fractions = fractions / fractions.sum()
    ratios = (1.0 - FOREGROUND_SHARE) * fractions
    ratios[1:] += FOREGROUND_SHARE / (fractions.size - 1)
    return [float(r) for r in ratios]
