# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""bundles/unetpp_3d_segmentation: the generic bundle on volumes (CT or MRI), 3 classes (demo: organ, lesion).

Its defaults are those of its shipped model, sized for the 64 x 64 x 48 volumes of its demo data and a CPU:
``configs/large_3d.yaml`` (widths to 256, 96^3 patches) or a plan of ``python -m monai_unetpp.plan`` size it for
real data.
"""

from bundle_template import Bundle

BUNDLE = Bundle(
    spatial_dims=3,
    num_classes=3,
    features=[8, 16, 32, 64],
    # the downsampling factors and kernel sizes per level: 2 and 3 on every axis (a plan sets them per axis)
    network_ids={"strides": None, "kernel_size": 3},
    spacing=[1.5, 1.5, 2.0],
    patch_size=[32, 32, 32],
    batch_size=2,
    num_samples=4,
    epochs=20,
    learning_rate=0.003,
    num_workers=2,
    sw_batch_size=4,
    fragments=["large_3d.yaml", "ct.yaml", "mri.yaml", "fast_inference.yaml"],  # the config fragments its README uses
)
