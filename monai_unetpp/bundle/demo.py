# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Train a UNet++ bundle on its synthetic demo data, evaluate it and segment the demo's test images: one command.

Usage::

    python -m monai_unetpp.bundle.demo                                          # 3D bundle
    python -m monai_unetpp.bundle.demo --bundle unetpp_2d_segmentation          # 2D bundle, by name
    python -m monai_unetpp.bundle.demo --bundle path/to/a/bundle                # any bundle folder
    python -m monai_unetpp.bundle.demo --epochs 100 --set learning_rate=0.002   # longer, other settings

(``monai-unetpp-demo`` is the same command.) A bundle given by name is one that ships with the package (from a
source checkout or an installed wheel alike). It is copied to ``demo/<name>`` in the working directory, and the
settings given here are written into the copy's configs: the copy is a self-contained bundle whose configs match the
model it trained, so it can be zipped or served (MONAI Label's monaibundle app: ``cp -r demo/<name>
apps/monaibundle/model/``) with no extra settings, and the shipped bundle is never changed. A bundle given as a
folder runs in place, with the settings given at run time, and its configs are left as they are.

It runs the bundle's own configs, exactly as ``python -m monai.bundle run`` would, in three steps:

1. ``configs/train.json``: writes the demo data into ``<bundle>/data`` if that folder is missing or empty
   (``demo_data=true``), trains a new model (``overwrite=true``: the model and training state of an earlier run in
   ``<bundle>/models`` are replaced), keeps the best model in ``<bundle>/models/model.pt``;
2. ``configs/train.json`` + ``configs/evaluate.json``: per-class Dice and HD95 on the validation cases, saved in
   ``<bundle>/eval/metrics_per_class.csv``;
