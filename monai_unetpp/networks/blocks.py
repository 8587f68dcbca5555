# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Building blocks of :py:class:`monai_unetpp.UNetPlusPlus`, written for speed without changing what they compute.

- :class:`ConvNormAct` is MONAI's ``Convolution`` (same modules, same ``state_dict`` keys) whose convolution takes
  a list of inputs: UNet++ feeds every decoder node the concatenation ``[X^{i,0}, ..., X^{i,j-1}, Up(...)]``; a
  convolution of a concatenation is the sum of the convolutions of its parts with the matching slices of the
  weight, so no concatenated copy is ever made or kept for backward.
- :func:`upsampled_conv` folds the 2x deconvolution that feeds a decoder node into that node's convolution: one
  stride-2 transposed convolution of the coarse tensor, without the upsampled tensor.
- :func:`conv_nd` sends the batch-1 3D convolutions that PyTorch would run on its slow CPU kernel to oneDNN.
- :class:`InstanceNorm` computes instance norm on CPU as a group norm with one channel per group.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import ADN
from monai.networks.layers.factories import Conv
from torch.utils.checkpoint import checkpoint

__all__ = ["ConvBlock", "ConvNormAct", "InstanceNorm", "conv_nd", "folding_pays", "upsampled_conv"]


@torch.jit.unused
def _exporting():
    # type: () -> bool
    # (a type comment: TorchScript cannot resolve the postponed annotations of an unused function)
    return torch.compiler.is_exporting()


@torch.jit.unused
def _autocast_on_cpu():
    # type: () -> bool
    # (TorchScript knows only the deprecated torch.is_autocast_cpu_enabled(), and scripted code ignores autocast)
    return torch.is_autocast_enabled("cpu")


def may_specialize_on_shapes() -> bool:
    """Whether this forward may take paths chosen by input shape: yes when eager or scripted, no when traced or
    exported, since an exported graph must serve every input shape."""
    return not torch.jit.is_tracing() and (torch.jit.is_scripting() or not _exporting())


def _takes_slow_cpu_kernel(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # PyTorch runs a float32 CPU convolution on oneDNN only if the batch is larger than 1, N * C * D * H exceeds 20480
    # or the kernel's last two sides exceed 3 (``ConvParams::use_mkldnn`` in aten/src/ATen/native/Convolution.cpp, a
    # threshold tuned for 2D images). A batch-1 3D tensor below it, e.g. every level under the first of a 32^3 patch,
    # otherwise runs the im2col kernel ``slow_conv3d`` whose forward and backward are 2.5-3.5x slower here.
    return (
        # tested first: a test of a shape would fix that shape in an exported graph
        may_specialize_on_shapes()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        # autocast runs the convolution in bfloat16, always on oneDNN
        and (torch.jit.is_scripting() or not _autocast_on_cpu())
        and x.dim() == 5
        and x.shape[0] == 1
        and x.shape[1] * x.shape[2] * x.shape[3] <= 20480
        and (weight.shape[-1] <= 3 or weight.shape[-2] <= 3)
        # oneDNN's direct kernels work on blocks of 16 channels per group; smaller groups get its gemm kernels,
        # which were several times slower than PyTorch's own kernels on a busy 2-core machine
        and x.shape[1] % 16 == 0
        and weight.shape[0] % 32 == 0
    )


def conv_nd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int]) -> torch.Tensor:
    """Stride-1 convolution of ``x`` (1D, 2D or 3D by its rank) with ``weight``, ``bias`` and zero ``padding``.

    For a batch-1 3D input that PyTorch would send to its slow CPU kernel, the same convolution is run as a
    2-group convolution over ``[x, x]``: group ``g`` applies output filters ``g * out / 2 ...`` to its copy of
    ``x``, which is exactly the plain convolution, and ``groups > 1`` selects oneDNN. The copy of ``x`` is small
    since only small tensors take that path.
    """
    if x.dim() == 5:
        if _takes_slow_cpu_kernel(x, weight):
            return F.conv3d(torch.cat([x, x], dim=1), weight, bias, padding=padding, groups=2)
        return F.conv3d(x, weight, bias, padding=padding)
    if x.dim() == 4:
        return F.conv2d(x, weight, bias, padding=padding)
    return F.conv1d(x, weight, bias, padding=padding)


