# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""MONAI Label infer task for a UNet++ segmentation model."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.transforms import (
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    MapLabelValued,
    Orientationd,
    SqueezeDimd,
)
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from ..inferers import UNetPlusPlusInferer
from ..networks.unetplusplus import INFERENCE_MODES, UNetPlusPlus
from ..runtime import AUTO, BACKENDS, PRECISIONS, resolve_backend
from ..transforms import PathSafeSpacingd, scale_intensity
from .defaults import ROI_SIZE, SW_BATCH_SIZE, TARGET_SPACING
from .guards import LoadDatastoreImaged, RequestError

__all__ = ["UNetPlusPlusInferTask"]


def _request_value(data: dict | None, key: str, default: Any) -> Any:
    """A request option. MONAI Label fills options the request leaves out with the task's config, where a list
    offers choices to the viewer and its first item is the default."""
    value = data.get(key, default) if data else default
    return value[0] if isinstance(value, (list, tuple)) else value


def _request_depth(data: dict | None, default: Any) -> Any:
    """The request's ``inference_depth``, or its former name ``pruning_depth`` that older clients send.

    MONAI Label fills the options a request leaves out from the task's config, so an ``inference_depth`` that is
    still the config's list of choices was not sent: then a ``pruning_depth`` of the request counts."""
    sent = data is not None and not isinstance(data.get("inference_depth", []), (list, tuple))
    if data and not sent and "pruning_depth" in data:
        return _request_value(data, "pruning_depth", default)
    return _request_value(data, "inference_depth", default)


