# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""bundles/unetpp_2d_segmentation: the generic bundle on 2D images, with the paper's widths 32 to 512."""

from bundle_template import Bundle

BUNDLE = Bundle(
    spatial_dims=2,
    num_classes=3,
    features=[32, 64, 128, 256, 512],
    # the downsampling factors and kernel sizes per level: 2 and 3 on every axis (a plan sets them per axis)
    network_ids={"strides": None, "kernel_size": 3},
    spacing=[0.0, 0.0],  # keep the images' own pixel spacing
    patch_size=[128, 128],
    batch_size=8,
    num_samples=4,
    sw_batch_size=16,
    fragments=["paper_2d.yaml", "fast_inference.yaml"],  # the config fragments its README uses
)
