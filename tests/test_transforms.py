"""The transforms that bundles and the MONAI Label tasks share (the server tests run them inside MONAI Label)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged, Spacingd

from monai_unetpp.transforms import (
    IntensityMixtureRefined,
    MaskOutsideInputd,
    PathSafeSpacingd,
    SequentialLabelsd,
    nonzero_region,
    scale_intensity,
)


@pytest.fixture
def loaded_nifti(tmp_path):
    """A NIfTI volume loaded as MONAI Label does, with the request's path kept as a string ``image_path``."""
    path = tmp_path / "case.nii.gz"
    affine = np.diag([1.2, 1.2, 2.0, 1.0])
    image = np.random.default_rng(0).random((20, 18, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), path)
    data = EnsureChannelFirstd("image")(LoadImaged("image")({"image": str(path)}))
    return {**data, "image_path": str(path)}


def test_path_safe_spacing_keeps_the_path_and_resamples_like_spacingd(loaded_nifti):
    spacing = PathSafeSpacingd("image", pixdim=(1.0, 1.0, 1.0))
    out = spacing(loaded_nifti)
    assert out["image_path"] == loaded_nifti["image_path"]
    without_path = {k: v for k, v in loaded_nifti.items() if k != "image_path"}
    expected = Spacingd("image", pixdim=(1.0, 1.0, 1.0))(without_path)["image"]
    assert out["image"].shape == expected.shape == (1, 24, 21, 19)
    torch.testing.assert_close(out["image"].as_tensor(), expected.as_tensor())
    torch.testing.assert_close(out["image"].affine, expected.affine)


def test_path_safe_spacing_inverts_to_the_original_grid(loaded_nifti):
    spacing = PathSafeSpacingd("image", pixdim=(1.5, 1.5, 1.5))
    out = spacing(loaded_nifti)
    back = spacing.inverse({"image": out["image"]})["image"]
    assert back.shape == loaded_nifti["image"].shape
    torch.testing.assert_close(back.affine, loaded_nifti["image"].affine)


def test_sequential_labels_maps_declared_values_and_drops_others():
    label = MetaTensor(torch.tensor([[[0, 1, 3, 6, 9]]]), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    out = SequentialLabelsd("label", values=[6, 1])({"label": label})["label"]
    assert out.tolist() == [[[0, 1, 0, 2, 0]]]
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, label.affine)


@pytest.mark.parametrize("values", [[], [0, 1], [2, 2]])
def test_sequential_labels_rejects_bad_values(values):
    with pytest.raises(ValueError, match="distinct positive"):
        SequentialLabelsd("label", values=values)


def test_scale_intensity_window_and_bad_range():
    image = torch.tensor([[-100.0, -57.0, 53.5, 164.0, 500.0]])
    out = scale_intensity((-57, 164))({"image": image})["image"]
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 0.5, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="a_min < a_max"):
        scale_intensity((164, -57))


def test_nonzero_region_is_scipy_dilation_with_full_connectivity():
    ndimage = pytest.importorskip("scipy.ndimage")
    image = np.zeros((12, 11, 10), np.float32)
    image[3, 4, 5] = 2.0
    image[8:10, 2:4, 7] = -1.0  # negative intensities are inside the input as well
    for margin in (0, 1, 2):
        expected = image != 0
        if margin:
            expected = ndimage.binary_dilation(
                expected, structure=ndimage.generate_binary_structure(3, 3), iterations=margin
            )
        region = nonzero_region(torch.as_tensor(image)[None], margin)
        np.testing.assert_array_equal(region[0].numpy(), expected)


def test_mask_outside_input_sets_class_maps_and_probabilities_to_background():
    source = torch.zeros(1, 10, 10, 10)
    source[0, 4:6, 4:6, 4:6] = 1.0
    affine = torch.diag(torch.tensor([1.5, 1.5, 3.0, 1.0]))
    labels = MetaTensor(torch.full((1, 10, 10, 10), 2.0), affine=affine)  # tissue everywhere
    out = MaskOutsideInputd("pred", source_key="input")({"pred": labels, "input": source})
    inside = torch.zeros(10, 10, 10, dtype=torch.bool)
    inside[3:7, 3:7, 3:7] = True  # the 2^3 nonzero voxels dilated by one
    assert (out["pred"][0][inside] == 2).all() and (out["pred"][0][~inside] == 0).all()
    assert isinstance(out["pred"], MetaTensor) and torch.equal(out["pred"].affine, labels.affine)
    assert torch.equal(labels, torch.full((1, 10, 10, 10), 2.0))  # the input is not changed in place

    probabilities = torch.softmax(torch.randn(4, 10, 10, 10), dim=0)
    out = MaskOutsideInputd("pred", source_key="input", remove_source=True)({"pred": probabilities, "input": source})
    assert "input" not in out
    torch.testing.assert_close(out["pred"][:, inside], probabilities[:, inside])
    assert (out["pred"][0][~inside] == 1).all() and (out["pred"][1:][:, ~inside] == 0).all()


def test_mask_outside_input_all_zero_input_is_all_background():
    labels = torch.randint(0, 4, (1, 6, 7, 8))
    out = MaskOutsideInputd("pred", source_key="input")({"pred": labels, "input": torch.zeros(1, 6, 7, 8)})
    assert (out["pred"] == 0).all()


