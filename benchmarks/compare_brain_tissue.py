# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Brain-tissue segmentation of the MNI152 template: UNet++ against MONAI's BasicUNet and BasicUNetPlusPlus.

Every network is trained by the brain bundle's own ``configs/train.json`` (data, synthetic variation, loss,
optimiser, schedule, epochs and seed), with only ``network_def`` replaced, and the final weights are evaluated on
the bundle's held-out test variants, which no training draw and no model selection has seen. Our UNet++ is
evaluated as trained (final head), with the mean of its heads and pruned to depths 1 to depth - 1, like the
U-Net / UNet++ table of Zhou et al. (TMI 2019).

Usage (from the repository root)::

    python benchmarks/compare_brain_tissue.py                      # the run reported in the bundle's README
    python benchmarks/compare_brain_tissue.py --epochs 2 --draws-per-epoch 4 --out /tmp/cmp   # a quick check

Writes ``results.json``, ``results.md`` (the table), ``compare_curves.png`` (loss and validation Dice per network)
and ``montage_<network>.png`` (a test case, its label and each network's prediction) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import DataLoader, Dataset, decollate_batch
from monai.metrics import DiceMetric
from monai.networks.nets import BasicUNet, BasicUNetPlusPlus
from monai.networks.utils import one_hot

from monai_unetpp import UNetPlusPlus, UNetPlusPlusInferer
from monai_unetpp.visualize import CurvePlotHandler, new_figure, save_figure, save_montage

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "unetpp_brain_tissue_mri_segmentation"
CLASSES = ("CSF", "grey matter", "white matter")


class FinalHeadFirst(nn.Module):
    """MONAI's ``BasicUNetPlusPlus`` under MONAI's deep-supervision contract.

    ``BasicUNetPlusPlus`` always returns a list, shallowest head first; ``DeepSupervisionLoss`` weights the first
    entry most and evaluators expect one Tensor. This puts the final head first in training and returns it alone in
    evaluation, so both networks get the same loss weights and the same evaluation.
    """

    def __init__(self, network: BasicUNetPlusPlus) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        heads = self.network(x)
        return heads[::-1] if self.training else heads[-1]


def build_networks(features: Sequence[int], norm: str | Sequence, num_classes: int) -> dict[str, nn.Module]:
    """The three networks with the same widths, blocks (conv-norm-LeakyReLU x 2) and deconvolution upsampling."""
    if len(features) != 5:
        raise ValueError(f"features needs 5 widths (MONAI's BasicUNet(PlusPlus) have depth 4), got {features}.")
    basic = {"features": (*features, features[0]), "norm": norm}
    return {
        "UNet++ (monai_unetpp)": UNetPlusPlus(3, 1, num_classes, features=features, norm=norm, deep_supervision=True),
        "BasicUNet (MONAI)": BasicUNet(3, 1, num_classes, **basic),
        "BasicUNetPlusPlus (MONAI)": FinalHeadFirst(
            BasicUNetPlusPlus(3, 1, num_classes, deep_supervision=True, **basic)
        ),
    }


def parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def train(network: nn.Module, settings: dict[str, Any], run_dir: Path) -> tuple[ConfigWorkflow, dict[str, Any]]:
    """Train ``network`` with the bundle's train.json; returns the workflow and the training record."""
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        workflow_type="train",
        bundle_root=str(run_dir),
        network_def=network,
        **settings,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train::trainer")
    epoch_seconds: list[float] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda engine: epoch_seconds.append(engine.state.times["EPOCH_COMPLETED"])
    )
    start = time.perf_counter()
    workflow.run()
    wall = time.perf_counter() - start
    curves = next(h for h in workflow.parser.get_parsed_content("train::handlers") if isinstance(h, CurvePlotHandler))
    record = {
        "train_seconds": sum(epoch_seconds),
        "wall_seconds_with_validation": wall,
        "iterations": trainer.state.iteration,
        "epoch_loss": curves.epoch_loss,
        "val_mean_dice": curves.metrics.get("val_mean_dice", {}),
    }
    return workflow, record


