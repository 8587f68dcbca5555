# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Checkpoints that are written atomically to one fixed file name, for bundles.

MONAI's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)`` and, with a fixed
``key_metric_filename``, removes the previous file *before* writing the new one: a crash or a full disk during the
save leaves no model at all. The handlers here write to a temporary file in the same folder and ``os.replace`` it
onto the target, so the target always holds the last complete checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from ..utils import atomic_file, is_main_process, to_bool, unwrap_network

__all__ = ["atomic_save", "collect_state", "BestCheckpointSaver", "TrainingStateCheckpoint"]

logger = logging.getLogger(__name__)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` so that ``path`` is either the previous file or the complete new one
    (:func:`monai_unetpp.utils.atomic_file`).

    Args:
        obj: what to save (typically a ``state_dict``).
        path: the target file; its folder is created if needed.

    Returns:
        The target path.
    """
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def collect_state(save_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The ``state_dict`` of the objects to save.

    A single object is saved as its plain ``state_dict`` (as ignite's ``Checkpoint`` does), so that a lone network
    gives a ``model.pt`` that ``torch.load(weights_only=True)`` and ``network.load_state_dict`` read directly; several
    objects are saved as ``{name: state_dict}``. ``DistributedDataParallel``/``DataParallel`` wrappers are removed, so
    single- and multi-GPU checkpoints have the same keys.
    """
    if not save_dict:
        raise ValueError("save_dict is empty: pass the objects to save, e.g. {'model': network}.")
    states = {name: unwrap_network(obj).state_dict() for name, obj in save_dict.items()}
    return next(iter(states.values())) if len(states) == 1 else states


class BestCheckpointSaver:
    """Ignite handler for an evaluator: saves ``save_dir/filename`` atomically whenever the key metric improves.

    Attach it to the validation evaluator (as MONAI's ``CheckpointSaver(save_key_metric=True)``); the file always
    holds the best model so far, and a crash while saving leaves the previous best in place. In a distributed run
    every rank compares (metrics are already reduced across ranks) and rank 0 writes.

    The handler's own ``state_dict`` (best value and epoch) can be saved with the training state, so a resumed run
    keeps comparing against the best value seen before the interruption.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects to save, e.g. ``{"model": network}`` (one object: a plain ``state_dict`` file).
        filename: file name. Defaults to ``"model.pt"``, the name MONAI bundles load.
        key_metric_name: the metric to compare; None uses the evaluator's key metric.
        greater_is_better: whether a larger metric is better (Dice) or a smaller one (a distance). Defaults to True.

    Examples::

        BestCheckpointSaver("models", {"model": net}).attach(evaluator)
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "model.pt",
        key_metric_name: str | None = None,
        greater_is_better: bool = True,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict is empty: pass the objects to save, e.g. {'model': network}.")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.key_metric_name = key_metric_name
        self.greater_is_better = greater_is_better
        self.best_metric = -math.inf if greater_is_better else math.inf
        self.best_metric_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _metric(self, engine: Engine) -> float:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None:
            raise ValueError(
                "BestCheckpointSaver needs a metric: set key_metric_name or give the evaluator a key_val_metric."
            )
        value = engine.state.metrics[name]
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"key metric {name!r} must be a scalar to compare checkpoints, got {value.shape}.")
            value = value.item()
        return float(value)

    def __call__(self, engine: Engine) -> None:
        value = self._metric(engine)
        improved = value > self.best_metric if self.greater_is_better else value < self.best_metric
        if not improved:
            return
        self.best_metric, self.best_metric_epoch = value, int(engine.state.epoch)
        if is_main_process():
            atomic_save(collect_state(self.save_dict), self.path)
            logger.info(f"saved best model (metric {value:.4f} at epoch {self.best_metric_epoch}) to {self.path}")

    def state_dict(self) -> dict[str, float | int]:
        return {"best_metric": self.best_metric, "best_metric_epoch": self.best_metric_epoch}

    def load_state_dict(self, state_dict: Mapping[str, float | int]) -> None:
        self.best_metric = float(state_dict["best_metric"])
        self.best_metric_epoch = int(state_dict["best_metric_epoch"])


class TrainingStateCheckpoint:
    """Ignite handler for a trainer: keeps the training state in ``save_dir/filename`` to resume an interrupted run.

    Every ``interval`` epochs the state of ``save_dict`` and of the trainer itself (epoch and iteration counters,
    under ``engine_key``) is written atomically, overwriting the previous one. With ``resume=True`` the file is
    loaded when the trainer starts, so the run continues after the saved epoch; the configured ``max_epochs`` is kept,
    so a finished run can be extended by raising it. In a distributed run rank 0 writes and every rank loads.

    The trainer is taken from ``attach`` rather than from ``save_dict``, so that a bundle config can list this
    handler among the trainer's own handlers without a circular reference.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict``, e.g. ``{"network": net, "optimizer": opt,
            "lr_scheduler": sched, "best_model": best_saver}``.
        filename: file name. Defaults to ``"last.ckpt"``; the extension keeps it apart from the ``*.pt`` model
            files that tools such as MONAI Label offer as models.
        interval: epochs between saves. Defaults to 1.
        resume: load the file when the trainer starts; ``"true"``/``"false"`` strings from the command line are
            accepted. Defaults to False.
        engine_key: the key of the trainer's state in the file. Defaults to ``"trainer"``.

    Examples::

        TrainingStateCheckpoint("models", {"network": net, "optimizer": opt}, resume=True).attach(trainer)
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "last.ckpt",
        interval: int = 1,
        resume: bool | str = False,
        engine_key: str = "trainer",
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict is empty: pass the objects to save, e.g. {'network': net, 'optimizer': opt}.")
        if engine_key in save_dict:
            raise ValueError(f"save_dict already has the key {engine_key!r} that holds the trainer; choose another.")
        if interval < 1:
            raise ValueError(f"interval must be a positive number of epochs, got {interval}.")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.interval = interval
        self.resume = to_bool(resume, "resume")
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        if is_main_process():
            atomic_save(collect_state({**self.save_dict, self.engine_key: engine}), self.path)
            logger.info(f"saved the training state of epoch {engine.state.epoch} to {self.path}")

    def load(self, engine: Engine) -> None:
        """Restore ``save_dict`` and the trainer's counters from the file (called at ``STARTED`` with resume)."""
        if not self.path.is_file():
            raise FileNotFoundError(
                f"resume is set but there is no training state at {self.path}; train once without resume, or point "
                "the checkpoint folder (ckpt_dir) at a previous run."
            )
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        missing = [key for key in (*self.save_dict, self.engine_key) if key not in state]
        if missing:
            raise ValueError(f"{self.path} has no state for {missing}; it holds {sorted(state)}.")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load={**self.save_dict, self.engine_key: engine}, checkpoint=state)
        if max_epochs is not None:
            if engine.state.epoch > max_epochs:
                raise ValueError(
                    f"{self.path} was saved at epoch {engine.state.epoch}, beyond max_epochs={max_epochs}; "
                    "raise the number of epochs to continue training."
                )
            engine.state.max_epochs = max_epochs
        logger.info(f"resumed from {self.path} after epoch {engine.state.epoch}")
