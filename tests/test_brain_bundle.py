"""The brain-tissue bundle on the real MNI152 template, smoke-sized: dataset preparation, train, evaluate, infer,
and the pictures they write (training curves, per-case montages).

The template is read at 2 mm from the nilearn wheel and resampled to 4 mm by the bundle's ``spacing`` so that every
command takes seconds.
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
from monai.bundle import ConfigWorkflow
from pictures import assert_real_picture

from monai_unetpp.data.brain import (
    TISSUE_CLASSES,
    SoftLabeld,
    patch_variation,
    prepare_mni152_dataset,
    tissue_labels,
    tissue_probabilities,
)
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
    "num_validation": 1,
    "num_test": 1,
    "progress_bar": False,
}


def workflow(root: Path, files: list[str], workflow_type: str | None) -> ConfigWorkflow:
    flow = ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / f) for f in files],
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(root),
        **SMOKE,
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
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    montage = trained / "eval" / "mni152_test_000_montage.png"
    assert_real_picture(montage, montage_size(3, has_label=True, num_classes=4))