def test_mask_outside_input_bad_use_names_the_fix():
    with pytest.raises(ValueError, match="margin"):
        MaskOutsideInputd("pred", source_key="input", margin=-1)
    with pytest.raises(KeyError, match="CopyItemsd"):
        MaskOutsideInputd("pred", source_key="input")({"pred": torch.zeros(1, 4, 4, 4)})
    with pytest.raises(ValueError, match="after Invertd"):
        MaskOutsideInputd("pred", source_key="input")(
            {"pred": torch.zeros(1, 4, 4, 4), "input": torch.ones(1, 8, 8, 8)}
        )


def three_tissue_phantom(bias: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 48^3 "brain": a sphere of white matter in a shell of grey matter crossed by thin dark "sulci" of CSF, and
    CSF at its rim; T1 intensities 0.25 / 0.55 / 0.9 with noise, zero outside, times a linear bias field
    ``1 + bias * x``. Returns the image (1, 48, 48, 48) and the true class map (0 outside, 1 CSF, 2 GM, 3 WM)."""
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 48)] * 3, indexing="ij"))
    radius = grid.norm(dim=0)
    truth = torch.zeros(48, 48, 48, dtype=torch.long)
    truth[radius < 0.9] = 2
    truth[radius < 0.55] = 3
    sulci = (grid[1].abs() < 0.04) | (grid[2].abs() < 0.04)
    truth[(truth == 2) & sulci] = 1
    truth[(radius >= 0.82) & (radius < 0.9)] = 1
    means = torch.tensor([0.0, 0.25, 0.55, 0.9])
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    image = (means[truth] + 0.04 * noise * (truth > 0)) * (1 + bias * grid[0])
    return image[None], truth


def blind_probabilities(truth: torch.Tensor) -> torch.Tensor:
    """What a network that misses the sulci says: CSF at the rim, grey matter with probability 0.8 on the sulci and
    in the rest of the shell, white matter in the sphere."""
    p = torch.zeros(4, *truth.shape)
    p[0][truth == 0] = 1.0
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 48)] * 3, indexing="ij"))
    rim = (truth == 1) & (grid.norm(dim=0) >= 0.82)
    shell = ((truth == 1) | (truth == 2)) & ~rim
    p[1][rim], p[2][rim], p[3][rim] = 0.8, 0.15, 0.05
    p[1][shell], p[2][shell], p[3][shell] = 0.1, 0.8, 0.1
    p[1][truth == 3], p[2][truth == 3], p[3][truth == 3] = 0.05, 0.15, 0.8
    return p


def test_intensity_mixture_finds_what_the_network_missed_and_keeps_the_rest():
    image, truth = three_tissue_phantom()
    p = blind_probabilities(truth)
    sulci = (truth == 1) & (p[1] < 0.5)
    assert sulci.sum() > 1000 and (p.argmax(0)[sulci] == 2).all()  # the network calls every sulcus grey matter
    meta = MetaTensor(p, affine=torch.eye(4))
    out = IntensityMixtureRefined("pred", "image")({"pred": meta, "image": image})["pred"]
    assert isinstance(out, MetaTensor) and out.shape == p.shape and torch.equal(out.affine, meta.affine)
    brain = truth > 0
    torch.testing.assert_close(out.sum(0), torch.ones(truth.shape, dtype=out.dtype))
    assert (out[0][brain] == 0).all() and torch.equal(out[:, ~brain], p[:, ~brain])  # the outside is untouched
    labels = out.argmax(0)
    for k in (1, 2, 3):
        assert ((labels == k) == (truth == k))[brain].float().mean() > 0.99, k


def test_intensity_mixture_with_a_bias_field_needs_the_bias_model():
    image, truth = three_tissue_phantom(bias=0.6)  # intensities x0.4 on one side, x1.6 on the other
    p = blind_probabilities(truth)
    brain = truth > 0
    image = MetaTensor(image, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))  # 2 mm voxels
    accuracy = {}
    for sigma in (None, 20.0):
        refine = IntensityMixtureRefined("pred", "image", bias_sigma_mm=sigma)
        labels = refine({"pred": p, "image": image})["pred"].argmax(0)
        accuracy[sigma] = (labels == truth)[brain].float().mean().item()
    assert accuracy[20.0] > 0.97 and accuracy[20.0] > accuracy[None] + 0.02, accuracy


def test_intensity_mixture_names_what_is_wrong():
    image, truth = three_tissue_phantom()
    p = blind_probabilities(truth)
    with pytest.raises(KeyError, match="CopyItemsd"):
        IntensityMixtureRefined("pred", "original_image")({"pred": p})
    with pytest.raises(ValueError, match="after Invertd"):
        IntensityMixtureRefined("pred", "image")({"pred": p[:, :8], "image": image})
    with pytest.raises(ValueError, match="per-class probabilities"):
        IntensityMixtureRefined("pred", "image")({"pred": p[:2], "image": image})
    for bad in ({"prior_weight": 0.0}, {"prior_floor": 1.0}, {"iterations": 0}, {"bias_sigma_mm": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            IntensityMixtureRefined("pred", "image", **bad)
