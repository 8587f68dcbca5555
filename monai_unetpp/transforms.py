# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Transforms for deep-supervision outputs in MONAI pipelines."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = ["SelectHead", "SelectHeadd", "SelectHeadD", "SelectHeadDict"]


class SelectHead(Transform):
    """Reduce a list of deep-supervision heads to one Tensor; a Tensor passes through unchanged.

    ``UNetPlusPlus`` returns its heads final first in training, so ``index=0`` (the default) is the final head:
    use it in trainer post-processing before metrics. ``index="mean"`` averages the heads (the paper's accurate
    mode).
    """

    def __init__(self, index: int | str = 0) -> None:
        if not (isinstance(index, int) or index == "mean"):
            raise ValueError(f"index must be a head index (0 = final head) or 'mean', got {index!r}.")
        self.index = index

    def __call__(self, heads: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(heads, torch.Tensor):
            return heads
        if not isinstance(heads, Sequence) or len(heads) == 0:
            raise ValueError(f"expected a Tensor or a non-empty list of head Tensors, got {type(heads).__name__}.")
        if self.index == "mean":
            return torch.stack(list(heads)).mean(0)
        if not -len(heads) <= self.index < len(heads):
            raise ValueError(f"head index {self.index} is out of range for {len(heads)} heads.")
        return heads[self.index]


class SelectHeadd(MapTransform):
    """Dictionary version of :py:class:`SelectHead`, e.g. ``SelectHeadd(keys="pred")`` in train post-processing."""

    def __init__(self, keys: KeysCollection, index: int | str = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.selector = SelectHead(index)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.selector(d[key])
        return d


SelectHeadD = SelectHeadDict = SelectHeadd
