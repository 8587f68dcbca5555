# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Fast paths of :py:class:`monai_unetpp.UNetPlusPlus`: each computes what the plain layer computes, with less work
or a faster kernel, and each can be switched off.

=============================  ==========================================================================  ====
switch                         what it does instead of the plain layer                                      CPU
=============================  ==========================================================================  ====
``concat_free_conv``           a decoder node's convolution of ``[X^{i,0}, ..., Up(...)]`` as the sum of    on
                               the parts' convolutions with slices of the one weight: no concatenation
``folded_upsampling``          ``conv(deconv(below))`` as one strided transposed convolution of ``below``   on
                               (:func:`upsampled_conv`), where that needs fewer multiply-adds
``onednn_batch1_conv3d``       a batch-1 3D float32 convolution that PyTorch would run on its im2col       on
                               kernel as an equal 2-group convolution, which runs on oneDNN
``group_norm_instance_norm``   instance norm as ``group_norm`` with one channel per group                   on
=============================  ==========================================================================  ====

Every switch is off on CUDA and other devices, where none has been measured yet; the figures behind the CPU
defaults are in ``benchmarks/README.md``.

A network reads the switches once, when it is built, into constants of its modules (one per device type), so
TorchScript, ``torch.compile`` and exported graphs see plain booleans::

    >>> with set_fast_paths(False):                  # all off: exactly MONAI's plain layers
    ...     plain = UNetPlusPlus(3, 1, 2)
    >>> set_fast_paths(folded_upsampling=False)     # one off on every device, for networks built from now on
    >>> set_fast_paths(device="cuda", concat_free_conv=True)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DEVICE_TYPES",
    "FAST_PATHS",
    "InstanceNorm",
    "UpsamplingFold",
    "conv_nd",
    "enabled_for",
    "fast_path_settings",
    "folding_pays",
    "may_specialize_on_shapes",
    "set_fast_paths",
    "switch",
    "takes_slow_cpu_kernel",
    "upsampled_conv",
]

#: The switches, in the order of the table above.
FAST_PATHS = ("concat_free_conv", "folded_upsampling", "onednn_batch1_conv3d", "group_norm_instance_norm")
#: The device types that have switches of their own; every other device runs the plain layers.
DEVICE_TYPES = ("cpu", "cuda")
_DEFAULTS: dict[str, dict[str, bool]] = {
    "cpu": dict.fromkeys(FAST_PATHS, True),
    "cuda": dict.fromkeys(FAST_PATHS, False),
}
_settings: dict[str, dict[str, bool]] = copy.deepcopy(_DEFAULTS)


def fast_path_settings() -> dict[str, dict[str, bool]]:
    """A copy of the current switches: ``{device_type: {switch: enabled}}``."""
    return copy.deepcopy(_settings)


class set_fast_paths:  # noqa: N801 (a function that is also a context manager, as torch.set_grad_enabled)
    """Set fast-path switches for the networks built from now on; as a context manager, only inside the block.

    Args:
        enabled: set every switch on (True) or off (False) before applying ``switches``; None leaves them.
        device: the device type to set (``"cpu"`` or ``"cuda"``); None sets both.
        switches: individual switches by name (see :data:`FAST_PATHS`), e.g. ``folded_upsampling=False``.
        defaults: restore the measured defaults first. Defaults to False.

    Examples::

        >>> set_fast_paths(False)                       # from now on, plain layers everywhere
        >>> with set_fast_paths(group_norm_instance_norm=False):
        ...     net = UNetPlusPlus(3, 1, 2)             # built with that one off
    """

    def __init__(
        self, enabled: bool | None = None, *, device: str | None = None, defaults: bool = False, **switches: bool
    ) -> None:
        unknown = sorted(set(switches) - set(FAST_PATHS))
        if unknown:
            raise ValueError(f"unknown fast path(s) {unknown}; the switches are {list(FAST_PATHS)}.")
        if device is not None and device not in DEVICE_TYPES:
            raise ValueError(f"device must be one of {DEVICE_TYPES} or None, got {device!r}.")
        self._previous = fast_path_settings()
        if defaults:
            _settings.update(copy.deepcopy(_DEFAULTS))
        for device_type in DEVICE_TYPES if device is None else (device,):
            if enabled is not None:
                _settings[device_type] = dict.fromkeys(FAST_PATHS, bool(enabled))
            _settings[device_type].update({name: bool(on) for name, on in switches.items()})

    def __enter__(self) -> set_fast_paths:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _settings.update(self._previous)


def switch(name: str) -> tuple[bool, bool]:
    """The current setting of switch ``name`` as the constant a module keeps: ``(on CPU, on CUDA)``."""
    if name not in FAST_PATHS:
        raise ValueError(f"unknown fast path {name!r}; the switches are {list(FAST_PATHS)}.")
    return _settings["cpu"][name], _settings["cuda"][name]


