# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite handlers that bundle configs can list among an engine's handlers."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as IgniteProgressBar

from ..utils import is_main_process, to_bool

__all__ = ["ClassMetricsReport", "ProgressBar"]


class ProgressBar:
    """ignite's tqdm ``ProgressBar`` with a one-argument ``attach``, as MONAI engines call their handlers.

    Shows the iterations of each epoch (and the given entries of the engine output, e.g. the loss); only rank 0
    draws in a distributed run.

    Args:
        output_keys: entries of ``engine.state.output`` to show (from its first item when the output is a list of
            per-sample dicts, as after decollation), e.g. ``"loss"``. Defaults to none.
        persist: keep each finished bar on screen. Defaults to False.
        enabled: draw the bar; ``"true"``/``"false"`` strings from the command line are accepted. Defaults to True.
        bar_kwargs: further ``ignite.handlers.ProgressBar`` / ``tqdm`` arguments (``desc``, ``ncols`` ...).

    Examples::

        "train#handlers": [{"_target_": "monai_unetpp.bundle.ProgressBar", "output_keys": "loss"}]
    """

    def __init__(
        self,
        output_keys: Sequence[str] | str | None = None,
        persist: bool = False,
        enabled: bool | str = True,
        **bar_kwargs: Any,
    ) -> None:
        self.enabled = to_bool(enabled, "enabled")
        self.output_keys = [output_keys] if isinstance(output_keys, str) else list(output_keys or [])
        self.bar = IgniteProgressBar(persist=persist, **bar_kwargs)

    def _show(self, output: Any) -> dict[str, float]:
        first = output[0] if isinstance(output, (list, tuple)) else output
        return {key: float(first[key]) for key in self.output_keys}

    def attach(self, engine: Engine) -> None:
        if not self.enabled or not is_main_process():
            return
        self.bar.attach(engine, output_transform=self._show if self.output_keys else None)


class ClassMetricsReport:
    """Per-class means of an evaluator's metrics, logged as a table and saved as CSV when the evaluation completes.

    MONAI metric handlers keep a ``(cases, classes)`` table in ``engine.state.metric_details`` (``save_details=True``,
    their default); this handler averages it per class (ignoring NaN, e.g. a class absent from both prediction and
    label) and names the classes, so that ``evaluate`` prints e.g. ``organ  val_mean_dice 0.951  val_hd95 1.41``.
    In a distributed run rank 0 writes.

    Args:
        save_dir: folder of the CSV file.
        metric_names: names of the metrics to report, as given to the evaluator.
        class_names: names of all classes, background first: a list, or a ``{"0": "background", ...}`` mapping as
            the ``channel_def`` of a bundle's metadata.
        include_background: whether the metrics include the background class (as the metrics' own argument).
            Defaults to False.
        filename: the CSV file name. Defaults to ``"metrics_per_class.csv"``.

    Examples::

        "validate#handlers": [{
            "_target_": "monai_unetpp.bundle.ClassMetricsReport", "save_dir": "@output_dir",
            "metric_names": ["val_mean_dice", "val_hd95"],
            "class_names": "@_meta_::network_data_format::outputs::pred::channel_def"}]
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        metric_names: Sequence[str] | str,
        class_names: Sequence[str] | Mapping[str, str],
        include_background: bool = False,
        filename: str = "metrics_per_class.csv",
    ) -> None:
        self.path = Path(save_dir) / filename
        self.metric_names = [metric_names] if isinstance(metric_names, str) else list(metric_names)
        if isinstance(class_names, Mapping):
            class_names = [class_names[k] for k in sorted(class_names, key=int)]
        self.class_names = list(class_names) if include_background else list(class_names)[1:]
        self.logger = logging.getLogger(__name__)
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _class_means(self, engine: Engine, name: str) -> list[float]:
        details = getattr(engine.state, "metric_details", {}).get(name)
        if details is None:
            raise ValueError(
                f"metric {name!r} has no per-case details; give the evaluator this metric with save_details=True."
            )
        table = torch.as_tensor(details, dtype=torch.float64).reshape(len(details), -1)
        if table.shape[1] != len(self.class_names):
            raise ValueError(
                f"metric {name!r} has {table.shape[1]} classes but {len(self.class_names)} class names were given "
                f"({self.class_names}); check class_names and include_background."
            )
        return [float(column[~column.isnan()].mean()) if (~column.isnan()).any() else math.nan for column in table.T]

    def __call__(self, engine: Engine) -> None:
        means = {name: self._class_means(engine, name) for name in self.metric_names}
        self.rows = [
            {"class": cls, **{name: values[index] for name, values in means.items()}}
            for index, cls in enumerate(self.class_names)
        ]
        width = max(len(c) for c in [*self.class_names, "class"])
        lines = [f"{'class':<{width}}  " + "  ".join(f"{n:>14}" for n in self.metric_names)]
        lines += [
            f"{row['class']:<{width}}  " + "  ".join(f"{row[n]:>14.4f}" for n in self.metric_names) for row in self.rows
        ]
        self.logger.info("per-class metrics (mean over cases):\n" + "\n".join(lines))
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["class", *self.metric_names])
            writer.writeheader()
            writer.writerows(self.rows)
