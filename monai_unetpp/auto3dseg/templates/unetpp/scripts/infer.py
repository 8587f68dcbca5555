# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Inference of this fold. Auto3DSeg's ensemble uses ``InferClass``; ``python scripts/infer.py run`` segments the
fold's test list into ``eval/`` with ``configs/inference.json`` and ``configs/hyper_parameters.yaml``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_unetpp.auto3dseg.infer import InferClass
from monai_unetpp.auto3dseg.run import run_inference

__all__ = ["InferClass", "run"]

ALGO_DIR = Path(__file__).resolve().parents[1]


def run(config_file: str | Sequence[str] | None = None, **override: Any) -> None:
    """Segment the test list with the bundle's config ids (or Auto3DSeg's names) as ``override``."""
    run_inference(ALGO_DIR, config_file, **override)


if __name__ == "__main__":
    import fire

    fire.Fire({"run": run})
