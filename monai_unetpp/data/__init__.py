# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Data for UNet++ bundles: a synthetic demo set, dataset discovery and checks, and a SimpleITK image reader."""

from __future__ import annotations

from .checks import DatasetError, ImageInfo, check_dataset, image_info
from .datalist import SPLITS, pair_images_and_labels, prepare_dataset
from .demo import DEMO_DEFAULTS, demo_label_names, make_demo_dataset
from .readers import SIMPLEITK_SUFFIXES, SimpleITKReader, read_dicom_series, sitk_affine

__all__ = [
    "DEMO_DEFAULTS",
    "SIMPLEITK_SUFFIXES",
    "SPLITS",
    "DatasetError",
    "ImageInfo",
    "SimpleITKReader",
    "check_dataset",
    "demo_label_names",
    "image_info",
    "make_demo_dataset",
    "pair_images_and_labels",
    "prepare_dataset",
    "read_dicom_series",
    "sitk_affine",
]
