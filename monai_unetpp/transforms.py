# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Transforms for UNet++ pipelines: deep-supervision outputs, resampling that is safe in a MONAI Label server,
label values to channel indices, the intensity normalisation of the MONAI Label tasks, and a mask that keeps
predictions inside the input's nonzero region."""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensityd, ScaleIntensityRanged, Spacingd, Transform

from .networks.unetplusplus import reduce_heads
from .utils import to_bool

__all__ = [
    "IntensityMixtureRefined",
    "MaskOutsideInputd",
    "nonzero_region",
    "PathSafeSpacingd",
    "SelectHead",
    "SelectHeadD",
    "SelectHeadDict",
    "SelectHeadd",
    "SequentialLabelsd",
    "scale_intensity",
]


class SelectHead(Transform):
    """Reduce a list of deep-supervision heads to one Tensor; a Tensor passes through unchanged.

    ``UNetPlusPlus`` returns its heads final first in training, so ``index=0`` (the default) is the final head:
    use it in trainer post-processing before metrics. ``index="mean"`` averages the heads (the paper's accurate
    mode); both are :func:`monai_unetpp.networks.reduce_heads`. Another integer picks that head.
    """

    def __init__(self, index: int | str = 0) -> None:
        if isinstance(index, bool) or not (isinstance(index, int) or index == "mean"):
            raise ValueError(f"index must be a head index (0 = final head) or 'mean', got {index!r}.")
        self.index = index

    def __call__(self, heads: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(heads, torch.Tensor):
            return heads
        if isinstance(heads, str) or not isinstance(heads, Sequence) or len(heads) == 0:
            raise ValueError(f"expected a Tensor or a non-empty list of head Tensors, got {type(heads).__name__}.")
        if self.index == "mean":
            return reduce_heads(list(heads), "mean")
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


class PathSafeSpacingd(Spacingd):
    """``Spacingd`` that leaves non-dictionary ``<key>_*`` entries such as ``image_path`` untouched.

    Since MONAI 1.6, ``Spacingd`` refreshes every ``<key>_*`` entry of a NIfTI image as a metadata dictionary
    (``d["image_meta_dict"].update(...)``). A MONAI Label server keeps the request's image as the string
    ``d["image_path"]``, so plain ``Spacingd(keys="image")`` fails there with
    ``'str' object has no attribute 'update'``. This transform sets such entries aside while resampling and puts
    them back unchanged; metadata dictionaries are still refreshed. Arguments, results and ``inverse`` are those of
    ``monai.transforms.Spacingd``.

    Examples::

        >>> spacing = PathSafeSpacingd(keys="image", pixdim=(1.5, 1.5, 2.0), mode="bilinear")
        >>> out = spacing({"image": loaded_image, "image_path": "/data/studies/case1.nii.gz"})
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        set_aside = {
            k: d.pop(k)
            for k in list(d)
            if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], Mapping)
        }
        out = super().__call__(d, lazy=lazy)
        out.update(set_aside)
        return out


def scale_intensity(intensity_range: Sequence[float] | None, keys: KeysCollection = "image") -> MapTransform:
    """The intensity normalisation shared by the infer and train tasks.

    Args:
        intensity_range: ``(a_min, a_max)``, a window clipped and scaled to [0, 1] (e.g. a CT window), or None
            for per-image z-score normalisation (any modality).
        keys: the image key(s). Defaults to ``"image"``.
    """
    if intensity_range is None:
        return NormalizeIntensityd(keys=keys)
    try:
        a_min, a_max = (float(v) for v in intensity_range)
    except (TypeError, ValueError):
        a_min = a_max = float("nan")
    if not a_min < a_max:
        raise ValueError(
            f"intensity_range must be two numbers (a_min, a_max) with a_min < a_max, got {intensity_range!r}; "
            "use None for z-score normalisation."
        )
    return ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True)


class SequentialLabelsd(MapTransform):
    """Map the declared label values, in ascending order, to channel indices 1..n; every other value becomes 0.

    A label map annotated with values ``{"liver": 6, "spleen": 1}`` becomes 0 / 1 (spleen) / 2 (liver), the classes of
    an ``n + 1``-channel network; voxels of structures the model does not declare count as background. The infer
    task maps channel ``n`` back to the ``n``-th value. Works on Tensors and ``MetaTensor`` (metadata kept).
    """

    def __init__(self, keys: KeysCollection, values: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(values, str) or any(isinstance(v, bool) or int(v) != v for v in values):
            raise ValueError(f"values must be whole label values (0 is background), got {values!r}.")
        values = [int(v) for v in values]
        if not values or min(values) < 1 or len(set(values)) != len(values):
            raise ValueError(f"values must be distinct positive label values (0 is background), got {values}.")
        self.values = sorted(values)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = torch.as_tensor(d[key])
            out = torch.zeros_like(label)
            for index, value in enumerate(self.values, start=1):
                out[label == value] = index
            d[key] = out
        return d


def nonzero_region(image: torch.Tensor, margin: int = 1) -> torch.Tensor:
    """Where any channel of ``image`` (channel first) is nonzero, dilated by ``margin`` voxels.

    The dilation is by a cube of side ``2 * margin + 1`` (a voxel is kept when a nonzero voxel lies within
    ``margin`` steps along every axis, diagonals included), i.e. ``scipy.ndimage.binary_dilation`` with the full
    connectivity structure, iterated ``margin`` times.

    Args:
        image: ``(C, *spatial)`` with 1 to 3 spatial dimensions.
        margin: voxels of dilation, 0 for the nonzero region itself.

    Returns:
        A boolean ``(1, *spatial)`` Tensor on ``image``'s device.
    """
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise ValueError(f"margin must be a whole number of voxels >= 0, got {margin!r}.")
    image = torch.as_tensor(image)
    if not 2 <= image.ndim <= 4:
        raise ValueError(f"image must be channel first with 1 to 3 spatial axes, got shape {tuple(image.shape)}.")
    region = (image != 0).any(dim=0, keepdim=True)
    if margin == 0:
        return region
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[region.ndim - 2]
    return pool(region[None].float(), kernel_size=2 * margin + 1, stride=1, padding=margin)[0] > 0


def _input_copy(d: Mapping[Hashable, Any], key: str, owner: str) -> Any:
    """``d[key]``, the copy of the input image that ``owner`` needs, or a KeyError that says how to make it."""
    if key not in d:
        raise KeyError(
            f"{owner} needs the input image under '{key}' (keys present: {sorted(map(str, d))}); copy the image "
            f"before resampling, e.g. CopyItemsd(keys='image', names='{key}')."
        )
    return d[key]


def _check_one_grid(pred: Any, key: Hashable, image: Any, image_key: str, owner: str) -> None:
    if tuple(pred.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(
            f"'{key}' has spatial shape {tuple(pred.shape[1:])} but '{image_key}' has {tuple(image.shape[1:])}: "
            f"place {owner} where both are on one grid (after Invertd)."
        )


class MaskOutsideInputd(MapTransform):
    """Set a prediction to background wherever the input image is zero, outside a margin around its nonzero region.

    A network that segments skull-stripped scans sees only zeros outside the brain, yet it may still label tissue
    there (on the faces of an empty sliding window, or next to a wide empty field of view). This transform makes
    "nothing outside the input" a property of the output rather than of the weights: every voxel farther than
    ``margin`` voxels (a cube, see :func:`nonzero_region`) from a nonzero voxel of ``source_key`` becomes
    background. Place it where the prediction and the source share one grid, e.g. after ``Invertd`` in inference
    post-processing with the source a copy of the image taken before resampling (``CopyItemsd``).

    The prediction may be a class-index map (one channel: set to ``background``) or per-class probabilities or
    one-hot channels (channel ``background`` set to 1, the others to 0). ``MetaTensor`` metadata is kept.

    Args:
        keys: the prediction key(s).
        source_key: the key of the image whose nonzero region bounds the prediction, on the prediction's grid.
        margin: voxels of dilation of the nonzero region. Defaults to 1 (partial-volume voxels at the border).
        background: the background class index. Defaults to 0.
        remove_source: drop ``source_key`` from the output, so that a full-size copy of the image is not carried
            further. Defaults to False.

    Examples::

        >>> mask = MaskOutsideInputd(keys="pred", source_key="original_image")
        >>> out = mask({"pred": class_map, "original_image": image})  # both (1, H, W, D) on one grid
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str,
        margin: int = 1,
        background: int = 0,
        remove_source: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ValueError(f"margin must be a whole number of voxels >= 0, got {margin!r}.")
        if isinstance(background, bool) or not isinstance(background, int) or background < 0:
            raise ValueError(f"background must be a class index >= 0, got {background!r}.")
        self.source_key = source_key
        self.margin = margin
        self.background = background
        self.remove_source = to_bool(remove_source, "remove_source")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _input_copy(d, self.source_key, "MaskOutsideInputd")
        source = d.pop(self.source_key) if self.remove_source else d[self.source_key]
        for key in self.key_iterator(d):
            pred = d[key]
            _check_one_grid(pred, key, source, self.source_key, "MaskOutsideInputd")
            outside = ~nonzero_region(torch.as_tensor(source), self.margin).to(torch.as_tensor(pred).device)
            out = pred.clone()
            if out.shape[0] == 1:
                out[outside] = self.background
            else:
                if not 0 <= self.background < out.shape[0]:
                    raise ValueError(f"background {self.background} is not a channel of '{key}' ({out.shape[0]}).")
                channels = outside.expand_as(out)
                out[channels] = 0
                out[self.background][outside[0]] = 1
            d[key] = out
        return d


SelectHeadD = SelectHeadDict = SelectHeadd


class IntensityMixtureRefined(MapTransform):
    """Refine a network's tissue probabilities with the image's own intensities: one Gaussian per class, fitted by
    expectation-maximisation with the network's probabilities as spatial priors.

    This is the unified segmentation of Ashburner and Friston (NeuroImage 26, 2005) with the network's per-voxel
    probabilities in place of a registered tissue atlas. Inside the input's nonzero region (the brain of a
    skull-stripped scan) the posterior of tissue class ``k`` at voxel ``x`` is

        q_k(x) ∝ prior_k(x) * N(I(x); mu_k(x), sigma_k^2),
        prior_k(x) = (1 - prior_floor) * p_k(x) ** prior_weight / sum_j p_j(x) ** prior_weight + prior_floor / K,

    with ``p`` the network's probabilities of the ``K`` tissue channels (background excluded), ``I`` the image's
    intensities clipped to their 1st-99th percentiles in the region, and the Gaussians started from the network's
    own labelling. A network trained on synthetic images knows where tissue classes lie (the anatomy) better than
    it knows a given scanner's contrast; the scan's intensity histogram knows the contrast. Each fixes the other:
    thin sulcal CSF that the network calls grey matter is darker than the grey matter of that very scan, and
    voxels of equal intensity are told apart by where they are. ``prior_weight`` below 1 flattens the network's
    confidence, ``prior_floor`` lets the intensities overrule it anywhere. The fit starts from the network's own
    labelling (its most probable class per voxel), so each class must be the network's choice somewhere in the
    region: a class that it never chooses there has no intensities to start from and stays unfound.

    With ``bias_sigma_mm`` the fit also estimates a smooth multiplicative bias field ``b`` (the intensities over
    the fitted class means, averaged under a Gaussian of that standard deviation, re-estimated at each iteration)
    and fits the Gaussians to ``I / b``, as N4 bias correction followed by a mixture fit would.

    Outside the region the probabilities are left as they are (:class:`MaskOutsideInputd` sets them to background);
    inside it the background channel becomes 0, since every nonzero voxel of a skull-stripped image is brain.

    Args:
        keys: the key(s) of the per-class probabilities (``(C, *spatial)``, after ``Activationsd(softmax=True)``),
            on the grid of ``image_key``.
        image_key: the image whose intensities are fitted, on the probabilities' grid (e.g. the copy of the input
            taken before resampling that ``MaskOutsideInputd`` uses).
        background: the background channel, left out of the mixture. Defaults to 0.
        prior_weight: exponent of the network's probabilities in the prior, in (0, 1]. Defaults to 0.5.
        prior_floor: share of a uniform prior, in [0, 1). Defaults to 0.1.
        iterations: EM iterations. Defaults to 15.
        bias_sigma_mm: standard deviation in mm of the bias field's smoothing (in voxels by the image's spacing
            from its metadata, 1 mm where it has none), or None for no bias field (default).

    Examples::

        >>> refine = IntensityMixtureRefined(keys="pred", image_key="original_image")
        >>> out = refine({"pred": softmax_probabilities, "original_image": t1})  # (4, H, W, D) and (1, H, W, D)
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str,
        background: int = 0,
        prior_weight: float = 0.5,
        prior_floor: float = 0.1,
        iterations: int = 15,
        bias_sigma_mm: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(background, bool) or not isinstance(background, int) or background < 0:
            raise ValueError(f"background must be a class index >= 0, got {background!r}.")
        for name, value in (
            ("prior_weight", prior_weight),
            ("prior_floor", prior_floor),
            ("bias_sigma_mm", bias_sigma_mm),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"{name} must be a number, got {value!r}.")
        if not 0.0 < prior_weight <= 1.0:
            raise ValueError(f"prior_weight must be in (0, 1], got {prior_weight!r}.")
        if not 0.0 <= prior_floor < 1.0:
            raise ValueError(f"prior_floor must be in [0, 1), got {prior_floor!r}.")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a whole number >= 1, got {iterations!r}.")
        if bias_sigma_mm is not None and not bias_sigma_mm > 0:
            raise ValueError(f"bias_sigma_mm must be > 0 mm or None, got {bias_sigma_mm!r}.")
        self.image_key = image_key
        self.background = background
        self.prior_weight, self.prior_floor = float(prior_weight), float(prior_floor)
        self.iterations = iterations
        self.bias_sigma_mm = bias_sigma_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = _input_copy(d, self.image_key, "IntensityMixtureRefined")
        for key in self.key_iterator(d):
            pred = d[key]
            _check_one_grid(pred, key, image, self.image_key, "IntensityMixtureRefined")
            if pred.shape[0] < 3 or not 0 <= self.background < pred.shape[0]:
                raise ValueError(
                    f"'{key}' must hold per-class probabilities with background channel {self.background} and at "
                    f"least two tissue channels, got {pred.shape[0]} channels."
                )
            out = pred.clone()
            out[:] = torch.as_tensor(self._refine(torch.as_tensor(pred), image), dtype=out.dtype, device=out.device)
            d[key] = out
        return d

    def _refine(self, probabilities: torch.Tensor, image: Any) -> torch.Tensor:
        """The refined ``(C, *spatial)`` probabilities (see the class docstring)."""
        p = probabilities.detach().cpu().numpy().astype(np.float64)
        intensities = torch.as_tensor(image).detach().cpu().numpy().astype(np.float64)[0]
        region = intensities != 0
        if region.sum() < 10:
            return probabilities
        tissue = [c for c in range(p.shape[0]) if c != self.background]
        x = intensities[region]
        low, high = np.percentile(x, [1, 99])
        x = np.clip(x, low, high)
        prior = np.stack([np.maximum(p[c][region], 0.0) for c in tissue]) ** self.prior_weight
        prior = prior / np.maximum(prior.sum(0, keepdims=True), 1e-12)
        prior = (1 - self.prior_floor) * prior + self.prior_floor / len(tissue)
        q = np.zeros_like(prior)
        q[prior.argmax(0), np.arange(x.size)] = 1.0  # the network's labelling starts the fit
        sigma_voxels = self._sigma_voxels(image)
        corrected = x
        for _ in range(self.iterations):
            weight = np.maximum(q.sum(1), 1e-12)
            means = (q * corrected).sum(1) / weight
            if sigma_voxels is not None:
                # a smooth multiplicative bias field: what the fitted classes' means leave unexplained
                bias = _smooth_ratio((q * x).sum(0), (q * means[:, None]).sum(0), region, sigma_voxels)
                corrected = x / np.maximum(bias, 1e-6)
                means = (q * corrected).sum(1) / weight
            variances = (q * (corrected - means[:, None]) ** 2).sum(1) / weight
            variances = np.maximum(variances, 1e-12 * max(high - low, 1e-12) ** 2)
            log_q = np.log(prior) - 0.5 * (corrected - means[:, None]) ** 2 / variances[:, None]
            log_q -= 0.5 * np.log(variances)[:, None]
            log_q -= log_q.max(0, keepdims=True)
            q = np.exp(log_q)
            q /= q.sum(0, keepdims=True)
        refined = p.copy()
        refined[:, region] = 0.0
        for k, c in enumerate(tissue):
            refined[c][region] = q[k]
        return torch.from_numpy(refined)

    def _sigma_voxels(self, image: Any) -> tuple[float, ...] | None:
        if self.bias_sigma_mm is None:
            return None
        spatial = image.ndim - 1
        pixdim = getattr(image, "pixdim", None)
        spacing = [float(s) for s in pixdim[:spatial]] if pixdim is not None else [1.0] * spatial
        return tuple(self.bias_sigma_mm / max(s, 1e-6) for s in spacing)


def _smooth_ratio(numerator: Any, denominator: Any, region: Any, sigma: Sequence[float]) -> Any:
    """``G * numerator / G * denominator`` at each voxel of ``region`` (values given in it), ``G`` a Gaussian of
    ``sigma`` voxels; computed on a grid coarsened by up to half of sigma, as the ratio is smooth at that scale."""
    from scipy import ndimage

    factor = [max(1, int(s // 2)) for s in sigma]
    shape = [-(-n // f) * f for n, f in zip(region.shape, factor, strict=True)]
    pad = [(0, s - n) for s, n in zip(shape, region.shape, strict=True)]

    def coarse(values):
        volume = np.zeros(region.shape)
        volume[region] = values
        blocks = np.pad(volume, pad).reshape([v for n, f in zip(shape, factor, strict=True) for v in (n // f, f)])
        return ndimage.gaussian_filter(
            blocks.mean(axis=tuple(range(1, 2 * len(factor), 2))),
            [s / f for s, f in zip(sigma, factor, strict=True)],
            mode="constant",
        )

    ratio = coarse(numerator) / np.maximum(coarse(denominator), 1e-12)
    full = ndimage.zoom(ratio, factor, order=1, mode="nearest", grid_mode=True)
    return full[tuple(slice(0, n) for n in region.shape)][region]
