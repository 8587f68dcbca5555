"""The brain-tissue bundle on the real MNI152 template, smoke-sized: dataset preparation, the training synthesis,
train, evaluate, infer, the pictures they write (training curves, per-case montages), and two properties of
inference on any input: the output is on the input's grid, and it holds no tissue outside the input's nonzero
region.

The template is read at 2 mm from the nilearn wheel (``--resolution 2``; the bundle's default is 1 mm) and resampled
to 4 mm by the bundle's ``spacing`` so that every command takes seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE_BRAIN
from monai.bundle import ConfigParser, ConfigWorkflow
from pictures import assert_real_picture

from monai_unetpp.data.brain import (
    TISSUE_CLASSES,
    RandTissueImaged,
    RandTissueLabelsd,
    SoftLabeld,
    load_mni152_tissues,
    patch_variation,
    prepare_mni152_dataset,
    tissue_labels,
    tissue_probabilities,
    tissue_synthesis,
)
from monai_unetpp.transforms import nonzero_region
from monai_unetpp.visualize import montage_size

pytest.importorskip("nilearn")

BUNDLE = BUNDLE_BRAIN
#: one epoch of one iteration with a 2-level network on 16-voxel patches of the template resampled to 4 mm
SMOKE = {
    "features": [4, 8, 16],
    "patch_size": [16, 16, 16],
    "crop_margin": 4,
    "batch_size": 1,
    "num_samples": 2,
    "draws_per_epoch": 1,
    "epochs": 1,
    "val_interval": 1,
    "num_workers": 0,
    "spacing": [4.0, 4.0, 4.0],
    "resolution": 2,
    "num_validation": 1,
    "num_test": 1,
    "progress_bar": False,
}


def workflow(root: Path, files: list[str], workflow_type: str | None, **overrides) -> ConfigWorkflow:
    flow = ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / f) for f in files],
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(root),
        **{**SMOKE, **overrides},
    )
    flow.initialize()
    return flow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("brain")
    flow = workflow(root, ["train.json"], "train")
    assert flow.check_properties() == []
    flow.run()
    flow.finalize()
    return root


def test_tissue_rule_is_the_most_probable_tissue_inside_the_mask():
    gm = np.array([0.6, 0.2, 0.1, 0.3, 0.5, 0.9])
    wm = np.array([0.3, 0.7, 0.1, 0.3, 0.5, 0.0])
    mask = np.array([1, 1, 1, 1, 1, 0])
    # CSF = 1 - GM - WM = 0.1, 0.1, 0.8, 0.4, 0.0; a GM/WM tie goes to GM; outside the mask is background
    np.testing.assert_array_equal(tissue_labels(gm, wm, mask), [2, 3, 1, 1, 2, 0])
    probabilities = tissue_probabilities(gm, wm, mask)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(probabilities[:, 2], [0.0, 0.8, 0.1, 0.1])
    with pytest.raises(ValueError, match="one shape"):
        tissue_labels(gm, wm[:2], mask)


def test_label_is_resampled_from_the_probability_maps_where_the_case_has_them():
    label = torch.zeros(1, 8, 8, 8)  # background everywhere
    grey_matter = torch.zeros(4, 8, 8, 8)
    grey_matter[2] = 1.0
    out = SoftLabeld("label")({"label": label, "probabilities": grey_matter})
    assert "probabilities" not in out and torch.equal(out["label"], grey_matter)
    assert torch.equal(SoftLabeld("label")({"label": label})["label"][0], torch.ones(8, 8, 8))
    with pytest.raises(ValueError, match="one probability map per class"):
        SoftLabeld("label")({"label": label, "probabilities": grey_matter[:3]})

    variation = patch_variation()
    variation.set_random_state(seed=0)
    out = variation({"image": torch.rand(1, 8, 8, 8), "label": label, "probabilities": grey_matter})
    assert out["label"].shape == (1, 8, 8, 8) and (out["label"] == 2).float().mean() > 0.5


def test_dataset_is_prepared_once_with_fixed_variants(trained):
    root = trained / "data" / "mni152_tissue_2mm"
    description = json.loads((root / "dataset.json").read_text())
    assert description["labels"] == {str(k): name for k, name in enumerate(TISSUE_CLASSES)}
    assert [len(description[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    template = nib.load(root / "labelsTr" / "mni152.nii.gz").get_fdata()
    validation = nib.load(root / description["validation"][0]["label"]).get_fdata()
    test = nib.load(root / "labelsTs" / Path(description["test"][0]).name).get_fdata()
    assert template.shape == validation.shape == test.shape == (99, 117, 95)
    probabilities = [nib.load(root / f).get_fdata() for f in description["training"][0]["probabilities"]]
    np.testing.assert_array_equal(np.argmax(probabilities, axis=0), template)
    for labels in (template, validation, test):
        assert set(np.unique(labels)) == {0, 1, 2, 3}
    # the variants are deformed copies, different from the template and from each other
    assert (validation != template).mean() > 0.02 and (test != validation).mean() > 0.02
    # skull-stripped like the template: zero outside the deformed brain, the tissue intensities inside it
    for image_file, labels in ((description["validation"][0]["image"], validation), (description["test"][0], test)):
        image = nib.load(root / image_file).get_fdata()
        assert (image[labels == 0] == 0).all() and (image[labels > 0] > 0).mean() > 0.99

    mtime = (root / "dataset.json").stat().st_mtime_ns
    assert prepare_mni152_dataset(root, resolution=2, num_validation=1, num_test=1) == str(root)
    assert (root / "dataset.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="delete that folder"):
        prepare_mni152_dataset(root, resolution=2, num_validation=3, num_test=1)


def test_training_writes_the_model_and_the_curve_picture(trained):
    assert (trained / "models" / "model.pt").is_file()
    assert_real_picture(trained / "runs" / "training_curves.png", (1000, 400))


def test_evaluate_writes_per_class_metrics_and_montages(trained):
    workflow(trained, ["train.json", "evaluate.json"], None).run()
    with open(trained / "eval" / "metrics_per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows] == list(TISSUE_CLASSES[1:])
    assert all(0.0 <= float(row["val_mean_dice"]) <= 1.0 for row in rows)
    montage = trained / "eval" / "montages" / "mni152_test_000_montage.png"
    assert_real_picture(montage, montage_size(3, has_label=True, num_classes=4))


def test_inference_writes_segmentations_and_montages(trained):
    flow = workflow(trained, ["inference.json"], "infer")
    assert flow.check_properties() == []
    flow.run()
    seg = nib.load(trained / "eval" / "mni152_test_000_seg.nii.gz")
    assert seg.shape == (99, 117, 95)  # back in the image's own 2 mm grid
    labels = np.asarray(seg.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    image = nib.load(trained / "data" / "mni152_tissue_2mm" / "imagesTs" / "mni152_test_000.nii.gz").get_fdata()
    # refined with the scan's intensities (the default): every voxel of the brain is tissue
    assert (labels[image > 0] > 0).all()
    montage = trained / "eval" / "mni152_test_000_montage.png"
    assert_real_picture(montage, montage_size(3, has_label=True, num_classes=4))
    # without the refinement: the network's own labels
    flow = workflow(
        trained, ["inference.json"], "infer", refine_with_intensities="false", output_dir=str(trained / "plain")
    )
    flow.run()
    plain = np.asarray(nib.load(trained / "plain" / "mni152_test_000_seg.nii.gz").dataobj)
    assert plain.shape == labels.shape and (plain != labels).any()


def test_inference_without_the_refinement_skips_it(tmp_path):
    names = {}
    for value in ("true", "false"):
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / "inference.json"))
        parser.update({"bundle_root": str(tmp_path), "refine_with_intensities": value})
        names[value] = [type(t).__name__ for t in parser.get_parsed_content("postprocessing").transforms]
    assert "IntensityMixtureRefined" in names["true"]
    assert names["false"] == [n for n in names["true"] if n != "IntensityMixtureRefined"]


def test_synthesis_labels_open_csf_with_the_level_and_images_follow_the_labels():
    probabilities = torch.zeros(4, 4, 1, 1)
    probabilities[:, :, 0, 0] = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.4, 0.4, 0.2], [0.0, 0.3, 0.5, 0.2], [0.0, 0.1, 0.2, 0.7]]
    ).T  # background; GM + WM 0.6; GM + WM 0.7; WM

    def labels_at(level):
        return RandTissueLabelsd(csf_level=(level, level), gm_shift=(0.0, 0.0))({"probabilities": probabilities})

    assert labels_at(0.5)["label"].flatten().tolist() == [0, 2, 2, 3]
    assert labels_at(0.65)["label"].flatten().tolist() == [0, 1, 2, 3]
    assert labels_at(0.8)["label"].flatten().tolist() == [0, 1, 1, 3] and "probabilities" not in labels_at(0.8)
    with pytest.raises(ValueError, match="background, CSF, grey matter, white matter"):
        RandTissueLabelsd()({"probabilities": probabilities[:3]})

    label = torch.tensor([0, 1, 2, 3] * 250).reshape(1, 10, 10, 10).float()
    synthesis = RandTissueImaged()
    for seed in range(5):
        synthesis.set_random_state(seed)
        image = synthesis({"label": label})["image"]
        means = [float(image[label == k].mean()) for k in range(4)]
        assert means[0] == 0.0 and means[1] < means[2] < means[3]  # T1 order, random gaps

    _, tissues, _ = load_mni152_tissues(2)
    crop = torch.as_tensor(tissues[:, 0:40, 30:70, 30:70])  # the left border of the brain
    variation = tissue_synthesis(spatial_size=(24, 24, 24))
    variation.set_random_state(seed=0)
    out = variation({"image": torch.zeros(1, 40, 40, 40), "label": torch.zeros(1, 40, 40, 40), "probabilities": crop})
    assert out["image"].shape == out["label"].shape == (1, 24, 24, 24)
    assert set(torch.unique(out["label"]).tolist()) == {0, 1, 2, 3}
    assert (out["image"][out["label"] == 0] == 0).all() and (out["image"] >= 0).all()


@pytest.fixture(scope="module")
def everything_is_grey_matter(trained, tmp_path_factory) -> Path:
    """A bundle folder whose model labels every voxel grey matter, whatever its input: the worst case for the mask."""
    root = tmp_path_factory.mktemp("grey")
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    for name in [k for k in state if k.startswith("heads.") and k.endswith(".bias")]:
        state[name] = torch.tensor([0.0, 0.0, 100.0, 0.0])
    (root / "models").mkdir()
    torch.save(state, root / "models" / "model.pt")
    return root


def infer(root: Path, name: str, image: np.ndarray, affine: np.ndarray, **settings) -> nib.Nifti1Image:
    (root / "in").mkdir(exist_ok=True)
    path = root / "in" / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
    # windows of 64^3 (the network is fully convolutional): the padded volume in a few windows instead of 2,000
    overrides = {"dataset#data": [{"image": str(path)}], "save_montages": False, "patch_size": [64, 64, 64], **settings}
    workflow(root, ["inference.json"], "infer", **overrides).run()
    return nib.load(root / "eval" / f"{name}_seg.nii.gz")


def test_an_all_zero_input_is_all_background(everything_is_grey_matter):
    seg = infer(everything_is_grey_matter, "empty", np.zeros((32, 32, 32)), np.diag([1.0, 1.0, 1.0, 1.0]))
    assert seg.shape == (32, 32, 32) and not np.asarray(seg.dataobj).any()


def test_a_padded_brain_has_nothing_in_the_padding_and_comes_back_on_its_own_grid(everything_is_grey_matter):
    """The template (every other voxel of the 2 mm one) padded by 40 empty voxels on each side, stored
    left-posterior-superior at 4 x 4 x 5 mm: another orientation and an anisotropic grid, resampled to the bundle's
    4 mm and back."""
    image, _, _ = load_mni152_tissues(2)
    padded = np.pad(image[::2, ::2, ::2], 40)
    affine = np.diag([-4.0, -4.0, 5.0, 1.0])
    affine[:3, 3] = [100.0, 120.0, -80.0]
    seg = infer(everything_is_grey_matter, "padded", padded, affine)
    assert seg.shape == padded.shape
    np.testing.assert_allclose(seg.affine, affine, atol=1e-5)
    labels = np.asarray(seg.dataobj)
    allowed = nonzero_region(torch.as_tensor(padded)[None], 1)[0].numpy()
    assert not labels[~allowed].any()  # nothing outside the brain dilated by one voxel, so nothing in the padding
    # and the brain is kept: the network says grey matter there, and the refinement with the scan's intensities
    # starts from the network's labelling, so a class that the network never chooses stays unfound
    assert (labels[padded > 0] == 2).all()
