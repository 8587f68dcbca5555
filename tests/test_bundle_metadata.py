"""Bundle layout, metadata schema and config consistency, without running anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser
from monai.bundle.scripts import _get_fake_spatial_shape

REPO = Path(__file__).parents[1]
BUNDLES = [REPO / "bundles" / "unetpp_3d_segmentation", REPO / "bundles" / "unetpp_2d_segmentation"]
ALL_BUNDLES = sorted(path.parent.parent for path in (REPO / "bundles").glob("*/configs/metadata.json"))
SCHEMA = REPO.parent / "shared" / "bundle-schema" / "meta_schema_20240725.json"
CONFIGS = [
    "metadata.json",
    "train.json",
    "evaluate.json",
    "inference.json",
    "multi_gpu_train.json",
    "multi_gpu_evaluate.json",
    "logging.conf",
]
#: ids that inference.json and train.json both declare: they must stay identical (inference.json is loaded alone,
#: e.g. by MONAI Label, so it cannot pull them from train.json with a file macro that resolves against the cwd)
SHARED_IDS = [
    "bundle_root",
    "ckpt_dir",
    "output_dir",
    "dataset_dir",
    "device",
    "amp",
    "spatial_dims",
    "in_channels",
    "num_classes",
    "features",
    "spacing",
    "patch_size",
    "num_workers",
    "sw_batch_size",
    "sw_overlap",
    "inference_mode",
    "inference_depth",
    "progress_bar",
    "network_def",
    "network",
    "intensity_transform",
    "deterministic_transforms",
]
#: ids that only some bundles declare, shared between their two files all the same
BUNDLE_SHARED_IDS = {
    "unetpp_3d_segmentation": ["datalist", "seed"],
    "unetpp_2d_segmentation": ["datalist", "seed"],
    "unetpp_brain_tissue_mri_segmentation": ["resolution", "num_validation", "num_test", "norm", "dataset_source"],
}


def load(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "configs" / name).read_text())


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_model_zoo_layout(bundle):
    assert "segmentation" in bundle.name  # MONAI Label derives the task type from the folder name
    for name in CONFIGS:
        assert (bundle / "configs" / name).is_file(), name
    for name in ("docs/README.md", "docs/data_license.txt", "LICENSE"):
        assert (bundle / name).is_file(), name


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_metadata_validates_against_the_bundle_schema(bundle):
    jsonschema = pytest.importorskip("jsonschema")
    assert SCHEMA.is_file(), f"the bundle schema is expected beside the checkout, at {SCHEMA}"
    metadata = load(bundle, "metadata.json")
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert metadata["version"] in metadata["changelog"]


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_metadata_matches_the_network(bundle):
    metadata = load(bundle, "metadata.json")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    image = metadata["network_data_format"]["inputs"]["image"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == net.in_channels
    assert pred["num_channels"] == net.out_channels == len(pred["channel_def"])
    assert len(image["spatial_shape"]) == net.spatial_dims
    for n in (1, 2, 5):  # every shape the metadata allows is a multiple of 2 ** depth that the network takes
        shape = _get_fake_spatial_shape(image["spatial_shape"], n=n)
        assert all(s % net.shape_factor() == 0 for s in shape) and net.is_valid_shape(shape)
    patch = parser.get_parsed_content("patch_size")
    assert all(s % net.shape_factor() == 0 for s in patch)


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_inference_shares_the_training_definitions(bundle):
    train, inference = load(bundle, "train.json"), load(bundle, "inference.json")
    for key in SHARED_IDS + BUNDLE_SHARED_IDS[bundle.name]:
        assert train[key] == inference[key], f"{key} differs between train.json and inference.json"
    assert train["validate"]["inferer"] == inference["inferer"]
    assert train["network_def"]["_target_"] == "monai_unetpp.UNetPlusPlus"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_2d_and_3d_bundles_differ_only_in_dimension_settings(bundle):
    # the two bundles are one design: any other change must be made in both
    other = BUNDLES[1] if bundle == BUNDLES[0] else BUNDLES[0]
    for name in ("evaluate.json", "multi_gpu_train.json", "multi_gpu_evaluate.json", "logging.conf"):
        assert (bundle / "configs" / name).read_text() == (other / "configs" / name).read_text(), name
    train, other_train = load(bundle, "train.json"), load(other, "train.json")
    assert train.keys() == other_train.keys()
    assert train["validate"] == other_train["validate"]


@pytest.mark.parametrize("max_epochs, interval", [(2, 2), (40, 5)])
def test_schedule_follows_max_epochs_as_tools_set_it(max_epochs, interval):
    # MONAI Label sets only train#trainer#max_epochs: validation (which writes model.pt) and the cosine schedule
    # must follow it, so that even a 2-epoch run validates and decays the learning rate
    parser = ConfigParser()
    parser.read_config(str(BUNDLES[0] / "configs" / "train.json"))
    parser["train::trainer::max_epochs"] = max_epochs
    parser["features"] = [4, 8]
    assert parser.get_parsed_content("val_interval") == interval
    assert parser.get_parsed_content("lr_scheduler").T_max == max_epochs
