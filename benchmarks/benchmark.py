# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Side-by-side speed and memory of ``monai_unetpp.UNetPlusPlus`` and MONAI's ``BasicUNetPlusPlus``.

Both networks are built in the same architecture (in 1, out 2, widths 32/32/64/128/256 with a 32-channel top row,
instance norm, LeakyReLU, deconvolution, 4 deep-supervision heads), ours gets MONAI's weights, and the script
checks that they compute the same outputs before timing:

- a training step: forward, ``DeepSupervisionLoss(DiceCELoss(softmax=True, to_onehot_y=True))``, backward, AdamW;
- ``SlidingWindowInferer`` over a volume in "final" and "mean" mode, and ours pruned to depth 1..3;
- the same in 2D.

Timings alternate between the networks within each repeat (so both see the same machine load) and report the
median and the minimum, in wall time or, with ``--clock cpu``, in the process's CPU time (robust to other
processes on a shared machine when run with ``--threads 1``). Peak memory is ``torch.cuda.max_memory_allocated``
on GPU and, on CPU, the peak of the CPU allocator's total over the measured call (the torch profiler's allocation
records) beyond what was allocated before it.

Run ``python benchmarks/benchmark.py --help``; see benchmarks/README.md for the settings and the latest table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import monai
import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks.nets import BasicUNetPlusPlus
from torch.utils.flop_counter import FlopCounterMode

import monai_unetpp
from monai_unetpp import UNetPlusPlus

OURS, MONAI = "ours", "monai"


@dataclass
class Settings:
    """Sizes and repeats of one run; ``PRESETS`` holds the defaults per device, flags override them."""

    features: tuple[int, ...] = (32, 32, 64, 128, 256)
    batch: int = 2
    patch: int = 96  # 3D training patch side
    patch_2d: int = 512  # 2D training patch side
    volume: tuple[int, int, int] = (256, 256, 160)  # 3D sliding-window volume (before sw_scale)
    image: tuple[int, int] = (512, 512)  # 2D sliding-window image
    roi: int = 96  # sliding-window ROI side, 2D and 3D (the 3D one before sw_scale)
    sw_batch_size: int = 4
    overlap: float = 0.25
    sw_scale: float = 1.0  # scales the 3D sliding-window volume and ROI (the ROI stays a multiple of 16)
    threads: int | None = None
    precisions: tuple[str, ...] = ("fp32", "bf16", "bf16+compile")
    warmup: int = 2
    repeats: int = 10
    sw_repeats: int = 3
    skip_2d: bool = False
    clock: str = "wall"  # "wall", or "cpu": the process's CPU time, which other processes' load does not inflate

    def sw_sizes(self) -> tuple[tuple[int, ...], int]:
        volume = tuple(max(16, round(v * self.sw_scale)) for v in self.volume)
        roi = max(16, 16 * round(self.roi * self.sw_scale / 16))
        return volume, roi


PRESETS: dict[str, Settings] = {
    # a 2-core CPU finishes in a few minutes: batch-1 32^3 training patches, the 3D sliding window over a quarter
    # of the volume (64x64x40, ROI 32), 2D training on 256^2
    "cpu": Settings(batch=1, patch=32, patch_2d=256, sw_scale=0.25, threads=2, precisions=("fp32",), repeats=5),
    "cuda": Settings(),
    # seconds: a smoke test of every code path
    "quick": Settings(
        features=(4, 4, 8, 16, 32),  # MONAI upsamples level i+1 to half its width: widths must double
        batch=1,
        patch=32,  # instance norm needs 2 or more voxels at the deepest level in training
        patch_2d=32,
        volume=(48, 40, 32),
        image=(64, 48),
        roi=32,
        threads=1,  # tiny convolutions gain nothing from a second thread
        precisions=("fp32",),
        warmup=0,
        repeats=1,
        sw_repeats=1,
    ),
}


@dataclass
class Row:
    """One measurement of one network; ``times`` in seconds, ``peak_bytes`` as described in the module doc."""

    task: str
    precision: str
    net: str
    times: list[float]
    peak_bytes: int | None = None
    notes: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


