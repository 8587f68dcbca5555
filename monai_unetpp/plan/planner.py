# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""A UNet++ training plan from a dataset fingerprint: :func:`make_plan` and :class:`Plan`."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import rules
from .memory import predict_training_memory

__all__ = ["DEFAULT_GPU_MEMORY_GIB", "Plan", "make_plan"]

#: the GPU memory a plan is sized for by default: nnU-Net's reference budget (about 8 GB)
DEFAULT_GPU_MEMORY_GIB = 8.0
#: share of the GPU memory the predicted peak may use: the CUDA context, the caching allocator's fragmentation and
#: cuDNN's workspace take the rest
USABLE_SHARE = 0.85
#: a step's patches may cover at most this share of the dataset's voxels (nnU-Net: small datasets get smaller
#: batches instead of steps that see most of the data at once)
MAX_BATCH_DATASET_SHARE = 0.05
MIN_BATCH = 2


@dataclass
class Plan:
    """What :func:`make_plan` chose, and the fingerprint numbers behind each choice (``reasons``).

    ``batch_size`` is the number of patches per step; the bundle gets it as ``num_samples`` patches from each of
    ``batch_size // num_samples`` images (:meth:`to_bundle_config`).
    """

    spatial_dims: int
    modality: str
    modality_source: str
    in_channels: int
    num_classes: int
    spacing: list[float]
    median_shape: list[int]
    patch_size: list[int]
    batch_size: int
    features: list[int]
    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    intensity: dict[str, Any]
    class_ratios: list[float]
    gpu_memory_gib: float
    predicted_memory_gib: float
    precision: str = "amp"
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """Patches cropped from each loaded image: two where the batch is even (half the loading), else one."""
        return 2 if self.batch_size % 2 == 0 else 1

    def intensity_transform(self) -> dict[str, Any]:
        """The bundle's ``intensity_transform`` component for the planned normalisation."""
        if self.intensity["scheme"] == "ct":
            lo, hi, mean, std = (self.intensity[k] for k in ("clip_low", "clip_high", "mean", "std"))
            # clipping to [lo, hi] and z-scoring with the foreground's mean and std is one linear map with clipping
            return {
                "_target_": "monai.transforms.ScaleIntensityRanged",
                "_desc_": f"CT: clip to the foreground's 0.5-99.5 percentiles [{lo:.1f}, {hi:.1f}] HU, then z-score "
                f"with the foreground's mean {mean:.1f} and standard deviation {std:.1f} (one linear map)",
                "keys": "image",
                "a_min": lo,
                "a_max": hi,
                "b_min": (lo - mean) / std,
                "b_max": (hi - mean) / std,
                "clip": True,
            }
        nonzero = bool(self.intensity["nonzero"])
        return {
            "_target_": "monai.transforms.NormalizeIntensityd",
            "_desc_": "z-score per image and channel"
            + (" over the non-zero voxels; zeros stay zero" if nonzero else ""),
            "keys": "image",
            "nonzero": nonzero,
            "channel_wise": True,
        }

    def to_bundle_config(self) -> dict[str, Any]:
        """The plan as a config fragment of ``bundles/unetpp_3d_segmentation`` (``unetpp_2d_segmentation`` for a
        2D plan): the ids it sets, to be layered after the bundle's ``train.json`` or ``inference.json``.

        Examples::

            >>> fragment = plan.to_bundle_config()  # doctest: +SKIP
            >>> sorted(fragment)  # doctest: +SKIP
            ['batch_size', 'class_ratios', 'features', 'in_channels', 'intensity_transform', 'kernel_size', ...]
        """
        return {
            "spacing": [float(s) for s in self.spacing],
            "in_channels": int(self.in_channels),
            "num_classes": int(self.num_classes),
            "features": [int(f) for f in self.features],
            "strides": [list(s) for s in self.strides],
            "kernel_size": [list(k) for k in self.kernel_sizes],
            "patch_size": [int(p) for p in self.patch_size],
            "batch_size": self.batch_size // self.num_samples,
            "num_samples": self.num_samples,
            "class_ratios": [round(float(r), 6) for r in self.class_ratios],
            "intensity_transform": self.intensity_transform(),
        }

    def summary(self) -> dict[str, Any]:
        """The plan's choices and the numbers behind them, as plain data (what :meth:`to_yaml` writes beside the
        fragment)."""
        return asdict(self) | {"num_samples": self.num_samples}

    def to_yaml(self, path: str | os.PathLike) -> Path:
        """Write the bundle fragment to ``path`` and the plan's choices with their reasons to
        ``<path stem>_summary.yaml`` beside it; returns the fragment's path.

        Examples::

            >>> plan.to_yaml("plan.yaml")  # doctest: +SKIP
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            "# UNet++ plan (python -m monai_unetpp.plan): a config fragment of the bundle, layered after its\n"
            "# train.json or inference.json; "
            f"the choices and their reasons are in {summary_path(path).name}\n"
        )
        path.write_text(header + yaml.dump(self.to_bundle_config(), Dumper=_FragmentDumper, sort_keys=False))
        summary_path(path).write_text(yaml.safe_dump(self.summary(), sort_keys=False))
        return path

    def table(self) -> str:
        """A short table of the plan's choices and their reasons, one row per choice."""
        rows = [
            ("modality", self.modality, self.reasons.get("modality", "")),
            ("spacing (mm)", _axes(self.spacing), self.reasons.get("spacing", "")),
            ("median shape", _axes(self.median_shape), "median case shape at the target spacing"),
            ("patch size", _axes(self.patch_size), self.reasons.get("patch_size", "")),
            ("batch (patches)", str(self.batch_size), self.reasons.get("batch_size", "")),
            ("strides", " ".join(_axes(s) for s in self.strides), self.reasons.get("strides", "")),
            ("kernels", " ".join(_axes(k) for k in self.kernel_sizes), self.reasons.get("kernel_sizes", "")),
            ("features", _axes(self.features, ","), self.reasons.get("features", "")),
            ("intensity", self.intensity["scheme"], self.reasons.get("intensity", "")),
            (
                "class ratios",
                _axes([round(r, 3) for r in self.class_ratios], ","),
                self.reasons.get("class_ratios", ""),
            ),
            (
                "memory (GiB)",
                f"{self.predicted_memory_gib:.3g} / {self.gpu_memory_gib:g}",
                f"predicted training peak ({self.precision}) of the GPU budget",
            ),
        ]
        width = max(len(r[0]) for r in rows)
        value_width = max(len(r[1]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value:<{value_width}}  {why}".rstrip() for name, value, why in rows)


class _FragmentDumper(yaml.SafeDumper):
    """YAML with lists of numbers on one line (``[2, 2, 1]``) and components in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_FragmentDumper.add_representer(list, _represent_list)


def summary_path(path: Path) -> Path:
    """Where :meth:`Plan.to_yaml` writes the summary beside the fragment ``path``."""
    return path.with_name(f"{path.stem}_summary.yaml")


def _axes(values: Sequence, sep: str = "x") -> str:
    return sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


# ---------------------------------------------------------------------------------------------------------------
# reading Auto3DSeg's data_stats


def _summary(data_stats: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(data_stats, Mapping) or "stats_summary" not in data_stats:
        keys = list(data_stats) if isinstance(data_stats, Mapping) else type(data_stats).__name__
        raise ValueError(
            "data_stats must be the dict that monai.apps.auto3dseg.DataAnalyzer returns (or writes to "
            f"data_stats.yaml), with 'stats_summary'; got {keys}. Run monai_unetpp.plan.fingerprint(dataset) first."
        )
    return data_stats["stats_summary"]


def _get(summary: Mapping[str, Any], *keys: str) -> Any:
    value: Any = summary
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise ValueError(
                f"data_stats['stats_summary'] has no {'/'.join(keys)}: it is not DataAnalyzer's summary of a labelled "
                "dataset (run DataAnalyzer with label_key='label' and histogram_only=False)."
            )
        value = value[key]
    return value


def _channel_stats(stats: Any, what: str) -> Mapping[str, Any]:
    """The intensity statistics of the first channel (DataAnalyzer lists them per channel for several)."""
    if isinstance(stats, Sequence) and not isinstance(stats, str):
        if len(stats) != 1:
            raise ValueError(
                f"the CT normalisation is planned for one channel, but {what} has {len(stats)}; pass modality='MR' "
                "(z-score per image and channel) for multi-channel data."
            )
        stats = stats[0]
    return stats


def _cases(data_stats: Mapping[str, Any], summary: Mapping[str, Any], dims: int) -> tuple[list, list]:
    """Per-case shapes and spacings, from ``stats_by_cases`` where the stats have them, else the summary's median."""
    shapes, spacings = [], []
    for case in data_stats.get("stats_by_cases") or []:
        image = case.get("image_stats", {})
        if "shape" in image and "spacing" in image:
            shape = image["shape"][0] if isinstance(image["shape"][0], Sequence) else image["shape"]
            shapes.append([float(s) for s in shape][:dims])
            spacings.append([float(s) for s in image["spacing"]][:dims])
    if not shapes:  # data_stats.yaml holds the summary only (DataAnalyzer writes the cases to another file)
        shapes = [[float(s) for s in _get(summary, "image_stats", "shape", "median")][:dims]]
        spacings = [[float(s) for s in _get(summary, "image_stats", "spacing", "median")][:dims]]
    return shapes, spacings


def _num_cases(summary: Mapping[str, Any], shapes: list) -> int:
    return int(summary.get("n_cases", len(shapes))) if len(shapes) == 1 else len(shapes)


# ---------------------------------------------------------------------------------------------------------------
# the plan


def make_plan(
    data_stats: dict,
    *,
    modality: str | None = None,
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB,
    spatial_dims: int = 3,
    base_features: int = 32,
    max_features: int | None = None,
    max_levels: int = 5,
    precision: str = "amp",
) -> Plan:
    """Plan the UNet++ training of a dataset from its fingerprint, by the rules of :mod:`monai_unetpp.plan.rules`.

    Args:
        data_stats: what ``monai.apps.auto3dseg.DataAnalyzer`` returns or writes to ``data_stats.yaml`` (Auto3DSeg's
            format), e.g. from :func:`monai_unetpp.plan.fingerprint`.
        modality: ``"CT"``, ``"MR"`` (any other name is normalised as MR), or None: CT when the images hold air
            values (:func:`rules.is_ct`), else MR.
        gpu_memory_gib: the GPU memory to size the patch and batch for; the predicted peak uses at most 85 % of it.
        spatial_dims: 3 or 2.
        base_features: the width of level 0, doubling per level. Defaults to 32.
        max_features: the cap of the widths. Defaults to 320 in 3D, 512 in 2D.
        max_levels: at most this many levels (``max_levels - 1`` downsamplings). Defaults to 5, the paper's.
        precision: what the memory is predicted for, ``"amp"`` (the bundles' GPU training) or ``"fp32"``.

    Returns:
        The :class:`Plan`.

    Raises:
        ValueError: when ``data_stats`` is not DataAnalyzer's output of a labelled dataset, an argument is out of
            range, or the budget cannot hold the smallest patch.

    Examples::

        >>> stats = monai_unetpp.plan.fingerprint("/data/Task09_Spleen")  # doctest: +SKIP
        >>> plan = make_plan(stats, gpu_memory_gib=24)  # doctest: +SKIP
        >>> print(plan.table()); plan.to_yaml("plan.yaml")  # doctest: +SKIP
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if isinstance(gpu_memory_gib, bool) or not isinstance(gpu_memory_gib, numbers.Real) or not gpu_memory_gib > 0:
        raise ValueError(f"gpu_memory_gib must be a positive number of GiB, got {gpu_memory_gib!r}.")
    max_features = (320 if spatial_dims == 3 else 512) if max_features is None else max_features
    for name, value, least in (
        ("base_features", base_features, 1),
        ("max_features", max_features, 1),
        ("max_levels", max_levels, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}.")
    if max_features < base_features:
        raise ValueError(f"max_features ({max_features}) must be at least base_features ({base_features}).")
    summary = _summary(data_stats)
    reasons: dict[str, str] = {}

    # classes and channels
    labels = [int(v) for v in _get(summary, "label_stats", "labels")]
    num_classes = max(labels) + 1
    if num_classes < 2:
        raise ValueError(f"the labels hold only the classes {labels}: there is nothing to segment.")
    in_channels = int(round(float(_get(summary, "image_stats", "channels", "median"))))

    # spacing and the shape of the median case there
    shapes, spacings = _cases(data_stats, summary, spatial_dims)
    median_shape = [float(s) for s in _get(summary, "image_stats", "shape", "median")]
    if len(median_shape) != spatial_dims:
        raise ValueError(
            f"data_stats describe {len(median_shape)}D images (median shape {median_shape}), but spatial_dims="
            f"{spatial_dims}; pass spatial_dims={len(median_shape)} or fingerprint the intended images."
        )
    # the shape tells the images' dimensions: DataAnalyzer gives a 2D NIfTI's spacing three entries (of its affine)
    median_spacing = [float(s) for s in _get(summary, "image_stats", "spacing", "median")][:spatial_dims]
    tenth = [float(s) for s in _get(summary, "image_stats", "spacing", "percentile_10_0")][:spatial_dims]
    shape_at_median = rules.median_shape(shapes, spacings, median_spacing)
    spacing = rules.target_spacing(median_spacing, tenth, shape_at_median)
    low_axis = rules.low_resolution_axis(median_spacing, shape_at_median)
    num_cases = _num_cases(summary, shapes)
    reasons["spacing"] = f"median of the {num_cases} cases" + (
        f"; anisotropic, axis {low_axis} at its 10th percentile (>= the other axes)" if low_axis is not None else ""
    )
    shape = rules.median_shape(shapes, spacings, spacing)

    # modality and normalisation
    image_intensity = _get(summary, "image_stats", "intensity")
    if isinstance(image_intensity, Sequence):  # one entry per channel: air shows in the first
        image_intensity = image_intensity[0]
    image_p005 = float(image_intensity["percentile_00_5"])
    if modality is None:
        modality = "CT" if rules.is_ct(image_p005) else "MR"
        source = f"inferred: 0.5th intensity percentile {image_p005:.0f} {'<=' if modality == 'CT' else '>'} -500"
    else:
        modality = str(modality).upper()
        source = "given"
    reasons["modality"] = source
    if modality == "CT":
        fg = _channel_stats(_get(summary, "image_foreground_stats", "intensity"), "the foreground intensity stats")
        std = float(fg["stdev"])
        if not std > 0:
            raise ValueError(f"the foreground intensities have standard deviation {std}: they cannot be z-scored.")
        intensity = {
            "scheme": "ct",
            "clip_low": float(fg["percentile_00_5"]),
            "clip_high": float(fg["percentile_99_5"]),
            "mean": float(fg["mean"]),
            "std": std,
        }
        reasons["intensity"] = "CT: clip to the foreground's 0.5-99.5 percentiles, z-score with its mean and std"
    else:
        voxels = math.prod(float(s) for s in _get(summary, "image_stats", "shape", "median")[:spatial_dims])
        cropped = math.prod(float(s) for s in _get(summary, "image_stats", "cropped_shape", "median")[:spatial_dims])
        nonzero = rules.mask_for_normalisation(voxels, cropped)
        intensity = {"scheme": "zscore", "nonzero": nonzero}
        reasons["intensity"] = "z-score per image" + (
            f" over the non-zero voxels (the non-zero box is {cropped / voxels:.0%} of the image)" if nonzero else ""
        )

    # class sampling
    per_class = _get(summary, "label_stats", "label")
    fractions = [float(c["foreground_percentage"]["mean"]) for c in per_class]
    ratios = rules.class_ratios(fractions)
    reasons["class_ratios"] = "2/3 random patches, 1/3 centred on a foreground class (nnU-Net), in expectation"

    # patch, topology and batch within the memory budget
    budget = USABLE_SHARE * gpu_memory_gib * 2**30
    patch = [max(int(s), 1) for s in shape]

    def layout(patch: list[int]) -> tuple[list, list, list, list]:
        strides, kernels = rules.topology(spacing, patch, max_levels)
        divisor = rules.shape_divisor(strides, spatial_dims)
        # sides divisible by the pooling, so that no level rounds (the network accepts any size; this wastes none)
        padded = [int(math.ceil(p / d) * d) for p, d in zip(patch, divisor, strict=True)]
        widths = rules.feature_widths(len(kernels), base_features, max_features)
        return strides, kernels, widths, padded

    def peak(patch: list[int], strides: list, kernels: list, widths: list, batch: int) -> int:
        return predict_training_memory(
            patch, batch, widths, strides, kernels, in_channels, num_classes, precision=precision
        ).total

    strides, kernels, widths, padded = layout(patch)
    while peak(padded, strides, kernels, widths, MIN_BATCH) > budget:
        # shrink the axis that is largest relative to the median image, by one step of its pooling: the patch keeps
        # the aspect of the median image
        divisor = rules.shape_divisor(strides, spatial_dims)
        relative = [p / s for p, s in zip(padded, shape, strict=True)]
        shrinkable = [d for d in range(spatial_dims) if padded[d] - divisor[d] >= rules.MIN_SIDE]
        if not shrinkable:
            raise ValueError(
                f"gpu_memory_gib={gpu_memory_gib:g} cannot hold even a {_axes(padded)} patch of {MIN_BATCH} with "
                f"widths {widths}: raise gpu_memory_gib or lower base_features."
            )
        axis = max(shrinkable, key=lambda d: relative[d])
        patch = list(padded)
        patch[axis] -= divisor[axis]
        strides, kernels, widths, padded = layout(patch)
    fits_whole = all(p >= s for p, s in zip(padded, shape, strict=True))
    reasons["patch_size"] = (
        "the median image (it fits the budget)" if fits_whole else "largest with the median image's aspect in budget"
    )
    dataset_voxels = sum(
        math.prod(np.asarray(s) * np.asarray(sp) / np.asarray(spacing)) for s, sp in zip(shapes, spacings, strict=True)
    )
    dataset_voxels *= num_cases / len(shapes)  # the summary only: the median case times the number of cases
    cap = max(MIN_BATCH, int(MAX_BATCH_DATASET_SHARE * dataset_voxels / math.prod(padded)))
    batch = MIN_BATCH
    while batch < cap and peak(padded, strides, kernels, widths, batch + 1) <= budget:
        batch += 1
    reasons["batch_size"] = f"at least {MIN_BATCH}; at most 5 % of the dataset's voxels per step ({cap})" + (
        "" if batch == cap else "; then the memory budget"
    )
    reasons["strides"] = "pool an axis while its side stays >= 4 and its spacing < 2x the finest"
    reasons["kernel_sizes"] = "3 where the level's spacing < 2x the finest (then always), else 1"
    reasons["features"] = f"{base_features} doubling per level, at most {max_features}"
    predicted = peak(padded, strides, kernels, widths, batch) / 2**30
    return Plan(
        spatial_dims=spatial_dims,
        modality=modality,
        modality_source=source,
        in_channels=in_channels,
        num_classes=num_classes,
        spacing=[round(s, 6) for s in spacing],
        median_shape=shape,
        patch_size=padded,
        batch_size=batch,
        features=widths,
        strides=strides,
        kernel_sizes=kernels,
        intensity=intensity,
        class_ratios=ratios,
        gpu_memory_gib=float(gpu_memory_gib),
        predicted_memory_gib=predicted,
        precision=precision,
        reasons=reasons,
    )
