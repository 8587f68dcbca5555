# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Inference runtimes for sliding-window inference: PyTorch (fp32 or bf16 autocast) and OpenVINO on CPU (fp32, bf16,
or int8 by NNCF's post-training quantization).

An OpenVINO network is converted once per network, weights, window shape, precision and inference settings, and
kept in :data:`compiled_networks`, so later windows, calls and volumes reuse it. What the conversion keeps of
UNet++'s savings:

- pruning: a network run at ``inference_depth=k`` is converted from its :py:meth:`UNetPlusPlus.pruned` copy, and in
  ``"final"`` mode only the final head is in the graph;
- the folded upsampling (``monai_unetpp.networks.fast_paths.upsampled_conv``): its kernel depends on the weights
  alone, so it is computed here, once, and enters the graph as a constant; the graph has one stride-2 transposed
  convolution where the plain layers have a deconvolution and a convolution of the upsampled tensor (in int8 on a
  CPU without AMX run as its output phases, forward convolutions joined by ``DepthToSpace``:
  :func:`_as_phase_convolutions`). Eager PyTorch decides per input shape where folding pays; a traced graph cannot
  (it must serve any shape), so the decisions are taken in an eager pass on the window shape, which the converted
  graph is fixed to; in int8 on AMX by what the plugin's kernels run (:func:`_folding_pays_in_graph`: they read
  input channels in blocks of 64, so a node of 32 skip channels saves nothing by folding). The deconvolution bias's
  part, a field that is constant except near the borders, enters as the one slice along the first spatial axis
  that repeats between the borders, broadcast, and each border slice's difference from it, placed by a mask
  (:func:`_border_terms`), not as a constant of the output's size: 0.5 GB fewer constants in each converted
  default network at a 96^3 window, which its compiled models hold again;
- the layout and kernels of OpenVINO's CPU plugin: instance norm is exported as ``instance_norm`` (OpenVINO's MVN)
  rather than in the group-norm form that is faster in eager PyTorch; the widths that the concatenation-free
  convolutions read from their inputs are folded into constant weight slices (:func:`_fold_static_shapes`); the
  network's ceil-mode pooling is exported in floor mode where the window divides by
  :py:meth:`UNetPlusPlus.shape_factor` (the two agree there; the plugin pools in int8 in floor mode only); in int8
  a decoder node reads its same-level inputs concatenated, as one convolution.

int8: the converted graph is quantized by NNCF (``nncf.quantize``: 8-bit symmetric weights per output channel,
activation ranges from calibration windows, fast bias correction), all but the first convolution and the head,
which stay in float32; the output phases of one folded upsampling then share one range, so that they are joined in
int8 (:func:`_one_range_per_phase_join`). The calibration windows are those of the first image the network runs
on in int8 (:py:class:`monai_unetpp.UNetPlusPlusInferer` cuts them as it cuts the image); the quantized network is
kept and reused for later images like any other conversion.

OpenVINO: https://docs.openvino.ai (``openvino.convert_model`` of a PyTorch module, CPU plugin properties);
NNCF: https://github.com/openvinotoolkit/nncf (``nncf.quantize`` of an OpenVINO model).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import io
import itertools
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .networks.blocks import ConvNormAct
from .networks.fast_paths import InstanceNorm, UpsamplingFold
from .networks.migration import heads_final_first
from .networks.unetplusplus import NestedNode, reduce_heads
from .utils import unwrap_network

__all__ = [
    "AUTO",
    "BACKENDS",
    "PRECISIONS",
    "CompiledNetworkCache",
    "OpenVINONetwork",
    "calibration_subset",
    "compiled_networks",
    "export_copy",
    "openvino_available",
    "openvino_bf16_supported",
    "nncf_available",
    "resolve_backend",
    "torch_precision",
    "weights_fingerprint",
]

