# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The peak training memory of a UNet++ configuration: predicted by counting tensors, and measured.

:func:`predict_training_memory` counts, level by level, the tensors that one training step of
:class:`monai_unetpp.UNetPlusPlus` with deep supervision and :class:`monai_unetpp.DeepSupervisionDiceCELoss` keeps
alive at its peak, the start of the backward pass:

- the **persistent** state: parameters, their gradients and AdamW's two moments (4 copies of the parameters, in
  fp32 also under mixed precision, which keeps fp32 master weights);
- the **input** patch and its label;
- the **activations autograd saves** for backward, per node ``X^{i,j}`` of the nested grid (``i`` the level, whose
  spatial shape is the patch divided by the product of the strides above it, rounded up as the network's
  ``ceil_mode`` pooling does):

  - every convolution of a node's block saves its input; its output is saved by the instance norm, whose output
    is saved by the in-place LeakyReLU: two tensors of the level's width per convolution, four per node;
  - a decoder node ``X^{i,j}`` concatenates ``j`` same-level tensors and the upsampled one into a new tensor of
    ``j + 1`` widths, which its first convolution saves; the transposed convolution's output is freed after the
    concatenation;
  - an encoder node below level 0 saves the max-pooled tensor (the previous level's width) and the int64 indices of
    the pooling (twice the bytes of an fp32 tensor of that size);
  - with ``checkpointing``, a node keeps only its inputs and its output: the block's inner tensors (and an encoder
    node's pooling) are recomputed in backward, one node at a time (one node's tensors are added back as the
    recomputation's peak);
  - every head saves its logits, the softmax and log-softmax of the loss and their one-hot product:
    ``HEAD_TENSORS`` tensors of ``out_channels`` channels at full resolution, plus the one-hot label;

- the **transient** tensor of the backward pass: the gradient of the largest saved concatenation (at level 0), which
  backward allocates while that concatenation is still alive.

The count follows the plain layers (``monai_unetpp.networks.set_fast_paths(False)``), which are what every device
other than the CPU runs; the CPU fast paths save less (no concatenation). Under mixed precision (``"amp"``) the
activations are stored in 16 bits: CUDA's autocast runs the convolutions in float16, and instance norm, on neither of
its lists, keeps its input's type; the heads' softmax and log-softmax (on its float32 list) stay in 32 bits.

What the count leaves out is the convolution backends' own workspace: cuDNN's is bounded and small next to the
activations of a planned patch, but on the CPU PyTorch runs a **batch-1** 3D convolution with few channels through
its im2col path (``Slow3d``: ``input.size(0) * C * D * H <= 20480`` in ATen's ``use_mkldnn``), whose column buffer
is ``C * k^3`` times the volume, larger than all activations of a small network. The planner never plans fewer than
two patches per step, where oneDNN runs every convolution and no such buffer exists.

:func:`measure_training_memory` runs one real step of the same configuration and reports the peak that the
allocator saw: on CUDA ``torch.cuda.max_memory_allocated``, on the CPU the running total that torch's CPU allocator
reports to the profiler (``torch.profiler`` with ``profile_memory=True``: every allocation event carries the
allocator's total of live bytes), above what was allocated before the step, plus the persistent state and the input
that were alive throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..utils import to_bool

__all__ = [
    "HEAD_TENSORS",
    "MemoryEstimate",
    "PRECISIONS",
    "level_shapes",
    "measure_training_memory",
    "predict_training_memory",
]

#: "fp32": everything in 32 bits; "amp": automatic mixed precision (16-bit convolutions, fp32 master weights).
PRECISIONS = ("fp32", "amp")

#: full-resolution tensors of ``out_channels`` channels that one head and its Dice + cross-entropy keep for backward:
#: the logits, the softmax, the log-softmax, the softmax times the one-hot label (Dice's intersection)
HEAD_TENSORS = 4

_FP32 = 4
_HALF = 2
_INT64 = 8


@dataclass(frozen=True)
class MemoryEstimate:
    """A predicted peak, in bytes, and its parts."""

    persistent: int
    inputs: int
    activations: int
    transient: int

    @property
    def total(self) -> int:
        """The predicted peak in bytes."""
        return self.persistent + self.inputs + self.activations + self.transient

    def gib(self) -> float:
        """The predicted peak in GiB."""
        return self.total / 2**30


def _per_axis(value: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * spatial_dims
    values = tuple(int(v) for v in value)
    if len(values) != spatial_dims:
        raise ValueError(f"{name} entry {value!r} must be one int or {spatial_dims} per-axis ints.")
    return values


def level_shapes(patch_size: Sequence[int], strides: Sequence[int | Sequence[int]]) -> list[tuple[int, ...]]:
    """The spatial shape of every level of the network for a patch: level 0 is the patch, each next level the
    previous one divided by that level's stride, rounded up (the network pools with ``ceil_mode``).

    Examples::

        >>> level_shapes([40, 40, 10], [(2, 2, 1), (2, 2, 2)])
        [(40, 40, 10), (20, 20, 10), (10, 10, 5)]
    """
    dims = len(patch_size)
    shapes = [tuple(int(p) for p in patch_size)]
    for stride in strides:
        factors = _per_axis(stride, dims, "strides")
        shapes.append(tuple(math.ceil(s / f) for s, f in zip(shapes[-1], factors, strict=True)))
    return shapes


def _kernel_volumes(kernel_size: int | Sequence, levels: int, dims: int) -> list[int]:
    if isinstance(kernel_size, int):
        return [kernel_size**dims] * levels
    if len(kernel_size) != levels:
        raise ValueError(f"kernel_size has {len(kernel_size)} entries; it needs one per level ({levels}).")
    return [math.prod(_per_axis(k, dims, "kernel_size")) for k in kernel_size]


def _parameter_count(
    in_channels: int,
    out_channels: int,
    features: Sequence[int],
    stride_volumes: Sequence[int],
    kernel_volumes: Sequence[int],
    heads: int,
) -> int:
    """Parameters of UNetPlusPlus with deconvolution upsampling (kernel = stride) and affine instance norm."""
    depth = len(features) - 1
    count = 0

    def block(cin: int, cout: int, kvol: int) -> int:
        # two convolutions with bias, each followed by an affine instance norm (weight and bias)
        return cin * cout * kvol + cout + 2 * cout + cout * cout * kvol + cout + 2 * cout

    for i in range(depth + 1):
        count += block(in_channels if i == 0 else features[i - 1], features[i], kernel_volumes[i])
    for j in range(1, depth + 1):
        for i in range(depth - j + 1):
            # the transposed convolution from level i + 1 to level i (kernel = stride), then the block
            count += features[i + 1] * features[i] * stride_volumes[i] + features[i]
            count += block((j + 1) * features[i], features[i], kernel_volumes[i])
    count += heads * (features[0] * out_channels + out_channels)  # 1x1 heads
    return count


def predict_training_memory(
    patch_size: Sequence[int],
    batch_size: int,
    features: Sequence[int],
    strides: Sequence[int | Sequence[int]] | None = None,
    kernel_size: int | Sequence = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    precision: str = "fp32",
    checkpointing: bool = False,
    deep_supervision: bool = True,
) -> MemoryEstimate:
    """The peak memory of one training step (forward, Dice + CE on every head, backward, AdamW step).

    Args:
        patch_size: the training patch, one side per spatial axis.
        batch_size: patches per step.
        features: the width of every level.
        strides: the downsampling factor below each level, ``len(features) - 1`` entries of one int or one int per
            axis; None: 2 on every axis.
        kernel_size: of every convolution, or one entry per level (an odd int or one per axis).
        in_channels: image channels.
        out_channels: classes.
        precision: one of :data:`PRECISIONS`.
        checkpointing: the network recomputes every node in backward.
        deep_supervision: a head on every top node (False: one head).

    Returns:
        A :class:`MemoryEstimate` in bytes.

    Examples::

        >>> est = predict_training_memory([128, 128, 128], 2, [32, 64, 128, 256, 320], out_channels=3)
        >>> round(est.gib(), 1)  # doctest: +SKIP
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    checkpointing = to_bool(checkpointing, "checkpointing")
    deep_supervision = to_bool(deep_supervision, "deep_supervision")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of patches >= 1, got {batch_size!r}.")
    dims = len(patch_size)
    depth = len(features) - 1
    if strides is None:
        strides = [2] * depth
    if len(strides) != depth:
        raise ValueError(f"strides has {len(strides)} entries; features {list(features)} need {depth}.")
    shapes = level_shapes(patch_size, strides)
    voxels = [batch_size * math.prod(s) for s in shapes]
    kvols = _kernel_volumes(kernel_size, depth + 1, dims)
    stride_volumes = [math.prod(_per_axis(s, dims, "strides")) for s in strides]

    heads = depth if deep_supervision else 1
    params = _parameter_count(in_channels, out_channels, features, stride_volumes, kvols, heads)
    persistent = 4 * params * _FP32
    # the float input and the label (a float index map, as the bundles' loaders give it)
    inputs = voxels[0] * (in_channels + 1) * _FP32

    conv_bytes = _HALF if precision == "amp" else _FP32
    # CUDA's autocast runs convolutions in float16 and leaves instance norm (on neither of its lists) in its input's
    # type, so under amp the norm's output, and the in-place activation on it, are 16-bit too
    norm_bytes = conv_bytes
    if precision == "amp":
        # autocast keeps its own 16-bit copy of every weight during forward
        inputs += params * _HALF

    def node_inner(level: int) -> int:
        """The tensors inside one node's block: two convolution outputs and two norm outputs."""
        n = voxels[level] * features[level]
        return 2 * n * conv_bytes + 2 * n * norm_bytes

    activations = 0
    largest_concat = 0
    recompute_peak = 0
    for i in range(depth + 1):
        # encoder node X^{i,0}: the pooling is inside the node, so checkpointing recomputes it too
        pooled = voxels[i] * features[i - 1] * (conv_bytes + _INT64) if i > 0 else 0
        if checkpointing:
            activations += voxels[i] * features[i] * norm_bytes
        else:
            activations += pooled + node_inner(i)
        recompute_peak = max(recompute_peak, pooled + node_inner(i))
    for j in range(1, depth + 1):
        for i in range(depth - j + 1):
            concat = voxels[i] * features[i] * (j + 1) * conv_bytes
            largest_concat = max(largest_concat, concat)
            if checkpointing:
                # the node keeps its inputs (the level's tensors, already counted, and the level below) and its output
                activations += voxels[i] * features[i] * norm_bytes
            else:
                activations += concat + node_inner(i)
            recompute_peak = max(recompute_peak, concat + node_inner(i))
    activations += heads * HEAD_TENSORS * voxels[0] * out_channels * _FP32
    activations += voxels[0] * out_channels * _FP32  # the one-hot label, shared by the heads
    transient = largest_concat
    if checkpointing:
        transient += recompute_peak
    return MemoryEstimate(persistent=persistent, inputs=inputs, activations=activations, transient=transient)


def measure_training_memory(
    patch_size: Sequence[int],
    batch_size: int,
    features: Sequence[int],
    strides: Sequence[int | Sequence[int]] | None = None,
    kernel_size: int | Sequence = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    precision: str = "fp32",
    checkpointing: bool = False,
    deep_supervision: bool = True,
    device: str | torch.device = "cpu",
) -> int:
    """The measured peak memory in bytes of one training step of the configuration (the arguments of
    :func:`predict_training_memory`), after a first step that creates the optimizer's state, as in training.

    The network is built with the plain layers (fast paths off), as :func:`predict_training_memory` counts them. On
    CUDA the peak is ``torch.cuda.max_memory_allocated`` (mixed precision: float16 autocast); on the CPU it is read
    from the CPU allocator's running total of live bytes, which ``torch.profiler`` records with every allocation
    (mixed precision: bfloat16 autocast, the CPU's 16-bit type).

    Examples::

        >>> measure_training_memory([32, 32, 32], 2, [8, 16, 32])  # doctest: +SKIP
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    from ..losses import DeepSupervisionDiceCELoss
    from ..networks import UNetPlusPlus
    from ..networks.fast_paths import set_fast_paths

    device = torch.device(device)
    network_args = {} if strides is None else {"strides": [s if isinstance(s, int) else tuple(s) for s in strides]}
    with set_fast_paths(False):
        network = UNetPlusPlus(
            len(patch_size),
            in_channels,
            out_channels,
            features=features,
            kernel_size=kernel_size,
            deep_supervision=deep_supervision,
            checkpointing=checkpointing,
            **network_args,
        ).to(device)
    loss_function = DeepSupervisionDiceCELoss(weight_mode="exp", include_background=False, batch=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-5)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch_size, in_channels, *patch_size, generator=generator).to(device)
    label = torch.randint(0, out_channels, (batch_size, 1, *patch_size), generator=generator).float().to(device)
    half = torch.float16 if device.type == "cuda" else torch.bfloat16

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)  # MONAI's SupervisedTrainer keeps the gradients' memory
        with torch.autocast(device.type, dtype=half, enabled=precision == "amp"):
            outputs = network(image)
            loss = loss_function([o.float() for o in outputs] if isinstance(outputs, list) else outputs.float(), label)
        loss.backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    baseline, peak = None, 0
    events = list(prof.profiler.kineto_results.experimental_event_tree())
    allocations = []
    while events:
        event = events.pop()
        if event.tag == _EventType.Allocation:
            allocations.append(event)
        events.extend(event.children)
    if not allocations:
        raise RuntimeError("torch.profiler recorded no CPU allocations; the CPU peak cannot be measured here.")
    allocations.sort(key=lambda e: e.start_time_ns)
    first = allocations[0].extra_fields
    baseline = first.total_allocated - first.alloc_size  # live bytes just before the step's first allocation
    peak = max(e.extra_fields.total_allocated for e in allocations)
    # the state alive before the step (parameters, gradients, moments, input) is inside the baseline, with whatever
    # else the process holds: count it from the objects themselves
    held = {}
    tensors = [image, label, *network.parameters(), *(p.grad for p in network.parameters() if p.grad is not None)]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.dim()]
    for t in tensors:
        held[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return int(peak - baseline + sum(held.values()))
