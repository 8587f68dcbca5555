# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The paper's H(.), the block of every UNet++ node: two convolutions, each followed by norm, dropout and activation.

The blocks take their input in parts, ``[X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})]``, as the paper concatenates
them. The fast paths of :py:mod:`monai_unetpp.networks.fast_paths` (no concatenation, oneDNN for batch-1 3D
convolutions, a faster instance norm) compute the same and can be switched off, which gives MONAI's plain layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import ADN
from monai.networks.layers.factories import Conv
from monai.utils import ensure_tuple_rep

from .fast_paths import InstanceNorm, conv_nd, enabled_for, switch

__all__ = ["ConvBlock", "ConvNormAct"]


class ConvNormAct(nn.Module):
    """Convolution, then MONAI's ADN (norm, dropout, activation): ``monai.networks.blocks.Convolution`` with
    stride 1 and "same" padding, whose input may come in parts.

    ``forward([a, b, ...])`` equals ``Convolution(torch.cat([a, b, ...], dim=1))``. The modules are ``conv``
    (``nn.ConvNd`` with the total input width) and ``adn`` (``ADN``), so parameters and ``state_dict`` keys are
    those of ``Convolution``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: total input width (the sum of the parts' widths).
        out_channels: output width.
        kernel_size: odd kernel size, or one per spatial axis (e.g. ``(3, 3, 1)``).
        act: activation type and arguments, or None.
        norm: normalisation type and arguments, or None.
        dropout: dropout ratio or MONAI dropout spec, or None.
        bias: whether the convolution has a bias.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        act: str | tuple | None,
        norm: str | tuple | None,
        dropout: float | tuple | None,
        bias: bool,
    ) -> None:
        super().__init__()
        kernel = ensure_tuple_rep(kernel_size, spatial_dims)
        self.padding = [k // 2 for k in kernel]
        self.conv = Conv["conv", spatial_dims](
            in_channels, out_channels, kernel, padding=tuple(self.padding), bias=bias
        )
        self.adn = ADN("NDA", out_channels, act=act, norm=norm, norm_dim=spatial_dims, dropout=dropout, dropout_dim=1)
        if hasattr(self.adn, "N"):
            self.adn.N = InstanceNorm.replacing(self.adn.N)
        self.concat_free = switch("concat_free_conv")
        self.onednn_batch1 = switch("onednn_batch1_conv3d")

    def forward(self, parts: list[torch.Tensor], last_part_conv: torch.Tensor | None = None) -> torch.Tensor:
        """The block on the concatenation of ``parts``; ``last_part_conv``, if given, is the convolution of one more
        part, computed by the caller (the folded upsampling), that is added before the norm."""
        if len(parts) > 1 and not enabled_for(parts[0], self.concat_free):
            parts = [torch.cat(parts, dim=1)]
        weight = self.conv.weight
        onednn = enabled_for(parts[0], self.onednn_batch1)
        # a convolution of a concatenation is the sum of the convolutions of its parts with slices of the weight
        y = conv_nd(parts[0], weight.narrow(1, 0, parts[0].shape[1]), self.conv.bias, self.padding, onednn)
        start = parts[0].shape[1]
        for part in parts[1:]:
            # in place: the partial sum is no tensor that autograd saved
            y = y.add_(conv_nd(part, weight.narrow(1, start, part.shape[1]), None, self.padding, onednn))
            start += part.shape[1]
        if last_part_conv is not None:
            y = y.add_(last_part_conv)
        return self.adn(y)


class ConvBlock(nn.Module):
    """The paper's H(.) for every node: two :class:`ConvNormAct` of the same ``kernel_size``, ``conv_0`` reading the
    node's inputs, then ``conv_1``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        act: str | tuple | None,
        norm: str | tuple | None,
        dropout: float | tuple | None,
        bias: bool,
    ) -> None:
        super().__init__()
        layer_args = {"kernel_size": kernel_size, "act": act, "norm": norm, "dropout": dropout, "bias": bias}
        self.conv_0 = ConvNormAct(spatial_dims, in_channels, out_channels, **layer_args)
        self.conv_1 = ConvNormAct(spatial_dims, out_channels, out_channels, **layer_args)

    def forward(self, parts: list[torch.Tensor], last_part_conv: torch.Tensor | None = None) -> torch.Tensor:
        """The node's inputs are ``parts``, then, if given, one more part whose convolution by ``conv_0`` is
        ``last_part_conv`` (see :meth:`ConvNormAct.forward`)."""
        return self.conv_1([self.conv_0(parts, last_part_conv)])
