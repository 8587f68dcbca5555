# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Checkpoints of bundle trainings: atomic saves, a best model that carries its own score, resuming, and a guard of
the checkpoint folder.

MONAI's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)`` and, with a fixed
``key_metric_filename``, removes the previous file *before* writing the new one: a crash or a full disk during the
save leaves no model at all. The handlers here write to a temporary file in the same folder and ``os.replace`` it
onto the target, so the target always holds the last complete checkpoint.

The best model and its score are one file: :class:`BestCheckpointSaver` writes the score, epoch and run of
``model.pt`` into the file itself (in the ``state_dict``'s ``_metadata``, where PyTorch keeps per-module versions and
which ``load_state_dict`` ignores), so ``model.pt`` stays a plain ``state_dict`` and a resumed run compares against
the score of the model that is actually on disk, whatever the order in which a crash interrupted the saves.

:class:`CheckpointGuard` keeps two runs out of one checkpoint folder (a lock file), refuses to replace the model of
an earlier run unless told to, checks that the folder can be written before the first epoch, and removes the
temporary files of saves that a kill interrupted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import socket
import sys
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from ..utils import atomic_file, is_main_process, to_bool, unwrap_network

try:  # POSIX; where it is missing (Windows) the folder lock is skipped with a warning
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "BEST_RECORD_KEY",
    "BestCheckpointSaver",
    "CheckpointCheck",
    "CheckpointError",
    "CheckpointGuard",
    "TrainingStateCheckpoint",
    "atomic_save",
    "best_record",
    "checked_checkpoint",
    "collect_state",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

BEST_RECORD_KEY = "monai_unetpp.best_model"
"""The entry of a saved ``state_dict``'s ``_metadata`` in which :class:`BestCheckpointSaver` records the score."""


class CheckpointError(RuntimeError):
    """A checkpoint file or folder that a run cannot use; the message names the file and the fix."""


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


