# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The ``unetpp`` algorithm of Auto3DSeg, which finds it here as ``unetpp.scripts.algo.UnetppAlgo``."""

from __future__ import annotations

from monai_unetpp.auto3dseg.algo import UnetppAlgo

__all__ = ["UnetppAlgo"]

if __name__ == "__main__":
    import fire

    fire.Fire({"UnetppAlgo": UnetppAlgo})
