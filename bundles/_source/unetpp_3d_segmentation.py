# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""bundles/unetpp_3d_segmentation: the generic bundle on volumes (CT or MRI), 3 classes (demo: organ, lesion)."""

from bundle_template import Bundle

BUNDLE = Bundle(
    spatial_dims=3,
    num_classes=3,
    features=[32, 32, 64, 128, 256],
    # the downsampling factors and kernel sizes per level: 2 and 3 on every axis (a plan sets them per axis)
    network_ids={"strides": None, "kernel_size": 3},
    spacing=[1.5, 1.5, 2.0],
    patch_size=[96, 96, 96],
    batch_size=2,
    num_samples=2,
    sw_batch_size=4,
    fragments=["ct.yaml", "mri.yaml", "fast_inference.yaml"],  # the config fragments its README uses
)