def _conv_transpose(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: list[int]) -> torch.Tensor:
    if x.dim() == 5:
        return F.conv_transpose3d(x, weight, stride=stride, padding=padding)
    if x.dim() == 4:
        return F.conv_transpose2d(x, weight, stride=stride, padding=padding)
    return F.conv_transpose1d(x, weight, stride=stride, padding=padding)


def folding_pays(below: torch.Tensor, up_channels: int, out_channels: int, kernel_size: int) -> bool:
    """Whether :func:`upsampled_conv` needs fewer multiply-adds than a deconvolution of ``below`` to
    ``up_channels`` followed by a ``kernel_size`` convolution to ``out_channels``: it saves them per output voxel
    but pays once per call for its kernel, which dominates for small inputs of wide deep levels."""
    dims = below.dim() - 2
    below_channels = below.shape[1]
    fine_voxels = below.numel() // below_channels * 2**dims  # over the batch
    folded = fine_voxels * below_channels * out_channels * ((kernel_size + 1) // 2) ** dims
    folded += below_channels * up_channels * out_channels * (2 * kernel_size) ** dims  # the folded kernel
    plain = fine_voxels * up_channels * (out_channels * kernel_size**dims + below_channels)
    return folded < plain


def upsampled_conv(
    below: torch.Tensor,
    up_weight: torch.Tensor,
    up_bias: torch.Tensor | None,
    weight: torch.Tensor,
    padding: list[int],
) -> torch.Tensor:
    """``conv_nd(deconv(below), weight)`` without the upsampled tensor, where ``deconv`` is a transposed
    convolution with kernel 2 and stride 2 (``up_weight``, ``up_bias``), as MONAI's ``UpSample(mode="deconv")``.

    Along each axis a k-tap convolution of a 2x deconvolution is a (k+1)-tap transposed convolution of the coarse
    tensor with stride 2, whose kernel is the full convolution of the two kernels (the deconvolution's channels
    summed out). Per output voxel, in 3D with k = 3, that is 8 multiply-adds per pair of channels (below, out)
    instead of 27 per pair (up, out) plus the deconvolution's 1 per pair (below, up), and neither the upsampled
    tensor nor its copy for backward exists. The deconvolution's bias is constant inside the volume, so its
    convolution is the convolution of a field of ones, which keeps the zero padding at the borders exact.
    """
    spatial = list(range(2, weight.dim()))
    # the full convolution of the two kernels, as a transposed convolution of the deconvolution's weight
    # (in: below, channels: up) with the flipped weight in a transposed convolution's (up, out, *k) layout
    kernel = _conv_transpose(up_weight, weight.transpose(0, 1).flip(spatial), 1, [0] * len(spatial))
    y = _conv_transpose(below, kernel, 2, padding)
    if up_bias is not None:
        shape = [1, -1] + [1] * len(spatial)
        bias_kernel = (weight * up_bias.view(shape)).sum(dim=1)  # (out, *k)
        y = y.add_(_conv_of_ones(bias_kernel, list(y.shape[2:]), padding))
    return y


def _conv_of_ones(kernel: torch.Tensor, shape: list[int], padding: list[int]) -> torch.Tensor:
    """The zero-padded convolution of a field of ones of spatial ``shape`` with ``kernel`` ``(out, *k)``: a sum of
    the kernel's taps that fall inside the volume, which is separable, so it is built one axis at a time."""
    field = kernel
    for axis in range(len(shape)):
        taps = kernel.shape[axis + 1]
        reach = torch.arange(shape[axis], device=kernel.device).unsqueeze(1) + torch.arange(taps, device=kernel.device)
        reach = reach - padding[axis]
        inside = ((reach >= 0) & (reach < shape[axis])).to(kernel.dtype)  # (size, taps)
        field = torch.matmul(field.movedim(axis + 1, -1), inside.t()).movedim(-1, axis + 1)
    return field


class InstanceNorm(nn.modules.instancenorm._InstanceNorm):
    """``nn.InstanceNorm{1,2,3}d`` (same arguments, parameters and results) that is faster on CPU.

    PyTorch's CPU instance norm is a batch norm over a ``(1, N * C, ...)`` view with the affine parameters repeated
    N times, 2-5x slower forward and backward than ``group_norm`` with one channel per group, which normalises
    the same sets of values. Running statistics (``track_running_stats=True``) and other devices keep
    ``F.instance_norm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not self.track_running_stats and x.dim() > 2:
            return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
        return F.instance_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )


def _fast_instance_norm(norm: nn.Module) -> nn.Module:
    """An :class:`InstanceNorm` holding the same parameters and buffers as ``norm`` if it is an instance norm."""
    if not isinstance(norm, nn.modules.instancenorm._InstanceNorm) or isinstance(norm, InstanceNorm):
        return norm
    fast = InstanceNorm(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    fast.load_state_dict(norm.state_dict())
    return fast


class ConvNormAct(nn.Module):
    """Convolution, then MONAI's ADN (norm, dropout, activation): ``monai.networks.blocks.Convolution`` with
    stride 1 and "same" padding, whose input may come in parts.

    ``forward([a, b, ...])`` equals ``Convolution(torch.cat([a, b, ...], dim=1))``: it adds the convolutions of
    the parts with the matching input-channel slices of the one weight. The modules are ``conv`` (``nn.ConvNd``
    with the total input width) and ``adn`` (``ADN``), so parameters and ``state_dict`` keys are those of
    ``Convolution``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: total input width (the sum of the parts' widths).
        out_channels: output width.
        kernel_size: odd kernel size.
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
        kernel_size: int,
        act: str | tuple | None,
        norm: str | tuple | None,
        dropout: float | tuple | None,
        bias: bool,
    ) -> None:
        super().__init__()
        self.conv = Conv["conv", spatial_dims](
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )
        self.adn = ADN("NDA", out_channels, act=act, norm=norm, norm_dim=spatial_dims, dropout=dropout, dropout_dim=1)
        if hasattr(self.adn, "N"):
            self.adn.N = _fast_instance_norm(self.adn.N)
        self.padding = [kernel_size // 2] * spatial_dims

    def forward(
        self,
        parts: list[torch.Tensor],
        below: torch.Tensor | None = None,
        up_weight: torch.Tensor | None = None,
        up_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``parts`` are the first inputs; with ``below``, the last input is ``below`` upsampled by a 2x
        deconvolution with ``up_weight`` and ``up_bias`` (see :func:`upsampled_conv`)."""
        weight = self.conv.weight
        y = conv_nd(parts[0], weight.narrow(1, 0, parts[0].shape[1]), self.conv.bias, self.padding)
        start = parts[0].shape[1]
        for part in parts[1:]:
            # in place: the partial sum is no tensor that autograd saved
            y = y.add_(conv_nd(part, weight.narrow(1, start, part.shape[1]), None, self.padding))
            start += part.shape[1]
        if below is not None:
            if up_weight is None:
                raise ValueError("below needs up_weight, the weight of the deconvolution that upsamples it.")
            up_part = weight.narrow(1, start, up_weight.shape[1])
            y = y.add_(upsampled_conv(below, up_weight, up_bias, up_part, self.padding))
        return self.adn(y)


class ConvBlock(nn.Module):
    """The paper's H(.) for every node: two :class:`ConvNormAct` (``conv_0`` reads the node's inputs, ``conv_1``).

    With ``checkpointing=True`` a training forward keeps only the block's inputs and recomputes the rest in
    backward (``torch.utils.checkpoint``): about a third more compute for a fraction of the activation memory.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        act: str | tuple | None,
        norm: str | tuple | None,
        dropout: float | tuple | None,
        bias: bool,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        layer_args = {"kernel_size": kernel_size, "act": act, "norm": norm, "dropout": dropout, "bias": bias}
        self.conv_0 = ConvNormAct(spatial_dims, in_channels, out_channels, **layer_args)
        self.conv_1 = ConvNormAct(spatial_dims, out_channels, out_channels, **layer_args)
        self.checkpointing = checkpointing

    def _forward(
        self,
        parts: list[torch.Tensor],
        below: torch.Tensor | None,
        up_weight: torch.Tensor | None,
        up_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        return self.conv_1([self.conv_0(parts, below, up_weight, up_bias)])

    @torch.jit.unused
    def _checkpointed(
        self,
        parts: list[torch.Tensor],
        below: torch.Tensor | None,
        up_weight: torch.Tensor | None,
        up_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        return checkpoint(self._forward, parts, below, up_weight, up_bias, use_reentrant=False)

    def forward(
        self,
        parts: list[torch.Tensor],
        below: torch.Tensor | None = None,
        up_weight: torch.Tensor | None = None,
        up_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The node's inputs are ``parts``, then, if given, ``below`` upsampled (see :meth:`ConvNormAct.forward`)."""
        if self.checkpointing and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(parts, below, up_weight, up_bias)
        return self._forward(parts, below, up_weight, up_bias)
