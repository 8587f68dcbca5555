# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Per-image inference of a trained fold for Auto3DSeg's ensemble: ``InferClass``, the interface of Auto3DSeg's
templates' ``scripts/infer.py`` (``BundleAlgo.get_inferer``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Invertd
from monai.utils import ensure_tuple

from ..bundle.checkpoint import load_checkpoint
from .params import bundle_ids

__all__ = ["InferClass"]

# entries of Auto3DSeg's prediction parameters that are the ensemble's own, not config values
_ENSEMBLE_OPTIONS = ("image_save_func", "rank")


class InferClass:
    """A fold's network with the bundle's preprocessing and sliding-window inferer, giving each image's class
    probabilities on the image's own grid.

    The configs are the bundle's ``inference.json`` and the fold's ``hyper_parameters.yaml``; the weights are its
    ``models/model.pt`` (the best validation Dice), loaded with ``weights_only=True``.

    Args:
        config_file: the config files, layered in order (:func:`monai_unetpp.auto3dseg.inference_configs`).
        bundle_root: the algorithm folder; None for the folder above the first config's ``configs/``.
        override: Auto3DSeg's prediction parameters: Auto3DSeg names (``num_sw_batch_size``, ``overlap_ratio``) or
            config ids (``inference_mode``, ``inference_depth``, ``device``, ...). The ensemble's own entries
            (``image_save_func``, ``rank``) are ignored.

    Examples::

        infer = InferClass(inference_configs("work_dir/unetpp_0"), inference_mode="mean")
        probabilities = infer.infer("case_001.nii.gz")  # (num_classes, *image shape), sums to 1 per voxel
    """

    def __init__(self, config_file: str | Sequence[str], bundle_root: str | os.PathLike | None = None, **override: Any):
        for name in _ENSEMBLE_OPTIONS:
            override.pop(name, None)
        files = [str(f) for f in ensure_tuple(config_file)]
        root = Path(bundle_root) if bundle_root is not None else Path(files[0]).resolve().parents[1]
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is not None and torch.cuda.is_available():  # a rank of a distributed ensemble
            override.setdefault("device", f"$torch.device('cuda:{int(local_rank)}')")
        parser = ConfigParser()
        parser.read_config(files)
        parser["bundle_root"] = str(root)
        parser.update(bundle_ids(override))
        self.device = torch.device(parser.get_parsed_content("device"))
        self.amp = bool(parser.get_parsed_content("amp"))
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.network = parser.get_parsed_content("network")
        checkpoint = Path(parser.get_parsed_content("ckpt_dir")) / "model.pt"
        fix = f"Train the fold first ({root}/scripts/train.py run), or point ckpt_dir at a trained model.pt."
        self.network.load_state_dict(load_checkpoint(checkpoint, fix))
        self.network.eval()
        self.inferer = parser.get_parsed_content("inferer")
        self.invert = Invertd(
            keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True
        )

    @torch.no_grad()
    def infer(self, image_file: str | os.PathLike | Sequence[str] | Mapping[str, Any]) -> MetaTensor:
        """The class probabilities of one image: a path, one path per channel, or a datalist case with an
        ``image`` entry (what Auto3DSeg's ensemble passes).

        Returns:
            A MetaTensor of shape ``(num_classes, *image spatial shape)`` on the image's own grid (orientation,
            spacing and size inverted), with the image's metadata, so that the ensemble's ``SaveImage`` writes it
            beside the image's affine.
        """
        image = image_file["image"] if isinstance(image_file, Mapping) else image_file
        image = [str(p) for p in image] if isinstance(image, (list, tuple)) else str(image)
        data = self.preprocessing({"image": image})
        batch = data["image"].unsqueeze(0).to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.inferer(batch, self.network)
        data["pred"] = torch.softmax(logits[0].float(), dim=0).cpu()
        data["image"] = data["image"].cpu()
        return self.invert(data)["pred"]
