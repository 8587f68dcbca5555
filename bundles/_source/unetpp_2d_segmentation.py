# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""bundles/unetpp_2d_segmentation: the generic bundle on 2D images, 3 classes (demo: organ, lesion).

Its defaults are those of its shipped model, sized for the 128 x 128 images of its demo data and a CPU:
``configs/large_2d.yaml`` (widths 32 to 512, 128^2 patches) or ``configs/paper_2d.yaml`` (the paper's network) size
it for real data.
"""

from bundle_template import Bundle

BUNDLE = Bundle(
    spatial_dims=2,
    num_classes=3,
    features=[16, 32, 64, 128],
    # the downsampling factors and kernel sizes per level: 2 and 3 on every axis (a plan sets them per axis)
    network_ids={"strides": None, "kernel_size": 3},
    spacing=[0.0, 0.0],  # keep the images' own pixel spacing
    patch_size=[96, 96],
    batch_size=8,
    num_samples=2,
    epochs=30,
    learning_rate=0.003,
    num_workers=2,
    sw_batch_size=8,
    fragments=["large_2d.yaml", "paper_2d.yaml", "fast_inference.yaml"],  # the config fragments its README uses
)
