"""The wheel that `pip wheel .` builds carries the bundles, and the main job runs from it without the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO
from monai.bundle import ConfigParser

import monai_unetpp
from monai_unetpp.data import make_demo_dataset


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    # from a copy of the files git knows: a build/ folder left in the checkout would carry deleted modules along
    source = tmp / "source"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", tmp]
    subprocess.run(build, check=True, cwd=tmp)
    (wheel,) = tmp.glob("monai_unetpp-*.whl")
    assert wheel.name.startswith(f"monai_unetpp-{monai_unetpp.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for bundle in sorted(p.name for p in (REPO / "bundles").glob("unetpp_*")):
        for config in ("train.json", "inference.json", "evaluate.json", "metadata.json"):
            assert f"monai_unetpp/bundles/{bundle}/configs/{config}" in names
        assert f"monai_unetpp/bundles/{bundle}/models/model.pt" in names  # the trained weights it ships
    packages = {str(p.parent.relative_to(REPO)).replace(os.sep, ".") for p in (REPO / "monai_unetpp").rglob("*.py")}
    assert all(any(n.startswith(package.replace(".", "/") + "/") for n in names) for package in packages), packages
    target = tmp / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel]
    subprocess.run(install, check=True, cwd=tmp)
    return target


def test_main_job_runs_from_the_installed_wheel(installed_wheel, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed_wheel)}  # ahead of this checkout's editable install
    where = subprocess.run(
        [sys.executable, "-c", "import monai_unetpp; print(monai_unetpp.__file__)"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(installed_wheel)), where
    tiny = {"features": [4, 8, 16], "patch_size": [16, 16, 16], "num_workers": 0, "progress_bar": False}
    command = [sys.executable, "-m", "monai_unetpp.bundle.demo", "--epochs", "1"]
    command += [f"--set={key}={json.dumps(value)}" for key, value in tiny.items()]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    copy = tmp_path / "demo" / "unetpp_3d_segmentation"
    assert f"copied the unetpp_3d_segmentation bundle to {copy}" in done.stdout
    assert "mean validation Dice: " in done.stdout
    assert (copy / "models" / "model.pt").is_file() and list((copy / "eval").glob("*_seg.nii.gz"))
    shipped = installed_wheel / "monai_unetpp" / "bundles" / "unetpp_3d_segmentation" / "models"
    assert [p.name for p in shipped.iterdir()] == ["model.pt"]  # the installed bundle is never trained in
    assert (shipped / "model.pt").read_bytes() == (REPO / "bundles" / copy.name / "models" / "model.pt").read_bytes()
    # the copy is servable as it is: its own inference config builds the network that its model.pt holds
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(copy / "models" / "model.pt", map_location="cpu", weights_only=True))


def test_a_bundle_copied_out_of_the_wheel_segments_at_once_with_its_shipped_model(installed_wheel, tmp_path):
    bundle = tmp_path / "unetpp_3d_segmentation"
    shutil.copytree(installed_wheel / "monai_unetpp" / "bundles" / bundle.name, bundle)
    make_demo_dataset(bundle / "data", num_cases=2, num_test=1)
    env = {**os.environ, "PYTHONPATH": str(installed_wheel), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    done = subprocess.run(
        command + ["--save_montages", "false"], env=env, cwd=bundle, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (segmentation,) = (bundle / "eval").glob("*_seg.nii.gz")
    # the shipped model finds the demo's organ in a held-out volume
    (label,) = (bundle / "data" / "labelsTs").glob("*.nii.gz")
    predicted, truth = np.asarray(nib.load(segmentation).dataobj) == 1, np.asarray(nib.load(label).dataobj) == 1
    assert 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()) > 0.8
