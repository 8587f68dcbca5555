# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Sliding-window inference that picks UNet++'s inference mode and pruning depth."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

from .networks.migration import heads_final_first
from .networks.unetplusplus import INFERENCE_MODES, reduce_heads
from .runtime import AUTO, compiled_networks, openvino_window_runner, resolve_backend, torch_precision
from .utils import unwrap_network

__all__ = ["UNetPlusPlusInferer", "unwrap_network"]


class UNetPlusPlusInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` that runs a UNet++ with a chosen ``inference_mode`` and ``inference_depth`` and
    stitches one output.

    The network is asked for one Tensor per window (``network(x, inference_mode=..., inference_depth=...)``), so a
    single full-volume buffer is stitched whatever the number of heads: MONAI's sliding window would otherwise
    keep one buffer per head. A network that still returns a list (e.g. left in training mode) is reduced per window
    with :func:`monai_unetpp.networks.reduce_heads`. Settings left as None use the network's own, so the caller
    never edits the network; the network validates them (:py:meth:`UNetPlusPlus.check_inference_depth`).

    Args:
        roi_size: the window size.
        sw_batch_size: windows per forward pass. Defaults to 1.
        overlap: window overlap. Defaults to 0.25.
        inference_mode: ``"final"`` (the paper's fast mode), ``"mean"`` (accurate mode) or None for the network's
            setting.
        inference_depth: pruning depth ``k`` (UNet++ L_k) or None for the network's setting.
        blend_mode: how overlapping windows are blended: SlidingWindowInferer's ``mode``, which is also
            this object's ``mode`` attribute. Defaults to ``"constant"``.
        backend: ``"torch"`` (the network itself), ``"openvino"`` or ``"auto"`` (OpenVINO where it is installed and
            the image is on the CPU, else PyTorch: the faster by measurement, see
            :func:`monai_unetpp.runtime.resolve_backend`). ``"openvino"``: the network converted to OpenVINO for the
            window shape and compiled for the CPU, once per weights, window shape, precision and settings, and kept
            for later calls and volumes (:data:`monai_unetpp.runtime.compiled_networks`); the same label maps as
            PyTorch fp32 up to float rounding (``benchmarks/README.md``). Without the openvino package it warns
            (``pip install "openvino>=2025.1"``, the ``openvino`` extra) and runs PyTorch. Defaults to ``"torch"``.
        precision: ``"fp32"``, ``"bf16"`` (PyTorch: autocast on the windows' device; OpenVINO: its bf16
            inference precision, where the CPU has bf16 instructions), ``"int8"`` (OpenVINO only, with NNCF:
            quantized once, calibrated on the windows of the first image it runs on, then reused for later images;
            fp32 with a warning where NNCF is missing) or ``"auto"`` (bf16 where OpenVINO runs it natively, else
            fp32). Defaults to ``"fp32"``.
        kwargs: further ``monai.inferers.SlidingWindowInferer`` arguments. The deprecated ``depth`` and ``mode``
            (for ``inference_depth`` and ``inference_mode``) are still accepted for one release, with a warning.

    Examples::

        >>> inferer = UNetPlusPlusInferer(roi_size=(96, 96, 96), sw_batch_size=4, inference_mode="mean")
        >>> net.eval(); seg = inferer(image, net)
        >>> fast = UNetPlusPlusInferer(roi_size=96, inference_depth=2)(image, net)   # UNet++ L2
        >>> cpu = UNetPlusPlusInferer(roi_size=96, sw_batch_size=4, backend="openvino")(image, net)
        >>> int8 = UNetPlusPlusInferer(roi_size=96, sw_batch_size=4, backend="openvino", precision="int8")
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: Sequence[float] | float = 0.25,
        inference_mode: str | None = None,
        inference_depth: int | None = None,
        blend_mode: str = "constant",
        backend: str = "torch",
        precision: str = "fp32",
        **kwargs: Any,
    ) -> None:
        for old, new in (("mode", "inference_mode"), ("depth", "inference_depth")):
            if old in kwargs:
                warnings.warn(
                    f"UNetPlusPlusInferer({old}=...) is deprecated: use {new}=... (the blend mode of the windows is "
                    "blend_mode=...). The old name goes in the next release.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                value = kwargs.pop(old)
                if new == "inference_mode":
                    inference_mode = value if inference_mode is None else inference_mode
                else:
                    inference_depth = value if inference_depth is None else inference_depth
        if inference_mode is not None and inference_mode not in INFERENCE_MODES:
            raise ValueError(
                f"inference_mode must be one of {list(INFERENCE_MODES)} or None, got {inference_mode!r} (the blend "
                "mode of the windows is blend_mode=..., as SlidingWindowInferer's mode=...)."
            )
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a whole number of windows >= 1, got {sw_batch_size!r}.")
        if inference_depth is not None:
            try:
                whole = not isinstance(inference_depth, bool) and int(inference_depth) == inference_depth
            except (TypeError, ValueError):
                whole = False
            if not whole:
                raise ValueError(
                    f"inference_depth must be a whole number, or None for the network's own, got {inference_depth!r}."
                )
            inference_depth = int(inference_depth)
        super().__init__(roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=blend_mode, **kwargs)
        self.inference_mode = inference_mode
        self.inference_depth = inference_depth
        self.requested_runtime = (backend, precision)
        # the runtime for images on the CPU, checked now: "torch" where OpenVINO is missing and fp32 where NNCF is
        # missing for int8, each with a warning; "auto" looks at the images' device again at each call
        self.backend, self.precision = resolve_backend(backend, precision)

    def _settings(self, network: Callable) -> dict[str, Any]:
        """The per-call settings for ``network``, checked by the network once before any window runs."""
        settings: dict[str, Any] = {}
        if self.inference_mode is not None:
            settings["inference_mode"] = self.inference_mode
        if self.inference_depth is not None:
            settings["inference_depth"] = self.inference_depth
        net = unwrap_network(network)
        depth = settings.get("inference_depth", getattr(net, "inference_depth", None))
        if getattr(net, "training", False) and depth is not None and depth != getattr(net, "depth", depth):
            raise ValueError(
                f"inference_depth={depth} prunes in eval mode only: the {type(net).__name__} is in training mode, "
                "where it returns every head (and runs dropout and batch norm as in training); call network.eval() "
                "before inference."
            )
        if settings and not hasattr(net, "inference_depth"):
            raise ValueError(
                f"inference settings {settings} apply to a UNetPlusPlus (or its TorchScript), got "
                f"{type(network).__name__}; leave them None for other networks."
            )
        if "inference_mode" in settings and hasattr(net, "check_inference_mode"):
            net.check_inference_mode(settings["inference_mode"])
        if "inference_depth" in settings and hasattr(net, "check_inference_depth"):
            net.check_inference_depth(settings["inference_depth"])
        return settings

    def windows(self, inputs: torch.Tensor) -> torch.Tensor:
        """The windows this inferer cuts from ``inputs`` ``(batch, channels, *spatial)``, as one float32 CPU Tensor
        ``(n, channels, *roi)``: what int8 calibrates on. Nothing runs on them."""
        cut: list[torch.Tensor] = []

        def keep(window: torch.Tensor) -> torch.Tensor:
            cut.append(torch.as_tensor(window).detach().to("cpu", torch.float32))
            return window[:, :1] * 0

        super().__call__(inputs, keep)
        return torch.cat(cut)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        settings = self._settings(network)
        given_twice = sorted(set(settings) & set(kwargs))
        if given_twice:
            raise ValueError(
                f"{', '.join(given_twice)} set on the inferer and again in its call; pass each in one place."
            )
        mode = self.inference_mode or getattr(unwrap_network(network), "inference_mode", "final")
        backend, precision = self.backend, self.precision
        if AUTO in self.requested_runtime and inputs.device.type != "cpu":
            backend, precision = resolve_backend(*self.requested_runtime, device=inputs.device.type)
        if backend == "openvino":
            if args or kwargs:
                raise ValueError(
                    "backend='openvino' runs the network on the window alone; extra network arguments "
                    f"{list(args) + list(kwargs)} are not supported: drop them or use backend='torch'."
                )
            if not isinstance(unwrap_network(network), torch.nn.Module):
                raise ValueError(f"backend='openvino' converts a torch.nn.Module, got {type(network).__name__}.")
            run = openvino_window_runner(
                network,
                precision,
                self.inference_mode,
                self.inference_depth,
                compiled_networks,
                calibration=lambda: self.windows(inputs),
            )
            return super().__call__(inputs, run)

        def one_output(window: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
            with torch_precision(precision, window.device):
                out = network(window, *a, **kw, **settings)
            out = reduce_heads(heads_final_first(network, out), mode) if isinstance(out, (list, tuple)) else out
            return out.float() if precision == "bf16" else out

        return super().__call__(inputs, one_output, *args, **kwargs)
