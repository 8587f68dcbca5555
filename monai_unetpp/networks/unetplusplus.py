# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""UNet++: the nested U-Net with dense skip connections, deep supervision and real pruned inference.

Zhou, Rahman Siddiquee, Tajbakhsh, Liang. "UNet++: A Nested U-Net Architecture for Medical Image
Segmentation". DLMIA 2018, https://arxiv.org/abs/1807.10165 (and the TMI 2019 extension,
https://arxiv.org/abs/1912.05074, for pruning).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UpSample
from monai.networks.layers.factories import Conv, Pool, split_args

from .blocks import ConvBlock, folding_pays, may_specialize_on_shapes

__all__ = ["UNetPlusPlus", "UNetPP", "UnetPlusPlus", "unetplusplus", "INFERENCE_MODES", "PRESETS"]

INFERENCE_MODES = ("final", "mean")

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


class EncoderNode(nn.Module):
    """X^{i,0}: max-pooling (except at level 0) followed by a ``ConvBlock``.

    Pooling uses ``ceil_mode`` so that a side that is not divisible by two keeps its last voxels; the decoder crops
    the upsampled tensors back to the skip's size.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, pool: bool, **block_args) -> None:
        super().__init__()
        self.pool = Pool["max", spatial_dims](kernel_size=2, ceil_mode=True) if pool else nn.Identity()
        self.block = ConvBlock(spatial_dims, in_channels, out_channels, **block_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block([self.pool(x)])


class NestedNode(nn.Module):
    """X^{i,j}, j > 0: ``H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])``.

    With deconvolution upsampling, the block's first convolution reads X^{i+1,j-1} itself and folds ``Up`` into its
    own kernel (:func:`monai_unetpp.networks.blocks.upsampled_conv`) wherever that needs fewer operations and the
    skip is exactly twice the size of the tensor below (no crop).

    Args:
        spatial_dims: number of spatial dimensions.
        below_channels: width of the node below, X^{i+1,j-1}.
        channels: width of this level, used for every node X^{i,*} and for the upsampled tensor.
        column: j, the number of same-level nodes that are concatenated.
        upsample: upsampling mode of ``monai.networks.blocks.UpSample``.
        block_args: the ``ConvBlock`` arguments.
    """

    def __init__(
        self, spatial_dims: int, below_channels: int, channels: int, column: int, upsample: str, **block_args
    ) -> None:
        super().__init__()
        self.up = UpSample(
            spatial_dims,
            below_channels,
            channels,
            scale_factor=2,
            mode=upsample,
            interp_mode="linear",
            align_corners=False,
            bias=block_args["bias"],
        )
        self.block = ConvBlock(spatial_dims, channels * (column + 1), channels, **block_args)
        self.channels = channels
        self.kernel_size = block_args["kernel_size"]

    def _folds_upsampling(self, below: torch.Tensor, skip: torch.Tensor) -> bool:
        if not may_specialize_on_shapes():  # first: a test of a shape would fix that shape in an exported graph
            return False
        for d in range(2, below.dim()):
            if skip.shape[d] != 2 * below.shape[d]:
                return False
        return folding_pays(below, self.channels, self.channels, self.kernel_size)

    def forward(self, below: torch.Tensor, same_level: list[torch.Tensor]) -> torch.Tensor:
        ref = same_level[0]
        if hasattr(self.up, "deconv") and self._folds_upsampling(below, ref):
            # a copy: the caller appends to its list, and a checkpointed block reads its inputs again in backward
            return self.block(list(same_level), below, self.up.deconv.weight, self.up.deconv.bias)
        up = self.up(below)
        for d in range(2, up.dim()):
            if up.shape[d] != ref.shape[d]:
                up = up.narrow(d, 0, ref.shape[d])
        # the block's first convolution reads the parts in place of their concatenation
        return self.block(same_level + [up])


class UNetPlusPlus(nn.Module):
    """UNet++ with any depth, deep supervision, "final"/"mean" inference and real pruning, in 1D, 2D and 3D.

    Node X^{i,j} sits at level ``i`` (resolution 1/2^i) and column ``j``. X^{i,0} is the encoder; for ``j > 0``
    ``X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])`` where ``H`` is two convolutions and ``Up`` a 2x
    upsampling to the level's width. The depth (number of downsamplings) is ``len(features) - 1``.

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
        kernel_size: odd kernel size of every node's convolutions. Defaults to 3.
        inference_mode: ``"final"`` or ``"mean"``, used when no list is returned. Defaults to ``"final"``.
        inference_depth: pruning depth ``k`` in ``1..depth`` used in eval mode, or None for the full depth.
        checkpointing: recompute each node's convolutions in backward instead of keeping their activations
            (``torch.utils.checkpoint``): less training memory for about a third more compute. Defaults to False.

    Examples::

        # 3D, 4 downsamplings, deep supervision: a list of 4 heads in training, one Tensor in eval
        >>> net = UNetPlusPlus(spatial_dims=3, in_channels=1, out_channels=3, deep_supervision=True)

        # 2D, the paper's reference architecture
        >>> net = UNetPlusPlus.from_preset("paper", spatial_dims=2, in_channels=1, out_channels=1)

        # 6 downsamplings, batch norm
        >>> net = UNetPlusPlus(3, 1, 2, features=(16, 32, 64, 128, 256, 320, 320), norm="batch")

        # pruned fast inference: UNet++ L2 of a network trained with deep supervision
        >>> net = UNetPlusPlus(3, 1, 3, features=(8, 16, 32, 64), deep_supervision=True).eval()
        >>> y = net(torch.randn(1, 1, 40, 40, 40), depth=2)   # per call: only the nodes with i + j <= 2 run
        >>> small = net.pruned(2)                            # standalone copy with only the parameters it needs
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 32, 64, 128, 256),
        deep_supervision: bool = False,
        act: str | tuple | None = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple | None = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple | None = 0.0,
        upsample: str = "deconv",
        kernel_size: int = 3,
        inference_mode: str = "final",
        inference_depth: int | None = None,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(
                f"features needs at least two positive widths (one per level; depth = len(features) - 1), "
                f"got {features}."
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        if upsample not in ("deconv", "nontrainable", "pixelshuffle"):
            raise ValueError(f"upsample must be 'deconv', 'nontrainable' or 'pixelshuffle', got {upsample!r}.")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.depth = len(features) - 1
        self.deep_supervision = deep_supervision
        # instance norm needs more than one voxel per channel, also at the deepest level
        self.instance_norm = norm is not None and str(split_args(norm)[0]).lower().startswith("instance")

        block_args = {
            "kernel_size": kernel_size,
            "act": act,
            "norm": norm,
            "dropout": dropout,
            "bias": bias,
            "checkpointing": checkpointing,
        }
        self.encoder = nn.ModuleList(
            EncoderNode(spatial_dims, in_channels if i == 0 else features[i - 1], features[i], i > 0, **block_args)
            for i in range(self.depth + 1)
        )
        # decoder[j - 1][i] is X^{i,j}: building column by column means every input of a node exists before it runs
        # (X^{i,<j} in this level, X^{i+1,j-1} in the previous column), so forward is a single ordered sweep that a
        # pruned call can cut at any anti-diagonal i + j <= k.
        self.decoder = nn.ModuleList(
            nn.ModuleList(
                NestedNode(spatial_dims, features[i + 1], features[i], j, upsample, **block_args)
                for i in range(self.depth - j + 1)
            )
            for j in range(1, self.depth + 1)
        )
        # heads[n] reads X^{0, head_columns[n]}
        self.head_columns = list(range(1, self.depth + 1)) if deep_supervision else [self.depth]
        self.heads = nn.ModuleList(
            Conv["conv", spatial_dims](features[0], out_channels, kernel_size=1) for _ in self.head_columns
        )
        self.inference_mode = "final"
        self.inference_depth = self.depth
        self.set_inference(inference_mode, inference_depth)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> UNetPlusPlus:
        """Build a named architecture from :data:`PRESETS`; keyword arguments override the preset's."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available: {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **kwargs})

    # ----------------------------------------------------------------------------------------------- settings
    def _check_depth(self, depth: int) -> int:
        if not 1 <= depth <= self.depth:
            raise ValueError(f"inference_depth must be in 1..{self.depth} for this network, got {depth}.")
        if depth != self.depth and depth not in self.head_columns:
            raise ValueError(
                f"inference_depth={depth} needs a head on X^(0,{depth}); build the network with "
                "deep_supervision=True (and train it so) to prune it."
            )
        return depth

    def _check_mode(self, mode: str) -> str:
        if mode != "final" and mode != "mean":
            raise ValueError(f"inference_mode must be 'final' or 'mean', got '{mode}'.")
        if mode == "mean" and not self.deep_supervision:
            raise ValueError(
                "inference_mode='mean' averages the deep-supervision heads: build with deep_supervision=True."
            )
        return mode

    def set_inference(self, mode: str | None = None, depth: int | None = None) -> UNetPlusPlus:
        """Set the eval-time output: ``mode`` ("final" or "mean") and pruning ``depth`` (None keeps the current
        setting; ``depth=self.depth`` turns pruning off). Returns self, so it chains after ``eval()``."""
        if mode is not None:
            self.inference_mode = self._check_mode(mode)
        if depth is not None:
            self.inference_depth = self._check_depth(int(depth))
        return self

    def shape_factor(self) -> int:
        """The smallest spatial side this network accepts: 2 ** depth (every level keeps at least one voxel).

        With instance normalisation at least one side must also exceed it (see :py:meth:`is_valid_shape`), so that
        the deepest level holds more than one voxel; multiples of it stay the most efficient sizes.
        """
        return 2**self.depth

    def is_valid_shape(self, shape: Sequence[int]) -> bool:
        """Whether a spatial shape (without batch and channel) can go through the network."""
        factor = self.shape_factor()
        if len(shape) != self.spatial_dims or any(s < factor for s in shape):
            return False
        return not self.instance_norm or any(s > factor for s in shape)

    # ----------------------------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"expected a {self.spatial_dims + 2}D input (batch, channel, {self.spatial_dims} spatial), "
                f"got shape {list(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]} (shape {list(x.shape)}).")
        smallest = int(2**self.depth)
        deepest_voxels = 1
        for d in range(2, x.dim()):
            if x.shape[d] < smallest:
                raise ValueError(
                    f"every spatial side must be at least {smallest} (2 ** depth) for this network, "
                    f"got spatial shape {list(x.shape[2:])}; pad or resize the input."
                )
            deepest_voxels *= (x.shape[d] + smallest - 1) // smallest  # pooling keeps odd edges (ceil mode)
        if self.instance_norm and deepest_voxels < 2:
            raise ValueError(
                f"with instance normalisation at least one spatial side must exceed {smallest} (2 ** depth) so that "
                f"the deepest level holds more than one voxel, got spatial shape {list(x.shape[2:])}; "
                "pad or resize the input."
            )

    def forward(
        self, x: torch.Tensor, mode: str | None = None, depth: int | None = None
    ) -> torch.Tensor | list[torch.Tensor]:
        """
        Args:
            x: ``(batch, in_channels, *spatial)``, every spatial side at least ``shape_factor()``.
            mode: per-call override of ``inference_mode``.
            depth: per-call override of ``inference_depth``.

        Returns:
            a list of head logits, final first, in training mode with deep supervision; otherwise one Tensor
            ``(batch, out_channels, *spatial)``.
        """
        self._check_input(x)
        as_list = self.training and self.deep_supervision
        k = self.depth
        if not as_list:
            k = self.inference_depth if depth is None else self._check_depth(depth)
        use_mode = self.inference_mode if mode is None else self._check_mode(mode)

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

        heads: list[torch.Tensor] = []
        for n, head in enumerate(self.heads):
            c = self.head_columns[n]
            if as_list:
                heads.insert(0, head(levels[0][c]))
            elif c == k or (use_mode == "mean" and c < k):
                heads.append(head(levels[0][c]))
        if as_list:
            return heads
        if len(heads) == 1:
            return heads[0]
        return torch.stack(heads, dim=0).mean(dim=0)

    # ----------------------------------------------------------------------------------------------- pruning
    def pruned(self, depth: int) -> UNetPlusPlus:
        """A standalone copy that holds only the nodes and heads of UNet++ L_depth, in eval mode.

        The copy's ``depth`` is ``depth``, its output equals ``self(x, depth=depth)`` in eval mode, and its
        ``state_dict`` is a subset of this network's (same keys), so it saves, scripts and exports on its own.
        """
        depth = self._check_depth(depth)
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
        small.deep_supervision = self.deep_supervision and len(keep) > 1
        small.inference_depth = depth
        if small.inference_mode == "mean" and not small.deep_supervision:
            small.inference_mode = "final"
        return small


UNetPP = UnetPlusPlus = unetplusplus = UNetPlusPlus
