# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""UNet++: the nested U-Net with dense skip connections, deep supervision and real pruned inference.

Zhou, Rahman Siddiquee, Tajbakhsh, Liang. "UNet++: A Nested U-Net Architecture for Medical Image
Segmentation". DLMIA 2018, https://arxiv.org/abs/1807.10165 (and the TMI 2019 extension,
https://arxiv.org/abs/1912.05074, for pruning).
"""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.networks.blocks import UpSample
from monai.networks.layers.factories import Conv, Pool, split_args
from monai.utils import convert_to_dst_type
from torch.utils.checkpoint import checkpoint

from ..utils import to_bool
from .blocks import ConvBlock
from .fast_paths import UpsamplingFold, switch

__all__ = [
    "DEFAULT_FEATURES",
    "INFERENCE_MODES",
    "PRESETS",
    "UNetPlusPlus",
    "UNetPP",
    "UnetPlusPlus",
    "reduce_heads",
    "unetplusplus",
]

#: How eval forward turns the heads into one output: "final", the head on X^{0,k} (the paper's fast mode), or
#: "mean", the average of the heads on X^{0,1..k} (its accurate mode).
INFERENCE_MODES = ("final", "mean")

#: Widths per level of the default network: MONAI ``BasicUNetPlusPlus``'s.
DEFAULT_FEATURES = (32, 32, 64, 128, 256)

#: Named architectures, merged with the caller's keyword arguments (the caller wins).
PRESETS: dict[str, dict] = {
    # The paper's reference code (MrGiovanni/UNetPlusPlus, Keras): filters 32..512, each node two 3x3 conv + ReLU
    # without normalisation, 2x2 transposed convolutions to the level's width, 1x1 heads whose sigmoid belongs to
    # the loss (``sigmoid=True``) and post-processing.
    "paper": {
        "features": (32, 64, 128, 256, 512),
        "act": "relu",
        "norm": None,
        "bias": True,
        "upsample": "deconv",
        "kernel_size": 3,
        "deep_supervision": True,
    },
}


def reduce_heads(heads: list[torch.Tensor], inference_mode: str = "final") -> torch.Tensor:
    """One output from deep-supervision heads listed final first: the final head for ``"final"``, their average
    for ``"mean"`` (see :data:`INFERENCE_MODES`)."""
    if not torch.jit.is_scripting():
        _check_mode_name(inference_mode)  # the network's scripted forward has checked its own
        if isinstance(heads, torch.Tensor):
            raise TypeError(
                "reduce_heads takes a list of head outputs, got one Tensor: that is already a single output (a "
                "network's output in eval mode); use it as it is."
            )
    if len(heads) == 0:
        raise ValueError("reduce_heads got no heads; pass the network's list of head outputs.")
    if inference_mode == "final" or len(heads) == 1:
        return heads[0]
    return torch.stack(heads, dim=0).mean(dim=0)


@torch.jit.unused
def _check_mode_name(inference_mode: str) -> None:
    if inference_mode not in INFERENCE_MODES:
        raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got {inference_mode!r}.")


def _renamed(old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of a keyword argument renamed from ``old`` to ``new``, warning where the old name was used."""
    if old_value is None:
        return new_value
    warnings.warn(f"{old}= is deprecated: use {new}= (the old name goes in the next release).", DeprecationWarning, 3)
    if new_value is not None and new_value != old_value:
        raise ValueError(f"got both {new}={new_value!r} and its deprecated name {old}={old_value!r}; pass {new} only.")
    return old_value


@torch.jit.unused
def _warn_renamed(old: str, new: str, old_value: Any = None, new_value: Any = None) -> None:
    """Warn of a deprecated argument name; refuse it beside its new name with another value."""
    warnings.warn(f"{old} is deprecated: use {new}= (the old name goes in the next release).", DeprecationWarning, 3)
    if new_value is not None and old_value is not None and new_value != old_value:
        raise ValueError(f"got {new}={new_value!r} and the deprecated {old} with {old_value!r}; pass {new} only.")


@torch.jit.unused
def _check_whole_depth(inference_depth: Any, depth: int) -> None:
    if isinstance(inference_depth, bool) or not isinstance(inference_depth, int):
        raise ValueError(
            f"inference_depth must be a whole number in 1..{depth} for this network, got {inference_depth!r}."
        )


