# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Add a UNet++ segmentation model to a MONAI Label radiology-style app, creating the app if needed.

Usage::

    python -m monai_unetpp.label.make_app apps/radiology --labels spleen,liver
    monailabel start_server --app apps/radiology --studies datasets/Task09_Spleen/imagesTr --host 127.0.0.1 \\
        --conf models segmentation_unetpp --conf sam2 false

When ``DIR`` holds no ``main.py``, MONAI Label's stock radiology sample app is copied there first (from the
installed ``monailabel``: no download). The model is written as ``DIR/lib/configs/<name>.py``, where the radiology
app's ``--conf models <name>`` finds it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .defaults import DEFAULT_FEATURES, MODEL_NAME, ROI_SIZE, SW_BATCH_SIZE, TARGET_SPACING

__all__ = ["add_unetpp_config", "main", "radiology_sample_app"]

CONFIG_TEMPLATE = '''"""UNet++ segmentation model of this app, written by ``python -m monai_unetpp.label.make_app``.

Start the server with ``--conf models {name}``. The values below are this model's defaults: edit them here or
override them at start with ``--conf unetpp_<attribute> <value>`` (see ``monai_unetpp.label.UNetPlusPlusSegmentation``).
Changing ``labels`` or ``features`` makes earlier model files in ``model/`` unusable: move them away.
"""

from monailabel.interfaces.config import TaskConfig

from monai_unetpp.label import UNetPlusPlusSegmentation


# MONAI Label picks up the classes of lib/configs whose direct base is TaskConfig.
class {class_name}(UNetPlusPlusSegmentation, TaskConfig):
    labels = {labels!r}
    features = {features!r}
    deep_supervision = {deep_supervision!r}
    roi_size = {roi_size!r}
    target_spacing = {target_spacing!r}
    intensity_range = {intensity_range!r}
    sw_batch_size = {sw_batch_size!r}
'''


def radiology_sample_app() -> Path:
    """The radiology sample app shipped with the installed ``monailabel`` (what ``monailabel apps`` lists)."""
    for prefix in (Path(sys.prefix), Path(sys.prefix) / "local", Path.home() / ".local"):
        app = prefix / "monailabel" / "sample-apps" / "radiology"
        if (app / "main.py").is_file():
            return app
    raise FileNotFoundError(
        f"MONAI Label's radiology sample app was not found under {sys.prefix}; install MONAI Label in this "
        'environment (pip install "monai-unetpp[label]") or pass an existing app folder.'
    )


def add_unetpp_config(
    app_dir: str | Path,
    name: str = MODEL_NAME,
    labels: dict[str, int] | None = None,
    features: Sequence[int] = DEFAULT_FEATURES,
    deep_supervision: bool = True,
    roi_size: Sequence[int] = ROI_SIZE,
    target_spacing: Sequence[float] = TARGET_SPACING,
    intensity_range: Sequence[float] | None = None,
    overwrite: bool = False,
    sw_batch_size: int = SW_BATCH_SIZE,
) -> Path:
    """Write ``app_dir/lib/configs/<name>.py``, copying the radiology sample app to ``app_dir`` if it has no app.

    Args:
        app_dir: the app folder; created from the radiology sample app when it has no ``main.py``.
        name: the model name, used in ``--conf models <name>`` and for the model files. Defaults to
            :data:`monai_unetpp.label.defaults.MODEL_NAME`.
        labels: label name -> voxel value, background excluded. Defaults to ``{"foreground": 1}``.
        features: UNet++ widths per level (depth = len - 1).
        deep_supervision: train every head (needed for ``inference_mode="mean"`` and pruning).
        roi_size: patch and sliding-window size.
        target_spacing: voxel size the network works at.
        intensity_range: ``(a_min, a_max)`` window scaled to [0, 1], or None for z-score normalisation.
        overwrite: replace an existing config file of that name. Defaults to False.
        sw_batch_size: sliding windows per forward pass of inference. Defaults to
            :data:`monai_unetpp.label.defaults.SW_BATCH_SIZE`.

    Returns:
        the written config file.
    """
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"name must be a Python module name (letters, digits, '_'), got {name!r}.")
    if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be a whole number >= 1, got {sw_batch_size!r}.")
    app_dir = Path(app_dir)
    if not (app_dir / "main.py").is_file():
        if app_dir.exists() and any(app_dir.iterdir()):
            raise FileExistsError(
                f"{app_dir} is neither an app (no main.py) nor empty; pass an app folder or a new folder."
            )
        shutil.copytree(
            radiology_sample_app(), app_dir, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
        )
    configs = app_dir / "lib" / "configs"
    if not (configs / "__init__.py").is_file():
        raise FileNotFoundError(f"{app_dir} has no lib/configs package: it is not a radiology-style app.")
    target = configs / f"{name}.py"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (--force on the command line) to replace it.")
    target.write_text(
        CONFIG_TEMPLATE.format(
            name=name,
            class_name="".join(part.capitalize() for part in name.split("_")),
            labels=dict(labels) if labels else {"foreground": 1},
            features=tuple(int(f) for f in features),
            deep_supervision=bool(deep_supervision),
            roi_size=tuple(int(s) for s in roi_size),
            target_spacing=tuple(float(s) for s in target_spacing),
            intensity_range=None if intensity_range is None else tuple(float(v) for v in intensity_range),
            sw_batch_size=sw_batch_size,
        )
    )
    return target


def _numbers(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(kind(v) for v in text.replace(" ", "").split(","))

    return parse


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m monai_unetpp.label.make_app", description=__doc__.split("\n")[0])
    parser.add_argument("app_dir", help="app folder (created from the radiology sample app if it has no main.py)")
    parser.add_argument("--name", default=MODEL_NAME, help="model name (default: %(default)s)")
    parser.add_argument(
        "--labels",
        nargs="+",
        default=["foreground"],
        help='names, values 1, 2, ... in order ("liver tumor" or "liver,tumor"), or a JSON object \'{"liver": 1}\'',
    )
    parser.add_argument("--features", type=_numbers(int), default=DEFAULT_FEATURES, help="e.g. 16,32,64,128")
    parser.add_argument("--no-deep-supervision", action="store_true", help="train the final head only")
    parser.add_argument("--roi-size", type=_numbers(int), default=ROI_SIZE, help="e.g. 96,96,96")
    parser.add_argument("--target-spacing", type=_numbers(float), default=TARGET_SPACING, help="e.g. 1.5,1.5,2")
    parser.add_argument(
        "--intensity-range", type=_numbers(float), default=None, help="CT window: --intensity-range=-57,164"
    )
    parser.add_argument(
        "--sw-batch-size",
        type=int,
        default=SW_BATCH_SIZE,
        help="sliding windows per forward pass of inference (default: %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing config of that name")
    args = parser.parse_args(argv)

    from .config import parse_labels

    try:
        target = add_unetpp_config(
            args.app_dir,
            name=args.name,
            labels=parse_labels(",".join(args.labels)),
            features=args.features,
            deep_supervision=not args.no_deep_supervision,
            roi_size=args.roi_size,
            target_spacing=args.target_spacing,
            intensity_range=args.intensity_range,
            overwrite=args.force,
            sw_batch_size=args.sw_batch_size,
        )
    except (OSError, ValueError) as error:
        parser.error(str(error))
    print(f"wrote {target}")
    # MONAI Label binds every interface by default; the hint keeps the server on this machine
    print(
        f"start: monailabel start_server --app {args.app_dir} --studies <images folder> --host 127.0.0.1 "
        f"--conf models {args.name} --conf sam2 false"
    )


if __name__ == "__main__":
    main()
