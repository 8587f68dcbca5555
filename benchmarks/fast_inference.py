# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""3D sliding-window inference on CPU in every runtime and precision, against MONAI's ``BasicUNetPlusPlus``.

Both networks are built as in ``benchmark.py`` (default widths 32..256, 4 deep-supervision heads) and hold the same
weights: ours is trained briefly on the synthetic demo data (``monai_unetpp.data.make_demo_dataset``) so that the
label maps are those of a network that segments something, and MONAI's gets them. Then each path runs
``UNetPlusPlusInferer`` over a held-out demo volume (ROI 32, 4 windows per batch, overlap 0.25: the last batch is
smaller), timed alternately with the others in every repeat:

- MONAI's network in PyTorch fp32 (what MONAI users run today: the reference), PyTorch bf16 autocast, and
  converted to OpenVINO (fp32, bf16, int8);
- ours in PyTorch fp32 and bf16, in OpenVINO fp32, bf16 and int8, and pruned to ``inference_depth=2`` in OpenVINO.

int8 (OpenVINO only, both networks) is quantized by NNCF, calibrated on the test volume's own windows.

It prints seconds per volume, the ratios the targets are stated in, the argmax agreement with MONAI's PyTorch fp32
label map and the Dice of each label map with the volume's ground truth. A target's ratio is the median over the
repeats of each repeat's ratio of its two paths, which run one after the other in a repeat (paired); the ratio of
the two medians is printed beside it. The conversion to OpenVINO (once per
network, window shape and precision; cached) is timed apart.

Run ``python benchmarks/fast_inference.py --help``; the latest table is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import monai
import nibabel as nib
import numpy as np
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import _cpu_name, build_pair, time_alternating  # noqa: E402

import monai_unetpp  # noqa: E402
from monai_unetpp import UNetPlusPlusInferer, runtime  # noqa: E402
from monai_unetpp.data import make_demo_dataset  # noqa: E402

REFERENCE = "monai torch fp32"
#: The issue's targets: (numerator path, denominator path, at most). "fastest ours" is the fastest path of ours at
#: full depth.
TARGETS = (
    ("fastest ours", REFERENCE, 0.2),
    ("ours openvino fp32", "monai openvino fp32", 0.9),
    ("ours openvino bf16", "monai openvino bf16", 0.9),
    ("ours openvino int8", "monai openvino int8", 0.9),
    ("ours openvino fp32 depth 2", "monai openvino fp32", 0.45),
)