#: Inference runtimes of :py:class:`monai_unetpp.UNetPlusPlusInferer`.
BACKENDS = ("torch", "openvino")
#: The backend and precision that choose for the machine (:func:`resolve_backend`).
AUTO = "auto"
#: Inference precisions: float32; bfloat16 (PyTorch autocast; OpenVINO's ``INFERENCE_PRECISION_HINT``); int8
#: (OpenVINO only: the convolutions quantized by NNCF, the rest in float32).
PRECISIONS = ("fp32", "bf16", "int8")
INSTALL_HINT = 'pip install "openvino>=2025.1", the openvino extra of monai-unetpp'
NNCF_INSTALL_HINT = 'pip install "nncf>=2.16", in the openvino extra of monai-unetpp'
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: Input channels that OpenVINO's CPU plugin reads in one block in its AMX int8 convolutions (a 64-byte tile row):
#: there a convolution of 32 channels runs as long as one of 64 (``benchmarks/README.md``).
AMX_INT8_CHANNEL_BLOCK = 64
#: At most this many windows of the first image calibrate an int8 network (evenly spaced over the image's windows).
CALIBRATION_WINDOWS = 64


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported (checked on every call: it may be installed meanwhile)."""
    try:
        importlib.import_module("openvino")
    except ImportError:
        return False
    return True


def nncf_available() -> bool:
    """Whether the ``nncf`` package (int8 quantization) can be imported."""
    try:
        importlib.import_module("nncf")
    except ImportError:
        return False
    return True


def openvino_bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 on this CPU (AVX512-BF16 or AMX); elsewhere it silently runs f32."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_backend(backend: str, precision: str, device: str = "cpu") -> tuple[str, str]:
    """The backend and precision that will run for the requested ``backend`` and ``precision`` on images on
    ``device`` (a device type), checked.

    ``"auto"`` chooses by measurement (benchmarks/README.md): the backend is OpenVINO where it is installed and the
    images are on the CPU, else PyTorch (int8 always asks for OpenVINO); the precision is bf16 where OpenVINO runs
    bf16 natively (AVX512-BF16 or AMX), else fp32. An explicit ``"openvino"`` becomes ``"torch"`` with a warning
    where OpenVINO is not installed (int8 then runs as fp32), int8 becomes fp32 with a warning where NNCF is not
    installed, and bf16 on a CPU that OpenVINO cannot run in bf16 is said in a warning.

    Raises:
        ValueError: for an unknown backend or precision, naming the value and the choices, and for int8 asked of
            PyTorch.
    """
    if backend not in (*BACKENDS, AUTO):
        raise ValueError(f"backend must be one of {(*BACKENDS, AUTO)}, got {backend!r}.")
    if precision not in (*PRECISIONS, AUTO):
        raise ValueError(f"precision must be one of {(*PRECISIONS, AUTO)}, got {precision!r}.")
    if backend == AUTO:
        chosen = precision == "int8" or (device == "cpu" and openvino_available())
        backend = "openvino" if chosen else "torch"
    if precision == AUTO:
        precision = "bf16" if backend == "openvino" and openvino_available() and openvino_bf16_supported() else "fp32"
    if backend == "torch" and precision == "int8":
        raise ValueError(
            "precision='int8' runs in OpenVINO only: use backend='openvino', or precision 'fp32' or 'bf16' in PyTorch."
        )
    if backend == "openvino":
        if not openvino_available():
            fallback = "fp32" if precision == "int8" else precision
            warnings.warn(
                f"backend='openvino' needs the openvino package, which is not installed ({INSTALL_HINT}); "
                f"running the network in PyTorch {fallback} instead.",
                UserWarning,
                stacklevel=3,
            )
            return "torch", fallback
        if precision == "int8" and not nncf_available():
            warnings.warn(
                f"precision='int8' needs the nncf package, which is not installed ({NNCF_INSTALL_HINT}); "
                "running OpenVINO in fp32 instead.",
                UserWarning,
                stacklevel=3,
            )
            return backend, "fp32"
        if precision == "bf16" and not openvino_bf16_supported():
            warnings.warn(
                "precision='bf16': OpenVINO cannot run bf16 on this CPU (no AVX512-BF16 or AMX), so it runs in fp32.",
                UserWarning,
                stacklevel=3,
            )
    return backend, precision


def torch_precision(precision: str, device: torch.device) -> Any:
    """The context a PyTorch forward runs in for ``precision``: bf16 autocast on ``device``'s type, or nothing."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision in PyTorch must be 'fp32' or 'bf16', got {precision!r}.")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def weights_fingerprint(network: nn.Module) -> str:
    """A digest of ``network``'s weights and layers: equal for equal networks, different after any change of a
    parameter or buffer (training, ``load_state_dict``, edits through ``.data``) or of a layer's settings.

    A hash of the values rather than PyTorch's version counters: ``p.data.copy_(...)`` and buffers written
    through ``.data`` bump no counter of ``p``, and a digest also recognises a reloaded copy of the same weights.
    SHA-256 runs at about 1 GB/s here, a few tens of milliseconds for the default network's 7M parameters, once
    per inferer call.
    """
    digest = hashlib.sha256(repr(network).encode())
    for name, value in network.state_dict(keep_vars=False).items():
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _OneOutput(nn.Module):
    """``network(x, **settings)`` as one Tensor: a traced graph has a single output (lists reduced by mode).

    The network is held in a tuple, not as a submodule: tracing then records its weights as constants and does not
    compile the network's ``@torch.jit.export`` methods, which the graph does not need."""

    def __init__(self, network: nn.Module, settings: dict[str, Any], inference_mode: str) -> None:
        super().__init__()
        self.held = (network,)
        self.settings = settings
        self.inference_mode = inference_mode

    @property
    def network(self) -> nn.Module:
        return self.held[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x, **self.settings)
        if isinstance(out, (list, tuple)):
            return reduce_heads(heads_final_first(self.network, out), self.inference_mode)
        return out


def _transposed(
    x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int] | int = 1, padding: Sequence[int] | int = 0
) -> torch.Tensor:
    conv = {3: F.conv_transpose1d, 4: F.conv_transpose2d, 5: F.conv_transpose3d}[x.dim()]
    return conv(x, weight, stride=stride, padding=padding)


