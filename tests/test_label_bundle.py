"""MONAI Label's stock monaibundle app serving the 3D bundle that the main job trained, behind a real MONAI Label
server: route 1 of docs/monai_label.md as printed, with the main job's size settings made tiny for a CPU test.

The main job (``python -m monai_unetpp.bundle.demo``) trains in ``demo/unetpp_3d_segmentation``; that folder is copied
into the app's model folder as it is, with no settings given to the server beyond the documented ones.
One server per module; the tests run in file order and the last one trains.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from label_support.server import assert_label_volume, corrected_label, make_studies, run_in_venv, running_server

BUNDLE = "unetpp_3d_segmentation"
LABELS = {"organ": 1, "lesion": 2}
# Size settings of train.json and inference.json, made tiny; every one must exist in the bundle.
TINY = {
    "features": [4, 8, 16],
    "patch_size": [32, 32, 32],
    "spacing": [1.5, 1.5, 1.5],
    "num_workers": 0,
    "sw_batch_size": 1,
    "progress_bar": False,
}


def main_job(tmp: Path) -> Path:
    """Run the main job with tiny settings in ``tmp``; returns the bundle it trained, ``tmp/demo/<BUNDLE>``."""
    command = [sys.executable, "-m", "monai_unetpp.bundle.demo", "--epochs", "1"]
    command += [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp / "demo" / BUNDLE


@pytest.fixture(scope="module")
def monaibundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("label_bundle")
    studies = make_studies(tmp / "studies", LABELS)
    run_in_venv(["-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", "apps"], tmp)
    app = tmp / "apps" / "monaibundle"
    bundle = app / "model" / BUNDLE
    shutil.copytree(main_job(tmp), bundle, ignore=shutil.ignore_patterns("eval", "runs", "data"))  # the docs' cp -r
    conf = {"models": BUNDLE, "zoo_source": "ngc", "sam2": "false"}
    with running_server(app, studies, conf, tmp) as server:
        yield server, bundle, studies, tmp


def test_info_lists_the_bundle_with_its_labels(monaibundle):
    server, *_ = monaibundle
    info = server.json("GET", "/info/")
    model = info["models"][BUNDLE]
    assert model["type"] == "segmentation"
    assert model["labels"] == LABELS
    assert BUNDLE in info["trainers"]


def test_infer_returns_a_label_on_the_image_grid(monaibundle):
    server, _, studies, tmp = monaibundle
    result = server.infer(BUNDLE, "img3", tmp / "img3_seg.nii.gz")
    assert_label_volume(result, studies / "img3.nii.gz", LABELS.values())


def test_twenty_concurrent_infer_requests(monaibundle):
    server, _, studies, tmp = monaibundle

    def one(i: int):
        image = f"img{i % 4}"
        return image, server.infer(BUNDLE, image, tmp / f"concurrent_{i}.nii.gz")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    assert len(results) == 20
    for image, result in results:
        assert_label_volume(result, studies / f"{image}.nii.gz", LABELS.values())


def test_corrected_label_then_train_updates_the_model_that_infer_then_loads(monaibundle):
    server, bundle, studies, tmp = monaibundle
    model_file = bundle / "models" / "model.pt"
    before = model_file.read_bytes()

    # the annotator corrects the segmentation of the unlabelled image and submits it: one more training image
    prediction = server.infer(BUNDLE, "img3", tmp / "img3_before_training.nii.gz")
    server.submit_label("img3", corrected_label(prediction, tmp / "img3_corrected.nii.gz", value=2))
    assert server.json("GET", "/info/")["datastore"]["completed"] == 4

    task = server.train(BUNDLE, {"max_epochs": 2})
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    assert model_file.read_bytes() != before, "a 2-epoch run from MONAI Label left models/model.pt unchanged"

    mark = len(server.log_text())
    result = server.infer(BUNDLE, "img3", tmp / "img3_trained.nii.gz")
    assert_label_volume(result, studies / "img3.nii.gz", LABELS.values())
    log = server.log_text()[mark:]
    assert f"Infer model path: {model_file}" in log and "Reload model from cache" in log, log[-3000:]