# ------------------------------------------------------------------------------------------------ networks
ARCHITECTURE = {
    "in_channels": 1,
    "out_channels": 2,
    "deep_supervision": True,
    "act": ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    "norm": ("instance", {"affine": True}),
    "upsample": "deconv",
}


def build_pair(
    spatial_dims: int, features: Sequence[int], device: torch.device, checkpointing: bool = False
) -> tuple[UNetPlusPlus, BasicUNetPlusPlus]:
    """Ours and MONAI's network in the same architecture; ours holds MONAI's weights."""
    monai_net = BasicUNetPlusPlus(spatial_dims, features=(*features, features[0]), **ARCHITECTURE)
    ours = UNetPlusPlus(spatial_dims, features=features, checkpointing=checkpointing, **ARCHITECTURE)
    # Both register their parameters node by node in the same order (encoder, then decoder column by column, then
    # the heads X^{0,1..4}) and in the same shapes.
    theirs = list(monai_net.parameters())
    mine = list(ours.parameters())
    if [p.shape for p in theirs] != [p.shape for p in mine]:
        raise RuntimeError("the two networks no longer have the same parameter layout; update build_pair.")
    with torch.no_grad():
        for a, b in zip(mine, theirs, strict=True):
            a.copy_(b)
    return ours.to(device), monai_net.to(device)


def max_output_difference(ours: UNetPlusPlus, monai_net: BasicUNetPlusPlus, x: torch.Tensor) -> float:
    """Largest absolute difference between the two networks' heads (training mode) on ``x``."""
    with torch.no_grad():
        mine = ours.train()(x)
        theirs = monai_net.train()(x)[::-1]  # MONAI lists X^{0,1} first, ours the final head X^{0,4} first
    return max((a - b).abs().max().item() for a, b in zip(mine, theirs, strict=True))


def forward_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.train()(x)
    return counter.get_total_flops()


def conv_kernels(step: Callable[[], None]) -> dict[str, int]:
    """How often each ATen convolution kernel ran in ``step`` (forward and backward), from the profiler."""
    wrappers = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::convolution", "aten::_convolution"}
    wrappers |= {"aten::conv_transpose1d", "aten::conv_transpose2d", "aten::conv_transpose3d"}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    counts = Counter(e.name for e in prof.events() if "conv" in e.name and e.name.startswith("aten::"))
    return {name: n for name, n in sorted(counts.items()) if name not in wrappers}


# ------------------------------------------------------------------------------------------------ measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs (see the module doc for what CPU counts)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    from torch._C._profiler import _EventType

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            records.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.total_allocated))
    if not records:
        return 0
    records.sort()
    before = records[0][2] - records[0][1]
    return max(total for *_, total in records) - before


def time_alternating(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int, clock: str = "wall"
) -> dict[str, list[float]]:
    """Seconds per call of each function; each repeat runs all of them, in an order that alternates."""
    now = time.perf_counter if clock == "wall" else time.process_time
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            start = now()
            fns[name]()
            synchronize(device)
            times[name].append(now() - start)
    return times


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_on(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, precision: str, device: torch.device
) -> Callable[[], torch.Tensor]:
    """``fn(x)`` as an inference call in ``precision``."""

    def call() -> torch.Tensor:
        with torch.inference_mode(), autocast(precision, device):
            return fn(x)

    return call