def _whole_number(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    return int(value)


def _axis_values(name: str, value: Any, spatial_dims: int, fix: str) -> tuple[int, ...]:
    """``value`` (an int, or one int per spatial axis) as one positive whole number per axis."""
    values = (value,) * spatial_dims if not isinstance(value, Sequence) or isinstance(value, str) else tuple(value)
    if len(values) != spatial_dims or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(
            f"{name} must be a positive whole number or {spatial_dims} of them (one per spatial axis), "
            f"got {value!r}; {fix}"
        )
    return values


def _level_strides(strides: Sequence[Any] | None, spatial_dims: int, depth: int) -> tuple[tuple[int, ...], ...]:
    """Per downsampling, its factor per axis: ``strides`` checked, or 2 on every axis where it is None."""
    if strides is None:
        return ((2,) * spatial_dims,) * depth
    if not isinstance(strides, Sequence) or isinstance(strides, str) or len(strides) != depth:
        example = [(2,) * (spatial_dims - 1) + (1,)] + [2] * (depth - 1)
        raise ValueError(
            f"strides must have one entry per downsampling, len(features) - 1 = {depth} of them (DynUNet's strides "
            f"without its leading 1), each an int or one int per axis, e.g. strides={example}; got {strides!r}."
        )
    fix = f"pass 2, or one factor per axis such as {(2,) * (spatial_dims - 1) + (1,)}."
    return tuple(_axis_values(f"strides[{i}]", level, spatial_dims, fix) for i, level in enumerate(strides))


def _level_kernel_sizes(kernel_size: Any, spatial_dims: int, levels: int) -> tuple[tuple[int, ...], ...]:
    """Per level, the convolutions' kernel size per axis: ``kernel_size`` checked (odd sizes only)."""
    per_level = isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str)
    if per_level and len(kernel_size) != levels:
        raise ValueError(
            f"kernel_size must be one odd size for every level or one entry per level, len(features) = {levels} of "
            f"them, got {len(kernel_size)}: {kernel_size!r}. For one per-axis kernel on every level repeat it, "
            f"e.g. kernel_size=[{tuple(kernel_size)!r}] * {levels}."
        )
    flat = per_level and all(isinstance(k, int) for k in kernel_size)
    if flat and levels == spatial_dims and len(set(kernel_size)) > 1:
        # (3, 3, 1) for a 3-level 3D network: one size per level (DynUNet's reading) or one per axis?
        per_level_example = [(kernel_size[0],) * spatial_dims, *kernel_size[1:]]
        raise ValueError(
            f"kernel_size={kernel_size!r} is ambiguous for {levels} levels in {spatial_dims}D: write one per-axis "
            f"kernel for every level as kernel_size=[{tuple(kernel_size)!r}] * {levels}, or one size per level with "
            f"a tuple entry, e.g. kernel_size={per_level_example}."
        )
    fix = f"pass an odd size such as 3, or one per axis such as {(3,) * (spatial_dims - 1) + (1,)}."
    sizes = []
    for i, k in enumerate(kernel_size if per_level else [kernel_size] * levels):
        name = f"kernel_size[{i}]" if per_level else "kernel_size"
        size = _axis_values(name, k, spatial_dims, fix)
        if any(v % 2 == 0 for v in size):
            raise ValueError(f"{name} must be a positive odd number (or one per axis), got {k!r}; {fix}")
        sizes.append(size)
    return tuple(sizes)


@torch.compiler.disable
def _plain(x: MetaTensor) -> torch.Tensor:
    return x.as_tensor()


@torch.compiler.disable
def _with_meta_of(x: MetaTensor, out: torch.Tensor | list[torch.Tensor]) -> MetaTensor | list[MetaTensor]:
    """``out`` (a Tensor or a list of them) as MetaTensors with ``x``'s metadata, as MONAI's
    ``sliding_window_inference`` gives its outputs."""
    meta = MetaTensor([]).copy_meta_from(x, copy_attr=False)
    if isinstance(out, list):
        return [convert_to_dst_type(head, meta)[0] for head in out]
    return convert_to_dst_type(out, meta)[0]


def _crop_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``x`` cut to the spatial shape of ``reference`` (an upsampled odd-sized level is one voxel larger)."""
    for d in range(2, x.dim()):
        if x.shape[d] != reference.shape[d]:
            x = x.narrow(d, 0, reference.shape[d])
    return x


class EncoderNode(nn.Module):
    """X^{i,0}: max-pooling by the level's strides (except at level 0) followed by the block H.

    Pooling uses a kernel equal to its stride and ``ceil_mode``, so that a side that the stride does not divide
    keeps its last voxels; the decoder crops the upsampled tensors back to the skip's size. A stride of 1 leaves
    its axis as it is.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: Sequence[int] | None,
        checkpointing: bool,
        **block_args,
    ) -> None:
        super().__init__()
        pool = stride is not None
        self.pool = Pool["max", spatial_dims](kernel_size=tuple(stride), ceil_mode=True) if pool else nn.Identity()
        self.block = ConvBlock(spatial_dims, in_channels, out_channels, **block_args)
        self.checkpointing = checkpointing

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block([self.pool(x)])

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self._forward, x, use_reentrant=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(x)
        return self._forward(x)


