# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The training and inference runs of a generated algorithm folder: what its ``scripts/train.py`` and
``scripts/infer.py`` call."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from .algo import inference_configs, training_configs
from .generate import FRAGMENT, read_config_file, update_fragment
from .params import bundle_ids

__all__ = ["run_inference", "run_training"]

TRAINING_LOG = "train.log"
"""The training's log, in the bundle's ``log_dir`` (``runs/``)."""


# flags of one run, not settings of the trained model
_RUN_FLAGS = ("resume", "overwrite", "bundle_root")


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _check_widths(algo_dir: Path, ids: dict[str, Any]) -> None:
    """Widths given for a run need one entry per level of the fold's plan, unless the run sets its own strides or
    kernel sizes: the plan's strides have one entry per downsampling."""
    features = ids.get("features")
    if not isinstance(features, (list, tuple)) or "strides" in ids or "kernel_size" in ids:
        return
    path = algo_dir / "configs" / FRAGMENT
    strides = read_config_file(path, "the algorithm's config fragment").get("strides")
    if isinstance(strides, list) and len(features) != len(strides) + 1:
        raise ValueError(
            f"parameter features={list(features)} has {len(features)} widths, but the plan in {path} has "
            f"{len(strides) + 1} levels (strides {strides}); give {len(strides) + 1} widths, or set strides and "
            "kernel_size as well (one entry per downsampling and one per level)."
        )


def _workflow(algo_dir: Path, files: Sequence[str], workflow_type: str, override: dict[str, Any]) -> ConfigWorkflow:
    ids = bundle_ids(override)
    _check_widths(algo_dir, ids)
    ids.setdefault("bundle_root", str(algo_dir))
    configs = algo_dir / "configs"
    return ConfigWorkflow(
        config_file=list(files),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **ids,
    )


def run_training(algo_dir: str | os.PathLike, config_file: str | Sequence[str] | None = None, **override: Any) -> None:
    """Train a fold: the bundle's training workflow on :func:`training_configs` (with the multi-GPU config under
    ``torchrun``), the log also written to ``runs/train.log``.

    When the training starts (past the bundle's checks of the checkpoint folder), its parameters are written into
    the fold's ``configs/hyper_parameters.yaml`` (all but ``resume`` and ``overwrite``), so that inference,
    evaluation and a later resume build the network and the preprocessing that were trained (e.g. after
    ``features`` or ``patch_size`` were set for training).

    Args:
        algo_dir: the algorithm folder.
        config_file: the config files; None for :func:`training_configs`. A comma-separated string is split.
        override: Auto3DSeg's training parameters or config ids (:func:`monai_unetpp.auto3dseg.bundle_ids`).
    """
    root = Path(algo_dir).absolute()
    if isinstance(config_file, str):
        config_file = config_file.split(",")
    files = config_file or training_configs(root, multi_gpu=_distributed())
    kept = {k: v for k, v in bundle_ids(override).items() if k not in _RUN_FLAGS}
    workflow = _workflow(root, files, "train", override)
    log_path = Path(workflow.parser.get_parsed_content("log_dir")) / TRAINING_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        workflow.initialize()
        if kept and int(os.environ.get("RANK", "0")) == 0:
            # attached after the bundle's CheckpointGuard: a run that it refuses leaves the fragment as it was
            trainer = workflow.parser.get_parsed_content("train::trainer")
            trainer.add_event_handler(Events.STARTED, lambda _: update_fragment(root, kept))
        workflow.run()
        workflow.finalize()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def run_inference(algo_dir: str | os.PathLike, config_file: str | Sequence[str] | None = None, **override: Any) -> None:
    """Segment the fold's test list (or ``dataset::data``) with the bundle's inference workflow on
    :func:`inference_configs`; the label maps go to ``eval/``.

    Args:
        algo_dir: the algorithm folder.
        config_file: the config files; None for :func:`inference_configs`. A comma-separated string is split.
        override: config ids or Auto3DSeg names.
    """
    root = Path(algo_dir).absolute()
    if isinstance(config_file, str):
        config_file = config_file.split(",")
    workflow = _workflow(root, config_file or inference_configs(root), "infer", override)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