class FinalHead(torch.nn.Module):
    """MONAI's eval output (a list of heads, X^{0,1} first) as its final head, X^{0,4}."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def demo_volumes(folder: Path, cases: int, shape: tuple[int, ...]) -> tuple[list, tuple]:
    """Training pairs and one test pair of the 2-class demo data, intensities scaled to about 0..1."""
    root = make_demo_dataset(folder / "demo", num_cases=cases, num_test=1, shape=shape, num_classes=2)
    spec = json.loads((root / "dataset.json").read_text())

    def load(pair: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.asarray(nib.load(root / pair["image"]).dataobj, np.float32) / 1000.0
        label = np.asarray(nib.load(root / pair["label"]).dataobj, np.int64)
        return torch.from_numpy(image)[None, None], torch.from_numpy(label)[None, None]

    test_image = spec["test"][0]  # MSD lists test images alone; their labels sit in labelsTs
    test = {"image": test_image, "label": test_image.replace("imagesTs", "labelsTs")}
    return [load(p) for p in spec["training"]], load(test)


def train(net: torch.nn.Module, pairs: list, steps: int, patch: int, seed: int = 0) -> list[float]:
    """``steps`` AdamW steps on random ``patch``^3 crops with deep supervision; returns the losses."""
    rng = np.random.default_rng(seed)
    loss_fn = DeepSupervisionLoss(DiceCELoss(softmax=True, to_onehot_y=True))
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    losses = []
    net.train()
    for _ in range(steps):
        image, label = pairs[rng.integers(len(pairs))]
        corner = [int(rng.integers(0, s - patch + 1)) for s in image.shape[2:]]
        crop = tuple(slice(c, c + patch) for c in corner)
        loss = loss_fn(net(image[(..., *crop)]), label[(..., *crop)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def dice(labels: torch.Tensor, truth: torch.Tensor) -> float:
    """Dice of the foreground (class 1)."""
    a, b = labels == 1, truth == 1
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (PyTorch and OpenVINO). Default: 2.")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each path. Default: 5.")
    parser.add_argument("--train-steps", type=int, default=40, help="training steps before measuring. Default: 40.")
    parser.add_argument("--precisions", nargs="+", default=list(runtime.PRECISIONS), choices=runtime.PRECISIONS)
    parser.add_argument("--json", type=Path, help="also write the results here.")
    parser.add_argument("--quick", action="store_true", help="tiny networks, fp32 only: a smoke test in seconds.")
    args = parser.parse_args(argv)
    args.features = (4, 4, 8, 16, 32) if args.quick else (32, 32, 64, 128, 256)
    args.volume = (48, 40, 32) if args.quick else (64, 64, 48)
    args.roi = 32
    if args.quick:
        args.repeats, args.train_steps, args.precisions, args.threads = 1, 2, ["fp32"], 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not runtime.openvino_available():
        raise SystemExit(f"this benchmark measures OpenVINO: {runtime.INSTALL_HINT}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours, monai_net = build_pair(3, args.features, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        pairs, (image, truth) = demo_volumes(Path(folder), 4, args.volume)
    start = time.perf_counter()
    losses = train(ours, pairs, args.train_steps, args.roi)
    train_s = time.perf_counter() - start
    with torch.no_grad():  # MONAI's network gets the trained weights (the same layout: see build_pair)
        for a, b in zip(monai_net.parameters(), ours.parameters(), strict=True):
            a.copy_(b)
    ours.eval()
    monai_final = FinalHead(monai_net).eval()

    paths: dict[str, tuple[torch.nn.Module, dict]] = {}
    for precision in ["fp32", *[p for p in args.precisions if p != "fp32"]]:
        for backend in runtime.BACKENDS:
            if precision == "int8" and backend == "torch":
                continue  # int8 runs in OpenVINO only
            paths[f"monai {backend} {precision}"] = (monai_final, {"backend": backend, "precision": precision})
            paths[f"ours {backend} {precision}"] = (ours, {"backend": backend, "precision": precision})
    paths["ours torch fp32 depth 2"] = (ours, {"inference_depth": 2})
    paths["ours openvino fp32 depth 2"] = (ours, {"backend": "openvino", "inference_depth": 2})

    outputs: dict[str, torch.Tensor] = {}
    first_call_s: dict[str, float] = {}
    deconvolutions: dict[str, list] = {}  # the transposed convolutions' kernels left in each OpenVINO graph
    phased: dict[str, list] = {}  # the kernels of those run as output phases (the folded upsamplings)
    op_counts: dict[str, dict[str, int]] = {}  # each OpenVINO graph's operations, by type
    multiply_adds: dict[str, dict[str, int]] = {}  # per batch of 4 windows, as written and in AMX int8's blocks
    calls = {}
    runtime.compiled_networks.clear()
    runtime.compiled_networks.max_size = len(paths)  # every path stays converted while they alternate
    for name, (net, options) in paths.items():
        inferer = UNetPlusPlusInferer(args.roi, sw_batch_size=4, overlap=0.25, **options)
        calls[name] = lambda inferer=inferer, net=net: inferer(image, net)
        converted = list(runtime.compiled_networks)
        start = time.perf_counter()
        with torch.no_grad():
            outputs[name] = calls[name]()  # converts and compiles the OpenVINO paths
        first_call_s[name] = time.perf_counter() - start
        for entry in runtime.compiled_networks:
            if all(entry is not old for old in converted):
                deconvolutions[name] = [list(k) for k in entry.transposed_convolution_kernels()]
                phased[name] = [list(k) for k in entry.phase_convolutions]
                op_counts[name] = {op: n for op, n in sorted(entry.op_counts().items()) if op != "Constant"}
                multiply_adds[name] = {"as_written": entry.multiply_adds()}
                if entry.precision == "int8":  # what the AMX int8 kernels compute: 32 channels cost 64
                    blocks = entry.multiply_adds(runtime.AMX_INT8_CHANNEL_BLOCK)
                    multiply_adds[name]["input_channels_in_blocks_of_64"] = blocks

    def no_grad(fn):
        def call():
            with torch.no_grad():
                return fn()

        return call

    times = time_alternating(
        {name: no_grad(fn) for name, fn in calls.items()}, torch.device("cpu"), 0, args.repeats, "wall"
    )
    median = {name: statistics.median(t) for name, t in times.items()}
    reference_labels = outputs[REFERENCE].argmax(1)
    labels = {name: out.argmax(1) for name, out in outputs.items()}

    def own_fp32(name: str) -> str:  # the same network and depth in PyTorch fp32
        net, _, _, *depth = name.split(" ")
        return " ".join([net, "torch", "fp32", *depth])

    rows = []
    for name in paths:
        rows.append(
            {
                "path": name,
                "median_s": median[name],
                "times": times[name],
                "vs_monai_torch_fp32": median[name] / median[REFERENCE],
                "argmax_agreement_with_reference": float((labels[name] == reference_labels).float().mean()),
                "argmax_agreement_with_own_torch_fp32": float((labels[name] == labels[own_fp32(name)]).float().mean()),
                "dice": dice(labels[name], truth[:, 0]),
                "first_call_s": first_call_s[name],
            }
        )
    full_depth_ours = [n for n in paths if n.startswith("ours") and "depth" not in n]
    fastest = min(full_depth_ours, key=median.__getitem__)
    median["fastest ours"] = median[fastest]
    times["fastest ours"] = times[fastest]
    targets = []
    for a, b, limit in TARGETS:
        if a in median and b in median:
            # paired: the two paths of a repeat ran within seconds of each other, so a machine whose speed drifts
            # between repeats (a shared VM) slows both; the ratio of the medians does not pair them
            paired = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
            targets.append(
                {"ratio": f"{a} / {b}", "value": paired, "ratio_of_medians": median[a] / median[b], "target": limit}
            )
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_name(),
        "openvino_bf16": runtime.openvino_bf16_supported(),
        "threads": args.threads,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "monai_unetpp": monai_unetpp.__version__,
            "openvino": __import__("openvino").__version__,
            "nncf": __import__("nncf").__version__ if runtime.nncf_available() else None,
        },
        "features": list(args.features),
        "volume": list(args.volume),
        "roi": args.roi,
        "train": {"steps": args.train_steps, "seconds": train_s, "first_loss": losses[0], "last_loss": losses[-1]},
        "fastest_ours": fastest,
        "openvino_transposed_convolution_kernels": deconvolutions,
        "openvino_phase_convolution_kernels": phased,
        "openvino_op_counts": op_counts,
        "openvino_multiply_adds": multiply_adds,
        "rows": rows,
        "targets": targets,
    }
    print(f"{report['cpu']}, {args.threads} threads, OpenVINO bf16 on this CPU: {report['openvino_bf16']}")
    print(f"volume {args.volume}, ROI {args.roi}, 4 windows per batch; trained {args.train_steps} steps")
    print(
        "| path | s per volume (median) | vs MONAI torch fp32 | argmax = MONAI torch fp32 | argmax = own torch fp32 "
        "| Dice | first call s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['path']} | {row['median_s']:.3f} | {row['vs_monai_torch_fp32']:.2f} | "
            f"{row['argmax_agreement_with_reference']:.5f} | {row['argmax_agreement_with_own_torch_fp32']:.5f} | "
            f"{row['dice']:.4f} | {row['first_call_s']:.1f} |"
        )
    for name, kernels in deconvolutions.items():
        print(f"{name}: transposed convolutions in the graph, by kernel: {dict(Counter(map(tuple, kernels)))}")
        print(f"    run as output phases, by kernel: {dict(Counter(map(tuple, phased[name])))}")
        print(f"    operations: {op_counts[name]}")
        in_giga = {kind: f"{count / 1e9:.2f} G" for kind, count in multiply_adds[name].items()}
        print(f"    multiply-adds per batch: {in_giga}")
    for name, counts in multiply_adds.items():
        peer = name.replace("ours", "monai", 1)
        if name.startswith("ours") and peer in multiply_adds:
            ratios = {kind: round(count / multiply_adds[peer][kind], 3) for kind, count in counts.items()}
            print(f"multiply-adds, {name} / {peer}: {ratios}")
    print(f"\nfastest ours at full depth: {fastest}")
    for t in targets:
        verdict = "met" if t["value"] <= t["target"] else "NOT met"
        print(
            f"{t['ratio']}: {t['value']:.2f} (target <= {t['target']}): {verdict}; "
            f"ratio of the medians {t['ratio_of_medians']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
