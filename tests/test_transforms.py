"""The transforms that bundles and the MONAI Label tasks share (the server tests run them inside MONAI Label)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged, Spacingd

from monai_unetpp.transforms import PathSafeSpacingd, SequentialLabelsd, scale_intensity


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
