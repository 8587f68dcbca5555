# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""An evaluator handler that writes a PNG montage per case, for bundles' ``evaluate`` and ``inference`` configs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine
from monai.data import decollate_batch
from monai.engines.utils import IterationEvents

from ..networks.unetplusplus import reduce_heads
from .montage import SaveMontaged

__all__ = ["MontageHandler"]


class MontageHandler:
    """Writes :py:class:`SaveMontaged` PNGs of every case an evaluator sees: image, label (if any) and prediction.

    It runs right after the forward pass (``IterationEvents.FORWARD_COMPLETED``), where image, label and prediction
    still share the preprocessed grid, before the evaluator's post-processing inverts or saves anything. Being a
    handler rather than a post-processing transform, it leaves a bundle's ``postprocessing`` as it was: tools that
    run only a bundle's pre-processing, inferer and post-processing (MONAI Label's bundle tasks, for one) write no
    pictures. In a distributed run each rank writes the montages of its own cases.

    Args:
        output_dir: folder for the PNGs (``{case}_{output_postfix}.png``).
        class_names: names by class index, background first, or ``{index: name}`` (a bundle's ``channel_def``).
        image_key, pred_key, label_key: keys of the evaluator output; the label is drawn where the batch has one.
        montage_options: further :py:class:`SaveMontaged` arguments (``slice_mode``, ``panel_size``, ``alpha`` ...).

    Examples::

        "handlers": [{"_target_": "monai_unetpp.visualize.MontageHandler", "output_dir": "@output_dir",
                      "class_names": "@_meta_::network_data_format::outputs::pred::channel_def"}]
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str = "label",
        **montage_options: Any,
    ) -> None:
        self.keys = (image_key, pred_key, label_key)
        self.saver = SaveMontaged(
            keys=(image_key, pred_key),
            output_dir=output_dir,
            label_key=label_key,
            class_names=class_names,
            **montage_options,
        )

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        image_key, pred_key, label_key = self.keys
        output = engine.state.output
        pred = output[pred_key]
        if isinstance(pred, (list, tuple)):  # deep-supervision heads, final head first
            pred = reduce_heads(list(pred), "final")
        cases: dict[str, list] = {image_key: decollate_batch(output[image_key]), pred_key: decollate_batch(pred)}
        if output.get(label_key) is not None:
            cases[label_key] = decollate_batch(output[label_key])
        for case in zip(*cases.values(), strict=True):
            self.saver(dict(zip(cases, (item.detach().cpu() for item in case), strict=True)))