def load_checkpoint(path: str | os.PathLike, fix: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file.

    Args:
        path: the checkpoint file.
        fix: what the user can do about a missing or unreadable file, appended to the messages.

    Raises:
        FileNotFoundError: when there is no file at ``path``.
        CheckpointError: when the file is empty, truncated or not a PyTorch checkpoint.
        pickle.UnpicklingError: when the file holds objects other than tensors and plain containers (torch refuses to
            run the code that such a file may carry).
    """
    path = Path(path)
    fix = f" {fix}" if fix else ""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}.{fix}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted copy or a full disk?{fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise CheckpointError(f"{path} is not a PyTorch checkpoint ({error}).{fix}") from error
        first_line = str(error).strip().splitlines()[0]
        raise pickle.UnpicklingError(
            f"{path} holds objects other than tensors, which are not loaded because unpickling them could run code "
            f"({first_line}). Load only checkpoints you trust, saved as plain state_dicts.{fix}"
        ) from error
    except (EOFError, OSError, RuntimeError, ValueError, KeyError) as error:
        reason = str(error).strip().split(". ")[0].splitlines()[0].rstrip(".") if str(error).strip() else "no details"
        raise CheckpointError(
            f"{path} ({size} bytes) is truncated or not a PyTorch checkpoint ({type(error).__name__}: {reason}).{fix}"
        ) from error


_TRAIN_FIRST = (
    "Train the bundle first (python -m monai.bundle run --config_file configs/train.json), or point --ckpt_dir (or "
    "--bundle_root) at the folder of a trained model.pt; a damaged file must be copied again or retrained."
)


def checked_checkpoint(path: str | os.PathLike, fix: str | None = None) -> str:
    """``path``, once it is known to hold a loadable checkpoint.

    Args:
        path: the checkpoint file.
        fix: what to do when it is missing or unreadable. Defaults to the bundles' advice (train first, or point
            ``ckpt_dir`` at a trained model).

    Raises:
        See :func:`load_checkpoint`.
    """
    load_checkpoint(path, _TRAIN_FIRST if fix is None else fix)
    return str(path)


class CheckpointCheck:
    """Ignite handler: when the engine starts, checks that ``path`` holds a loadable checkpoint
    (:func:`checked_checkpoint`), so that a missing, empty or truncated file stops the run with its name and the fix;
    given the ``network``, also that the file's weights have its layers' shapes, so that a config that builds
    another network (other widths, channels or classes than the model was trained with) stops with the file's name
    and the first differing layer, not with PyTorch's list of every mismatch.

    List it just before MONAI's ``CheckpointLoader`` of the same file, which would report such a file as a bare
    ``EOFError`` or ``OSError: [Errno 22]`` without naming it. Handlers of one event run in the order in which they
    were attached, so the check comes first.

    Args:
        path: the checkpoint file.
        fix: what to do when it is missing or unreadable; None for the bundles' advice.
        network: the network the file is loaded into, or None to check the file alone.
        key: the checkpoint's entry of the network's weights, as in the ``CheckpointLoader``'s ``load_dict``; a file
            without it holds the weights at its top level. Defaults to ``"model"``.

    Examples::

        "handlers": [
            {"_target_": "monai_unetpp.bundle.CheckpointCheck", "path": "$os.path.join(@ckpt_dir, 'model.pt')",
             "network": "@network"},
            {"_target_": "monai.handlers.CheckpointLoader", "load_path": ..., "load_dict": ...}, ...]
    """

    def __init__(
        self, path: str | os.PathLike, fix: str | None = None, network: nn.Module | None = None, key: str = "model"
    ) -> None:
        self.path = Path(path)
        self.fix = fix
        self.network = network
        self.key = key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        state = load_checkpoint(self.path, _TRAIN_FIRST if self.fix is None else self.fix)
        if self.network is None:
            return
        weights = state[self.key] if isinstance(state, Mapping) and self.key in state else state
        expected = unwrap_network(self.network).state_dict()
        if not isinstance(weights, Mapping):
            raise CheckpointError(f"{self.path} holds no weights of a network (a {type(weights).__name__}).")
        differing = [
            f"{name}: {tuple(weights[name].shape)} in the file, {tuple(tensor.shape)} in this network"
            for name, tensor in expected.items()
            if name in weights and hasattr(weights[name], "shape") and weights[name].shape != tensor.shape
        ]
        missing = [name for name in expected if name not in weights]
        if differing or missing:
            first = differing[0] if differing else f"{missing[0]} is not in the file"
            raise CheckpointError(
                f"{self.path} holds the weights of another network than this config builds ({len(differing)} "
                f"layers of other shapes, {len(missing)} missing; first {first}). Run with the configs and ids the "
                "model was trained with (features, in_channels, the classes, the config fragments), or train a model "
                "with these."
            )


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


def _with_record(state: Mapping[str, Any], record: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with ``record`` in its ``_metadata`` under :data:`BEST_RECORD_KEY` (a copy when it has none)."""
    metadata = getattr(state, "_metadata", None)
    if metadata is None:
        state = OrderedDict(state)
        metadata = state._metadata = OrderedDict()  # type: ignore[attr-defined]
    metadata[BEST_RECORD_KEY] = dict(record)
    return state


