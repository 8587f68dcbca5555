# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""UNet++ in MONAI's Auto3DSeg: the ``unetpp`` algorithm template.

Auto3DSeg (``monai.apps.auto3dseg.AutoRunner``) analyses a dataset, fills algorithm templates from the statistics,
trains each fold and ensembles the folds. :func:`templates_path` is the folder of the ``unetpp`` template, which
plans the 3D UNet++ bundle for the data with :func:`monai_unetpp.plan.make_plan`.

Examples::

    from monai.apps.auto3dseg import AutoRunner
    from monai_unetpp.auto3dseg import templates_path

    AutoRunner(input="task.yaml", algos=["unetpp"], templates_path_or_url=templates_path()).run()
"""

from __future__ import annotations

from pathlib import Path

from .algo import UnetppAlgo, inference_configs, training_configs
from .generate import BUNDLE, DATALIST, FRAGMENT, bundle_fragment, class_names, fold_datalist
from .infer import InferClass
from .params import AUTO3DSEG_NAMES, bundle_ids

__all__ = [
    "AUTO3DSEG_NAMES",
    "BUNDLE",
    "DATALIST",
    "FRAGMENT",
    "TEMPLATE",
    "InferClass",
    "UnetppAlgo",
    "bundle_fragment",
    "bundle_ids",
    "class_names",
    "fold_datalist",
    "inference_configs",
    "templates_path",
    "training_configs",
]

TEMPLATE = "unetpp"
"""The template's name: Auto3DSeg's ``algos=["unetpp"]`` and the prefix of the generated folders."""


def templates_path() -> str:
    """The folder of monai-unetpp's Auto3DSeg algorithm templates (``unetpp/``), for ``AutoRunner``'s and
    ``BundleGen``'s ``templates_path_or_url``."""
    folder = Path(__file__).resolve().parent / "templates"
    if not (folder / TEMPLATE / "scripts" / "algo.py").is_file():
        raise FileNotFoundError(f"the Auto3DSeg template {folder / TEMPLATE} is missing; reinstall monai-unetpp.")
    return str(folder)