def load_test_variants(workflow: ConfigWorkflow) -> list[dict[str, Any]]:
    """The bundle's test variants, preprocessed as its validation, one batch of one case each."""
    cases = workflow.parser.get_parsed_content("datalists")["test"]
    return list(DataLoader(Dataset(cases, workflow.parser.get_parsed_content("validate::preprocessing")), batch_size=1))


def evaluate(
    network: nn.Module,
    batches: list[dict[str, Any]],
    num_classes: int,
    inferer: UNetPlusPlusInferer,
    montage: Path | None = None,
) -> dict[str, Any]:
    """Per-class Dice (mean over the test variants) and seconds per case of ``inferer`` with ``network``."""
    dice = DiceMetric(include_background=False, reduction="mean_batch")
    seconds = []
    network.eval()
    with torch.no_grad():
        for k, batch in enumerate(batches):
            start = time.perf_counter()
            logits = inferer(batch["image"], network)
            seconds.append(time.perf_counter() - start)
            pred = one_hot(logits.argmax(1, keepdim=True), num_classes)
            dice(pred, one_hot(batch["label"], num_classes))
            if k == 0 and montage is not None:
                item = decollate_batch(batch)[0]
                save_montage(montage, item["image"], pred[0], item["label"], ("background", *CLASSES), panel_size=200)
    per_class = [float(v) for v in dice.aggregate()]
    return {
        "dice": dict(zip(CLASSES, per_class, strict=True)),
        "mean_dice": sum(per_class) / len(per_class),
        "seconds_per_case": sum(seconds) / len(seconds),
        "cases": len(seconds),
    }


def plot_comparison(records: dict[str, dict[str, Any]], filename: Path) -> None:
    """Training loss and validation Dice of every network on shared axes."""
    fig = new_figure(1000, 400)
    loss_ax, dice_ax = fig.subplots(1, 2)
    for name, record in records.items():
        epochs = sorted(record["epoch_loss"])
        loss_ax.plot(epochs, [record["epoch_loss"][e] for e in epochs], label=name)
        epochs = sorted(record["val_mean_dice"])
        dice_ax.plot(epochs, [record["val_mean_dice"][e] for e in epochs], "o-", markersize=3, label=name)
    loss_ax.set(xlabel="epoch", ylabel="Dice + CE loss", title="training loss (deep supervision: sum over heads)")
    dice_ax.set(xlabel="epoch", ylabel="mean Dice CSF / GM / WM", title="validation variants")
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, filename)


def table(rows: list[dict[str, Any]]) -> str:
    header = "| network | inference | parameters | train time | inference / case | CSF | GM | WM | mean Dice |"
    lines = [header, "|" + " --- |" * 9]
    for r in rows:
        d = r["dice"]
        lines.append(
            f"| {r['network']} | {r['inference']} | {r['parameters'] / 1e6:.2f} M | {r['train_time']} "
            f"| {r['seconds_per_case']:.1f} s | {d['CSF']:.3f} | {d['grey matter']:.3f} | {d['white matter']:.3f} "
            f"| **{r['mean_dice']:.3f}** |"
        )
    return "\n".join(lines)