def best_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The score record that :class:`BestCheckpointSaver` wrote into the checkpoint at ``path``: ``metric``,
    ``metric_name``, ``epoch`` and ``run``; None when the file has none (saved by other code or by an earlier
    version of monai-unetpp).

    Raises:
        See :func:`load_checkpoint`.
    """
    record = getattr(load_checkpoint(path), "_metadata", {}).get(BEST_RECORD_KEY)
    return dict(record) if isinstance(record, Mapping) else None


class BestCheckpointSaver:
    """Ignite handler for an evaluator: saves ``save_dir/filename`` atomically whenever the key metric improves.

    Attach it to the validation evaluator (as MONAI's ``CheckpointSaver(save_key_metric=True)``); the file always
    holds the best model so far, and a crash while saving leaves the previous best in place. In a distributed run
    every rank compares (metrics are already reduced across ranks) and rank 0 writes.

    The file records its own score: with a single object the file is that object's plain ``state_dict`` (what
    ``network.load_state_dict``, MONAI's ``CheckpointLoader`` and MONAI Label load), with the metric, its name, the
    epoch and an id of the run in the ``state_dict``'s ``_metadata`` under :data:`BEST_RECORD_KEY`
    (:func:`best_record` reads it).

    The handler's own ``state_dict`` (best value, epoch and run id) is saved with the training state. When it is
    loaded back (``--resume``), the record in the file on disk decides, since it describes the model that is there: a
    run interrupted between saving ``model.pt`` and saving ``last.ckpt`` keeps comparing against the newer
    ``model.pt``, so a worse model never replaces it. When the file is missing, or was written by another run (an
    ``--overwrite`` run that had not yet saved its training state), the resumed run has no model on disk and its
    next validation writes one. A file without a record (from other code) leaves the restored value as it is.

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
        self.best_metric = self._worst
        self.best_metric_epoch = -1
        self.run_id = uuid.uuid4().hex

    @property
    def _worst(self) -> float:
        return -math.inf if self.greater_is_better else math.inf

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _metric_name(self, engine: Engine) -> str:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None:
            raise ValueError(
                "BestCheckpointSaver needs a metric: set key_metric_name or give the evaluator a key_val_metric."
            )
        return name

    def _metric(self, engine: Engine) -> float:
        name = self._metric_name(engine)
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
            record = {
                "metric": value,
                "metric_name": self._metric_name(engine),
                "epoch": self.best_metric_epoch,
                "run": self.run_id,
            }
            atomic_save(_with_record(collect_state(self.save_dict), record), self.path)
            logger.info(f"saved best model (metric {value:.4f} at epoch {self.best_metric_epoch}) to {self.path}")

    def state_dict(self) -> dict[str, float | int | str]:
        return {"best_metric": self.best_metric, "best_metric_epoch": self.best_metric_epoch, "run": self.run_id}

    def load_state_dict(self, state_dict: Mapping[str, float | int | str]) -> None:
        """Restore the best value, epoch and run id, then reconcile them with the file on disk (see the class)."""
        self.best_metric = float(state_dict["best_metric"])
        self.best_metric_epoch = int(state_dict["best_metric_epoch"])
        self.run_id = str(state_dict.get("run", self.run_id))
        if not self.path.is_file():
            if math.isfinite(self.best_metric):
                logger.warning(
                    f"{self.path} is missing although this run saved one (metric {self.best_metric:.4f} at epoch "
                    f"{self.best_metric_epoch}); the next validation writes a new one."
                )
            self.best_metric, self.best_metric_epoch = self._worst, -1
            return
        record = best_record(self.path)
        if record is None:
            return  # written by other code: nothing to reconcile with
        if record.get("run") != self.run_id:
            logger.warning(
                f"{self.path} was written by another run (metric {record.get('metric')} at epoch "
                f"{record.get('epoch')}); this run's next validation replaces it."
            )
            self.best_metric, self.best_metric_epoch = self._worst, -1
            return
        metric, epoch = float(record["metric"]), int(record["epoch"])
        if (metric, epoch) != (self.best_metric, self.best_metric_epoch):
            logger.warning(
                f"{self.path} was saved after the training state (an interrupted run): comparing against its metric "
                f"{metric:.4f} of epoch {epoch}, not {self.best_metric:.4f} of epoch {self.best_metric_epoch}."
            )
        self.best_metric, self.best_metric_epoch = metric, epoch


def _cosine_lr(scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, base_lr: float) -> float:
    """The closed-form learning rate of a cosine schedule at its current epoch."""
    eta_min = scheduler.eta_min
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * scheduler.last_epoch / scheduler.T_max)) / 2


