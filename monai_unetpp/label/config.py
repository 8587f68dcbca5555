# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""A MONAI Label ``TaskConfig`` that adds a UNet++ segmentation model to a radiology-style app."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

from ..networks.unetplusplus import DEFAULT_FEATURES, UNetPlusPlus
from ..runtime import AUTO
from .defaults import ROI_SIZE, SW_BATCH_SIZE, TARGET_SPACING
from .infer import UNetPlusPlusInferTask
from .train import UNetPlusPlusTrainTask

__all__ = ["UNetPlusPlusSegmentation", "parse_labels"]


def parse_labels(text: str) -> dict[str, int]:
    """Labels from text: a JSON object ``{"liver": 1, "tumor": 2}`` or names ``liver,tumor`` (values 1, 2, ...)."""
    text = text.strip()
    if text.startswith("{"):
        labels = {str(k): int(v) for k, v in json.loads(text).items()}
    else:
        labels = {name.strip(): n for n, name in enumerate(text.split(","), start=1) if name.strip()}
    labels.pop("background", None)
    if not labels or min(labels.values()) < 1 or len(set(labels.values())) != len(labels):
        raise ValueError(
            f"labels must name at least one structure with distinct values >= 1 (0 is background), got {text!r}; "
            'e.g. "liver,tumor" or \'{"liver": 1, "tumor": 2}\'.'
        )
    return labels


class UNetPlusPlusSegmentation(TaskConfig):
    """UNet++ segmentation model for a MONAI Label radiology-style app: an infer task and a train task.

    The class attributes are the model's defaults; an app's config file may override them, and so may
    ``--conf unetpp_<attribute> <value>`` at server start (JSON values, labels also as ``name,name``), e.g.
    ``--conf unetpp_labels spleen,liver --conf unetpp_features '[16,32,64,128]' --conf unetpp_sw_batch_size 2``
    (no spaces: the ``monailabel`` script splits its arguments on them).

    ``sw_batch_size`` is the number of sliding windows per forward pass of inference; ``inference_backend``
    (``"auto"``: OpenVINO on a server without a GPU where it is installed, else PyTorch; ``"torch"``,
    ``"openvino"``) and ``inference_precision`` (``"auto"``: bf16 where OpenVINO runs it natively, else fp32;
    ``"fp32"``, ``"bf16"``, ``"int8"``) are those of :py:class:`monai_unetpp.UNetPlusPlusInferer`, chosen by
    measurement (benchmarks/README.md); ``restrict_images`` (True)
    makes the tasks refuse image files outside the server's datastore (``--conf unetpp_restrict_images false``
    lifts it).

    Model files live in the app's ``model`` folder: ``pretrained_<name>.pt`` (optional, a checkpoint to start
    from) and ``<name>.pt`` (published by training). Inference and training use the published model when there is
    one, else the pretrained one; without either, inference runs the untrained network and training starts from
    scratch.

    MONAI Label finds an app's configs by their direct ``TaskConfig`` base, so an app declares the model as
    ``class SegmentationUNetPP(UNetPlusPlusSegmentation, TaskConfig)`` in ``lib/configs/<name>.py``;
    ``python -m monai_unetpp.label.make_app`` writes that file.
    """

    labels: dict[str, int] = {"foreground": 1}
    features: Sequence[int] = DEFAULT_FEATURES
    deep_supervision: bool = True
    roi_size: Sequence[int] = ROI_SIZE
    target_spacing: Sequence[float] = TARGET_SPACING
    intensity_range: Sequence[float] | None = None
    inference_mode: str = "final"
    inference_depth: int | None = None
    sw_batch_size: int = SW_BATCH_SIZE
    inference_backend: str = AUTO
    inference_precision: str = AUTO
    restrict_images: bool = True

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        labels = conf.get("unetpp_labels")
        self.labels = parse_labels(labels) if labels else dict(type(self).labels)
        if conf.get("unetpp_pruning_depth") and not conf.get("unetpp_inference_depth"):
            message = "--conf unetpp_pruning_depth is deprecated: use unetpp_inference_depth"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            conf = {**conf, "unetpp_inference_depth": conf["unetpp_pruning_depth"]}
        if getattr(self, "pruning_depth", None) is not None and self.inference_depth is None:
            warnings.warn("the pruning_depth attribute is deprecated: set inference_depth", DeprecationWarning, 2)
            self.inference_depth = self.pruning_depth
        for key in ("features", "roi_size", "target_spacing", "intensity_range", "inference_depth", "sw_batch_size"):
            if conf.get(f"unetpp_{key}"):
                setattr(self, key, json.loads(conf[f"unetpp_{key}"]))
        for key in ("inference_mode", "inference_backend", "inference_precision"):
            if conf.get(f"unetpp_{key}"):
                setattr(self, key, conf[f"unetpp_{key}"])
        if conf.get("unetpp_deep_supervision"):
            self.deep_supervision = strtobool(conf["unetpp_deep_supervision"])
        if conf.get("unetpp_restrict_images"):
            self.restrict_images = strtobool(conf["unetpp_restrict_images"])

        self.path = [os.path.join(model_dir, f"pretrained_{name}.pt"), os.path.join(model_dir, f"{name}.pt")]
        self.network = UNetPlusPlus(
            spatial_dims=len(self.roi_size),
            in_channels=1,
            out_channels=len(self.labels) + 1,
            features=self.features,
            deep_supervision=self.deep_supervision,
        )

    def infer(self) -> InferTask:
        return UNetPlusPlusInferTask(
            path=self.path,
            network=self.network,
            labels=self.labels,
            roi_size=self.roi_size,
            target_spacing=self.target_spacing,
            intensity_range=self.intensity_range,
            inference_mode=self.inference_mode,
            inference_depth=self.inference_depth,
            sw_batch_size=self.sw_batch_size,
            inference_backend=self.inference_backend,
            inference_precision=self.inference_precision,
            restrict_images=self.restrict_images,
            preload=strtobool(self.conf.get("preload", "false")),
        )

    def trainer(self) -> TrainTask:
        pretrained, published = self.path
        return UNetPlusPlusTrainTask(
            model_dir=os.path.join(self.model_dir, self.name),
            network=self.network,
            labels=self.labels,
            roi_size=self.roi_size,
            target_spacing=self.target_spacing,
            intensity_range=self.intensity_range,
            restrict_images=self.restrict_images,
            load_path=published if os.path.exists(published) else pretrained,
            publish_path=published,
        )
