"""The main-job command, python -m monai_unetpp.bundle.demo, end to end on tiny settings, twice in a row."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import BUNDLE_3D as BUNDLE
from monai.bundle import ConfigParser

from monai_unetpp.bundle.demo import demo_bundle, find_bundle, main, run_demo
from monai_unetpp.data import DEMO_DEFAULTS, DatasetError, make_demo_dataset


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
    assert "overwrite=true" not in out  # nothing to replace the first time

    # the main job again: it trains a new model over its own earlier one, and says so
    before = (bundle / "models" / "model.pt").read_bytes()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"overwrite=true: this demo run trains a new model and replaces {bundle / 'models' / 'model.pt'}" in out
    assert "mean validation Dice: " in out and (bundle / "models" / "model.pt").read_bytes() != before


def test_demo_with_a_named_dataset_neither_writes_demo_data_nor_overwrites(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    typo = tmp_path / "Task09_Spleeen"
    with pytest.raises(Exception) as raised:
        run_demo(bundle, dataset_dir=str(typo), features=[4, 8], patch_size=[16, 16, 16], num_workers=0)
    error = raised.value
    while error is not None and not isinstance(error, DatasetError):
        error = error.__cause__ or error.__context__
    assert error is not None and f"dataset_dir {typo} does not exist" in str(error)
    assert not typo.exists() and not (bundle / "models").exists()


def test_the_generic_bundles_defaults_fit_their_demo_data():
    """The defaults are the shipped model's, trained on the demo data: its patches fit in a demo image."""
    for dims in (3, 2):
        config = json.loads((BUNDLE.parent / f"unetpp_{dims}d_segmentation" / "configs" / "train.json").read_text())
        assert config["spatial_dims"] == dims
        depth = len(config["features"]) - 1
        assert all(s % 2**depth == 0 for s in config["patch_size"])
        assert all(p <= s for p, s in zip(config["patch_size"], DEMO_DEFAULTS[dims]["shape"], strict=True))


def test_find_bundle_explains_a_missing_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --bundle PATH"):
        find_bundle(tmp_path)
    assert find_bundle(BUNDLE) == BUNDLE


def test_a_shipped_bundle_runs_in_a_copy_that_holds_the_given_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = (BUNDLE / "configs" / "inference.json").read_text()
    default_patch = json.loads(shipped)["patch_size"]
    root, settings = demo_bundle("unetpp_3d_segmentation", features=[4, 8, 16])
    assert root == tmp_path / "demo" / "unetpp_3d_segmentation"
    assert settings["demo_data"] is True and "patch_size" not in settings
    for name in ("train.json", "inference.json"):
        config = json.loads((root / "configs" / name).read_text())
        assert config["features"] == [4, 8, 16] and config["patch_size"] == default_patch
        assert "demo_data" not in config or config["demo_data"] is False  # flags stay run-time settings
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    assert parser.get_parsed_content("network_def").features == (4, 8, 16)  # what a server builds from the copy
    assert (BUNDLE / "configs" / "inference.json").read_text() == shipped  # the shipped bundle is never changed
