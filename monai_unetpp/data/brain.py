# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Brain-tissue segmentation data from the MNI152 template that nilearn ships, the synthetic variation that
turns its one (average) subject into fixed evaluation variants, and the image synthesis that training uses.

Training follows SynthSeg (Billot et al., "SynthSeg: Segmentation of brain MRI scans of any contrast and
resolution without retraining", Medical Image Analysis 2023): every training patch is an image generated from a
deformed label map, with random per-class intensities, blur, resolution, bias field and noise
(:func:`tissue_synthesis`), so that the network learns where tissue borders are from contrast rather than from the
intensities of one template.

The MNI152 2009 T1 template, its grey- and white-matter probability maps and its brain mask are files inside the
nilearn wheel (``pip install monai-unetpp[brain]``); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.networks.utils import one_hot
from monai.transforms import (
    AsDiscreted,
    Compose,
    MapTransform,
    MaskIntensityd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleIntensityd,
    RandSimulateLowResolutiond,
    RandSmoothDeformd,
    ThresholdIntensityd,
)

from ..utils import atomic_folder

__all__ = [
    "TISSUE_CLASSES",
    "RandTissueImaged",
    "RandTissueLabelsd",
    "SoftLabeld",
    "load_mni152_tissues",
    "patch_variation",
    "prepare_mni152_dataset",
    "synthetic_variation",
    "tissue_labels",
    "tissue_synthesis",
    "tissue_probabilities",
    "volume_variation",
]

#: Class names by label index.
TISSUE_CLASSES = ("background", "CSF", "grey matter", "white matter")
RESOLUTIONS = (1, 2)
#: Seeds of the validation and test variants; training draws come from the training run's own random state.
VARIANT_SEEDS = {"validation": 1_000_003, "test": 2_000_003}
#: Version of the :func:`synthetic_variation` recipe, stamped into ``dataset.json``: a dataset written with
#: another recipe is not silently reused.
VARIATION_VERSION = 6


def tissue_probabilities(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-class probabilities from the tissue maps: background, CSF, grey matter, white matter.

    Inside the brain mask (``mask > 0.5``) the CSF probability is what grey and white matter leave,
    ``max(0, 1 - p_GM - p_WM)``, and the background probability is 0; outside the mask the background probability
    is 1 and the others 0.

    Args:
        gm: grey-matter probability map.
        wm: white-matter probability map, same shape.
        mask: brain mask, same shape.

    Returns:
        ``float32`` array of shape ``(4, *gm.shape)``, channels in the order of :data:`TISSUE_CLASSES`.
    """
    if not gm.shape == wm.shape == mask.shape:
        raise ValueError(f"gm, wm and mask must have one shape, got {gm.shape}, {wm.shape} and {mask.shape}.")
    brain = (mask > 0.5).astype(np.float32)
    gm, wm = np.clip(gm, 0.0, 1.0), np.clip(wm, 0.0, 1.0)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    return np.stack([1.0 - brain, brain * csf, brain * gm, brain * wm]).astype(np.float32)


def tissue_labels(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Hard tissue labels: the most probable class of :func:`tissue_probabilities`.

    Each voxel of the brain mask takes the class of the largest of ``(p_CSF, p_GM, p_WM)`` (ties go to the earlier
    class); outside the mask it is background. So a voxel is CSF exactly when neither tissue reaches the
    probability left to CSF, e.g. wherever ``p_GM + p_WM < 1/2``.

    Args:
        gm: grey-matter probability map.
        wm: white-matter probability map, same shape.
        mask: brain mask, same shape.

    Returns:
        ``uint8`` labels: 0 background, 1 CSF, 2 grey matter, 3 white matter (:data:`TISSUE_CLASSES`).
    """
    return np.argmax(tissue_probabilities(gm, wm, mask), axis=0).astype(np.uint8)


def load_mni152_tissues(resolution: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 2009 T1 template masked to the brain, its :func:`tissue_probabilities` and its affine.

    Args:
        resolution: voxel size in mm, 1 (197 x 233 x 189) or 2 (99 x 117 x 95). Defaults to 2.

    Returns:
        ``(image, probabilities, affine)``: ``float32`` intensities (zero outside the brain mask), the ``float32``
        ``(4, ...)`` class probabilities (their argmax is :func:`tissue_labels`) and the 4 x 4 RAS affine.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be 1 or 2 (mm, the templates nilearn ships), got {resolution!r}.")
    try:
        from nilearn import datasets
    except ImportError as error:
        raise ImportError(
            "the MNI152 brain-tissue data needs nilearn, which ships the templates: pip install 'monai-unetpp[brain]'"
        ) from error
    template = datasets.load_mni152_template(resolution=resolution)
    mask = datasets.load_mni152_brain_mask(resolution=resolution).get_fdata()
    gm = datasets.load_mni152_gm_template(resolution=resolution).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata()
    image = np.clip(template.get_fdata(), 0.0, None) * (mask > 0.5)
    return image.astype(np.float32), tissue_probabilities(gm, wm, mask), template.affine


class SoftLabeld(MapTransform):
    """Replace a label by per-class probabilities to resample: the case's own probability maps where it has them,
    else the one-hot label.

    Resampled probability maps keep the partial-volume information that a one-hot label has lost: after a
    deformation, the most probable class of the interpolated maps follows the interpolated image, whereas the
    interpolated one-hot label marks about 20 % more CSF at 2 mm and agrees with it on CSF at a Dice of only 0.84.

    Args:
        keys: the label key.
        probability_key: the key of the ``(num_classes, ...)`` probability maps; removed from the data once used.
        num_classes: number of label classes, for the one-hot fallback.
    """

    def __init__(self, keys: str, probability_key: str = "probabilities", num_classes: int = len(TISSUE_CLASSES)):
        super().__init__(keys)
        self.probability_key = probability_key
        self.num_classes = num_classes

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        probabilities = d.pop(self.probability_key, None)
        for key in self.key_iterator(d):
            if probabilities is None:
                d[key] = one_hot(torch.as_tensor(d[key])[None], self.num_classes, dim=1)[0]
            elif probabilities.shape[0] != self.num_classes:
                raise ValueError(
                    f"'{self.probability_key}' has {probabilities.shape[0]} channels, expected one per class "
                    f"({self.num_classes}); give one probability map per class, background first."
                )
            else:
                d[key] = probabilities
        return d


def volume_variation(keys: tuple[str, str] = ("image", "label"), probability_key: str = "probabilities") -> Compose:
    """The whole-volume half of :func:`synthetic_variation`: flip, bias field and contrast.

    - left-right flip (p 0.5);
    - a multiplicative polynomial bias field (degree 3, coefficients up to 0.03: the field varies by a factor of
      about 1.5 across the volume, p 0.8);
    - gamma 0.7-1.5 (p 0.8) and a global intensity scale of +-15 % (p 0.5).

    The bias field is a polynomial over the whole array it is given; drawn over a training patch instead, it would
    vary as much across 6 cm as the held-out variants' fields vary across the whole brain.

    Args:
        keys: the image and label keys.
        probability_key: the key of the label's per-class probability maps, flipped with it where present.
    """
    image_key = keys[0]
    return Compose(
        [
            RandFlipd(keys=[*keys, probability_key], prob=0.5, spatial_axis=0, allow_missing_keys=True),
            RandBiasFieldd(keys=image_key, degree=3, coeff_range=(0.0, 0.03), prob=0.8),
            RandAdjustContrastd(keys=image_key, gamma=(0.7, 1.5), prob=0.8),
            RandScaleIntensityd(keys=image_key, factors=0.15, prob=0.5),
        ]
    )


def patch_variation(
    keys: tuple[str, str] = ("image", "label"),
    spatial_size: int | tuple[int, int, int] | None = None,
    num_classes: int = len(TISSUE_CLASSES),
    probability_key: str = "probabilities",
) -> Compose:
    """The geometric half of :func:`synthetic_variation`, with resolution loss, noise and skull stripping.

    - one resampling with rotation (up to 15 degrees per axis), scaling (+-12 %), shear (+-5 %) and elastic
      deformation (smoothing sigma 6-9 voxels, magnitude up to 120). The label is resampled as class
      probabilities (bilinear) and then takes the most probable class, so that it follows the interpolated image
      at tissue borders: the case's own probability maps where it has them (:class:`SoftLabeld`), else the
      one-hot label;
    - resolution loss: down- then up-sampling by a factor 0.75-1 (p 0.3), i.e. voxels of up to 2.7 mm at 2 mm;
    - Gaussian noise of standard deviation up to 0.02 of the [0, 1] range (p 0.5), a signal-to-noise ratio of at
      least about 40 in white matter;
    - skull stripping: the image is set to zero outside the resampled brain (label > 0), as brain-extraction tools
      leave a scan. Resolution loss and noise come from the scanner, so they act before it; without it, noise
      outside the brain hides the brain's border, where CSF darkened by gamma is as dark as the background.

    Args:
        keys: the image and label keys.
        spatial_size: output size of the resampling (the training patch); None keeps the input size.
        num_classes: number of label classes.
        probability_key: the key of the label's per-class probability maps, where the case has them.
    """
    image_key, label_key = keys
    return Compose(
        [
            SoftLabeld(keys=label_key, probability_key=probability_key, num_classes=num_classes),
            Rand3DElasticd(
                keys=keys,
                sigma_range=(6.0, 9.0),
                magnitude_range=(0.0, 120.0),
                spatial_size=spatial_size,
                prob=1.0,
                rotate_range=(0.26, 0.26, 0.26),
                shear_range=(0.05, 0.05, 0.05),
                scale_range=(0.12, 0.12, 0.12),
                mode="bilinear",
                padding_mode="zeros",
            ),
            AsDiscreted(keys=label_key, argmax=True),
            RandSimulateLowResolutiond(keys=image_key, zoom_range=(0.75, 1.0), prob=0.3),
            RandGaussianNoised(keys=image_key, std=0.02, prob=0.5),
            MaskIntensityd(keys=image_key, mask_key=label_key),
        ]
    )


class RandTissueLabelsd(Randomizable, MapTransform):
    """Hard tissue labels from per-class probability maps, with the CSF and grey/white borders at random levels.

    A brain voxel (background probability below 1/2) is CSF where ``p_GM + p_WM < csf_level``, else grey matter
    where ``p_GM - p_WM >= gm_shift``, else white matter; ``csf_level`` and ``gm_shift`` are drawn once per call.
    At ``csf_level = 1/2, gm_shift = 0`` this is close to :func:`tissue_labels`. The MNI152 maps are an average of
    152 heads: at their 1/2 level the sulci are closed (8 % of the brain is CSF, where a single head's T1 shows
    13-22 %). Higher levels open them along the valleys of the averaged tissue maps, where single heads have their
    sulci, so one template yields label maps with a range of CSF and cortical thickness. The image is generated
    from the label afterwards (:class:`RandTissueImaged`), so image and label always agree.

    Args:
        keys: the label key to write.
        probability_key: the key of the ``(4, ...)`` probability maps (background, CSF, GM, WM); removed.
        csf_level: range of ``csf_level``. Defaults to (0.5, 0.85): 8 to 21 % of the 1 mm template's brain is CSF.
        gm_shift: range of ``gm_shift``. Defaults to (-0.1, 0.2).
    """

    def __init__(
        self,
        keys: str = "label",
        probability_key: str = "probabilities",
        csf_level: tuple[float, float] = (0.5, 0.85),
        gm_shift: tuple[float, float] = (-0.1, 0.2),
    ) -> None:
        super().__init__(keys)
        if not 0.0 < csf_level[0] <= csf_level[1] < 1.0:
            raise ValueError(f"csf_level must be (low, high) with 0 < low <= high < 1, got {csf_level}.")
        if not -1.0 < gm_shift[0] <= gm_shift[1] < 1.0:
            raise ValueError(f"gm_shift must be (low, high) with -1 < low <= high < 1, got {gm_shift}.")
        self.probability_key = probability_key
        self.csf_level, self.gm_shift = csf_level, gm_shift
        self.levels = (0.5, 0.0)

    def randomize(self, data: Any = None) -> None:
        self.levels = (self.R.uniform(*self.csf_level), self.R.uniform(*self.gm_shift))

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        if self.probability_key not in d:
            raise KeyError(f"RandTissueLabelsd needs the probability maps under '{self.probability_key}'.")
        p = torch.as_tensor(d.pop(self.probability_key))
        if p.shape[0] != len(TISSUE_CLASSES):
            raise ValueError(
                f"'{self.probability_key}' has {p.shape[0]} channels, expected {len(TISSUE_CLASSES)} "
                "(background, CSF, grey matter, white matter)."
            )
        self.randomize()
        csf_level, gm_shift = self.levels
        label = torch.where(p[2] - p[3] >= gm_shift, 2, 3)
        label = torch.where(p[2] + p[3] < csf_level, 1, label)
        label = torch.where(p[0] >= 0.5, 0, label)[None]
        for key in self.keys:
            d[key] = p[:1].clone().copy_(label)  # a MetaTensor in, a MetaTensor out, on the maps' grid
        return d


class RandTissueImaged(Randomizable, MapTransform):
    """A T1-like image generated from a tissue label map: one random Gaussian intensity distribution per class.

    As in SynthSeg (Billot et al. 2023), the image is ``mean[label] + std[label] * N(0, 1)`` with a mean and a
    standard deviation drawn per class and call; unlike SynthSeg the means keep the T1 order (background 0 < CSF <
    grey matter < white matter), with random gaps: white matter ``U(wm_mean)``, grey matter that times
    ``U(gm_ratio)``, CSF the grey matter's times ``U(csf_ratio)``, and standard deviations ``U(0, max_std)`` times
    the class mean. The bundle segments T1 scans only, so its training time goes to T1 contrasts of every kind
    (different scanners, field strengths and sequences move these ratios) instead of arbitrary ones.
    Background stays 0, as in a skull-stripped scan.

    Args:
        keys: the image key to write.
        label_key: the key of the class-index label map.
        wm_mean: range of the white-matter mean. Defaults to (0.6, 1.0).
        gm_ratio: range of grey / white matter. Defaults to (0.45, 0.85).
        csf_ratio: range of CSF / grey matter. Defaults to (0.1, 0.75).
        max_std: largest within-class standard deviation, relative to the class mean. Defaults to 0.1.
    """

    def __init__(
        self,
        keys: str = "image",
        label_key: str = "label",
        wm_mean: tuple[float, float] = (0.6, 1.0),
        gm_ratio: tuple[float, float] = (0.45, 0.85),
        csf_ratio: tuple[float, float] = (0.1, 0.75),
        max_std: float = 0.1,
    ) -> None:
        super().__init__(keys)
        for name, (low, high) in (("wm_mean", wm_mean), ("gm_ratio", gm_ratio), ("csf_ratio", csf_ratio)):
            if not 0.0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}.")
        if max_std < 0:
            raise ValueError(f"max_std must be >= 0, got {max_std}.")
        self.label_key = label_key
        self.wm_mean, self.gm_ratio, self.csf_ratio, self.max_std = wm_mean, gm_ratio, csf_ratio, max_std
        self.means = torch.tensor([0.0, 0.2, 0.5, 0.8])
        self.stds = torch.zeros(4)

    def randomize(self, data: Any = None) -> None:
        wm = self.R.uniform(*self.wm_mean)
        gm = wm * self.R.uniform(*self.gm_ratio)
        csf = gm * self.R.uniform(*self.csf_ratio)
        self.means = torch.tensor([0.0, csf, gm, wm], dtype=torch.float32)
        self.stds = self.means * torch.as_tensor(self.R.uniform(0.0, self.max_std, size=4), dtype=torch.float32)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        label = torch.as_tensor(d[self.label_key]).long()
        if label.min() < 0 or label.max() >= len(TISSUE_CLASSES):
            raise ValueError(f"'{self.label_key}' must hold class indices 0-3, found {label.min()}-{label.max()}.")
        self.randomize()
        noise = torch.as_tensor(self.R.standard_normal(label.shape), dtype=torch.float32)
        image = self.means[label] + self.stds[label] * noise
        for key in self.keys:
            d[key] = d[self.label_key].clone().to(torch.float32).copy_(image)  # the label's grid and metadata
        return d


def tissue_synthesis(
    keys: tuple[str, str] = ("image", "label"),
    spatial_size: int | tuple[int, int, int] | None = None,
    probability_key: str = "probabilities",
) -> Compose:
    """The training patch of the bundle: a random label map from the template's deformed probability maps and an
    image generated from it (SynthSeg, Billot et al. 2023), in the order a scanner would make it.

    - geometry: left-right flip (p 0.5), an affine resampling of the probability maps to the patch with rotation
      (up to 15 degrees per axis), scaling (+-12 %) and shear (+-5 %), then a smooth nonlinear deformation (a
      random 5 x 5 x 5 displacement grid upsampled to the patch, up to 0.12 in normalised coordinates: two
      voxels), bilinear; SynthSeg's coarse-grid field, a quarter of the cost of ``Rand3DElasticd``'s Gaussian
      smoothing of a full-size field;
    - labels: :class:`RandTissueLabelsd` at random CSF and grey/white levels;
    - intensities: :class:`RandTissueImaged`, random T1-ordered class means and within-class spread;
    - partial volume and resolution: Gaussian blur with a standard deviation of 0.3-1.2 voxels drawn per axis
      (p 0.8), and down- then up-sampling by a factor 0.33-1 (p 0.3): 1 to 3 mm voxels at 1 mm, anisotropic blur;
    - bias field: a multiplicative polynomial of degree 3 over the patch, coefficients up to 0.04 (p 0.8), and
      a patch-wide factor 0.7-1.3, the level of a patch in a brighter or darker part of a biased scan;
    - contrast: gamma 0.8-1.25 (p 0.5);
    - noise: Gaussian, standard deviation up to 0.04 (p 0.8);
    - skull stripping: zero outside the brain (label > 0) and no negative values.

    Args:
        keys: the image and label keys; both are written.
        spatial_size: output size of the resampling (the training patch); None keeps the input size.
        probability_key: the key of the ``(4, ...)`` probability maps (background, CSF, GM, WM) the label comes
            from; removed.
    """
    image_key, label_key = keys
    return Compose(
        [
            RandFlipd(keys=probability_key, prob=0.5, spatial_axis=0),
            RandAffined(
                keys=probability_key,
                spatial_size=spatial_size,
                prob=1.0,
                rotate_range=(0.26, 0.26, 0.26),
                shear_range=(0.05, 0.05, 0.05),
                scale_range=(0.12, 0.12, 0.12),
                mode="bilinear",
                padding_mode="border",
            ),
            RandSmoothDeformd(
                keys=probability_key,
                spatial_size=spatial_size,
                rand_size=(5, 5, 5),
                def_range=0.12,
                field_mode="trilinear",
                grid_mode="bilinear",
                grid_padding_mode="border",
                prob=1.0,
            ),
            RandTissueLabelsd(keys=label_key, probability_key=probability_key),
            RandTissueImaged(keys=image_key, label_key=label_key),
            RandGaussianSmoothd(keys=image_key, sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2), sigma_z=(0.3, 1.2), prob=0.8),
            RandSimulateLowResolutiond(keys=image_key, zoom_range=(0.33, 1.0), prob=0.3),
            RandBiasFieldd(keys=image_key, degree=3, coeff_range=(0.0, 0.04), prob=0.8),
            RandScaleIntensityd(keys=image_key, factors=0.3, prob=1.0),
            RandAdjustContrastd(keys=image_key, gamma=(0.8, 1.25), prob=0.5),
            RandGaussianNoised(keys=image_key, std=0.04, prob=0.8),
            MaskIntensityd(keys=image_key, mask_key=label_key),
            ThresholdIntensityd(keys=image_key, threshold=0.0, above=True, cval=0.0),
        ]
    )


def synthetic_variation(
    keys: tuple[str, str] = ("image", "label"),
    spatial_size: int | tuple[int, int, int] | None = None,
    num_classes: int = len(TISSUE_CLASSES),
    probability_key: str = "probabilities",
) -> Compose:
    """Random MRI-like variation of a (image, label) pair: :func:`volume_variation` then :func:`patch_variation`.

    The fixed validation and test variants are whole volumes made by this. Training applies the same two halves
    with a crop between them (the bundle's ``train.json``): flip, bias field and contrast on the whole volume, then
    geometry, resolution loss, noise and skull stripping on the patch, so that training draws and held-out variants
    share one recipe. Stronger resolution loss and noise than these erase much of the thin sulcal CSF at 2 mm.

    Args:
        keys: the image and label keys.
        spatial_size: output size of the resampling; None keeps the input size.
        num_classes: number of label classes.
        probability_key: the key of the label's per-class probability maps, where the case has them.

    Returns:
        A ``Compose`` of MONAI dictionary transforms; seed it with ``set_random_state`` for reproducible draws.
    """
    return Compose(
        [
            volume_variation(keys, probability_key),
            patch_variation(keys, spatial_size, num_classes, probability_key),
        ]
    )


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> str:
    nib.save(nib.Nifti1Image(array, affine), path)
    return f"./{path.parent.name}/{path.name}"


def prepare_mni152_dataset(
    dataset_dir: str | os.PathLike, resolution: int = 2, num_validation: int = 4, num_test: int = 4
) -> str:
    """Write the MNI152 brain-tissue dataset in the Medical Segmentation Decathlon layout, once.

    ``imagesTr/mni152.nii.gz`` with ``labelsTr/mni152.nii.gz`` is the training case (training draws vary it at
    random, see :func:`synthetic_variation`), with its :func:`tissue_probabilities` as one file per class in
    ``probabilitiesTr/`` (the case's ``probabilities`` list, background first); ``num_validation`` and
    ``num_test`` whole-volume variants, made with fixed seeds of their own, go to ``imagesTr``/``labelsTr`` (the
    ``validation`` list of ``dataset.json``) and ``imagesTs``/``labelsTs`` (the ``test`` list). Labels:
    0 background, 1 CSF, 2 grey matter, 3 white matter (:func:`tissue_labels`). A folder that already holds this
    dataset is left as it is; the folder is written under a temporary name and renamed, so concurrent callers
    (one per GPU) never see half a dataset.

    Args:
        dataset_dir: where to write; it must be missing, empty or a dataset this function wrote with the same
            arguments.
        resolution: 1 or 2 mm. Defaults to 2.
        num_validation: number of validation variants. Defaults to 4.
        num_test: number of test variants. Defaults to 4.

    Returns:
        ``dataset_dir`` as a string, for bundle configs such as
        ``"$monai_unetpp.data.prepare_dataset(monai_unetpp.brain.prepare_mni152_dataset(@dataset_dir), ...)"``.
    """
    if num_validation < 1 or num_test < 0:
        raise ValueError(f"need num_validation >= 1 and num_test >= 0, got {num_validation} and {num_test}.")
    root = Path(dataset_dir).expanduser().absolute()
    synthesis = {"resolution": resolution, "num_validation": num_validation, "num_test": num_test}
    synthesis.update(seeds=VARIANT_SEEDS, variation_version=VARIATION_VERSION)
    description_file = root / "dataset.json"
    if description_file.is_file():
        found = json.loads(description_file.read_text()).get("synthesis")
        if found != synthesis:
            raise ValueError(
                f"{root} holds an MNI152 tissue dataset made with {found}, not {synthesis}; "
                "choose another dataset_dir or delete that folder to regenerate it."
            )
        return str(root)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"dataset_dir {root} is not empty and has no dataset.json; point dataset_dir elsewhere.")

    image, probabilities, affine = load_mni152_tissues(resolution)
    labels = np.argmax(probabilities, axis=0).astype(np.uint8)

    def write(staging: Path) -> None:
        for sub in ("imagesTr", "labelsTr", "probabilitiesTr", "imagesTs", "labelsTs"):
            (staging / sub).mkdir()
        class_files = [f"mni152_{name.replace(' ', '_').lower()}.nii.gz" for name in TISSUE_CLASSES]
        training = [
            {
                "image": _save(image, affine, staging / "imagesTr" / "mni152.nii.gz"),
                "label": _save(labels, affine, staging / "labelsTr" / "mni152.nii.gz"),
                "probabilities": [
                    _save(channel, affine, staging / "probabilitiesTr" / name)
                    for channel, name in zip(probabilities, class_files, strict=True)
                ],
            }
        ]
        lists: dict[str, list] = {"validation": [], "test": []}
        source = {
            "image": torch.as_tensor(image)[None],
            "label": torch.as_tensor(labels)[None],
            "probabilities": torch.as_tensor(probabilities),
        }
        for split, count in (("validation", num_validation), ("test", num_test)):
            variation = synthetic_variation()
            variation.set_random_state(seed=VARIANT_SEEDS[split])
            folder = "Tr" if split == "validation" else "Ts"
            for k in range(count):
                out = variation(dict(source))
                name = f"mni152_{split}_{k:03d}.nii.gz"
                case_image = np.clip(np.asarray(out["image"][0]), 0.0, None).astype(np.float32)
                case_label = np.asarray(out["label"][0]).round().astype(np.uint8)
                lists[split].append(
                    {
                        "image": _save(case_image, affine, staging / f"images{folder}" / name),
                        "label": _save(case_label, affine, staging / f"labels{folder}" / name),
                    }
                )
        description = {
            "name": f"MNI152Tissue{resolution}mm",
            "description": "CSF, grey and white matter of the MNI152 2009 T1 template with synthetic variants",
            "reference": "Fonov et al., NeuroImage 2011 (MNI ICBM 2009 template), as shipped by nilearn",
            "licence": "see the MNI ICBM 2009 copyright notice in nilearn (free use with acknowledgement)",
            "tensorImageSize": "3D",
            "modality": {"0": "T1"},
            "labels": {str(k): name for k, name in enumerate(TISSUE_CLASSES)},
            "numTraining": 1 + num_validation,
            "numTest": num_test,
            "training": training,
            "validation": lists["validation"],
            "test": [case["image"] for case in lists["test"]],
            "synthesis": synthesis,
        }
        (staging / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")

    atomic_folder(root, write)
    return str(root)