# ------------------------------------------------------------------------------------------------ tasks
def training_rows(
    spatial_dims: int, patch: int, settings: Settings, precision: str, device: torch.device
) -> tuple[list[Row], dict]:
    ours, monai_net = build_pair(spatial_dims, settings.features, device)
    shape = (settings.batch, 1, *([patch] * spatial_dims))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(device)
    y = torch.randint(0, 2, shape, generator=generator).to(device)
    info = {
        "max_abs_output_difference": max_output_difference(ours, monai_net, x),
        "forward_flops_per_sample": {
            OURS: forward_flops(ours, x[:1]),
            MONAI: forward_flops(monai_net, x[:1]),
        },
    }
    loss_fn = DeepSupervisionLoss(DiceCELoss(softmax=True, to_onehot_y=True))
    checkpointed, _ = build_pair(spatial_dims, settings.features, device, checkpointing=True)
    nets = {OURS: ours, OURS + "+checkpointing": checkpointed, MONAI: monai_net}

    def make_step(net: torch.nn.Module, name: str) -> Callable[[], None]:
        net.train()
        model = torch.compile(net) if precision.endswith("compile") else net
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step() -> None:
            with autocast(precision, device):
                heads = model(x)
                if name == MONAI:
                    heads = heads[::-1]  # final head first, as ours, so both minimise the same loss
                loss = loss_fn(heads, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    steps = {name: make_step(net, name) for name, net in nets.items()}
    if device.type == "cpu" and precision == "fp32":
        info["conv_kernels"] = {OURS: conv_kernels(steps[OURS]), MONAI: conv_kernels(steps[MONAI])}
    times = time_alternating(steps, device, settings.warmup, settings.repeats, settings.clock)
    rows = [
        Row(f"train {spatial_dims}D", precision, name, times[name], peak_memory(steps[name], device)) for name in nets
    ]
    return rows, info


def sliding_window_rows(
    spatial_dims: int,
    size: Sequence[int],
    roi: int,
    settings: Settings,
    precision: str,
    device: torch.device,
) -> list[Row]:
    ours, monai_net = build_pair(spatial_dims, settings.features, device)
    ours.eval()
    monai_net.eval()
    compiled = precision.endswith("compile")
    ours_model = torch.compile(ours) if compiled else ours
    monai_model = torch.compile(monai_net) if compiled else monai_net
    image = torch.randn((1, 1, *size), generator=torch.Generator().manual_seed(0)).to(device)
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=settings.sw_batch_size, overlap=settings.overlap)

    def monai_final(window: torch.Tensor) -> torch.Tensor:
        return monai_model(window)[-1]  # in eval MONAI returns every head, X^{0,1} first

    def monai_mean(window: torch.Tensor) -> torch.Tensor:
        return torch.stack(monai_model(window), dim=0).mean(dim=0)

    def ours_with(mode: str, depth: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda window: ours_model(window, mode=mode, depth=depth)

    cases = {
        "final": {OURS: ours_with("final", None), MONAI: monai_final},
        "mean": {OURS: ours_with("mean", None), MONAI: monai_mean},
    }
    # torch.compile traces every pruning depth anew; the compiled run keeps depth 2 only
    for depth in (2,) if compiled else range(1, len(settings.features) - 1):
        cases[f"pruned depth {depth}"] = {OURS: ours_with("final", depth)}

    rows = []
    for case, networks in cases.items():
        calls = {
            name: run_on(partial(inferer, network=network), image, precision, device)
            for name, network in networks.items()
        }
        times = time_alternating(calls, device, min(settings.warmup, 1), settings.sw_repeats, settings.clock)
        window = torch.randn((settings.sw_batch_size, 1, *([roi] * spatial_dims))).to(device)
        for name, call in calls.items():
            if device.type == "cuda":
                peak = peak_memory(call, device)
            else:
                # on CPU one window batch stands for the run: the profiler slows a whole run down too much, and
                # the inferer's output buffers are the same for both networks
                peak = peak_memory(run_on(networks[name], window, precision, device), device)
            task = f"sliding window {spatial_dims}D {case}"
            rows.append(Row(task, precision, name, times[name], peak, {"size": list(size), "roi": roi}))
    return rows


# ------------------------------------------------------------------------------------------------ report
def environment(device: torch.device) -> dict:
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "monai_unetpp": monai_unetpp.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        env["load_average_at_start"] = os.getloadavg()[0]
    return env


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def table(rows: list[Row]) -> str:
    """Markdown table: each of our rows against MONAI's row of the same task (the "final" one for pruned)."""
    reference = {(r.task, r.precision): r for r in rows if r.net == MONAI}
    lines = [
        "| task | precision | network | median s | min s | peak MiB | time ours/MONAI median; min | mem ours/MONAI |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = reference.get((r.task, r.precision)) or reference.get(
            (r.task.split(" pruned")[0] + " final", r.precision)
        )
        peak = "" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:.0f}"
        time_ratio = mem_ratio = ""
        if r.net != MONAI and base is not None:
            time_ratio = f"{r.median / base.median:.2f}; {min(r.times) / min(base.times):.2f}"
            if r.peak_bytes and base.peak_bytes:
                mem_ratio = f"{r.peak_bytes / base.peak_bytes:.2f}"
        lines.append(
            f"| {r.task} | {r.precision} | {r.net} | {r.median:.3f} | {min(r.times):.3f} | {peak} | {time_ratio} "
            f"| {mem_ratio} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:n]")
    parser.add_argument("--quick", action="store_true", help="tiny networks and sizes: a smoke test in seconds")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--threads", type=int, help="torch CPU threads (CPU default 2)")
    parser.add_argument("--batch", type=int, help="training batch (CPU default 1, GPU 2)")
    parser.add_argument("--patch", type=int, help="3D training patch side (CPU default 32, GPU 96)")
    parser.add_argument("--patch-2d", type=int, help="2D training patch side (CPU default 256, GPU 512)")
    parser.add_argument("--volume", type=int, nargs=3, help="3D sliding-window volume (default 256 256 160)")
    parser.add_argument("--image", type=int, nargs=2, help="2D sliding-window image (default 512 512)")
    parser.add_argument("--roi", type=int, help="sliding-window ROI side (default 96)")
    parser.add_argument(
        "--sw-scale", type=float, help="scale of the 3D sliding-window volume and ROI (CPU default 0.25, GPU 1)"
    )
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "fp32+compile", "bf16+compile"])
    parser.add_argument("--repeats", type=int, help="timed training steps per network")
    parser.add_argument("--sw-repeats", type=int, help="timed sliding-window runs per network")
    parser.add_argument("--skip-2d", action="store_true", help="3D only")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        help="wall time (default), or the process's CPU time: use 'cpu' with --threads 1 on a shared machine",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    settings = PRESETS["quick" if args.quick else device.type]
    overrides = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in vars(args).items()
        if key in Settings.__dataclass_fields__ and value is not None and value is not False
    }
    return args, replace(settings, **overrides)