def _border_terms(
    field: torch.Tensor, width: int
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None:
    """``field`` ``(1, C, n, ...)`` as ``inner + sum(delta * mask)``: ``inner`` the one slice along axis 2 that all
    but the first and last ``width`` slices equal, and per border slice its difference from ``inner`` (``delta``,
    ``(1, C, 1, ...)``) with the one-hot ``mask`` of its position (``(1, 1, n, 1, ...)``). None where the slices
    between the borders differ (then the graph keeps the whole field)."""
    size = field.shape[2]
    if width < 1 or size <= 2 * width:
        return None
    inner = field[:, :, width : width + 1]
    if not torch.equal(field[:, :, width : size - width], inner.expand_as(field[:, :, width : size - width])):
        return None
    terms = []
    for index in [*range(width), *range(size - width, size)]:
        mask = torch.zeros((1, 1, size) + (1,) * (field.dim() - 3), dtype=torch.bool)
        mask[:, :, index] = True
        terms.append((field[:, :, index : index + 1] - inner, mask))
    return inner.clone(), terms


def _rounded_up(channels: int, block: int) -> int:
    """``channels`` rounded up to a multiple of ``block``: what kernels that read channels in blocks compute."""
    return -(-channels // block) * block


def _folding_pays_in_graph(
    below_channels: int, skip_channels: int, channels: int, kernel_size: list[int], scale: list[int], block: int
) -> bool:
    """Whether a converted graph runs a decoder node's first convolution in fewer multiply-adds with its upsampling
    folded, where the plugin's kernels read input channels in blocks of ``block`` (a convolution of 32 channels
    costs one of 64 in blocks of 64).

    Per output voxel: plain, the deconvolution (one tap of ``below_channels``) and the convolution of the skips and
    the upsampled tensor concatenated; folded, the convolution of the skips alone and the folded transposed
    convolution (``(s + k - 1) / s`` taps per axis). The folded kernel is a constant of the graph: its cost, which
    the eager decision (``UpsamplingFold.applies``) counts per call, is not counted."""

    padded = functools.partial(_rounded_up, block=block)
    taps = math.prod(kernel_size)
    folded_taps = math.prod(s + k - 1 for s, k in zip(scale, kernel_size, strict=True)) / math.prod(scale)
    plain = padded(skip_channels + channels) * channels * taps + padded(below_channels) * channels
    folded = padded(skip_channels) * channels * taps + padded(below_channels) * channels * folded_taps
    return folded < plain


class _ConstantFold:
    """Stands in for one :py:class:`UpsamplingFold`'s ``applies`` and ``conv`` in a copy made for tracing.

    ``node_widths`` are the node's ``(below_channels, skip_channels, channels)``; ``channel_block`` as for
    :func:`export_copy`. The first (eager) call takes the decision for the window shape and computes the folded
    kernel (the full convolution of the deconvolution's and the convolution's kernels, as ``upsampled_conv`` builds
    it) and the deconvolution bias's contribution (as border terms, see :func:`_border_terms`) as constants, checked
    against the network's own folded result; the traced calls then repeat that decision and use the constants. Where
    the check fails (a network whose folding works otherwise), the node is left unfolded: slower, never wrong.
    """

    def __init__(self, fold: UpsamplingFold, node_widths: tuple[int, int, int], channel_block: int | None) -> None:
        self.own_applies, self.own_fits, self.own_conv = fold.applies, fold.fits, fold.conv
        self.kernel_size, self.scale = fold.kernel_size, fold.scale
        self.node_widths = node_widths
        self.channel_block = channel_block
        self.decision: bool | None = None
        self.kernel: torch.Tensor | None = None
        self.bias_field: torch.Tensor | None = None
        self.field_terms: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self.stride: list[int] = []
        self.padding: list[int] = []

    def applies(self, below: torch.Tensor, skip: torch.Tensor) -> bool:
        if self.decision is None:
            if self.channel_block is None:
                self.decision = bool(self.own_applies(below, skip))
            else:
                pays = _folding_pays_in_graph(*self.node_widths, self.kernel_size, self.scale, self.channel_block)
                self.decision = bool(self.own_fits(below, skip)) and pays
        return self.decision

    def conv(
        self, below: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor | None, weight: torch.Tensor
    ) -> torch.Tensor:
        if self.kernel is None:
            return self._first_call(below, up_weight, up_bias, weight)
        y = _transposed(below, self.kernel, self.stride, self.padding)
        if self.field_terms is not None:
            # broadcasts and products that the CPU plugin runs as one element-wise kernel; the field's border
            # slices cut out and joined again (Split, Concat) ran in its reference kernels, with reorders
            inner, terms = self.field_terms
            y = y + inner
            for delta, mask in terms:
                y = torch.where(mask, y + delta, y)
            return y
        return y if self.bias_field is None else y + self.bias_field

    def _first_call(
        self, below: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor | None, weight: torch.Tensor
    ) -> torch.Tensor:
        expected = self.own_conv(below, up_weight, up_bias, weight)
        spatial = list(range(2, weight.dim()))
        self.kernel = _transposed(up_weight, weight.transpose(0, 1).flip(spatial)).detach()
        self.stride = list(up_weight.shape[2:])  # the deconvolution's kernel is its stride (MONAI's UpSample)
        self.padding = [k // 2 for k in weight.shape[2:]]
        if up_bias is not None:
            # the bias's part is the folded result for a zero input: constant inside, smaller at the borders
            self.bias_field = self.own_conv(torch.zeros_like(below[:1]), up_weight, up_bias, weight).detach()
            # a constant of the output's size (out_channels x the window, 113 MB per level-0 node at 96^3) that
            # the converted model and each compiled one would hold; its border terms are about 3/n of that
            self.field_terms = _border_terms(self.bias_field, self.padding[0])
            if self.field_terms is not None:
                self.bias_field = None
        y = self.conv(below, up_weight, up_bias, weight)
        scale = float(expected.abs().max()) + 1e-12
        if y.shape != expected.shape or float((y - expected).abs().max()) > 1e-4 * scale:
            self.decision = False
        return expected


def export_copy(
    network: nn.Module,
    example: torch.Tensor,
    inference_mode: str | None = None,
    inference_depth: int | None = None,
    concatenated: bool = False,
    channel_block: int | None = None,
) -> nn.Module:
    """An eval-mode copy of ``network`` for tracing with inputs shaped as ``example``: one output Tensor, pruned to
    ``inference_depth`` where the network can prune (``pruned(k)``: the deeper nodes and unused heads are not in
    it), and its folded upsamplings with constant kernels (see the module doc). ``network`` is left unchanged.

    Args:
        network: a UNetPlusPlus, or any module whose eval forward returns a Tensor or a list of heads.
        example: a window batch of the shape the graph is fixed to.
        inference_mode: passed to the network's forward where not None; also reduces a list output.
        inference_depth: pruning depth, or None for the network's setting.
        concatenated: whether a decoder node's convolution reads its same-level inputs concatenated (one
            convolution, as in MONAI's ``BasicUNetPlusPlus``) rather than part by part (``concat_free_conv``, the
            network's own setting where this is False). The folded upsampling's part is added either way.
        channel_block: None for the network's own decisions where to fold (per call, in multiply-adds); else the
            graph's: in multiply-adds with input channels counted in blocks of this many
            (:func:`_folding_pays_in_graph`), for the plugin's AMX int8 kernels. Either way only where the
            network may fold (``UpsamplingFold.fits``).

    Examples::

        >>> graph_module = export_copy(net, torch.zeros(4, 1, 96, 96, 96), inference_depth=2)
        >>> ov_model = openvino.convert_model(graph_module, example_input=..., input=[(4, 1, 96, 96, 96)])
    """
    net = unwrap_network(network)
    settings: dict[str, Any] = {}
    if inference_mode is not None:
        settings["inference_mode"] = inference_mode
    depth = inference_depth if inference_depth is not None else getattr(net, "inference_depth", None)
    if depth is not None and hasattr(net, "pruned") and depth < net.depth:
        net = net.pruned(depth)  # a copy holding only the nodes and heads of UNet++ L_depth
        if not net.deep_supervision:
            settings.pop("inference_mode", None)  # one head left: its mean is itself
    else:
        net = copy.deepcopy(net).eval()
        if inference_depth is not None:
            settings["inference_depth"] = inference_depth
    for parameter in net.parameters():
        parameter.requires_grad_(False)  # the copy's weights become constants of the traced graph
    for norm in net.modules():
        if isinstance(norm, InstanceNorm):
            # F.instance_norm, not the group-norm form: that form is a PyTorch kernel choice, and OpenVINO's CPU
            # plugin runs GroupNormalization in the plain layout behind Reshapes, with a reorder from and back to
            # its blocked convolution layout around every norm (12% of the default network's time at 4 x 32^3);
            # instance_norm becomes MVN, which stays blocked and takes the affine and activation as post-ops
            norm.flags = (False, False)
    if hasattr(net, "shape_factor") and all(
        size % factor == 0 for size, factor in zip(example.shape[2:], net.shape_factor(), strict=True)
    ):
        for pool in net.modules():
            if isinstance(pool, nn.modules.pooling._MaxPoolNd):
                # every level's size divides by its strides, where the network's ceil mode pools as floor mode
                # does; OpenVINO's CPU plugin pools in int8 only in floor mode (in ceil mode the pooling and the
                # convolution after it ran in float32)
                pool.ceil_mode = False
    if concatenated:
        for layer in net.modules():
            if isinstance(layer, ConvNormAct):
                layer.concat_free = (False, False)
    mode = inference_mode or getattr(net, "inference_mode", "final")
    module = _OneOutput(net, settings, mode).eval()
    for node in net.modules():
        if isinstance(node, NestedNode) and node.fold is not None:
            widths = (node.up.deconv.in_channels, node.up_channels[0], node.fold.channels)
            stand_in = _ConstantFold(node.fold, widths, channel_block)
            node.fold.applies, node.fold.conv = stand_in.applies, stand_in.conv  # instance attributes: this copy only
    with torch.no_grad():
        module(example)  # the eager pass that takes the decisions and builds the constants
    return module


def _fold_static_shapes(model: Any) -> Any:
    """``model`` with every ``ShapeOf`` of a static shape replaced by that shape, then constant-folded, in place.

    The trace records the widths a layer reads from its inputs (``weight.narrow(1, 0, parts[0].shape[1])`` of the
    concatenation-free convolution) as shape computations on activations, which OpenVINO's constant folding keeps:
    the model would carry every full weight plus ShapeOf, Gather, Slice and Reshape ops that the CPU plugin folds
    again at each compilation. The graph is fixed to one window shape, so the shapes are constants, and after this
    the weight slices are plain constants of the graph.
    """
    import openvino as ov
    from openvino import passes

    changed = False
    for op in model.get_ordered_ops():
        if op.get_type_name() == "ShapeOf" and op.get_input_partial_shape(0).is_static:
            dtype = np.int32 if op.get_output_element_type(0) == ov.Type.i32 else np.int64
            shape = ov.opset13.constant(np.array(list(op.get_input_shape(0)), dtype=dtype))
            op.output(0).replace(shape.output(0))
            changed = True
    if changed:
        manager = passes.Manager()
        manager.register_pass(passes.ConstantFolding())
        manager.run_passes(model)
    return model


def _phase_taps(kernel: int, stride: int, padding: int) -> list[tuple[list[int], int, int]]:
    """Per output phase ``r`` of a transposed convolution along one axis (output ``stride * i + r``): the kernel
    taps of the forward convolution of the input that gives it, in correlation order, and its padding before and
    after. Output ``stride * i + r`` gathers input ``i - d`` through tap ``r + padding + stride * d``."""
    phases = []
    for r in range(stride):
        shifts = [d for d in range(-kernel, kernel + 1) if 0 <= r + padding + stride * d < kernel]
        first, last = min(shifts), max(shifts)
        taps = [r + padding + stride * (last - j) for j in range(last - first + 1)]
        phases.append((taps, last, -first))
    return phases


def _as_phase_convolutions(model: Any) -> list[tuple[int, ...]]:
    """Rewrite, in place, every transposed convolution of ``model`` whose kernel is a constant larger than its
    stride ``s`` (the same on every axis) and whose output is exactly ``s`` times its input (the folded
    upsampling's: kernel ``s + k - 1``, padding ``k // 2``) as its ``s^d`` output phases: each a forward
    convolution of the input with the taps that reach that phase, joined by ``DepthToSpace``. The same sums in the
    same multiply-adds; returns the spatial kernel shapes rewritten.

    For int8 on a CPU without AMX: there the CPU plugin ran most of the folded transposed convolutions in float32
    (their input, the decoder's ``X^{i,j}``, also feeds the next column); as forward convolutions they are
    quantized with the rest. On AMX the plugin runs them in int8 as they are, and in fp32 and bf16 its own
    transposed convolution is kept: the phases' Concat and DepthToSpace cost more than they save
    (``benchmarks/README.md``). A kernel equal to its stride (a plain deconvolution) has one tap per phase and is
    left to the plugin. This is the sub-pixel form of a strided transposed convolution (Shi et al., "Real-time
    single image and video super-resolution using an efficient sub-pixel convolutional neural network", CVPR 2016).
    """
    from openvino import opset13 as ops

    rewritten = []
    for node in model.get_ordered_ops():
        if node.get_type_name() != "ConvolutionBackpropData" or node.get_input_size() != 2:
            continue  # an explicit output shape: not what the export writes
        weights = node.input_value(1).get_node()
        attributes = node.get_attributes()
        strides, padding = list(attributes["strides"]), list(attributes["pads_begin"])
        if weights.get_type_name() != "Constant" or len(set(strides)) != 1 or strides[0] < 2:
            continue
        if padding != list(attributes["pads_end"]) or set(attributes["dilations"]) != {1}:
            continue
        if any(attributes["output_padding"]) or not node.get_output_partial_shape(0).is_static:
            continue
        stride, kernel = strides[0], weights.get_data().astype(np.float32)  # (in, out, *k)
        sizes = kernel.shape[2:]
        if any(k <= stride or k != stride + 2 * p for k, p in zip(sizes, padding, strict=True)):
            continue
        taps = [_phase_taps(k, stride, p) for k, p in zip(sizes, padding, strict=True)]
        ones = [1] * len(sizes)
        phases = []
        # DepthToSpace "blocks_first" takes phase (r_1, ..., r_d) from channels ((r_1 * s + r_2) * s + ...) * out + c:
        # the phases in this order, each with the out channels
        for phase in itertools.product(range(stride), repeat=len(sizes)):
            phase_kernel, before, after = kernel, [], []
            for axis, r in enumerate(phase):
                axis_taps, pad_before, pad_after = taps[axis][r]
                phase_kernel = np.take(phase_kernel, axis_taps, axis=axis + 2)
                before.append(pad_before)
                after.append(pad_after)
            weight = np.ascontiguousarray(np.swapaxes(phase_kernel, 0, 1))  # (out, in, *taps)
            phases.append(ops.convolution(node.input_value(0), ops.constant(weight), ones, before, after, ones))
        joined = ops.depth_to_space(ops.concat(phases, 1), "blocks_first", stride)
        if joined.get_output_partial_shape(0) != node.get_output_partial_shape(0):
            continue
        node.output(0).replace(joined.output(0))
        rewritten.append(tuple(sizes))
    return rewritten


def _quantized(model: Any, calibration: torch.Tensor, batch: int) -> Any:
    """``model`` (fixed to ``batch`` windows) quantized to int8 by NNCF's post-training quantization, all but its
    first and last convolutions, its activation ranges measured on ``calibration`` windows ``(n, channels, *roi)``
    taken ``batch`` at a time (the last batch filled up from the first windows)."""
    import nncf

    windows = calibration.detach().to("cpu", torch.float32)
    count = windows.shape[0]
    batches = [windows[torch.arange(start, start + batch) % count].numpy() for start in range(0, count, batch)]
    # the first convolution (it reads the image's intensities) and the head stay in float32: quantized, they moved
    # the brain bundle's label maps past the Dice tolerance (benchmarks/README.md); they are few multiply-adds
    convolutions = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    ignored = nncf.IgnoredScope(names=[convolutions[0], convolutions[-1]])
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
        return nncf.quantize(
            model,
            nncf.Dataset(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(batches),
            ignored_scope=ignored,
        )


def _one_range_per_phase_join(model: Any) -> int:
    """Give the quantizers of each output-phase join (:func:`_as_phase_convolutions`) one range, in place: the
    widest of theirs (the largest high less low); returns how many joins.

    NNCF quantizes each phase's output by its own calibrated range, so the ``Concat`` of the phases carries one
    scale per phase and the CPU plugin cannot move its dequantization past the ``DepthToSpace`` (that changes which
    channels a scale belongs to): it dequantized before it and ran ``DepthToSpace`` in float32, four times the bytes
    of int8. The phases are one transposed convolution's output, which as one tensor would have had one range; the
    ranges of a node's phases differ by a few percent, so the widest of them costs that little resolution."""

    def width(quantizer: Any) -> float:
        low, high = (quantizer.input_value(i).get_node().get_data() for i in (1, 2))
        return float(np.max(high - low))

    joins = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "DepthToSpace" or node.input_value(0).get_node().get_type_name() != "Concat":
            continue
        quantizers = [value.get_node() for value in node.input_value(0).get_node().input_values()]
        if not all(q.get_type_name() == "FakeQuantize" for q in quantizers):
            continue
        if any(len(q.output(0).get_target_inputs()) != 1 for q in quantizers):
            continue  # a phase's quantizer that also serves another layer keeps its range
        if len({q.get_attributes()["levels"] for q in quantizers}) != 1:
            continue
        if not all(q.input_value(i).get_node().get_type_name() == "Constant" for q in quantizers for i in (1, 2)):
            continue
        # all four limits of one quantizer, so a symmetric range stays symmetric (a low of one and a high of
        # another would shift the zero point)
        widest = max(quantizers, key=width)
        for quantizer in quantizers:
            for i in range(1, 5):
                quantizer.input(i).replace_source_output(widest.input_value(i))
        joins += 1
    return joins


def _check_calibration(windows: torch.Tensor | None) -> None:
    if windows is None:
        raise ValueError("precision='int8' needs calibration windows (n, channels, *roi) of a real image.")
    windows = torch.as_tensor(windows)
    if windows.numel() == 0 or float(windows.max() - windows.min()) == 0.0:
        # ranges of zero width: every activation would quantize to one value
        raise ValueError(
            "precision='int8' calibrates on the first image's windows, and these hold a single value "
            f"({float(windows.flatten()[0]) if windows.numel() else 'no windows'}): run a real image first, or use "
            "precision 'fp32' or 'bf16'."
        )


def calibration_subset(windows: torch.Tensor, limit: int = CALIBRATION_WINDOWS) -> torch.Tensor:
    """At most ``limit`` of ``windows`` ``(n, channels, *roi)``, evenly spaced: the int8 calibration set."""
    if windows.shape[0] <= limit:
        return windows
    return windows[torch.linspace(0, windows.shape[0] - 1, limit).round().long()]


@functools.lru_cache(maxsize=1)
def _int8_convolutions_run_on_amx() -> bool:
    """Whether OpenVINO's CPU plugin runs int8 convolutions in its AMX kernels here: one small quantized
    convolution compiled, its kernel's name read (``brgconv_avx512_amx_I8``)."""
    import openvino as ov
    from openvino import opset13 as ops

    def constant(value: Any) -> Any:
        return ops.constant(np.asarray(value, dtype=np.float32))

    x = ops.parameter([1, 64, 8, 8, 8], np.float32)
    quantized = ops.fake_quantize(x, constant(-1.0), constant(1.0), constant(-1.0), constant(1.0), 256)
    # int8 weights and their per-channel scale, as NNCF writes them
    weight = ops.convert(ops.constant(np.ones((32, 64, 3, 3, 3), dtype=np.int8)), np.float32)
    weight = ops.multiply(weight, constant(np.full((32, 1, 1, 1, 1), 0.01)))
    conv = ops.convolution(quantized, weight, [1] * 3, [1] * 3, [1] * 3, [1] * 3)
    compiled = ov.Core().compile_model(ov.Model([conv], [x]), "CPU", {"INFERENCE_NUM_THREADS": "1"})
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and str(info["layerType"].astype(str)) == "Convolution":
            return "amx" in str(info["primitiveType"].astype(str)).lower()
    return False


def _has_8_bit_weights(layer: Any) -> bool:
    """Whether ``layer``'s weights are 8-bit constants behind their dequantization (``Convert``, ``Multiply``), as
    NNCF leaves the layers it quantized."""
    node = layer.input_value(1).get_node()
    while node.get_type_name() != "Constant" and node.get_input_size() > 0:
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant" and node.get_output_element_type(0).bitwidth == 8


def _reads_the_input(node: Any) -> bool:
    """Whether OpenVINO graph ``node`` depends on a ``Parameter`` (the window), not on constants alone."""
    seen, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current.get_type_name() == "Parameter":
            return True
        for value in current.input_values():
            upstream = value.get_node()
            if upstream.get_name() not in seen:  # unique per node; the Python wrappers are not
                seen.add(upstream.get_name())
                stack.append(upstream)
    return False


class OpenVINONetwork:
    """``network`` converted to OpenVINO for windows shaped as ``example`` and compiled for the CPU; callable on
    window batches of that shape, returning what the network's eval forward returns (one Tensor).

    A smaller batch (the last windows of a volume) gets its own compiled model, reshaped from the converted one
    (no new conversion), kept for the next volumes.

    Args:
        network: the network (see :func:`export_copy`).
        example: a window batch ``(batch, channels, *roi)``.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
        inference_mode, inference_depth: as for :func:`export_copy`.
        calibration: for int8, windows ``(n, channels, *roi)`` of a real image (at most
            :data:`CALIBRATION_WINDOWS` are used, see :func:`calibration_subset`); ignored otherwise.

    Raises:
        ValueError: for int8 without calibration windows, or with windows of one value.

    Examples::

        >>> ov_net = OpenVINONetwork(net, torch.zeros(4, 1, 96, 96, 96), precision="bf16")
        >>> logits = ov_net(windows)   # (4, out_channels, 96, 96, 96), a float32 Tensor
        >>> int8 = OpenVINONetwork(net, windows[:4], precision="int8", calibration=windows)
    """

    def __init__(
        self,
        network: nn.Module,
        example: torch.Tensor,
        precision: str = "fp32",
        inference_mode: str | None = None,
        inference_depth: int | None = None,
        calibration: torch.Tensor | None = None,
    ) -> None:
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
        if precision == "int8":
            _check_calibration(calibration)
        self.precision = precision
        example = torch.as_tensor(example).detach().to("cpu", torch.float32)
        self.window_shape = tuple(example.shape[1:])
        # int8 reads a node's same-level inputs concatenated: one convolution over all of them runs faster in
        # int8 than one per part with their sums (about 9% of a 4 x 32^3 batch, 3% at 96^3), where in fp32 and
        # bf16 the parts run as fast or faster (benchmarks/README.md)
        amx = precision == "int8" and _int8_convolutions_run_on_amx()
        module = export_copy(
            network,
            example,
            inference_mode,
            inference_depth,
            concatenated=precision == "int8",
            channel_block=AMX_INT8_CHANNEL_BLOCK if amx else None,
        )
        with warnings.catch_warnings(), torch.no_grad():
            # the tracer's notes on shape checks: the graph is fixed to this window shape on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # traced here, once: convert_model's own tracing of a module checks and retraces, twice the time
            traced = torch.jit.trace(module, example, check_trace=False)
            model = ov.convert_model(traced, example_input=example, input=[tuple(example.shape)])
        self.model = _fold_static_shapes(model)
        #: The spatial kernel shapes of the transposed convolutions run as output phases (int8: one per folded node).
        self.phase_convolutions: list[tuple[int, ...]] = []
        if precision == "int8":
            if not amx:  # the plugin's AMX kernels run the transposed convolutions in int8 as they are
                self.phase_convolutions = _as_phase_convolutions(self.model)  # before NNCF, which quantizes them
            self.model = _quantized(self.model, calibration_subset(torch.as_tensor(calibration)), example.shape[0])
            _one_range_per_phase_join(self.model)
        self._core = ov.Core()
        self._compiled: dict[tuple[int, int], Any] = {}
        self._compile(example.shape[0])

    def _compile(self, batch: int) -> Any:
        threads = torch.get_num_threads()  # the process's setting (torch.set_num_threads) holds for OpenVINO too
        key = (batch, threads)
        if key not in self._compiled:
            model = self.model
            if batch != self.model.inputs[0].get_partial_shape()[0].get_length():
                model = self.model.clone()
                model.reshape([batch, *self.window_shape])
            config = {
                "INFERENCE_PRECISION_HINT": _OV_PRECISION[self.precision],
                "INFERENCE_NUM_THREADS": str(threads),
                "PERFORMANCE_HINT": "LATENCY",
            }
            compiled = self._core.compile_model(model, "CPU", config)
            self._compiled[key] = compiled.create_infer_request()
        return self._compiled[key]

    @property
    def compiled_batches(self) -> list[int]:
        """The batch sizes compiled so far."""
        return sorted({batch for batch, _ in self._compiled})

    def op_counts(self) -> dict[str, int]:
        """Operations of the converted graph after constant folding, by OpenVINO type name (``"Convolution"``,
        ``"ConvolutionBackpropData"``, ...): what the CPU plugin is given to run."""
        counts: dict[str, int] = {}
        for op in self._folded().get_ordered_ops():
            counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
        return counts

    def kernels(self, batch: int | None = None) -> list[tuple[str, str]]:
        """What the CPU plugin runs for ``batch`` windows (the batch of the example where None), in order: per
        layer of the compiled model, its type and its kernel (``("Convolution", "brgconv_avx512_I8")``,
        ``("Pooling", "jit_avx512_f32")``). The kernel names the precision it runs in, which the converted graph
        does not: a quantized layer may still run in float32 where the plugin has no int8 kernel for it."""
        batch = self.model.inputs[0].get_partial_shape()[0].get_length() if batch is None else batch
        layers = []
        for op in self._compile(batch).get_compiled_model().get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and "primitiveType" in info:
                layers.append((str(info["layerType"].astype(str)), str(info["primitiveType"].astype(str))))
        return layers

    def multiply_adds(self, int8_channel_block: int = 1) -> int:
        """The multiply-adds of the graph's convolutions and transposed convolutions for one call on the example's
        batch; those of the layers with 8-bit weights (int8: all but the first convolution and the head) with
        their input channels rounded up to a multiple of ``int8_channel_block``.

        With 1 they are the multiply-adds as written; with 64 (``AMX_INT8_CHANNEL_BLOCK``) they are what the CPU
        plugin's AMX int8 kernels compute, which read input channels in blocks of 64: a convolution of 32 channels
        costs what one of 64 does. A transposed convolution counts every tap of every input voxel."""
        total = 0
        for op in self.model.get_ordered_ops():
            kind = op.get_type_name()
            if kind not in ("Convolution", "ConvolutionBackpropData"):
                continue
            weight = list(op.get_input_shape(1))
            if kind == "Convolution":  # weight (out, in, *kernel), per output voxel
                outputs, inputs, voxels = weight[0], weight[1], list(op.get_output_shape(0))
            else:  # weight (in, out, *kernel), per input voxel
                inputs, outputs, voxels = weight[0], weight[1], list(op.get_input_shape(0))
            if _has_8_bit_weights(op):
                inputs = _rounded_up(inputs, int8_channel_block)
            total += math.prod(voxels[:1] + voxels[2:]) * math.prod(weight[2:]) * inputs * outputs
        return total

    def transposed_convolution_kernels(self) -> list[tuple[int, ...]]:
        """The spatial kernel shape of every transposed convolution left after constant folding: ``(2, 2, 2)`` for
        a plain deconvolution, ``(4, 4, 4)`` for one folded with a 3x3x3 convolution, except in int8, where the
        folded ones run as their output phases (:attr:`phase_convolutions`). None computes its kernel (their
        weights are constants, in int8 constants behind their dequantization)."""
        kernels = []
        for op in self._folded().get_ordered_ops():
            if op.get_type_name() == "ConvolutionBackpropData":
                if _reads_the_input(op.input_value(1).get_node()):
                    raise RuntimeError(f"the transposed convolution {op.get_friendly_name()} has computed weights.")
                kernels.append(tuple(op.get_input_shape(1))[2:])
        return kernels

    def _folded(self) -> Any:
        from openvino import passes

        model = self.model.clone()
        manager = passes.Manager()
        manager.register_pass(passes.ConstantFolding())
        manager.run_passes(model)
        return model

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        windows = torch.as_tensor(windows)
        if tuple(windows.shape[1:]) != self.window_shape:
            raise ValueError(
                f"this OpenVINO network was compiled for windows of shape {self.window_shape} (channels, *roi), got "
                f"{tuple(windows.shape[1:])}; build one per window shape (the inferer's cache does)."
            )
        request = self._compile(windows.shape[0])
        data = np.ascontiguousarray(windows.detach().to("cpu", torch.float32).numpy())
        request.infer({0: data})
        out = torch.from_numpy(np.array(request.get_output_tensor(0).data, copy=True))
        return out.to(windows.device)


class CompiledNetworkCache:
    """The converted networks, keyed by weights fingerprint, window shape, precision and inference settings; the
    least recently used ones go beyond ``max_size``.

    ``conversions`` counts the conversions (each traces the network, the costly step: seconds to a minute for the
    default widths on 2 CPU cores).

    Args:
        max_size: how many converted networks to keep. Defaults to 8 (both inference modes at 4 depths).
    """

    def __init__(self, max_size: int = 8) -> None:
        self.max_size = max_size
        self.conversions = 0
        self._entries: OrderedDict[tuple, OpenVINONetwork] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[OpenVINONetwork]:
        """The converted networks, least recently used first."""
        return iter(list(self._entries.values()))

    def clear(self) -> None:
        """Drop every converted network (and reset ``conversions``)."""
        self._entries.clear()
        self.conversions = 0

    def get(
        self,
        network: nn.Module,
        example: torch.Tensor,
        precision: str = "fp32",
        inference_mode: str | None = None,
        inference_depth: int | None = None,
        fingerprint: str | None = None,
        calibration: Callable[[], torch.Tensor] | None = None,
    ) -> OpenVINONetwork:
        """The :class:`OpenVINONetwork` for ``network`` with windows shaped as ``example``, converted on first use.

        ``fingerprint``: :func:`weights_fingerprint` of ``network`` where the caller has it (one digest per volume
        rather than per window batch). ``calibration``: for int8, returns the calibration windows; called only when
        the network is converted."""
        net = unwrap_network(network)
        key = (
            fingerprint or weights_fingerprint(net),
            tuple(example.shape[1:]),
            precision,
            inference_mode or getattr(net, "inference_mode", None),
            inference_depth if inference_depth is not None else getattr(net, "inference_depth", None),
        )
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        windows = calibration() if precision == "int8" and calibration is not None else None
        entry = OpenVINONetwork(net, example, precision, inference_mode, inference_depth, windows)
        self.conversions += 1
        self._entries[key] = entry
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        return entry


#: The cache :py:class:`monai_unetpp.UNetPlusPlusInferer` uses: shared by every inferer of the process, so a new
#: inferer per request (MONAI Label) still reuses a converted network.
compiled_networks = CompiledNetworkCache()


def openvino_window_runner(
    network: nn.Module,
    precision: str,
    inference_mode: str | None,
    inference_depth: int | None,
    cache: CompiledNetworkCache | None = None,
    calibration: Callable[[], torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A per-window callable for one volume: the weights' digest is taken once, here, and each window batch gets
    the cached :class:`OpenVINONetwork` for its shape (``calibration``: see :py:meth:`CompiledNetworkCache.get`)."""
    cache = compiled_networks if cache is None else cache
    fingerprint = weights_fingerprint(unwrap_network(network))

    def run(windows: torch.Tensor) -> torch.Tensor:
        windows = torch.as_tensor(windows)
        entry = cache.get(network, windows, precision, inference_mode, inference_depth, fingerprint, calibration)
        return entry(windows)

    return run
