# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Data for UNet++ bundles: a synthetic demo set, dataset discovery and checks, and a SimpleITK image reader."""

from __future__ import annotations

from .checks import DatasetError, ImageInfo, check_dataset, demo_settings_hint, image_info
from .datalist import SPLITS, pair_images_and_labels, prepare_dataset
from .demo import DEMO_DEFAULTS, demo_label_names, make_demo_dataset
from .readers import (
    CHECKED_SUFFIXES,
    SIMPLEITK_SUFFIXES,
    CorruptImageError,
    SimpleITKReader,
    check_image_data,
    read_dicom_series,
    sitk_affine,
)

__all__ = [
    "CHECKED_SUFFIXES",
    "DEMO_DEFAULTS",
    "SIMPLEITK_SUFFIXES",
    "SPLITS",
    "CorruptImageError",
    "DatasetError",
    "ImageInfo",
    "SimpleITKReader",
    "check_dataset",
    "check_image_data",
    "demo_label_names",
    "demo_settings_hint",
    "image_info",
    "make_demo_dataset",
    "pair_images_and_labels",
    "prepare_dataset",
    "read_dicom_series",
    "sitk_affine",
]