class NestedNode(nn.Module):
    """X^{i,j}, j > 0: ``H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])``, where ``Up`` undoes the pooling of level
    ``i + 1`` (its strides, per axis).

    With deconvolution upsampling and the ``folded_upsampling`` fast path
    (:py:class:`monai_unetpp.networks.fast_paths.UpsamplingFold`), the block's first convolution reads X^{i+1,j-1}
    itself, with ``Up`` folded into its kernel, where that needs fewer operations.

    Args:
        spatial_dims: number of spatial dimensions.
        below_channels: width of the node below, X^{i+1,j-1}.
        channels: width of this level, used for every node X^{i,*} and for the upsampled tensor.
        column: j, the number of same-level nodes that are concatenated.
        scale: the upsampling factor per axis: the strides of the level below.
        upsample: upsampling mode of ``monai.networks.blocks.UpSample``.
        checkpointing: recompute the node in backward instead of keeping its activations.
        align_corners: of the linear interpolation, with ``upsample="nontrainable"``.
        block_args: the ``ConvBlock`` arguments.
    """

    def __init__(
        self,
        spatial_dims: int,
        below_channels: int,
        channels: int,
        column: int,
        scale: Sequence[int],
        upsample: str,
        checkpointing: bool,
        align_corners: bool = False,
        **block_args,
    ) -> None:
        super().__init__()
        self.up = UpSample(
            spatial_dims,
            below_channels,
            channels,
            scale_factor=tuple(scale),
            mode=upsample,
            interp_mode="linear",
            align_corners=align_corners,
            bias=block_args["bias"],
        )
        self.block = ConvBlock(spatial_dims, channels * (column + 1), channels, **block_args)
        foldable = upsample == "deconv" and any(switch("folded_upsampling"))
        self.fold = UpsamplingFold(channels, block_args["kernel_size"], scale) if foldable else None
        self.up_channels = (channels * column, channels)  # where the upsampled part sits among conv_0's inputs
        self.checkpointing = checkpointing

    def _forward(self, below: torch.Tensor, same_level: list[torch.Tensor]) -> torch.Tensor:
        skip = same_level[0]
        if self.fold is not None:  # a separate test: TorchScript drops the branch only where this is all it tests
            if self.fold.applies(below, skip):
                weight = self.block.conv_0.conv.weight.narrow(1, self.up_channels[0], self.up_channels[1])
                return self.block(same_level, self.fold.conv(below, self.up.deconv.weight, self.up.deconv.bias, weight))
        return self.block(same_level + [_crop_to(self.up(below), skip)])

    @torch.jit.unused
    def _checkpointed(self, below: torch.Tensor, same_level: list[torch.Tensor]) -> torch.Tensor:
        # a copy of the list: the caller appends to it, and backward runs the node again on the same inputs
        return checkpoint(self._forward, below, list(same_level), use_reentrant=False)

    def forward(self, below: torch.Tensor, same_level: list[torch.Tensor]) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(below, same_level)
        return self._forward(below, same_level)


