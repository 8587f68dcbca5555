"""The main-job command, python -m monai_unetpp.bundle.demo, end to end on tiny settings."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import BUNDLE_3D as BUNDLE

from monai_unetpp.bundle.demo import DEMO_SETTINGS, find_bundle, main
from monai_unetpp.data import make_demo_dataset


def test_demo_trains_evaluates_infers_and_prints_the_dice(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    make_demo_dataset(bundle / "data", num_cases=3, num_test=1, shape=(32, 32, 32))
    tiny = {"features": [4, 8, 16], "patch_size": [16, 16, 16], "num_workers": 0, "progress_bar": False}
    args = ["--bundle", str(bundle), "--epochs", "1"] + [f"--set={k}={json.dumps(v)}" for k, v in tiny.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validation Dice: organ " in out and ", lesion " in out and "mean validation Dice: " in out
    assert (bundle / "models" / "model.pt").is_file()
    assert len(list((bundle / "eval").glob("*_seg.nii.gz"))) == 1
    assert (bundle / "eval" / "metrics_per_class.csv").is_file()
    assert len(list((bundle / "eval").glob("*_montage.png"))) == 1
    assert (bundle / "runs" / "training_curves.png").is_file()


def test_demo_settings_fit_the_bundles():
    for dims in (3, 2):
        config = json.loads((BUNDLE.parent / f"unetpp_{dims}d_segmentation" / "configs" / "train.json").read_text())
        assert config["spatial_dims"] == dims
        assert set(DEMO_SETTINGS[dims]) <= set(config), "a demo setting names no config id"
        depth = len(DEMO_SETTINGS[dims]["features"]) - 1
        assert all(s % 2**depth == 0 for s in DEMO_SETTINGS[dims]["patch_size"])


def test_find_bundle_explains_a_missing_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --bundle PATH"):
        find_bundle(tmp_path)
    assert find_bundle(BUNDLE) == BUNDLE
