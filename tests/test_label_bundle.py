"""MONAI Label's stock monaibundle app serving the 3D bundle with its shipped model, behind a real MONAI Label server:
route 1 of docs/monai_label.md as printed.

The shipped bundle folder (``bundles/unetpp_3d_segmentation``, with its trained ``models/model.pt``) is copied into
the app's model folder as it is, with no settings given to the server beyond the documented ones: it serves at once.
One server per module; the tests run in file order and the last one trains.

The dtype, damaged-image, outside-path and bad-label tests need the bundle's MONAI Label entries (docs/monai_label.md,
route 1): ``LoadDatastoreImaged`` in the preprocessing, ``CastToTyped`` to uint8 in the inference postprocessing and
``CheckedCacheDataset`` for the training and validation datasets.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from label_support.server import (
    assert_label_volume,
    corrected_label,
    error_detail,
    make_studies,
    outside_image,
    run_in_venv,
    running_server,
    truncated_copy,
    wrong_shape_label,
)

BUNDLE = "unetpp_3d_segmentation"
SHIPPED = Path(__file__).resolve().parents[1] / "bundles" / BUNDLE
LABELS = {"organ": 1, "lesion": 2}


@pytest.fixture(scope="module")
def monaibundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("label_bundle")
    # img4 stays unlabelled for a bad submission; broken.nii.gz is an image cut short by an interrupted copy
    studies = make_studies(tmp / "studies", LABELS, count=5)
    truncated_copy(studies / "img0.nii.gz", studies / "broken.nii.gz")
    run_in_venv(["-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", "apps"], tmp)
    app = tmp / "apps" / "monaibundle"
    bundle = app / "model" / BUNDLE
    shutil.copytree(SHIPPED, bundle, ignore=shutil.ignore_patterns("eval", "runs", "data"))  # the docs' cp -r
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


def test_infer_returns_a_uint8_label_on_the_image_grid(monaibundle):
    server, _, studies, tmp = monaibundle
    result = server.infer(BUNDLE, "img3", tmp / "img3_seg.nii.gz")
    # uint8 as route 2 returns it (MONAI Label writes the array of the bundle's postprocessing as it is)
    assert_label_volume(result, studies / "img3.nii.gz", LABELS.values(), dtype="uint8")


def test_twenty_concurrent_infer_requests(monaibundle):
    server, _, studies, tmp = monaibundle

    def one(i: int):
        image = f"img{i % 4}"
        return image, server.infer(BUNDLE, image, tmp / f"concurrent_{i}.nii.gz")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    assert len(results) == 20
    for image, result in results:
        assert_label_volume(result, studies / f"{image}.nii.gz", LABELS.values(), dtype=None)


def test_a_truncated_image_is_answered_with_an_error_naming_it(monaibundle):
    server, _, studies, _ = monaibundle
    status, body = server.infer_response(BUNDLE, "broken")
    detail = error_detail(body)
    assert status == 422, (status, body[:300])
    assert "image broken cannot be read" in detail and str(studies / "broken.nii.gz") in detail, detail


def test_an_image_outside_the_studies_folder_is_refused(monaibundle):
    server, _, _, tmp = monaibundle
    outside = outside_image(tmp)
    status, body = server.infer_response(BUNDLE, str(outside))
    assert status == 403, (status, body[:300])
    assert str(outside) in error_detail(body), body


def test_corrected_label_then_train_updates_the_model_that_infer_then_loads(monaibundle):
    server, bundle, studies, tmp = monaibundle
    model_file = bundle / "models" / "model.pt"
    before = model_file.read_bytes()

    # the annotator corrects the segmentation of the unlabelled image and submits it: one more training image
    prediction = server.infer(BUNDLE, "img3", tmp / "img3_before_training.nii.gz")
    server.submit_label("img3", corrected_label(prediction, tmp / "img3_corrected.nii.gz", value=2))
    # and submits a label of the wrong shape for img4, which MONAI Label stores as it is
    server.submit_label("img4", wrong_shape_label(studies / "img4.nii.gz", tmp / "img4_wrong.nii.gz", value=2))
    assert server.json("GET", "/info/")["datastore"]["completed"] == 5

    mark = len(server.log_text())
    task = server.train(BUNDLE, {"max_epochs": 2})
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    # MONAI Label's bundle train task hands the bundle its datastore list: the bad pair is left out, by name
    log = server.log_text()[mark:]
    assert "skipping image img4: label shape (16, 32, 32) differs from image shape" in log, log[-3000:]
    assert model_file.read_bytes() != before, "a 2-epoch run from MONAI Label left models/model.pt unchanged"

    mark = len(server.log_text())
    result = server.infer(BUNDLE, "img3", tmp / "img3_trained.nii.gz")
    assert_label_volume(result, studies / "img3.nii.gz", LABELS.values())
    log = server.log_text()[mark:]
    assert f"Infer model path: {model_file}" in log and "Reload model from cache" in log, log[-3000:]
