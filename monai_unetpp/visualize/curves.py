# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Training curves: loss and validation metrics as a PNG, refreshed while an ignite engine runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from ..utils import is_main_process
from ._figure import new_figure, save_figure

__all__ = ["CurvePlotHandler", "plot_curves"]


def plot_curves(
    filename: str | os.PathLike,
    epoch_loss: Mapping[int, float],
    metrics: Mapping[str, Mapping[int, float]],
    iteration_loss: Sequence[tuple[float, float]] = (),
    title: str | None = None,
    width: int = 1000,
    height: int = 400,
) -> Path:
    """Write a ``width`` x ``height`` PNG: loss by epoch on the left, metrics by epoch on the right.

    Args:
        filename: the PNG to write (atomically; parent folders are created).
        epoch_loss: mean training loss by epoch (1-based).
        metrics: metric name -> {epoch: value}, e.g. ``{"val_mean_dice": {2: 0.71, 4: 0.80}}``.
        iteration_loss: ``(epoch position, loss)`` per iteration, drawn faintly behind the epoch means; the
            position of iteration ``i`` of an epoch of ``n`` is ``epoch - 1 + i / n``.
        title: a title above both plots.
        width, height: PNG size in pixels. Defaults to 1000 x 400.

    Returns:
        The path written.
    """
    fig = new_figure(width, height)
    loss_ax, metric_ax = fig.subplots(1, 2)
    if iteration_loss:
        x, y = zip(*iteration_loss, strict=True)
        loss_ax.plot(x, y, color="tab:blue", alpha=0.3, linewidth=0.8, label="iteration")
    if epoch_loss:
        epochs = sorted(epoch_loss)
        loss_ax.plot(epochs, [epoch_loss[e] for e in epochs], "o-", color="tab:blue", markersize=3, label="epoch mean")
        loss_ax.legend(fontsize=8)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="training loss")
    for name, values in metrics.items():
        epochs = sorted(values)
        metric_ax.plot(epochs, [values[e] for e in epochs], "o-", markersize=3, label=name)
    if metrics:
        metric_ax.legend(fontsize=8)
    metric_ax.set(xlabel="epoch", ylabel="value", title="validation")
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, filename)


def _scalars(name: str, value: Any) -> Iterator[tuple[str, float]]:
    """Numbers in an engine metric: a scalar as is, a vector (e.g. per-class Dice) as ``name k`` per element."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield name, float(value)
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        flat = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float).ravel()
        if flat.size == 1:
            yield name, float(flat[0])
        else:
            yield from ((f"{name} {k}", float(v)) for k, v in enumerate(flat))


class CurvePlotHandler:
    """Ignite handler keeping a PNG of the training loss and the validation metrics up to date.

    Attach it to the trainer. It records the loss every iteration and rewrites ``{output_dir}/{filename}`` after
    every training epoch and, when an ``evaluator`` is given, after every validation run (whose metrics it reads
    from ``evaluator.state.metrics`` at the trainer's epoch). Without an evaluator it plots the trainer's own
    ``engine.state.metrics``. Each write is atomic; in a ``torch.distributed`` job only rank 0 writes.

    Args:
        output_dir: folder of the PNG, e.g. the bundle's ``output_dir`` beside the TensorBoard logs.
        filename: PNG file name. Defaults to ``"training_curves.png"``.
        evaluator: the validation engine (e.g. ``SupervisedEvaluator``) run by ``ValidationHandler``, or None.
        metric_names: the metrics to plot; None plots every numeric one.
        output_transform: gets the loss out of ``engine.state.output``; None means
            ``from_engine(["loss"], first=True)``, as MONAI's ``StatsHandler`` in bundles.
        title: a title above the plots.
        width, height: PNG size in pixels. Defaults to 1000 x 400.

    Examples::

        >>> CurvePlotHandler(output_dir="runs", evaluator=evaluator).attach(trainer)

    In a bundle's ``train.json`` ``train#handlers``::

        {"_target_": "monai_unetpp.visualize.CurvePlotHandler", "output_dir": "@output_dir",
         "evaluator": "@validate#evaluator"}
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "training_curves.png",
        evaluator: Engine | None = None,
        metric_names: Sequence[str] | None = None,
        output_transform: Callable | None = None,
        title: str | None = None,
        width: int = 1000,
        height: int = 400,
    ) -> None:
        self.filename = Path(output_dir) / filename
        self.evaluator = evaluator
        self.metric_names = None if metric_names is None else list(metric_names)
        self.output_transform = output_transform or from_engine(["loss"], first=True)
        self.title = title
        self.size = {"width": int(width), "height": int(height)}
        self.iteration_loss: list[tuple[float, float]] = []
        self.epoch_loss: dict[int, float] = {}
        self.metrics: dict[str, dict[int, float]] = {}
        self._epoch_sum = 0.0
        self._epoch_count = 0

    def attach(self, engine: Engine) -> None:
        """Register with the trainer ``engine`` (and with ``evaluator`` for its metrics)."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.validation_completed)

    def iteration_completed(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        value = float(loss.detach().cpu() if isinstance(loss, torch.Tensor) else loss)
        epoch_length = engine.state.epoch_length or 1
        position = engine.state.epoch - 1 + ((engine.state.iteration - 1) % epoch_length + 1) / epoch_length
        self.iteration_loss.append((position, value))
        self._epoch_sum += value
        self._epoch_count += 1

    def epoch_completed(self, engine: Engine) -> None:
        if self._epoch_count:
            self.epoch_loss[engine.state.epoch] = self._epoch_sum / self._epoch_count
        self._epoch_sum, self._epoch_count = 0.0, 0
        if self.evaluator is None:
            self._record(engine.state.metrics, engine.state.epoch)
        self.write()

    def validation_completed(self, evaluator: Engine) -> None:
        # ValidationHandler runs the evaluator with the trainer's epoch as its global epoch
        self._record(evaluator.state.metrics, evaluator.state.epoch)
        self.write()

    def _record(self, metrics: Mapping[str, Any], epoch: int) -> None:
        for name, value in metrics.items():
            if self.metric_names is None or name in self.metric_names:
                for label, number in _scalars(name, value):
                    self.metrics.setdefault(label, {})[epoch] = number

    def write(self) -> None:
        """Rewrite the PNG from everything recorded so far (rank 0 only)."""
        if is_main_process():
            plot_curves(self.filename, self.epoch_loss, self.metrics, self.iteration_loss, self.title, **self.size)
