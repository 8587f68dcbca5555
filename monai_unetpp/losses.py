# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Deep-supervision losses for UNet++ heads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from .utils import to_bool

__all__ = ["DeepSupervisionDiceCELoss"]

_NAME = "DeepSupervisionDiceCELoss"


class DeepSupervisionDiceCELoss(DeepSupervisionLoss):
    """DiceCE on every deep-supervision head, weighted as MONAI's ``DeepSupervisionLoss``.

    Accepts the list that :py:class:`monai_unetpp.UNetPlusPlus` returns in training (final head first, so the
    final head gets the largest weight with ``weight_mode="exp"``) or a single Tensor.

    Multi-class (the default): softmax Dice + cross-entropy against an index label ``(B, 1, ...)``.
    The paper's binary loss, ``0.5 * BCE + Dice`` with a sigmoid on every head (Zhou et al. 2018, Sec. 2), is
    ``DeepSupervisionDiceCELoss(binary=True)``: one output channel per foreground structure, sigmoid Dice and
    ``BCEWithLogits`` weighted 1 : 0.5.

    The label is checked on every call (``check_labels``), once for all heads, so that a wrong label fails with a
    ``ValueError`` naming the shapes or values instead of training on something else:

    - every head has the label's batch size and spatial shape: UNet++ heads are all at the input's shape, so the
      label is never resized (MONAI's ``DeepSupervisionLoss`` would silently resize a float label of another shape);
    - an index label (the multi-class default, ``to_onehot_y=True``) has one channel of whole numbers in
      ``0..C-1`` for ``C`` output channels: 0.5 would be rounded down to 0, and a value of ``C`` or more fails
      deep inside one-hot encoding;
    - a mask target (``binary=True``, or ``to_onehot_y=False``) has ``C`` channels of values in ``[0, 1]``. Soft
      targets (probabilities, label smoothing) are allowed: BCE and soft Dice are defined for them and nothing is
      rounded.

    The value check is one ``aminmax`` over the label (and, for float index labels, one whole-number test), with
    one device-to-host copy of three numbers per call. The checks keep working under ``torch.compile``: the shape
    checks become guards, the value check one graph break before the loss (``fullgraph=True`` cannot compile
    MONAI's ``DiceCELoss`` anyway, checks or not). Pass ``check_labels=False`` to drop them, for example to capture
    a CUDA graph.

    Args:
        weight_mode: ``"exp"`` (1, 0.5, 0.25, ...), ``"same"`` (1, 1, ...) or ``"two"`` (1, 0.5, 0.5, ...).
            Defaults to ``"exp"``.
        weights: explicit per-head weights, final head first; overrides ``weight_mode`` when it covers every head.
        binary: use the paper's sigmoid BCE + Dice instead of softmax DiceCE. Defaults to False.
        check_labels: check the label's shape and values on every call (see above). Defaults to True.
        dice_ce_kwargs: further ``monai.losses.DiceCELoss`` arguments (``include_background``, ``lambda_dice``,
            ``lambda_ce``, ``smooth_nr`` ...); they override the defaults chosen by ``binary``.

    Raises:
        ValueError: from a call, for an empty list of heads, heads of different shapes, or a label whose batch size,
            spatial shape, channels or values do not fit the logits; the message names them and the fix.

    Examples::

        >>> loss = DeepSupervisionDiceCELoss()                            # softmax DiceCE, exp weights
        >>> loss = DeepSupervisionDiceCELoss(binary=True)                 # the paper's BCE + Dice
        >>> loss = DeepSupervisionDiceCELoss(weights=[1.0, 1.0, 1.0, 1.0])  # the paper's equal weights
        >>> value = loss(net(image), label)                               # net in training mode
    """

    def __init__(
        self,
        weight_mode: str = "exp",
        weights: Sequence[float] | None = None,
        binary: bool = False,
        check_labels: bool = True,
        **dice_ce_kwargs,
    ) -> None:
        if weight_mode not in ("exp", "same", "two"):
            raise ValueError(f"weight_mode must be 'exp', 'same' or 'two', got {weight_mode!r}.")
        binary = to_bool(binary, "binary")
        check_labels = to_bool(check_labels, "check_labels")
        if binary:
            defaults = {"sigmoid": True, "lambda_dice": 1.0, "lambda_ce": 0.5}
        else:
            defaults = {"softmax": True, "to_onehot_y": True}
        options = {**defaults, **dice_ce_kwargs}
        super().__init__(
            DiceCELoss(**options),
            weight_mode=weight_mode,
            weights=None if weights is None else _weights(weights),
        )
        self.binary = binary
        self.index_labels = bool(options.get("to_onehot_y", False))
        self.check_labels = check_labels

    def forward(self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:  # noqa: A002
        """
        Args:
            input: logits ``(B, C, ...)`` or a list of them, final head first.
            target: label ``(B, 1, ...)`` of class indices (multi-class) or ``(B, C, ...)`` binary masks.
        """
        heads = list(input) if isinstance(input, (list, tuple)) else [input]
        if not heads:
            raise ValueError(f"{_NAME} got an empty list of heads; pass the network's output.")
        if self.weights is not None and len(self.weights) < len(heads):
            # MONAI's DeepSupervisionLoss would fall back to weight_mode for every head
            raise ValueError(
                f"{_NAME} has {len(self.weights)} weights for {len(heads)} heads; give one weight per head, final "
                "first, or weights=None for weight_mode."
            )
        if self.check_labels:
            self._check_target(heads, target)
        return super().forward(input, target)

    def _check_target(self, heads: list[torch.Tensor], target: torch.Tensor) -> None:
        """Raise a ValueError for a label that does not fit the heads (once per call, for all heads)."""
        first = heads[0]
        for index, head in enumerate(heads):
            if not isinstance(head, torch.Tensor):
                raise ValueError(f"{_NAME}: head {index} is a {type(head).__name__}, not a Tensor of logits.")
            if head.shape != first.shape:
                raise ValueError(
                    f"{_NAME}: head {index} has shape {tuple(head.shape)} but head 0 has {tuple(first.shape)}; "
                    "every UNet++ head is at the input's shape, so pass the network's own list of heads."
                )
        if not isinstance(target, torch.Tensor):
            raise ValueError(f"{_NAME}: the label is a {type(target).__name__}; pass a Tensor.")
        logits, label = tuple(first.shape), tuple(target.shape)
        channels = logits[1] if len(logits) > 1 else 0
        wanted = "(B, 1, ...) of class indices" if self.index_labels else f"(B, {channels}, ...) of masks in [0, 1]"
        if target.ndim != first.ndim:
            raise ValueError(
                f"{_NAME}: the label has shape {label} but the logits have {logits}: the label needs the logits' "
                f"{first.ndim} dimensions, {wanted} (for a label without channel axis, pass label[:, None])."
            )
        if label[0] != logits[0]:
            raise ValueError(
                f"{_NAME}: the label's batch size {label[0]} (shape {label}) differs from the logits' {logits[0]} "
                f"(shape {logits}); pass the labels of the same batch."
            )
        if label[2:] != logits[2:]:
            raise ValueError(
                f"{_NAME}: the label's spatial shape {label[2:]} (shape {label}) differs from the logits' "
                f"{logits[2:]} (shape {logits}); every UNet++ head is at the input's shape, so the label must be "
                "too: crop or resample image and label together (nearest-neighbour for the label)."
            )
        if self.index_labels and label[1] != 1:
            raise ValueError(
                f"{_NAME}: the label has {label[1]} channels (shape {label}) but index labels need one, "
                f"{wanted}; for one-hot or probability targets with {channels} channels pass to_onehot_y=False."
            )
        if not self.index_labels and label[1] != channels:
            raise ValueError(
                f"{_NAME}: the target has {label[1]} channel(s) (shape {label}) but the logits have {channels} "
                f"(shape {logits}); {'binary=True' if self.binary else 'to_onehot_y=False'} needs {wanted}, one "
                "mask per output channel (an index label converts with monai.networks.one_hot)."
            )
        _check_label_values(target, channels, self.index_labels)


def _check_label_values(target: torch.Tensor, num_classes: int, index_labels: bool) -> None:
    """One pass over the label: its range, and for float index labels whether every value is whole."""
    values = target.detach()
    if values.numel() == 0:
        return
    if values.dtype == torch.bool:
        values = values.to(torch.uint8)
    if values.is_complex():
        raise ValueError(f"{_NAME}: the label has complex dtype {values.dtype}; pass real values.")
    low, high = torch.aminmax(values)
    fractional = (
        torch.any(values != torch.round(values))
        if index_labels and values.is_floating_point()
        else torch.zeros((), dtype=torch.bool, device=values.device)
    )
    low, high, fractional = torch.stack([low.double(), high.double(), fractional.double()]).tolist()  # one sync
    top = num_classes - 1 if index_labels else 1
    if not fractional and low >= 0 and high <= top:  # NaN compares False: it falls through to the errors
        return
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"{_NAME}: the label holds NaN; check the label files and transforms.")
    if fractional:
        bad = values[values != torch.round(values)]
        raise ValueError(
            f"{_NAME}: the label holds non-integer values ({_shown(bad)}) but multi-class labels are class "
            f"indices 0..{top}, and these would be rounded down (0.5 -> 0); resample labels with nearest-neighbour "
            "interpolation (mode='nearest'), or for soft targets pass to_onehot_y=False with probabilities of "
            f"shape (B, {num_classes}, ...)."
        )
    bad = values[(values < 0) | (values > top)]
    if index_labels:
        fix = f"remap the labels to 0..{top} (an ignore value such as -1 or 255 is no class)"
        if math.isfinite(high) and high > top:
            fix = f"if they are classes, set out_channels (num_classes) to at least {int(high) + 1}; else {fix}"
        raise ValueError(
            f"{_NAME}: label values [{_shown(bad)}] are outside the classes 0..{top} of the {num_classes}-channel "
            f"logits; {fix}."
        )
    raise ValueError(
        f"{_NAME}: target values [{_shown(bad)}] are outside [0, 1], but mask targets (one sigmoid channel per "
        "structure with binary=True, or to_onehot_y=False) are probabilities; convert an index label with "
        "monai.networks.one_hot, or use the default multi-class loss for class indices."
    )


def _shown(values: torch.Tensor, limit: int = 6) -> str:
    unique = torch.unique(values.flatten()).tolist()
    text = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in unique[:limit])
    return text + (", ..." if len(unique) > limit else "")


def _weights(weights: Any) -> list[float]:
    """Per-head weights as floats, or a ValueError naming the argument."""
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        values = []
    if isinstance(weights, str) or not values or any(w < 0 for w in values):
        raise ValueError(
            f"weights must be a list of non-negative numbers, one per head (final first), got {weights!r}."
        )
    return values
