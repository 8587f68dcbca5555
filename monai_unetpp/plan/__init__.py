# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""A UNet++ that configures itself for a dataset: fingerprint (MONAI Auto3DSeg's ``DataAnalyzer``), rules after
nnU-Net's, a memory model that sizes the patch and batch for a GPU, and the plan as a bundle config fragment.

Examples::

    python -m monai_unetpp.plan /data/Task09_Spleen --out plan.yaml --gpu-memory 24
    python -m monai.bundle run --config_file "['bundles/unetpp_3d_segmentation/configs/train.json','plan.yaml']" \\
        --dataset_dir /data/Task09_Spleen

    >>> from monai_unetpp.plan import fingerprint, make_plan  # doctest: +SKIP
    >>> plan = make_plan(fingerprint("/data/Task09_Spleen"), gpu_memory_gib=24)  # doctest: +SKIP
    >>> plan.to_bundle_config()["patch_size"]  # doctest: +SKIP
"""

from .fingerprint import dataset_modality, fingerprint, training_cases
from .memory import MemoryEstimate, measure_training_memory, predict_training_memory
from .planner import DEFAULT_GPU_MEMORY_GIB, Plan, make_plan

__all__ = [
    "DEFAULT_GPU_MEMORY_GIB",
    "MemoryEstimate",
    "Plan",
    "dataset_modality",
    "fingerprint",
    "make_plan",
    "measure_training_memory",
    "predict_training_memory",
    "training_cases",
]