def main(argv: Sequence[str] | None = None) -> dict:
    args, settings = parse_args(argv)
    device = torch.device(args.device)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    report: dict = {"environment": environment(device), "settings": asdict(settings), "checks": {}, "rows": []}
    print(json.dumps(report["environment"]), flush=True)

    ours, monai_net = build_pair(3, settings.features, torch.device("cpu"))
    report["parameters"] = {
        OURS: sum(p.numel() for p in ours.parameters()),
        MONAI: sum(p.numel() for p in monai_net.parameters()),
    }
    print(f"parameters: ours {report['parameters'][OURS]:,}  MONAI {report['parameters'][MONAI]:,}", flush=True)

    rows: list[Row] = []
    volume, roi = settings.sw_sizes()
    for spatial_dims in (3,) if settings.skip_2d else (3, 2):
        patch = settings.patch if spatial_dims == 3 else settings.patch_2d
        size, window = (volume, roi) if spatial_dims == 3 else (settings.image, settings.roi)
        for precision in settings.precisions:
            train, info = training_rows(spatial_dims, patch, settings, precision, device)
            report["checks"][f"{spatial_dims}D {precision}"] = info
            flops = info["forward_flops_per_sample"]
            print(
                f"{spatial_dims}D {precision}: forward GFLOPs per {patch}-voxel-side sample: ours "
                f"{flops[OURS] / 1e9:.2f}, MONAI {flops[MONAI] / 1e9:.2f} ({flops[OURS] / flops[MONAI]:.2f}); "
                f"max |ours - MONAI| "
                f"{info['max_abs_output_difference']:.2e}; conv kernels {info.get('conv_kernels', '-')}",
                flush=True,
            )
            rows += train
            rows += sliding_window_rows(spatial_dims, size, window, settings, precision, device)
            print(table(rows), flush=True)

    if hasattr(os, "getloadavg"):
        report["environment"]["load_average_at_end"] = os.getloadavg()[0]
    report["rows"] = [asdict(r) | {"median": r.median} for r in rows]
    report["table"] = table(rows)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
