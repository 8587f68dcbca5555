# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Deep-supervision losses for UNet++ heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

__all__ = ["DeepSupervisionDiceCELoss"]


class DeepSupervisionDiceCELoss(DeepSupervisionLoss):
    """DiceCE on every deep-supervision head, weighted as MONAI's ``DeepSupervisionLoss``.

    Accepts the list that :py:class:`monai_unetpp.UNetPlusPlus` returns in training (final head first, so the
    final head gets the largest weight with ``weight_mode="exp"``) or a single Tensor.

    Multi-class (the default): softmax Dice + cross-entropy against an index label ``(B, 1, ...)``.
    The paper's binary loss, ``0.5 * BCE + Dice`` with a sigmoid on every head (Zhou et al. 2018, Sec. 2), is
    ``DeepSupervisionDiceCELoss(binary=True)``: one output channel per foreground structure, sigmoid Dice and
    ``BCEWithLogits`` weighted 1 : 0.5.

    Args:
        weight_mode: ``"exp"`` (1, 0.5, 0.25, ...), ``"same"`` (1, 1, ...) or ``"two"`` (1, 0.5, 0.5, ...).
            Defaults to ``"exp"``.
        weights: explicit per-head weights, final head first; overrides ``weight_mode`` when it covers every head.
        binary: use the paper's sigmoid BCE + Dice instead of softmax DiceCE. Defaults to False.
        dice_ce_kwargs: further ``monai.losses.DiceCELoss`` arguments (``include_background``, ``lambda_dice``,
            ``lambda_ce``, ``smooth_nr`` ...); they override the defaults chosen by ``binary``.

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
        **dice_ce_kwargs,
    ) -> None:
        if weight_mode not in ("exp", "same", "two"):
            raise ValueError(f"weight_mode must be 'exp', 'same' or 'two', got {weight_mode!r}.")
        if binary:
            defaults = {"sigmoid": True, "lambda_dice": 1.0, "lambda_ce": 0.5}
        else:
            defaults = {"softmax": True, "to_onehot_y": True}
        super().__init__(
            DiceCELoss(**{**defaults, **dice_ce_kwargs}),
            weight_mode=weight_mode,
            weights=None if weights is None else [float(w) for w in weights],
        )

    def forward(self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:  # noqa: A002
        """
        Args:
            input: logits ``(B, C, ...)`` or a list of them, final head first.
            target: label ``(B, 1, ...)`` of class indices (multi-class) or ``(B, C, ...)`` binary masks.
        """
        if isinstance(input, (list, tuple)) and len(input) == 0:
            raise ValueError("DeepSupervisionDiceCELoss got an empty list of heads; pass the network's output.")
        return super().forward(input, target)