def bundle_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """The training settings of the bundle's ``train.json`` with ``overrides`` applied."""
    config = ConfigParser()
    config.read_config(str(BUNDLE / "configs" / "train.json"))
    config.update(overrides)
    names = (
        "features",
        "norm",
        "epochs",
        "draws_per_epoch",
        "val_interval",
        "patch_size",
        "learning_rate",
        "resolution",
        "seed",
    )
    return {name: config.get_parsed_content(name) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, nargs=5, help="widths of every network (default: the bundle's)")
    parser.add_argument(
        "--norm",
        type=json.loads,
        help="""normalisation of every network as JSON, e.g. '"batch"' (default: the bundle's)""",
    )
    parser.add_argument("--epochs", type=int, help="default: the bundle's")
    parser.add_argument("--draws-per-epoch", type=int, help="training draws per epoch (default: the bundle's)")
    parser.add_argument("--val-interval", type=int, help="default: the bundle's")
    parser.add_argument("--patch-size", type=int, help="default: the bundle's")
    parser.add_argument("--learning-rate", type=float, help="default: the bundle's")
    parser.add_argument("--resolution", type=int, choices=(1, 2), help="default: the bundle's")
    parser.add_argument("--seed", type=int, help="default: the bundle's")
    parser.add_argument("--dataset-dir", help="where the MNI152 tissue dataset is (written on first use)")
    parser.add_argument("--networks", nargs="*", help="a subset of the network names (default: all)")
    parser.add_argument("--out", default=str(BUNDLE / "docs"), help="folder for the table, JSON and pictures")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on a CPU shared with other jobs one thread (and one data-loading worker) avoids the "
        "oversubscription that makes multi-threaded convolutions several times slower",
    )
    parser.add_argument("--num-workers", type=int, default=1, help="data-loading worker processes")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compare_brain_tissue_"))
    overrides = {
        "features": args.features,
        "norm": args.norm,
        "epochs": args.epochs,
        "draws_per_epoch": args.draws_per_epoch,
        "val_interval": args.val_interval,
        "patch_size": [args.patch_size] * 3 if args.patch_size else None,
        "learning_rate": args.learning_rate,
        "resolution": args.resolution,
        "seed": args.seed,
    }
    settings = bundle_settings({k: v for k, v in overrides.items() if v is not None})
    settings.update(
        num_workers=args.num_workers, progress_bar=False, dataset_dir=args.dataset_dir or str(work / "data")
    )
    networks = build_networks(settings["features"], settings["norm"], num_classes=4)
    if args.networks:
        networks = {name: net for name, net in networks.items() if name in args.networks}
    print(f"settings: {json.dumps(settings)}; work folder {work}", flush=True)

    rows, records = [], {}
    for name, network in networks.items():
        slug = name.split(" ")[0].lower().replace("+", "p")
        workflow, record = train(network, {**settings, "inference_mode": None}, work / slug)
        network = workflow.parser.get_parsed_content("network")  # the trained instance
        records[name] = record
        minutes = record["train_seconds"] / 60
        print(f"{name}: trained {record['iterations']} iterations in {minutes:.1f} min", flush=True)
        sw = {k: workflow.parser.get_parsed_content(k) for k in ("patch_size", "sw_batch_size", "sw_overlap")}
        batches, num_classes = load_test_variants(workflow), workflow.parser.get_parsed_content("num_classes")
        variants: list[tuple[str, dict[str, Any]]] = [("final head", {})]
        if isinstance(network, UNetPlusPlus):
            variants += [("mean of heads", {"mode": "mean"})]
            variants += [(f"pruned L{k}", {"depth": k}) for k in range(1, network.depth)]
        for label, options in variants:
            inferer = UNetPlusPlusInferer(sw["patch_size"], sw["sw_batch_size"], sw["sw_overlap"], **options)
            montage = out / f"montage_{slug}.png" if not options else None
            result = evaluate(network, batches, num_classes, inferer, montage)
            size = network.pruned(options["depth"]) if "depth" in options else network
            rows.append(
                {
                    "network": name,
                    "inference": label,
                    "parameters": parameter_count(size),
                    "train_time": f"{minutes:.1f} min",
                    **result,
                }
            )
            print(f"  {label}: mean Dice {result['mean_dice']:.3f} {result['dice']}", flush=True)
        workflow.finalize()

    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    report = {"settings": settings, "machine": machine, "rows": rows, "records": records}
    (out / "results.json").write_text(json.dumps(report, indent=4, default=str) + "\n")
    (out / "results.md").write_text(table(rows) + "\n")
    plot_comparison(records, out / "compare_curves.png")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