class TrainingStateCheckpoint:
    """Ignite handler for a trainer: keeps the training state in ``save_dir/filename`` to resume an interrupted run.

    Every ``interval`` epochs the state of ``save_dict`` and of the trainer itself (epoch and iteration counters,
    under ``engine_key``) is written atomically, overwriting the previous one. With ``resume=True`` the file is
    loaded when the trainer starts, so the run continues after the saved epoch; the configured ``max_epochs`` is kept,
    so a finished run can be extended by raising it. In a distributed run rank 0 writes and every rank loads.

    Extending a run keeps its learning-rate schedule decaying: a ``CosineAnnealingLR`` in ``save_dict`` keeps the
    length it was built with for this run (in the bundles ``T_max`` is ``max_epochs``) rather than the saved one, and
    the learning rate is set to that schedule's value at the saved epoch. After 4 of 4 epochs (learning rate 0),
    ``--epochs 8`` continues at half the initial learning rate, the value an 8-epoch schedule has after epoch 4, and
    decays to 0 at epoch 8; it never climbs back to the initial rate (the saved ``T_max=4`` would restart the cosine).

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
                f"resume is set but there is no training state at {self.path}; train without resume (with "
                "--overwrite true where a model.pt is kept there, as in a bundle as shipped), or point the checkpoint "
                "folder (ckpt_dir) at a previous run."
            )
        state = load_checkpoint(
            self.path,
            fix="Copy it again, or train without resume (with --overwrite true where a model.pt is kept beside it).",
        )
        missing = [key for key in (*self.save_dict, self.engine_key) if key not in state]
        if missing:
            raise ValueError(f"{self.path} has no state for {missing}; it holds {sorted(state)}.")
        max_epochs = engine.state.max_epochs
        cosines = {
            name: (obj, obj.T_max)
            for name, obj in self.save_dict.items()
            if isinstance(obj, torch.optim.lr_scheduler.CosineAnnealingLR)
        }
        Checkpoint.load_objects(to_load={**self.save_dict, self.engine_key: engine}, checkpoint=state)
        if max_epochs is not None:
            if engine.state.epoch > max_epochs:
                raise ValueError(
                    f"{self.path} was saved at epoch {engine.state.epoch}, beyond max_epochs={max_epochs}; "
                    "raise the number of epochs to continue training."
                )
            engine.state.max_epochs = max_epochs
        for name, (scheduler, t_max) in cosines.items():
            if scheduler.T_max != t_max:
                saved, scheduler.T_max = scheduler.T_max, t_max
                lrs = [_cosine_lr(scheduler, base) for base in scheduler.base_lrs]
                for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
                    group["lr"] = lr
                scheduler._last_lr = lrs
                logger.info(
                    f"{name}: cosine schedule over {t_max} epochs instead of the saved {saved}; learning rate "
                    f"{lrs[0]:.3g} after epoch {scheduler.last_epoch}, decaying to {scheduler.eta_min} at epoch {t_max}"
                )
        logger.info(f"resumed from {self.path} after epoch {engine.state.epoch}")


# ---------------------------------------------------------------------------------------------------------------
# the guard of a checkpoint folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user (or cannot tell)
    return True


class _FolderLock:
    """An exclusive ``flock`` on a lock file that holds the owner's PID, host, start time and command.

    The kernel releases the lock when its process ends, however it ends, so a file left by a killed run is simply
    taken over. The file is removed on release (while still locked), and a lock taken on a file that was removed
    meanwhile is dropped and taken again on the new file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            record = json.loads(os.read(fd, 65536).decode() or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def acquire(self) -> dict[str, Any]:
        """Take the lock; returns the record of the previous (finished or killed) owner left in the file, if any.

        Raises:
            CheckpointError: when another process holds the lock.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise CheckpointError(self._held_message(holder)) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the owner released (removed) the file between our open and our lock: lock the new one
        previous = self._read(fd)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return previous

    def _held_message(self, holder: Mapping[str, Any]) -> str:
        pid, host = holder.get("pid"), holder.get("host")
        who = f"PID {pid}" if pid else "a process whose PID it has not written yet"
        if host and host != socket.gethostname():
            who += f" on {host}"
        elif pid == os.getpid():
            who += " (this process: an earlier training run in it has not finished)"
        elif isinstance(pid, int) and not _pid_alive(pid):
            who += " (no longer running, but a process it started, e.g. a data-loader worker, still holds the lock)"
        details = ", ".join(f"{k} {holder[k]}" for k in ("started", "command") if holder.get(k))
        return (
            f"the checkpoint folder {self.path.parent} is in use: {self.path} is held by another training run, "
            f"{who}{f' ({details})' if details else ''}. Two runs in one folder would leave the model.pt of one and "
            "the last.ckpt of the other. Wait for that run to finish or stop it, or give this run another folder "
            "(--bundle_root, or --ckpt_dir)."
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


class CheckpointGuard:
    """Ignite handler for a trainer: guards its checkpoint folder for the length of the run.

    When the trainer starts, before the first epoch, it

    1. checks that ``save_dir`` can be written (creating it if needed), so that a read-only folder stops the run now
       rather than at the first save;
    2. takes the lock ``save_dir/lock_name``: a second training into the same folder stops with an error that names
       the lock file and the PID of the run holding it. The lock is the operating system's (``flock``) and ends with
       its process, so a lock file left by a killed run is taken over;
    3. refuses to replace the files of an earlier run (``filenames``: ``model.pt`` and ``last.ckpt``) unless
       ``resume`` (the run continues that run) or ``overwrite`` (a new run replaces them as it saves its own) is
       true, or the trainer starts from that ``model.pt`` itself (a ``CheckpointLoader`` of it is attached, as MONAI
       Label adds one to fine-tune a bundle's model);
    4. removes the temporary files (``.model.pt.*.tmp``, ``.last.ckpt.*.tmp``) of saves that a kill interrupted:
       with the lock held, no writer of them is alive.

    The lock is released when the run completes, is terminated or fails. In a distributed run rank 0 does all of
    this and tells the other ranks the outcome, so that every rank stops with the same error.

    Args:
        save_dir: the checkpoint folder.
        resume: the run continues the saved training state; ``"true"``/``"false"`` strings are accepted.
        overwrite: the run may replace the files of an earlier run; strings accepted. Defaults to False.
        filenames: the files of a trained run in ``save_dir``. Defaults to ``("model.pt", "last.ckpt")``; the first
            is the model that a ``CheckpointLoader`` may start from.
        lock_name: the lock file's name. Defaults to ``"training.lock"``.

    Examples::

        "train#handlers": [{"_target_": "monai_unetpp.bundle.CheckpointGuard", "save_dir": "@ckpt_dir",
                            "resume": "$monai_unetpp.bundle.to_bool(@resume, 'resume')",
                            "overwrite": "$monai_unetpp.bundle.to_bool(@overwrite, 'overwrite')"}, ...]
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        resume: bool | str = False,
        overwrite: bool | str = False,
        filenames: Sequence[str] = ("model.pt", "last.ckpt"),
        lock_name: str = "training.lock",
    ) -> None:
        if not filenames:
            raise ValueError("filenames is empty: name the files of a trained run, e.g. ('model.pt', 'last.ckpt').")
        self.save_dir = Path(save_dir)
        self.resume = to_bool(resume, "resume")
        self.overwrite = to_bool(overwrite, "overwrite")
        self.filenames = [str(name) for name in filenames]
        self.lock = _FolderLock(self.save_dir / lock_name)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)

    # -- events

    def started(self, engine: Engine) -> None:
        error: BaseException | None = None
        if is_main_process():
            try:
                self._prepare(engine)
            except Exception as caught:
                error = caught
        if dist.is_available() and dist.is_initialized():
            outcome = [None if error is None else str(error)]
            dist.broadcast_object_list(outcome, src=0)
            if error is None and outcome[0] is not None:
                raise CheckpointError(outcome[0])
        if error is not None:
            self.lock.release()
            raise error
        for event in (Events.COMPLETED, Events.TERMINATE):  # after the handlers attached before the run started
            if not engine.has_event_handler(self.release, event):
                engine.add_event_handler(event, self.release)

    def release(self, engine: Engine | None = None) -> None:
        """Release the lock (at the end of the run; safe to call more than once)."""
        self.lock.release()

    def _failed(self, engine: Engine, error: BaseException) -> None:
        self.lock.release()
        # ignite re-raises an exception only where no EXCEPTION_RAISED handler is attached: keep it that way
        if [h for h, *_ in engine._event_handlers.get(Events.EXCEPTION_RAISED, [])] == [self._failed]:
            raise error

    # -- the checks

    def _prepare(self, engine: Engine) -> None:
        self._check_writable()
        if fcntl is None:  # pragma: no cover
            logger.warning(f"no folder lock on this platform: nothing stops a second run in {self.save_dir}.")
        else:
            previous = self.lock.acquire()
            if previous.get("pid"):
                logger.warning(
                    f"took over {self.lock.path} from PID {previous['pid']} ({previous.get('host', '?')}), which "
                    "no longer holds it (a finished or killed run)."
                )
        try:
            self._check_overwrite(engine)
            self._remove_stale_temporaries()
        except BaseException:
            self.lock.release()
            raise

    def _check_writable(self) -> None:
        try:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=self.save_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise CheckpointError(
                f"cannot write in the checkpoint folder {self.save_dir} ({error.strerror or error}): the models "
                "could not be saved. Make it writable, or give the run another folder (--ckpt_dir, or "
                "--bundle_root)."
            ) from error

    def _starts_from_model(self, engine: Engine) -> bool:
        """Whether a ``CheckpointLoader`` of ``model.pt`` is attached: the run fine-tunes the model it replaces."""
        from monai.handlers import CheckpointLoader

        model = (self.save_dir / self.filenames[0]).resolve()
        for handler, *_ in getattr(engine, "_event_handlers", {}).get(Events.STARTED, []):
            handler = getattr(handler, "__self__", handler)
            if isinstance(handler, CheckpointLoader) and Path(str(handler.load_path)).resolve() == model:
                return True
        return False

    def _check_overwrite(self, engine: Engine) -> None:
        existing = [self.save_dir / name for name in self.filenames if (self.save_dir / name).exists()]
        if not existing:
            return
        names = " and ".join(str(p) for p in existing)
        if self.resume:
            return
        if self.overwrite:
            logger.warning(f"overwrite is set: this run replaces {names} as it saves its own.")
            return
        if self._starts_from_model(engine):
            logger.info(f"this run starts from {existing[0]} and replaces {names} as it saves its own.")
            return
        # the training state (the files after the model, last.ckpt) is what a resume continues
        resumable = any((self.save_dir / name).exists() for name in self.filenames[1:])
        resume = (
            "Pass --resume true to continue that run (with --epochs N to train it longer), or --overwrite true"
            if resumable
            else f"It holds no training state to resume ({', '.join(self.filenames[1:])}): pass --overwrite true"
        )
        raise CheckpointError(
            f"{names} already hold{'s' if len(existing) == 1 else ''} the results of an earlier training run, which "
            f"this run would replace. {resume} to train a new model in its place; or give this run another folder "
            "(--ckpt_dir, or --bundle_root)."
        )

    def _remove_stale_temporaries(self) -> None:
        patterns = [f".{name}.*.tmp" for name in self.filenames] + [".write-test.*.tmp"]
        for pattern in patterns:
            for stale in sorted(self.save_dir.glob(pattern)):
                stale.unlink(missing_ok=True)
                logger.warning(f"removed {stale}, the temporary file of an interrupted save.")
