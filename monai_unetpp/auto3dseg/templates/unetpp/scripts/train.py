# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Train this fold: ``python scripts/train.py run [--num_epochs=N] [--learning_rate=LR] [--resume=true] ...``.

Without ``--config_file`` it layers ``configs/train.json`` (plus ``configs/multi_gpu_train.json`` under torchrun)
and ``configs/hyper_parameters.yaml``; see ``monai_unetpp.auto3dseg.run_training``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_unetpp.auto3dseg.run import run_training

ALGO_DIR = Path(__file__).resolve().parents[1]


def run(config_file: str | Sequence[str] | None = None, **override: Any) -> None:
    """Train this fold with Auto3DSeg's training parameters or the bundle's config ids as ``override``."""
    run_training(ALGO_DIR, config_file, **override)


if __name__ == "__main__":
    import fire

    fire.Fire({"run": run})