class UNetPlusPlus(nn.Module):
    """UNet++ with any depth, deep supervision, "final"/"mean" inference and real pruning, in 1D, 2D and 3D.

    Node X^{i,j} sits at level ``i`` (resolution 1/2^i, or the product of the first ``i`` ``strides`` per axis) and
    column ``j``. X^{i,0} is the encoder; for ``j > 0`` ``X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])``
    where ``H`` is two convolutions and ``Up`` an upsampling by the strides of level ``i + 1`` (2x by default) to
    the level's width. The depth (number of downsamplings) is ``len(features) - 1``.

    Anisotropic data (e.g. CT or MR of 0.8 x 0.8 x 5 mm) takes per-level, per-axis ``strides`` and ``kernel_size``
    in the convention of MONAI's ``DynUNet`` and nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for
    deep learning-based biomedical image segmentation", Nature Methods 2021): pooling of kernel = stride, and the
    matching upsampling, on each axis; a stride of 1 leaves the axis alone (no pooling), and a kernel size of 1
    leaves it unconvolved at that level. The minimal side and the shape factor then differ per axis
    (:py:meth:`shape_factor`).

    Zhou et al. "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018,
    https://arxiv.org/abs/1807.10165; pruning as in "UNet++: Redesigning Skip Connections to Exploit Multiscale
    Features in Image Segmentation", IEEE TMI 2019, https://arxiv.org/abs/1912.05074.

    Outputs (MONAI's deep-supervision contract, as ``SegResNetDS``):

    - training mode with ``deep_supervision=True``: a list of logits from the 1x1 heads on X^{0,depth}, ...,
      X^{0,1}, **final head first**, all at the input's spatial shape, ready for
      ``monai.losses.DeepSupervisionLoss``;
    - otherwise one Tensor of logits: the head selected by ``inference_mode`` ("final": head X^{0,k}, the paper's
      fast mode; "mean": the average of heads X^{0,1..k}, the paper's accurate mode), where ``k`` is the
      ``inference_depth`` (default: the full depth).

    With ``inference_depth=k < depth``, eval forward computes only the nodes with ``i + j <= k`` (UNet++ L_k of
    the paper): the deeper encoder stages and decoder nodes never run. :py:meth:`pruned` returns a standalone copy
    holding only those nodes' parameters. Pruning needs ``deep_supervision=True``, since only then are the heads on
    X^{0,1..depth-1} trained.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3). Defaults to 3.
        in_channels: number of input channels. Defaults to 1.
        out_channels: number of output channels (classes). Defaults to 2.
        features: width of each level, from level 0 down; ``len(features) - 1`` downsamplings, 1 or more.
            Defaults to ``(32, 32, 64, 128, 256)``, MONAI's ``BasicUNetPlusPlus`` widths.
        deep_supervision: build a 1x1 head on every top node X^{0,1..depth} and return all of them in training.
            Defaults to False (one head on X^{0,depth}; no unused parameters under DDP).
        act: activation type and arguments. Defaults to LeakyReLU(0.1).
        norm: normalisation type and arguments, or None. Defaults to affine instance norm.
        bias: whether the convolutions have a bias. Defaults to True.
        dropout: dropout ratio or MONAI dropout spec. Defaults to no dropout.
        upsample: ``"deconv"``, ``"nontrainable"`` (1x1 conv then linear interpolation) or ``"pixelshuffle"``.
            Defaults to ``"deconv"``.
        align_corners: ``align_corners`` of the linear interpolation of ``upsample="nontrainable"``. Defaults to
            False (MONAI's ``BasicUNetPlusPlus`` uses True).
        kernel_size: odd kernel size of the nodes' convolutions: one int for every level and axis, or one entry per
            level (``len(features)`` of them, level 0 first; every node X^{i,*} of level ``i`` uses entry ``i``),
            each an odd int or one odd int per axis, e.g. ``[(3, 3, 1), (3, 3, 1), 3, 3, 3]``. Defaults to 3.
        inference_mode: ``"final"`` or ``"mean"``, used when no list is returned. Defaults to ``"final"``.
        inference_depth: pruning depth ``k`` in ``1..depth`` used in eval mode, or None for the full depth.
        checkpointing: recompute each node's convolutions in backward instead of keeping their activations
            (``torch.utils.checkpoint``): less training memory for about a third more compute. Defaults to False.
        strides: the downsampling factors, one entry per downsampling (``len(features) - 1`` of them, level 1
            first), each an int or one int per axis, e.g. ``[(2, 2, 1), (2, 2, 1), 2, 2]``: ``DynUNet``'s
            ``strides`` without its leading stride-1 entry. Each level max-pools with kernel = stride (ceil mode) and
            its decoder nodes upsample by the same factors (deconvolution kernel = stride; linear interpolation by
            the factor). ``upsample="pixelshuffle"`` needs the same factor on every axis of a level (MONAI's
            ``SubpixelUpsample`` shuffles by one factor). Defaults to None: 2 on every axis.

    The per-axis settings are kept as ``strides`` (per downsampling, per axis) and ``kernel_sizes`` (per level,
    per axis) attributes.

    MONAI's MetaTensors (what its DataLoaders yield) go in as they are: the network computes on their plain data
    and returns MetaTensors with the input's metadata, as MONAI's ``sliding_window_inference`` does, and
    ``torch.compile(net, fullgraph=True)`` makes one graph for them (see :py:meth:`__call__`). MONAI 1.6.1's
    ``SupervisedTrainer(compile=True)`` cannot take the deep-supervision list: after the step it wraps the
    prediction in one MetaTensor (``ValueError: only one element tensors can be converted to Python scalars``).
    Compile the network itself instead and leave ``compile`` off: ``net.compile()`` (in place: the same module,
    optimizer parameters and ``state_dict`` keys), then ``SupervisedTrainer(network=net, ...)``.

    Examples::

        # 3D, 4 downsamplings, deep supervision: a list of 4 heads in training, one Tensor in eval
        >>> net = UNetPlusPlus(spatial_dims=3, in_channels=1, out_channels=3, deep_supervision=True)

        # 2D, the paper's reference architecture
        >>> net = UNetPlusPlus.from_preset("paper", spatial_dims=2, in_channels=1, out_channels=1)

        # 6 downsamplings, batch norm
        >>> net = UNetPlusPlus(3, 1, 2, features=(16, 32, 64, 128, 256, 320, 320), norm="batch")

        # pruned fast inference: UNet++ L2 of a network trained with deep supervision
        >>> net = UNetPlusPlus(3, 1, 3, features=(8, 16, 32, 64), deep_supervision=True).eval()
        >>> y = net(torch.randn(1, 1, 40, 40, 40), inference_depth=2)   # per call: only the nodes with i + j <= 2 run
        >>> small = net.pruned(2)                            # standalone copy with only the parameters it needs

        # anisotropic CT of 0.8 x 0.8 x 5 mm (axes x, y, z): pool z only from the third level on, as nnU-Net would
        # plan, and leave z unconvolved (3 x 3 x 1) until the voxels are nearly isotropic
        >>> net = UNetPlusPlus(
        ...     3, 1, 3,
        ...     features=(32, 64, 128, 256, 320),
        ...     strides=[(2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2)],
        ...     kernel_size=[(3, 3, 1), (3, 3, 1), 3, 3, 3],
        ...     deep_supervision=True,
        ... )
        >>> net.shape_factor()                               # every side at least this; multiples waste nothing
        [16, 16, 4]
        >>> net.eval()(torch.randn(1, 1, 80, 80, 10)).shape  # any size of at least that: output = input shape
        torch.Size([1, 3, 80, 80, 10])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = DEFAULT_FEATURES,
        deep_supervision: bool = False,
        act: str | tuple | None = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple | None = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple | None = 0.0,
        upsample: str = "deconv",
        align_corners: bool = False,
        kernel_size: int | Sequence[int | Sequence[int]] = 3,
        inference_mode: str = "final",
        inference_depth: int | None = None,
        checkpointing: bool = False,
        strides: Sequence[int | Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        # a command line or a config may give a flag as the string "false", which is truthy
        deep_supervision = to_bool(deep_supervision, "deep_supervision")
        bias = to_bool(bias, "bias")
        align_corners = to_bool(align_corners, "align_corners")
        checkpointing = to_bool(checkpointing, "checkpointing")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number of channels, got {value!r}.")
        if not isinstance(features, Sequence) or isinstance(features, str):
            raise ValueError(
                f"features must be a sequence of widths, one per level (depth = len(features) - 1), e.g. "
                f"{DEFAULT_FEATURES}; got {features!r}. (MONAI's BasicUNetPlusPlus repeats a single width six times: "
                "see UNetPlusPlus.from_basic_unetplusplus to migrate.)"
            )
        if any(isinstance(f, bool) or not isinstance(f, numbers.Integral) for f in features):
            raise ValueError(f"features must be whole numbers of channels, one per level, got {tuple(features)!r}.")
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(
                f"features needs at least two positive widths (one per level; depth = len(features) - 1), "
                f"got {features}."
            )
        if len(features) > 2 and features[-1] < features[-2]:
            warnings.warn(
                f"features={features} narrows at the deepest level, as MONAI's BasicUNetPlusPlus features do, whose "
                "last entry is the top node's width, not a level: here it builds a level of its own "
                f"(depth {len(features) - 1}). For MONAI's architecture pass features={features[:-1]} or use "
                "monai_unetpp.networks.basic_unetplusplus_features(...).",
                UserWarning,
                stacklevel=2,
            )
        if upsample not in ("deconv", "nontrainable", "pixelshuffle"):
            raise ValueError(f"upsample must be 'deconv', 'nontrainable' or 'pixelshuffle', got {upsample!r}.")
        depth = len(features) - 1
        level_strides = _level_strides(strides, spatial_dims, depth)
        kernel_sizes = _level_kernel_sizes(kernel_size, spatial_dims, depth + 1)
        if upsample == "pixelshuffle":
            for i, level in enumerate(level_strides):
                if len(set(level)) > 1:
                    raise ValueError(
                        "upsample='pixelshuffle' shuffles by one factor on every axis (MONAI's SubpixelUpsample), "
                        f"but strides[{i}] = {level} differs per axis; use upsample='deconv' or 'nontrainable' for "
                        "anisotropic strides."
                    )

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        #: per downsampling (level 1..depth), its factor per axis
        self.strides = level_strides
        #: per level (0..depth), the kernel size per axis of its nodes' convolutions
        self.kernel_sizes = kernel_sizes
        self.depth = depth
        self.deep_supervision = deep_supervision
        # instance norm needs more than one voxel per channel, also at the deepest level
        self.instance_norm = norm is not None and str(split_args(norm)[0]).lower().startswith("instance")
        self._set_shape_factor()

        layer_args = {"act": act, "norm": norm, "dropout": dropout, "bias": bias, "checkpointing": checkpointing}
        # checkpointing is the nodes' own argument; the rest (and kernel_size) go to each node's ConvBlock
        self.encoder = nn.ModuleList(
            EncoderNode(
                spatial_dims,
                in_channels if i == 0 else features[i - 1],
                features[i],
                level_strides[i - 1] if i > 0 else None,
                kernel_size=kernel_sizes[i],
                **layer_args,
            )
            for i in range(self.depth + 1)
        )
        # decoder[j - 1][i] is X^{i,j}: building column by column means every input of a node exists before it runs
        # (X^{i,<j} in this level, X^{i+1,j-1} in the previous column), so forward is a single ordered sweep that a
        # pruned call can cut at any anti-diagonal i + j <= k.
        self.decoder = nn.ModuleList(
            nn.ModuleList(
                NestedNode(
                    spatial_dims,
                    features[i + 1],
                    features[i],
                    j,
                    level_strides[i],
                    upsample,
                    align_corners=align_corners,
                    kernel_size=kernel_sizes[i],
                    **layer_args,
                )
                for i in range(self.depth - j + 1)
            )
            for j in range(1, self.depth + 1)
        )
        # heads[n] reads X^{0, head_columns[n]}
        self.head_columns = list(range(1, self.depth + 1)) if deep_supervision else [self.depth]
        self.heads = nn.ModuleList(
            Conv["conv", spatial_dims](features[0], out_channels, kernel_size=1) for _ in self.head_columns
        )
        self.inference_modes = list(INFERENCE_MODES)  # a list attribute: scripted code reads no global tuples
        self.inference_mode = "final"
        self.inference_depth = self.depth
        self.set_inference(inference_mode, inference_depth)

    @classmethod
    def from_basic_unetplusplus(cls, net: nn.Module, **network_args: Any) -> UNetPlusPlus:
        """The UNetPlusPlus that computes what a built MONAI ``BasicUNetPlusPlus`` computes, with its weights; see
        :func:`monai_unetpp.networks.migration.from_basic_unetplusplus` (and ``load_basic_unetplusplus`` for a
        state_dict or checkpoint file)."""
        from .migration import from_basic_unetplusplus

        return from_basic_unetplusplus(net, **network_args)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> UNetPlusPlus:
        """Build a named architecture from :data:`PRESETS`; keyword arguments override the preset's."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available: {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **kwargs})

    # ----------------------------------------------------------------------------------------------- settings
    @torch.jit.export
    def valid_inference_depths(self) -> list[int]:
        """The pruning depths this network can run, deepest first: ``depth, ..., 1`` with deep supervision (every
        top node has a trained head), else only ``depth``."""
        if self.deep_supervision:
            return list(range(self.depth, 0, -1))
        return [self.depth]

    @torch.jit.export
    def check_inference_depth(self, inference_depth: int) -> int:
        """``inference_depth`` if this network can run it (see :py:meth:`valid_inference_depths`), else a
        ValueError that says why."""
        if not torch.jit.is_scripting():
            _check_whole_depth(inference_depth, self.depth)
        if inference_depth not in self.valid_inference_depths():
            if 1 <= inference_depth <= self.depth:
                raise ValueError(
                    f"inference_depth={inference_depth} needs a head on X^(0,{inference_depth}); build the network "
                    "with deep_supervision=True (and train it so) to prune it."
                )
            raise ValueError(f"inference_depth must be in 1..{self.depth} for this network, got {inference_depth}.")
        return inference_depth

    @torch.jit.export
    def check_inference_mode(self, inference_mode: str) -> str:
        """``inference_mode`` if it is one of :data:`INFERENCE_MODES` that this network can run, else a ValueError."""
        if inference_mode not in self.inference_modes:
            raise ValueError(f"inference_mode must be one of {self.inference_modes}, got '{inference_mode}'.")
        if inference_mode == "mean" and not self.deep_supervision:
            raise ValueError(
                "inference_mode='mean' averages the deep-supervision heads: build with deep_supervision=True."
            )
        return inference_mode

    def set_inference(
        self,
        inference_mode: str | None = None,
        inference_depth: int | None = None,
        *,
        mode: str | None = None,
        depth: int | None = None,
    ) -> UNetPlusPlus:
        """Set the eval-time output: ``inference_mode`` ("final" or "mean") and pruning ``inference_depth`` (None
        keeps the current setting; ``inference_depth=self.depth`` turns pruning off). Returns self, so it chains
        after ``eval()``. ``mode``/``depth`` are the deprecated names of the two arguments."""
        inference_mode = _renamed("mode", mode, "inference_mode", inference_mode)
        inference_depth = _renamed("depth", depth, "inference_depth", inference_depth)
        if inference_mode is not None:
            self.inference_mode = self.check_inference_mode(inference_mode)
        if inference_depth is not None:
            self.inference_depth = self.check_inference_depth(_whole_number("inference_depth", inference_depth))
        return self

    def _set_shape_factor(self) -> None:
        # read by the scripted forward, which cannot multiply the strides' tuples out itself
        factor = [1] * self.spatial_dims
        for level in self.strides:
            factor = [f * s for f, s in zip(factor, level, strict=True)]
        self.factor = factor
        isotropic = all(level == (2,) * self.spatial_dims for level in self.strides)
        self.factor_text = f"{factor[0]} (2 ** depth)" if isotropic else f"{factor} (shape_factor(), per axis)"

    def shape_factor(self) -> list[int]:
        """Per spatial axis, the factor by which the network downsamples it: the product of its ``strides``
        (``2 ** depth`` by default), as ``monai.networks.nets.SegResNetDS.shape_factor``.

        Unlike SegResNetDS, this network takes any side of at least that factor (see
        :py:meth:`accepts_spatial_shape`); multiples of it waste no computation on padding.
        """
        return list(self.factor)

    def accepts_spatial_shape(self, spatial_shape: Sequence[int]) -> bool:
        """Whether an input of this spatial shape (without batch and channel) can go through the network: every
        side at least its axis's :py:meth:`shape_factor` and, with instance normalisation, more than one voxel at
        the deepest level."""
        if len(spatial_shape) != self.spatial_dims or any(
            s < f for s, f in zip(spatial_shape, self.factor, strict=True)
        ):
            return False
        return not self.instance_norm or any(s > f for s, f in zip(spatial_shape, self.factor, strict=True))

    def is_valid_shape(self, x: torch.Tensor | Sequence[int]) -> bool:
        """Whether the input Tensor ``x`` (batch, channel, spatial...) can go through the network, as
        ``monai.networks.nets.SegResNetDS.is_valid_shape``. A spatial shape (a sequence of ints) is still accepted
        for one release, with a DeprecationWarning: use :py:meth:`accepts_spatial_shape` for that."""
        if isinstance(x, torch.Tensor):
            return x.dim() == self.spatial_dims + 2 and self.accepts_spatial_shape(x.shape[2:])
        warnings.warn(
            "is_valid_shape takes the input Tensor, as MONAI's SegResNetDS; for a spatial shape call "
            "accepts_spatial_shape(shape). Passing a shape goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.accepts_spatial_shape(x)

    # ----------------------------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"expected a {self.spatial_dims + 2}D input (batch, channel, {self.spatial_dims} spatial), "
                f"got shape {list(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]} (shape {list(x.shape)}).")
        deepest_voxels = 1
        for d in range(2, x.dim()):
            smallest = self.factor[d - 2]
            if x.shape[d] < smallest:
                raise ValueError(
                    f"every spatial side must be at least {self.factor_text} for this network, "
                    f"got spatial shape {list(x.shape[2:])}; pad or resize the input."
                )
            # pooling keeps the edges (ceil mode), and ceil(ceil(n / a) / b) = ceil(n / (a * b))
            deepest_voxels *= (x.shape[d] + smallest - 1) // smallest
        if self.instance_norm and deepest_voxels < 2:
            raise ValueError(
                f"with instance normalisation at least one spatial side must exceed {self.factor_text} so that "
                f"the deepest level holds more than one voxel, got spatial shape {list(x.shape[2:])}; "
                "pad or resize the input."
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``forward`` on the plain data of a ``monai.data.MetaTensor`` input, its outputs given the input's
        metadata; other inputs go to ``forward`` as they are.

        MetaTensor's ``__torch_function__`` copies the metadata at every operation: in eager that is overhead, and
        ``torch.compile`` cannot trace it (a graph break at each operation, then the recompile limit), nor the
        unwrapping (``MetaTensor.as_tensor``). So the unwrapping happens here, in a frame that ``torch.compile``
        leaves to Python (its code is skipped, not what it calls: the network's own call below is compiled, one
        graph on plain Tensors). The outputs, also in training's list, are MetaTensors with the input's metadata,
        as MONAI's ``sliding_window_inference`` returns them (``copy_meta_from(inputs, copy_attr=False)``).
        """
        x = args[0] if args else kwargs.get("x")
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} takes a torch.Tensor (batch, channel, *spatial), got a {type(x).__name__}; "
                "convert it with torch.as_tensor(...)."
            )
        if not isinstance(x, MetaTensor):
            return super().__call__(*args, **kwargs)
        if args:
            args = (_plain(x), *args[1:])
        else:
            kwargs = {**kwargs, "x": _plain(x)}
        return _with_meta_of(x, super().__call__(*args, **kwargs))

    def forward(
        self,
        x: torch.Tensor,
        inference_mode: str | None = None,
        inference_depth: int | None = None,
        mode: str | None = None,
        depth: int | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """
        Args:
            x: ``(batch, in_channels, *spatial)``, every spatial side at least its axis's :py:meth:`shape_factor`.
            inference_mode: per-call override of the ``inference_mode`` setting.
            inference_depth: per-call override of the ``inference_depth`` setting.
            mode, depth: deprecated names of ``inference_mode`` and ``inference_depth``.

        Returns:
            a list of head logits, final first, in training mode with deep supervision; otherwise one Tensor
            ``(batch, out_channels, *spatial)``. For a ``monai.data.MetaTensor`` input, MetaTensors with its
            metadata (see :py:meth:`__call__`).
        """
        if mode is not None:
            if torch.jit.is_scripting():
                warnings.warn("forward(mode=...) is deprecated: use inference_mode=...", stacklevel=2)
            else:
                _warn_renamed("forward(mode=...)", "inference_mode", mode, inference_mode)
            if inference_mode is None:
                inference_mode = mode
        if depth is not None:
            if torch.jit.is_scripting():
                warnings.warn("forward(depth=...) is deprecated: use inference_depth=...", stacklevel=2)
            else:
                _warn_renamed("forward(depth=...)", "inference_depth", depth, inference_depth)
            if inference_depth is None:
                inference_depth = depth
        self._check_input(x)
        as_list = self.training and self.deep_supervision
        k = self.depth
        if not as_list:
            k = self.inference_depth if inference_depth is None else self.check_inference_depth(inference_depth)
        use_mode = self.inference_mode if inference_mode is None else self.check_inference_mode(inference_mode)

        levels: list[list[torch.Tensor]] = []
        h = x
        for i, node in enumerate(self.encoder):
            if i <= k:
                h = node(h)
                levels.append([h])
        for j, column in enumerate(self.decoder):
            for i, node in enumerate(column):
                if i + j + 1 <= k:
                    levels[i].append(node(levels[i + 1][j], levels[i]))
                    if i > 0 and i + j + 1 == k:
                        # the level's last node: X^{i,0..j} have fed every node that reads them, and only the heads
                        # read level 0; dropping them lowers the peak memory of an inference forward
                        for m in range(j + 1):
                            levels[i][m] = torch.empty(0, dtype=x.dtype, device=x.device)

        heads: list[torch.Tensor] = []  # final first
        for n, head in enumerate(self.heads):
            c = self.head_columns[n]
            if as_list or c == k or (use_mode == "mean" and c < k):
                heads.insert(0, head(levels[0][c]))
        if as_list:
            return heads
        return reduce_heads(heads, use_mode)

    # ----------------------------------------------------------------------------------------------- pruning
    def pruned(self, depth: int) -> UNetPlusPlus:
        """A standalone copy that holds only the nodes and heads of UNet++ L_depth, in eval mode.

        The copy's ``depth`` is ``depth``, its output equals ``self(x, inference_depth=depth)`` in eval mode, and its
        ``state_dict`` is a subset of this network's (same keys), so it saves, scripts and exports on its own.
        """
        depth = self.check_inference_depth(_whole_number("depth", depth))
        small = copy.deepcopy(self).eval()
        small.encoder = nn.ModuleList(list(small.encoder)[: depth + 1])
        small.decoder = nn.ModuleList(
            nn.ModuleList(list(column)[: depth - j]) for j, column in enumerate(list(small.decoder)[:depth])
        )
        keep = [n for n, c in enumerate(small.head_columns) if c <= depth]
        small.heads = nn.ModuleList(small.heads[n] for n in keep)
        small.head_columns = [small.head_columns[n] for n in keep]
        small.depth = depth
        small.features = self.features[: depth + 1]
        small.strides = self.strides[:depth]
        small.kernel_sizes = self.kernel_sizes[: depth + 1]
        small._set_shape_factor()
        small.deep_supervision = self.deep_supervision and len(keep) > 1
        small.inference_depth = depth
        if small.inference_mode == "mean" and not small.deep_supervision:
            small.inference_mode = "final"
        return small


# the frame alone, as torch.compiler.disable(recursive=False) does, which torch.export refuses to run even for
# plain Tensors: a skipped code object is left to Python only by torch.compile, and is ordinary code otherwise
torch._dynamo.eval_frame.skip_code(UNetPlusPlus.__call__.__code__)

UNetPP = UnetPlusPlus = unetplusplus = UNetPlusPlus