3. ``configs/inference.json``: segments the test images into ``<bundle>/eval/*_seg.nii.gz``.

With no settings given it trains the bundle's defaults, which are those of the bundle's shipped
``models/model.pt`` (sized for the demo data and a CPU): it reproduces the shipped model in a few minutes on a 2-core
CPU; on a GPU the same command uses CUDA and mixed precision and finishes far sooner.

The demo asks for what a plain bundle run refuses (:data:`DEMO_FLAGS`): the synthetic demo data and the replacement
of an earlier model, so that it runs out of the box and again and again. When the data is named
(``--set dataset_dir=...`` or ``--set datalist=...``) it asks for neither: a mistyped path then stops the run instead
of training on demo data, and a trained model is replaced only with ``--set overwrite=true`` (or continued with
``--set resume=true``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from ..utils import atomic_file, to_bool

__all__ = ["DEFAULT_BUNDLE", "DEMO_FLAGS", "find_bundle", "main", "run_demo", "shipped_bundles"]

DEFAULT_BUNDLE = "unetpp_3d_segmentation"

DEMO_FLAGS: dict[str, bool] = {"demo_data": True, "overwrite": True}
"""What the demo sets unless the data is named: write the demo data into the bundle's empty data folder, and train
a new model over the one an earlier demo run left."""


def shipped_bundles() -> Path:
    """The folder of the bundles that ship with monai-unetpp: ``monai_unetpp/bundles`` in an installed wheel, the
    checkout's ``bundles/`` in a source (editable) install."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "bundles", package.parent / "bundles"):
        if (folder / DEFAULT_BUNDLE / "configs" / "train.json").is_file():
            return folder
    raise FileNotFoundError(f"no bundles ship with this installation of monai_unetpp ({package}); reinstall it.")


def find_bundle(bundle: str | Path | None = None) -> Path:
    """The bundle a name or folder stands for.

    Args:
        bundle: a bundle folder (with ``configs/train.json``), or the name of a bundle that ships with the package;
            None for :data:`DEFAULT_BUNDLE`.
    """
    candidate = Path(bundle) if bundle is not None else None
    if candidate is not None and (candidate / "configs" / "train.json").is_file():
        return candidate.absolute()
    name = DEFAULT_BUNDLE if bundle is None else str(bundle)
    shipped = shipped_bundles()
    if not (shipped / name / "configs" / "train.json").is_file() or Path(name).name != name:
        names = sorted(p.name for p in shipped.glob("unetpp_*") if (p / "configs" / "train.json").is_file())
        raise FileNotFoundError(
            f"{bundle} is neither a bundle folder (with configs/train.json) nor a bundle that ships with "
            f"monai-unetpp ({', '.join(names)}); pass --bundle PATH to a bundle folder or one of those names."
        )
    return shipped / name


def demo_copy(source: Path, settings: dict[str, Any], workdir: str | Path | None = None) -> Path:
    """``<workdir>/demo/<name>``: a copy of the bundle ``source`` whose configs hold ``settings`` as their values.

    The configs, docs and licence are (re)written from ``source`` on every call; the copy's ``data``, ``models``,
    ``eval`` and ``runs`` are kept. Every setting that names an id of a config file becomes that id's value there.
    """
    target = (Path.cwd() if workdir is None else Path(workdir)) / "demo" / source.name
    fresh = not (target / "configs").is_dir()
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("data", "models", "eval", "runs"))
    for path in sorted((target / "configs").glob("*.json")):
        config = json.loads(path.read_text())
        written = {key: value for key, value in settings.items() if key in config and key not in DEMO_FLAGS}
        if written:
            config.update(written)
            with atomic_file(path) as tmp:
                tmp.write_text(json.dumps(config, indent=4) + "\n")
    if fresh:
        print(f"copied the {source.name} bundle to {target}, with the demo's settings in its configs")
    return target.absolute()


def _workflow(bundle: Path, files: Sequence[str], workflow_type: str | None, settings: dict[str, Any]) -> None:
    configs = bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **settings,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def demo_bundle(bundle: str | Path | None = None, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    """Where the demo runs and with which settings: a shipped bundle's :func:`demo_copy`, or a bundle folder itself,
    with :data:`DEMO_FLAGS` (dropped when ``dataset_dir`` or ``datalist`` is named) and ``overrides`` over them."""
    root = find_bundle(bundle)
    flags = {} if {"dataset_dir", "datalist"} & set(overrides) else DEMO_FLAGS
    settings = {**flags, **overrides}
    if root.parent == shipped_bundles():
        root = demo_copy(root, settings)
    return root, settings


def run_demo(bundle: str | Path | None = None, **overrides: Any) -> list[dict[str, str]]:
    """Train, evaluate and run inference with a bundle on its demo data.

    Args:
        bundle: a bundle folder, run in place, or the name of a shipped bundle, run in its :func:`demo_copy`; see
            :func:`find_bundle`.
        overrides: config overrides applied to all three steps, over :data:`DEMO_FLAGS`
            (e.g. ``epochs=100``, ``dataset_dir="/data/Task09_Spleen"``; naming ``dataset_dir`` or ``datalist``
            drops :data:`DEMO_FLAGS`).

    Returns:
        The rows of ``eval/metrics_per_class.csv``: one per class with its mean Dice and HD95.
    """
    return _run(*demo_bundle(bundle, **overrides))


def _run(root: Path, settings: dict[str, Any]) -> list[dict[str, str]]:
    earlier = [root / "models" / name for name in ("model.pt", "last.ckpt") if (root / "models" / name).is_file()]
    if earlier and _flag(settings, "overwrite") and not _flag(settings, "resume"):
        print(f"overwrite=true: this demo run trains a new model and replaces {' and '.join(map(str, earlier))}")
    _workflow(root, ["train.json"], "train", settings)
    _workflow(root, ["train.json", "evaluate.json"], None, settings)
    _workflow(root, ["inference.json"], "infer", settings)
    with open(root / "eval" / "metrics_per_class.csv", newline="") as f:
        return list(csv.DictReader(f))


def _flag(settings: dict[str, Any], name: str) -> bool:
    try:
        return to_bool(settings.get(name, False), name)
    except ValueError:
        return False  # the workflow stops on it with its own message


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monai_unetpp.bundle.demo",
        description="Train a UNet++ bundle on its synthetic demo data, evaluate it and segment the test images.",
    )
    parser.add_argument("--bundle", help=f"bundle folder, or the name of a shipped bundle (default: {DEFAULT_BUNDLE})")
    parser.add_argument("--epochs", type=int, help="number of training epochs (default: the demo's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="any config override, value as JSON, e.g. --set learning_rate=0.002 --set 'patch_size=[64,64,48]'",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects ID=VALUE, got {item!r}.")
        overrides[key] = _parse_value(value)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs

    start = time.perf_counter()
    root, settings = demo_bundle(args.bundle, **overrides)
    rows = _run(root, settings)
    minutes, seconds = divmod(time.perf_counter() - start, 60)
    dice = [float(row["val_mean_dice"]) for row in rows]
    print(f"\nUNet++ demo finished in {int(minutes)} min {seconds:.0f} s ({root.name})")
    print("validation Dice: " + ", ".join(f"{row['class']} {float(row['val_mean_dice']):.3f}" for row in rows))
    print(f"mean validation Dice: {sum(dice) / len(dice):.3f}")
    print(f"model: {root / 'models' / 'model.pt'}")
    print(f"predictions: {root / 'eval'}/*_seg.nii.gz")
    print(f"pictures: {root / 'eval'}/*_montage.png, {root / 'runs' / 'training_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
