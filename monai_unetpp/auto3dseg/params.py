# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Auto3DSeg's hyper-parameter names and the 3D bundle's config ids they stand for.

Auto3DSeg passes training parameters by the names its own templates use (``AutoRunner.set_training_params``, the
NNI/Optuna search spaces): ``num_epochs``, ``num_epochs_per_validation``, ``learning_rate``, ... (see
``configs/hyper_parameters.yaml`` of the SegResNet template in Project-MONAI/research-contributions,
``auto3dseg/algorithm_templates``). :data:`AUTO3DSEG_NAMES` maps each onto the id of
``bundles/unetpp_3d_segmentation`` that it sets; every other name is taken as a bundle config id as it is
(``features``, ``cache_rate``, ``train::trainer::amp``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["AUTO3DSEG_NAMES", "RESERVED_NAMES", "bundle_ids", "command_value"]

AUTO3DSEG_NAMES: dict[str, str] = {
    "num_epochs": "epochs",
    "num_epochs_per_validation": "val_interval",
    "num_images_per_batch": "batch_size",
    "num_crops_per_image": "num_samples",
    "learning_rate": "learning_rate",
    "num_sw_batch_size": "sw_batch_size",
    "overlap_ratio": "sw_overlap",
    "roi_size": "patch_size",
    "patch_size_valid": "patch_size",
    "num_workers": "num_workers",
    "amp": "amp",
    "ckpt_path": "ckpt_dir",
}
"""Auto3DSeg name -> bundle config id."""

RESERVED_NAMES: frozenset[str] = frozenset({"config_file", "bundle_root"})
"""Names that are arguments of the training and inference scripts, not config ids."""


def bundle_ids(params: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle config ids that Auto3DSeg parameters set.

    Args:
        params: Auto3DSeg names (:data:`AUTO3DSEG_NAMES`) or bundle config ids, with their values. Ids may use
            ``::`` or ``#`` between levels.

    Raises:
        ValueError: when two names set the same id to different values (e.g. ``num_epochs`` and ``epochs``).

    Examples::

        >>> bundle_ids({"num_epochs": 2, "learning_rate": 1e-3, "features": [8, 8, 16]})
        {'epochs': 2, 'learning_rate': 0.001, 'features': [8, 8, 16]}
    """
    ids: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, value in params.items():
        key = AUTO3DSEG_NAMES.get(name, name).replace("#", "::")
        if key in ids and ids[key] != value:
            raise ValueError(
                f"training parameters {origin[key]}={ids[key]!r} and {name}={value!r} both set the bundle's "
                f"{key!r}; pass only one of them."
            )
        ids[key], origin[key] = value, name
    return ids


def command_value(name: str, value: Any, _nested: bool = False) -> str:
    """``value`` written for a ``--name=value`` argument that ``python-fire`` reads back as the same value.

    Auto3DSeg splits its commands on whitespace and runs them without a shell, so a value must not contain
    whitespace; lists are written as Python literals (``[16,16,16]``), which Fire parses back into lists.

    Raises:
        ValueError: for a value with whitespace, or a mapping, naming the parameter.
    """
    if isinstance(value, Mapping):
        raise ValueError(
            f"training parameter {name}={value!r} is a mapping, which a command line cannot carry; set its "
            f"entries one by one ({name}::key=value)."
        )
    if isinstance(value, (list, tuple)):
        text = "[" + ",".join(command_value(name, item, _nested=True) for item in value) + "]"
    elif isinstance(value, str):
        # quoted inside a list, or where Fire would read it as something else (a tuple, a number, a list)
        text = value if not _nested and value == _bare(value) else repr(value)
    else:
        text = repr(value)
    if any(c.isspace() for c in text):
        raise ValueError(
            f"training parameter {name}={value!r} contains whitespace, which Auto3DSeg's command line splits "
            "into separate arguments; use a value without spaces (e.g. a path without spaces)."
        )
    return text


def _bare(value: str) -> str | None:
    """``value`` when python-fire reads it back unquoted as this same string, else None."""
    if any(c in value for c in ",[]{}()'\"") or value in ("True", "False", "None"):
        return None
    try:
        float(value)
    except ValueError:
        return value
    return None