def _positive_int(value: Any, name: str) -> int:
    """A whole number >= 1 (a request may send it as text), else a ``RequestError`` (a ``ValueError``, answered
    with HTTP 422 by the server) naming the option."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if isinstance(value, bool) or number < 1 or str(number) != str(value).strip():
        raise RequestError(f"{name} must be a whole number >= 1, got {value!r}.")
    return number


class UNetPlusPlusInferTask(BasicInferTask):
    """Automatic segmentation with a UNet++ behind a MONAI Label server.

    Pre-processing: load (:class:`monai_unetpp.label.guards.LoadDatastoreImaged`: a truncated or damaged file, or
    one outside the server's datastore, is answered with an error naming it), channel first, RAS orientation,
    resampling to ``target_spacing``, intensity scaling.
    The logits of :py:class:`monai_unetpp.UNetPlusPlusInferer` are resampled back onto the image's own grid by
    inverting the spatial pre-transforms, then reduced to a label map whose voxels hold the ``labels`` values, so
    the result has the image's shape and affine.

    Two options appear in the viewer's options panel and may be sent with a request: ``inference_mode`` (``"final"``,
    the paper's fast mode, or ``"mean"`` of the deep-supervision heads) and ``inference_depth`` (UNet++ L_k: the
    smaller ``k``, the faster; needs a network trained with deep supervision). A request's ``pruning_depth``, the
    option's former name, is still read for one release.

    Args:
        path: model file(s); the last existing one is loaded (MONAI Label reloads it when it changes).
        network: the ``UNetPlusPlus`` whose ``state_dict`` the model file holds (key ``"model"`` or top level).
        labels: label name -> voxel value, background (0) excluded; output channel ``n`` is the ``n``-th value.
        roi_size: sliding-window size. Defaults to :data:`monai_unetpp.label.defaults.ROI_SIZE`.
        target_spacing: voxel size the network works at. Defaults to
            :data:`monai_unetpp.label.defaults.TARGET_SPACING`.
        intensity_range: ``(a_min, a_max)`` window scaled to [0, 1], or None for z-score normalisation.
        inference_mode: default ``"final"`` or ``"mean"``. Defaults to ``"final"``.
        inference_depth: default pruning depth, or None for the full depth (``pruning_depth``: its deprecated name).
        sw_batch_size: windows per forward pass (a request's ``sw_batch_size`` overrides it). Defaults to
            :data:`monai_unetpp.label.defaults.SW_BATCH_SIZE`.
        inference_backend: default ``"auto"``, ``"torch"`` or ``"openvino"`` (CPU; PyTorch with a warning where
            OpenVINO is not installed), a viewer option. Defaults to ``"auto"``: OpenVINO on a server without a GPU
            where it is installed, the faster from the second request on by measurement (benchmarks/README.md).
        inference_precision: default ``"auto"`` (bf16 where OpenVINO runs it natively, else fp32), ``"fp32"``,
            ``"bf16"`` or ``"int8"`` (OpenVINO only), a viewer option. Defaults to ``"auto"``.
        overlap: sliding-window overlap. Defaults to 0.25.
        description: text shown by the viewer.
        restrict_images: refuse image files outside the server's datastore (MONAI Label 0.8.5 passes an absolute
            server path given as the image id on to the task). Defaults to True.
        kwargs: further ``BasicInferTask`` arguments (``preload``, ``load_strict`` ...).
    """

    def __init__(
        self,
        path: str | Sequence[str],
        network: UNetPlusPlus,
        labels: dict[str, int],
        roi_size: Sequence[int] = ROI_SIZE,
        target_spacing: Sequence[float] = TARGET_SPACING,
        intensity_range: Sequence[float] | None = None,
        inference_mode: str = "final",
        inference_depth: int | None = None,
        sw_batch_size: int = SW_BATCH_SIZE,
        inference_backend: str = AUTO,
        inference_precision: str = AUTO,
        overlap: float = 0.25,
        description: str = "UNet++ automatic segmentation",
        restrict_images: bool = True,
        **kwargs: Any,
    ) -> None:
        if "pruning_depth" in kwargs:
            warnings.warn(
                "UNetPlusPlusInferTask(pruning_depth=...) is deprecated: use inference_depth=...",
                DeprecationWarning,
                stacklevel=2,
            )
            pruning_depth = kwargs.pop("pruning_depth")
            inference_depth = pruning_depth if inference_depth is None else inference_depth
        network.check_inference_mode(inference_mode)
        if len(roi_size) != network.spatial_dims or len(target_spacing) != network.spatial_dims:
            raise ValueError(
                f"roi_size {tuple(roi_size)} and target_spacing {tuple(target_spacing)} need one value per spatial "
                f"dimension of the network ({network.spatial_dims})."
            )
        depths = network.valid_inference_depths()
        default_depth = network.check_inference_depth(network.depth if inference_depth is None else inference_depth)
        modes = [inference_mode] + [m for m in INFERENCE_MODES if m != inference_mode and network.deep_supervision]
        # checked, with a warning once where an explicit choice falls back; "auto" stays, for each request to choose
        backend, precision = resolve_backend(inference_backend, inference_precision)
        inference_backend = inference_backend if inference_backend == AUTO else backend
        inference_precision = inference_precision if inference_precision == AUTO else precision
        backends = [inference_backend] + [b for b in (AUTO, *BACKENDS) if b != inference_backend]
        super().__init__(
            path=path,
            network=network,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=network.spatial_dims,
            description=description,
            roi_size=tuple(roi_size),
            config={
                "inference_mode": modes,
                "inference_depth": [default_depth] + [d for d in depths if d != default_depth],
                "inference_backend": backends,
                "inference_precision": [inference_precision]
                + [p for p in (AUTO, *PRECISIONS) if p != inference_precision],
            },
            **kwargs,
        )
        self.target_spacing = tuple(float(s) for s in target_spacing)
        self.intensity_range = intensity_range
        self.sw_batch_size = _positive_int(sw_batch_size, "sw_batch_size")
        self.overlap = overlap
        self.restrict_images = bool(restrict_images)

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return [
            LoadDatastoreImaged(keys="image", restrict=self.restrict_images),
            EnsureTyped(keys="image", device=data.get("device") if data else None),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            PathSafeSpacingd(keys="image", pixdim=self.target_spacing, mode="bilinear"),
            scale_intensity(self.intensity_range),
        ]

    def inferer(self, data: dict | None = None) -> Inferer:
        config = self.config()
        try:
            # the mode and depth are checked against this network here, not when the windows run: a request's
            # bad value is then answered with HTTP 422 naming it, not with a bare 500
            inference_mode = self.network.check_inference_mode(
                str(_request_value(data, "inference_mode", config["inference_mode"]))
            )
            inference_depth = self.network.check_inference_depth(
                _positive_int(_request_depth(data, config["inference_depth"]), "inference_depth")
            )
            return UNetPlusPlusInferer(
                roi_size=self.roi_size,
                sw_batch_size=_positive_int(_request_value(data, "sw_batch_size", self.sw_batch_size), "sw_batch_size"),
                overlap=float(_request_value(data, "sw_overlap", self.overlap)),
                inference_mode=inference_mode,
                inference_depth=inference_depth,
                backend=str(_request_value(data, "inference_backend", config["inference_backend"])),
                precision=str(_request_value(data, "inference_precision", config["inference_precision"])),
            )
        except ValueError as error:  # a bad option sent with the request
            raise RequestError(str(error)) from error

    def inverse_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        # An empty list asks MONAI Label to invert every invertible pre-transform (orientation and spacing), on
        # the logits: they are interpolated back to the image's grid before the argmax.
        return []

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        values = sorted(self.labels.values())
        return [
            AsDiscreted(keys="pred", argmax=True),
            MapLabelValued(keys="pred", orig_labels=range(len(values) + 1), target_labels=[0, *values]),
            SqueezeDimd(keys="pred", dim=0),
            EnsureTyped(keys="pred", dtype=torch.uint8 if max(values) < 256 else torch.int16, device="cpu"),
        ]
