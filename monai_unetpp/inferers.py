# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Sliding-window inference that picks UNet++'s inference mode and pruning depth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.inferers import SlidingWindowInferer

from .networks.unetplusplus import INFERENCE_MODES

__all__ = ["UNetPlusPlusInferer", "unwrap_network"]


def unwrap_network(network: Callable) -> Callable:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers (the network itself otherwise)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


class UNetPlusPlusInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` that runs a UNet++ in a chosen ``mode`` and pruning ``depth`` and stitches one output.

    The network is asked for one Tensor per window (``network(x, mode=..., depth=...)``), so a single full-volume
    buffer is stitched whatever the number of heads: MONAI's sliding window would otherwise keep one buffer per
    head. A network that still returns a list (e.g. left in training mode) is reduced per window: its first (final)
    head for ``"final"``, the head average for ``"mean"``. ``mode``/``depth`` left as None use the network's own
    settings, so the caller never edits the network.

    Args:
        roi_size: the window size.
        sw_batch_size: windows per forward pass. Defaults to 1.
        overlap: window overlap. Defaults to 0.25.
        mode: ``"final"`` (the paper's fast mode), ``"mean"`` (accurate mode) or None for the network's setting.
        depth: pruning depth ``1..depth`` (UNet++ L_k) or None for the network's setting.
        kwargs: further ``monai.inferers.SlidingWindowInferer`` arguments (``mode`` of blending is ``blend_mode``).

    Examples::

        >>> inferer = UNetPlusPlusInferer(roi_size=(96, 96, 96), sw_batch_size=4, mode="mean")
        >>> net.eval(); seg = inferer(image, net)
        >>> fast = UNetPlusPlusInferer(roi_size=96, depth=2)(image, net)   # UNet++ L2
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: Sequence[float] | float = 0.25,
        mode: str | None = None,
        depth: int | None = None,
        blend_mode: str = "constant",
        **kwargs: Any,
    ) -> None:
        if mode is not None and mode not in INFERENCE_MODES:
            raise ValueError(f"mode must be one of {INFERENCE_MODES} or None, got {mode!r}.")
        if depth is not None and int(depth) < 1:
            raise ValueError(f"depth must be a positive pruning depth or None, got {depth}.")
        super().__init__(roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=blend_mode, **kwargs)
        self.head_mode = mode
        self.depth = None if depth is None else int(depth)

    def _overrides(self, network: Callable) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if self.head_mode is not None:
            overrides["mode"] = self.head_mode
        if self.depth is not None:
            overrides["depth"] = self.depth
        if overrides and not hasattr(unwrap_network(network), "inference_depth"):
            raise ValueError(
                f"mode/depth {overrides} apply to a UNetPlusPlus (or its TorchScript), got {type(network).__name__}; "
                "leave them None for other networks."
            )
        return overrides

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        overrides = self._overrides(network)
        mean = (self.head_mode or getattr(unwrap_network(network), "inference_mode", "final")) == "mean"

        def one_output(window: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
            out = network(window, *a, **kw, **overrides)
            if isinstance(out, (list, tuple)):
                out = torch.stack(list(out)).mean(0) if mean else out[0]
            return out

        return super().__call__(inputs, one_output, *args, **kwargs)
