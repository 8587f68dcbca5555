"""The transforms that bundles and the MONAI Label tasks share (the server tests run them inside MONAI Label)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged, Spacingd

from monai_unetpp.transforms import (
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
