# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""How fast the CPU's 3x3x3 convolutions already run against its float32 matrix product, and what Winograd would buy.

About 80% of a UNet++ training step's FLOPs are 3x3x3 convolutions at full resolution. This script measures, on the
benchmark's level-0 shapes (a batch-1 32^3 patch, 32 output channels; 32 input channels as ours convolves each part
of a decoder node's input, up to 160 as MONAI convolves their concatenation):

- the speed of a large float32 ``torch.mm``, the BLAS speed of this machine;
- oneDNN's direct convolution, forward and forward + backward, in GFLOP/s and relative to that ``torch.mm``;
- Winograd F(4x4x4, 3x3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016,
  https://arxiv.org/abs/1509.09308) written in PyTorch operations: 8x fewer multiplications, timed as its two
  parts, the batched products and the input/output transforms, with its error against the direct convolution.

Run ``python benchmarks/cpu_conv_floor.py`` (``--threads``, ``--size``, ``--quick``); benchmarks/README.md explains
what the figures mean for the CPU targets.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# F(4, 3) with interpolation points 0, +-1, +-2 and infinity: y = A^T [(G g) * (B^T d)] along each axis.
B_T = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
A_T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
TILE, TAPS = 4, 6  # output voxels and input voxels per tile side


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def winograd_input(x: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """``(C, D, H, W)`` with sides divisible by 4 -> ``(6^3, C, tiles)``: the tiles of the zero-padded input in the
    Winograd domain, one axis at a time (gather the overlapping 6-voxel windows of that axis, then apply B^T)."""
    c, d, h, w = x.shape
    v = F.pad(x, (1, 1, 1, 1, 1, 1))
    v = v.unfold(1, TAPS, TILE).permute(4, 0, 1, 2, 3).contiguous()  # 6, C, tD, H+2, W+2
    v = (b_t @ v.view(1, TAPS, -1)).view(TAPS, c, d // TILE, h + 2, w + 2)
    v = v.unfold(3, TAPS, TILE).permute(5, 0, 1, 2, 3, 4).contiguous()  # 6, 6, C, tD, tH, W+2
    v = (b_t @ v.view(1, TAPS, -1)).view(TAPS, TAPS, c, d // TILE, h // TILE, w + 2)
    v = v.unfold(5, TAPS, TILE).permute(6, 0, 1, 2, 3, 4, 5).contiguous()  # 6, 6, 6, C, tD, tH, tW
    return (b_t @ v.view(1, TAPS, -1)).view(TAPS**3, c, -1)


def winograd_weight(weight: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(O, C, 3, 3, 3)`` -> ``(6^3, O, C)`` in the point order of :func:`winograd_input`."""
    u = torch.einsum("ocxyz,px,qy,rz->rqpoc", weight, g, g, g)
    return u.reshape(TAPS**3, weight.shape[0], weight.shape[1])


def winograd_output(m: torch.Tensor, a_t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(6^3, O, tiles)`` products -> ``(O, D, H, W)``."""
    o, d, h, w = shape
    y = (a_t @ m.view(1, TAPS, -1)).view(TILE, TAPS, -1)
    y = (a_t @ y).view(TILE * TILE, TAPS, -1)
    y = (a_t @ y).view(TILE, TILE, TILE, o, d // TILE, h // TILE, w // TILE)  # w, h, d, O, tiles
    return y.permute(3, 4, 2, 5, 1, 6, 0).reshape(o, d, h, w)


def measure(channels: int, size: int, repeats: int) -> dict:
    """Direct and Winograd 3x3x3 convolution of a ``(1, channels, size^3)`` input to 32 channels."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, size, size, size, generator=generator)
    weight = torch.randn(32, channels, 3, 3, 3, generator=generator) / (27 * channels) ** 0.5
    flops = 2 * 27 * channels * 32 * size**3
    b_t, g, a_t = (torch.tensor(m, dtype=torch.float32) for m in (B_T, G, A_T))

    with torch.no_grad():
        direct = F.conv3d(x, weight, padding=1)
        forward = median_seconds(lambda: F.conv3d(x, weight, padding=1), repeats)
        u = winograd_weight(weight, g)
        v = winograd_input(x[0], b_t)
        products = torch.bmm(u, v)
        winograd = winograd_output(products, a_t, direct.shape[1:])
        gemm = median_seconds(lambda: torch.bmm(u, v), repeats)
        transforms = median_seconds(lambda: winograd_input(x[0], b_t), repeats)
        transforms += median_seconds(lambda: winograd_output(products, a_t, direct.shape[1:]), repeats)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    grad = torch.randn_like(direct)
    training = median_seconds(lambda: torch.autograd.grad(F.conv3d(x, weight, padding=1), (x, weight), grad), repeats)
    return {
        "in_channels": channels,
        "direct_forward_s": forward,
        "direct_forward_gflops": flops / forward / 1e9,
        "direct_training_gflops": 3 * flops / training / 1e9,
        "winograd_gemm_s": gemm,
        "winograd_transforms_s": transforms,
        "winograd_relative_error": ((winograd - direct[0]).abs().max() / direct.abs().max()).item(),
    }


def matmul_gflops(repeats: int, n: int) -> float:
    """Speed of an ``n x n`` float32 ``torch.mm``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Print the table and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--size", type=int, default=32, help="patch side, a multiple of 4 (default 32)")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 96, 128, 160], help="input widths")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.channels, args.repeats = 8, [16], 1
    if args.size % TILE:
        parser.error(f"--size must be a multiple of {TILE}, got {args.size}.")
    torch.set_num_threads(args.threads)

    n = 256 if args.quick else 2048
    matmul = matmul_gflops(args.repeats, n)
    print(f"torch {torch.__version__}, {args.threads} threads, float32 torch.mm ({n}^2) {matmul:.0f} GFLOP/s")
    print(f"3x3x3 convolution, 1 x C x {args.size}^3 -> 32 channels")
    columns = ["C", "direct fwd ms", "fwd GFLOP/s", "vs torch.mm", "fwd+bwd GFLOP/s", "Winograd products ms"]
    print("| " + " | ".join(columns + ["transforms ms", "error"]) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for channels in args.channels:
        r = measure(channels, args.size, args.repeats)
        rows.append(r)
        print(
            f"| {channels} | {1e3 * r['direct_forward_s']:.1f} | {r['direct_forward_gflops']:.0f} "
            f"| {r['direct_forward_gflops'] / matmul:.2f}x | {r['direct_training_gflops']:.0f} "
            f"| {1e3 * r['winograd_gemm_s']:.1f} | {1e3 * r['winograd_transforms_s']:.1f} "
            f"| {r['winograd_relative_error']:.0e} |"
        )
    return rows


if __name__ == "__main__":
    main()
