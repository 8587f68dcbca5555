# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""MONAI Label train task for a UNet++ segmentation model."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    SelectItemsd,
    Spacingd,
    SpatialPadd,
)
from monailabel.config import settings
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

from ..inferers import UNetPlusPlusInferer
from ..losses import DeepSupervisionDiceCELoss
from ..networks.unetplusplus import UNetPlusPlus
from ..transforms import SelectHeadd, SequentialLabelsd, scale_intensity
from .defaults import ROI_SIZE, TARGET_SPACING
from .guards import check_datastore_path, check_training_pairs

__all__ = ["UNetPlusPlusTrainTask"]


def path_to_sqlite_uri(model_dir: str) -> str:
    """The MLflow tracking URI of a SQLite database ``mlruns.db`` in ``model_dir``."""
    return "sqlite:///" + os.path.abspath(os.path.join(model_dir, "mlruns.db"))


class UNetPlusPlusTrainTask(BasicTrainTask):
    """Train (or fine-tune) a UNet++ on the labels saved in a MONAI Label datastore.

    Each run starts from a fresh copy of ``network`` loaded with the latest checkpoint (the run's own
    ``model.pt``, else ``load_path``), trains on patches of ``roi_size`` sampled half on foreground, with
    :py:class:`monai_unetpp.DeepSupervisionDiceCELoss` on every head, and publishes the best model to
    ``publish_path``, from which the infer task reloads it.

    Request options besides MONAI Label's (``max_epochs``, ``val_split``, ``train_batch_size`` ...):
    ``learning_rate`` (AdamW, default 3e-4) and ``num_samples`` (patches per image and iteration, default 2).

    Before the split into training and validation, every (image, label) pair is checked
    (:func:`monai_unetpp.label.guards.check_training_pairs`: files complete and readable, label on the image's grid,
    integer label values >= 0, files inside the server's datastore): a bad pair (a submitted label of the wrong shape,
    say) is left out with a warning naming its image id; with no usable pair left the run fails with a
    ``TrainingDataError`` listing the problems. The lists a request may give (``train_ds``, ``val_ds``) are checked
    the same way.

    Args:
        model_dir: folder for the runs' checkpoints and statistics.
        network: the ``UNetPlusPlus`` to train; it is copied, never modified.
        labels: label name -> voxel value in the saved labels, background (0) excluded.
        roi_size: training patch size. Defaults to :data:`monai_unetpp.label.defaults.ROI_SIZE`.
        target_spacing: voxel size the network works at. Defaults to
            :data:`monai_unetpp.label.defaults.TARGET_SPACING`.
        intensity_range: ``(a_min, a_max)`` window scaled to [0, 1], or None for z-score normalisation.
        description: text shown by the viewer.
        restrict_images: leave out pairs with a file outside the server's datastore (a request's ``train_ds`` or
            ``val_ds`` may name any server path). Defaults to True.
        kwargs: further ``BasicTrainTask`` arguments (``load_path``, ``publish_path``, ``config`` ...).
    """

    def __init__(
        self,
        model_dir: str,
        network: UNetPlusPlus,
        labels: dict[str, int],
        roi_size: Sequence[int] = ROI_SIZE,
        target_spacing: Sequence[float] = TARGET_SPACING,
        intensity_range: Sequence[float] | None = None,
        description: str = "Train the UNet++ segmentation model",
        restrict_images: bool = True,
        **kwargs: Any,
    ) -> None:
        if network.out_channels != len(labels) + 1:
            raise ValueError(
                f"the network has {network.out_channels} output channels but {len(labels)} labels are declared; "
                "out_channels must be the number of labels + 1 (background)."
            )
        config = {"learning_rate": 3e-4, "num_samples": 2, **kwargs.pop("config", {})}
        kwargs.setdefault("amp", torch.cuda.is_available())
        # MONAI Label's default MLflow location is a file store, which MLflow 3.13+ refuses: use SQLite instead.
        kwargs.setdefault("tracking_uri", settings.MONAI_LABEL_TRACKING_URI or path_to_sqlite_uri(model_dir))
        super().__init__(model_dir, description, config=config, labels=labels, **kwargs)
        self._template = network
        self._label_values = dict(labels)
        self.roi_size = tuple(int(s) for s in roi_size)
        self.target_spacing = tuple(float(s) for s in target_spacing)
        self.intensity_range = intensity_range
        self.restrict_images = bool(restrict_images)

    def _checked(self, datalist: Any, split: str, required: bool) -> list[dict]:
        return check_training_pairs(
            datalist,
            values=self._label_values.values(),
            spatial_dims=self._template.spatial_dims,
            split=split,
            required=required,
            restrict=self.restrict_images,
        )

    def partition_datalist(self, context: Context, shuffle: bool = False) -> tuple[list, list]:
        # MONAI Label trains on every submitted label as it is: check each pair first, leave out the bad ones
        request = context.request
        for key in ("train_ds", "val_ds"):  # a datalist file named by the request must lie in the datastore too
            if self.restrict_images and isinstance(request.get(key), str):
                check_datastore_path(request[key], what=f"{key} file")
        external = {key: self._load_external_ds(request.get(key)) for key in ("train_ds", "val_ds")}
        context.datalist = self._checked(context.datalist or [], "training", required=not external["train_ds"])
        for key, split in (("train_ds", "training (train_ds)"), ("val_ds", "validation (val_ds)")):
            if external[key]:
                request[key] = self._checked(external[key], split, required=key == "train_ds")
        return super().partition_datalist(context, shuffle)

    def network(self, context: Context) -> UNetPlusPlus:
        # A copy: the same template is shared with the infer task, which must not see half-trained weights.
        return copy.deepcopy(self._template)

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        lr = float(context.request.get("learning_rate", self._config["learning_rate"]))
        return torch.optim.AdamW(context.network.parameters(), lr=lr, weight_decay=1e-5)

    def loss_function(self, context: Context) -> DeepSupervisionDiceCELoss:
        return DeepSupervisionDiceCELoss(squared_pred=True, batch=True)

    def _load_and_resample(self, context: Context) -> list[Callable]:
        return [
            LoadImaged(keys=("image", "label")),
            EnsureChannelFirstd(keys=("image", "label")),
            SequentialLabelsd(keys="label", values=self._label_values.values()),
            EnsureTyped(keys=("image", "label"), device=context.device),
            Orientationd(keys=("image", "label"), axcodes="RAS"),
            Spacingd(keys=("image", "label"), pixdim=self.target_spacing, mode=("bilinear", "nearest")),
            scale_intensity(self.intensity_range),
        ]

    def train_pre_transforms(self, context: Context) -> list[Callable]:
        num_samples = int(context.request.get("num_samples", self._config["num_samples"]))
        return [
            *self._load_and_resample(context),
            SpatialPadd(keys=("image", "label"), spatial_size=self.roi_size),
            RandCropByPosNegLabeld(
                keys=("image", "label"),
                label_key="label",
                spatial_size=self.roi_size,
                pos=1,
                neg=1,
                num_samples=num_samples,
                image_key="image",
            ),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
            SelectItemsd(keys=("image", "label")),
        ]

    def train_post_transforms(self, context: Context) -> list[Callable]:
        classes = len(self._label_values) + 1
        return [
            SelectHeadd(keys="pred"),
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=classes),
        ]

    def val_pre_transforms(self, context: Context) -> list[Callable]:
        return [*self._load_and_resample(context), SelectItemsd(keys=("image", "label"))]

    def val_inferer(self, context: Context) -> Inferer:
        return UNetPlusPlusInferer(roi_size=self.roi_size, sw_batch_size=1, overlap=0.25)