def enabled_for(x: torch.Tensor, flags: tuple[bool, bool]) -> bool:
    """Whether a switch kept as ``flags`` (see :func:`switch`) is on for the device of ``x``."""
    if x.device.type == "cpu":
        return flags[0]
    if x.device.type == "cuda":
        return flags[1]
    return False


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


# ------------------------------------------------------------------------------------------ onednn_batch1_conv3d
def takes_slow_cpu_kernel(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether PyTorch would run the stride-1 float32 3D convolution of ``x`` with ``weight`` on its im2col kernel
    ``slow_conv3d`` rather than on oneDNN, and a 2-group oneDNN convolution is the faster choice.

    PyTorch sends a CPU float32 convolution to oneDNN only if the batch is larger than 1, ``N * C * D * H`` exceeds
    20480, or the kernel's last two sides exceed 3 (``ConvParams::use_mkldnn`` in
    ``aten/src/ATen/native/Convolution.cpp``); a test checks this rule against ``torch._C._select_conv_backend``,
    so a PyTorch release that changes it shows up. oneDNN's direct kernels work on blocks of 16 input and 32 output
    channels; other widths get its gemm kernels, slower than PyTorch's own (``benchmarks/README.md``).
    """
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
        and x.shape[1] % 16 == 0
        and weight.shape[0] % 32 == 0
    )


def conv_nd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int], onednn_batch1: bool
) -> torch.Tensor:
    """Stride-1 convolution of ``x`` (1D, 2D or 3D by its rank) with ``weight``, ``bias`` and zero ``padding``.

    With ``onednn_batch1``, a convolution that :func:`takes_slow_cpu_kernel` runs as a 2-group convolution over
    ``[x, x]``: group ``g`` applies output filters ``g * out / 2 ...`` to its copy of ``x``, which is exactly the
    plain convolution, and ``groups > 1`` selects oneDNN. The copy of ``x`` is small since only small tensors take
    that path.
    """
    if x.dim() == 5:
        if onednn_batch1 and takes_slow_cpu_kernel(x, weight):
            return F.conv3d(torch.cat([x, x], dim=1), weight, bias, padding=padding, groups=2)
        return F.conv3d(x, weight, bias, padding=padding)
    if x.dim() == 4:
        return F.conv2d(x, weight, bias, padding=padding)
    return F.conv1d(x, weight, bias, padding=padding)


# --------------------------------------------------------------------------------------------- folded_upsampling
def _conv_transpose(x: torch.Tensor, weight: torch.Tensor, stride: list[int], padding: list[int]) -> torch.Tensor:
    if x.dim() == 5:
        return F.conv_transpose3d(x, weight, stride=stride, padding=padding)
    if x.dim() == 4:
        return F.conv_transpose2d(x, weight, stride=stride, padding=padding)
    return F.conv_transpose1d(x, weight, stride=stride, padding=padding)


def folding_pays(below: torch.Tensor, up_channels: int, out_channels: int, kernel_size: list[int]) -> bool:
    """Whether :func:`upsampled_conv` needs fewer multiply-adds than a deconvolution of ``below`` to
    ``up_channels`` (kernel 2 and stride 2 on every axis) followed by a convolution of ``kernel_size`` (one per
    axis) to ``out_channels``; :meth:`UpsamplingFold.applies` counts other factors. Folding saves multiply-adds
    per output voxel but pays once per call for its kernel, which dominates for small inputs of wide deep
    levels."""
    return _folding_pays(below, up_channels, out_channels, kernel_size, [2] * (below.dim() - 2))


def _folding_pays(
    below: torch.Tensor, up_channels: int, out_channels: int, kernel_size: list[int], scale: list[int]
) -> bool:
    below_channels = below.shape[1]
    coarse_voxels = below.numel() // below_channels  # over the batch
    fine_voxels = coarse_voxels
    folded_taps = 1  # of the folded kernel: s + k - 1 per axis, each output voxel meets (s + k - 1) / s of them
    plain_taps = 1
    folding_cost = 1  # of the folded kernel itself: each deconvolution tap meets each convolution tap
    for d in range(len(scale)):  # (TorchScript's zip takes no strict=)
        s, k = scale[d], kernel_size[d]
        fine_voxels *= s
        folded_taps *= s + k - 1
        plain_taps *= k
        folding_cost *= s * k
    folded = coarse_voxels * below_channels * out_channels * folded_taps
    folded += below_channels * up_channels * out_channels * folding_cost
    plain = fine_voxels * up_channels * (out_channels * plain_taps + below_channels)
    return folded < plain


def upsampled_conv(
    below: torch.Tensor,
    up_weight: torch.Tensor,
    up_bias: torch.Tensor | None,
    weight: torch.Tensor,
    padding: list[int],
) -> torch.Tensor:
    """``conv(deconv(below), weight)`` without the upsampled tensor, where ``deconv`` is a transposed
    convolution whose kernel equals its stride (``up_weight``, ``up_bias``), as MONAI's ``UpSample(mode="deconv")``:
    2 on every axis by default, or any factor per axis (the strides of an anisotropic network).

    Along an axis with factor s, a k-tap convolution of the deconvolution is a (s + k - 1)-tap transposed
    convolution of the coarse tensor with stride s, whose kernel is the full convolution of the two kernels (the
    deconvolution's channels summed out). Per output voxel, in 3D with s = 2 and k = 3, that is 8 multiply-adds per
    pair of channels (below, out) instead of 27 per pair (up, out) plus the deconvolution's 1 per pair (below, up),
    and neither the upsampled tensor nor its copy for backward exists. The deconvolution's bias is constant inside
    the volume, so its convolution is the convolution of a field of ones, which keeps the zero padding at the
    borders exact. ``padding`` is the convolution's, ``k // 2`` per axis.
    """
    spatial = list(range(2, weight.dim()))
    stride = [int(s) for s in up_weight.shape[2:]]
    # the full convolution of the two kernels, as a transposed convolution of the deconvolution's weight
    # (in: below, channels: up) with the flipped weight in a transposed convolution's (up, out, *k) layout
    kernel = _conv_transpose(up_weight, weight.transpose(0, 1).flip(spatial), [1] * len(spatial), [0] * len(spatial))
    y = _conv_transpose(below, kernel, stride, padding)
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


class UpsamplingFold(nn.Module):
    """The ``folded_upsampling`` decision and kernel of one decoder node (no parameters of its own).

    Args:
        channels: the width of the upsampled tensor and of the node's convolution.
        kernel_size: the node's convolution kernel size, one per spatial axis.
        scale: the deconvolution's factor (its kernel and stride), one per spatial axis.
    """

    def __init__(self, channels: int, kernel_size: Sequence[int], scale: Sequence[int]) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = [int(k) for k in kernel_size]
        self.scale = [int(s) for s in scale]
        self.padding = [k // 2 for k in self.kernel_size]
        self.flags = switch("folded_upsampling")

    def applies(self, below: torch.Tensor, skip: torch.Tensor) -> bool:
        """Whether to fold for these inputs: it :meth:`fits` them and folding needs fewer multiply-adds."""
        if not self.fits(below, skip):
            return False
        return _folding_pays(below, self.channels, self.channels, self.kernel_size, self.scale)

    def fits(self, below: torch.Tensor, skip: torch.Tensor) -> bool:
        """Whether folding may run for these inputs: the switch is on for their device and the skip is exactly
        ``scale`` times the size of ``below`` on every axis (no crop)."""
        if not enabled_for(below, self.flags) or not may_specialize_on_shapes():
            return False
        for d in range(2, below.dim()):
            if skip.shape[d] != self.scale[d - 2] * below.shape[d]:
                return False
        return True

    def conv(
        self, below: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor | None, weight: torch.Tensor
    ) -> torch.Tensor:
        """The convolution with ``weight`` of ``below`` upsampled by the deconvolution ``up_weight``, ``up_bias``.

        A method, not ``forward``: module hooks (``FlopCounterMode``'s, for one) would see the weights as inputs."""
        return upsampled_conv(below, up_weight, up_bias, weight, self.padding)


# ------------------------------------------------------------------------------------------ group_norm_instance_norm
class InstanceNorm(nn.modules.instancenorm._InstanceNorm):
    """``nn.InstanceNorm{1,2,3}d`` (same arguments, parameters and results) that runs as a group norm with one
    channel per group where the ``group_norm_instance_norm`` switch is on.

    PyTorch's CPU instance norm is a batch norm over a ``(1, N * C, ...)`` view with the affine parameters repeated
    N times; ``group_norm`` with one channel per group normalises the same sets of values with a faster kernel.
    Running statistics (``track_running_stats=True``) keep ``F.instance_norm``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flags = switch("group_norm_instance_norm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if enabled_for(x, self.flags) and not self.track_running_stats and x.dim() > 2:
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

    @classmethod
    def replacing(cls, norm: nn.Module) -> nn.Module:
        """An :class:`InstanceNorm` holding ``norm``'s parameters and buffers if ``norm`` is an instance norm and the
        switch is on for some device; ``norm`` itself otherwise."""
        if not isinstance(norm, nn.modules.instancenorm._InstanceNorm) or not any(switch("group_norm_instance_norm")):
            return norm
        fast = cls(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        fast.load_state_dict(norm.state_dict())
        return fast
