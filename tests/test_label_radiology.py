"""A radiology app with the UNet++ config written by make_app, behind a real MONAI Label server.

One server per module (start ~20 s); the tests run in file order: the infer tests see the untrained network,
the training test (with a submitted label of the wrong shape among the corrections) checks that inference then
loads the published model.
"""

from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import pytest
import torch
from label_support.server import (
    REPO,
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

from monai_unetpp import UNetPlusPlus
from monai_unetpp.label.make_app import add_unetpp_config

MODEL = "segmentation_unetpp"
# Non-consecutive values: the result must carry the declared values, not the network's channel indices.
LABELS = {"cyst": 3, "tumor": 1}
FEATURES = (4, 8, 16)
SW_BATCH_SIZE = 2  # make_app --sw-batch-size; not the default, so that the test sees it taken


@pytest.fixture(scope="module")
def radiology(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("label_radiology")
    # img4 stays unlabelled for a bad submission; broken.nii.gz is an image cut short by an interrupted copy
    studies = make_studies(tmp / "studies", LABELS, count=5)
    truncated_copy(studies / "img0.nii.gz", studies / "broken.nii.gz")
    app = tmp / "app"
    run_in_venv(
        ["-m", "monai_unetpp.label.make_app", str(app), "--labels", json.dumps(LABELS)]
        + ["--features", ",".join(map(str, FEATURES)), "--roi-size", "32,32,32", "--target-spacing", "1.5,1.5,1.5"]
        + ["--sw-batch-size", str(SW_BATCH_SIZE)],
        tmp,
    )
    with running_server(app, studies, {"models": MODEL, "sam2": "false"}, tmp) as server:
        yield server, app, studies, tmp


def test_make_app_keeps_an_existing_config(radiology):
    _, app, *_ = radiology
    config = app / "lib" / "configs" / f"{MODEL}.py"
    written = config.read_text()
    assert "class SegmentationUnetpp(UNetPlusPlusSegmentation, TaskConfig):" in written
    assert f"labels = {LABELS!r}" in written and f"features = {FEATURES!r}" in written
    assert f"sw_batch_size = {SW_BATCH_SIZE}" in written
    with pytest.raises(FileExistsError, match="--force"):
        add_unetpp_config(app, labels={"other": 1})
    assert config.read_text() == written


def test_info_lists_the_model_with_its_labels(radiology):
    server, *_ = radiology
    info = server.json("GET", "/info/")
    model = info["models"][MODEL]
    assert model["type"] == "segmentation"
    assert model["labels"] == LABELS
    assert model["config"]["inference_mode"] == ["final", "mean"]
    assert model["config"]["inference_depth"] == [2, 1]
    assert info["trainers"][MODEL]["labels"] == LABELS
    assert info["datastore"]["completed"] == 3


def test_infer_returns_a_uint8_label_on_the_image_grid(radiology):
    server, _, studies, tmp = radiology
    mark = len(server.log_text())
    result = server.infer(MODEL, "img3", tmp / "img3_seg.nii.gz")
    assert_label_volume(result, studies / "img3.nii.gz", LABELS.values(), dtype="uint8")
    # the sliding window takes make_app's --sw-batch-size
    assert f"'sw_batch_size': {SW_BATCH_SIZE}" in server.log_text()[mark:], server.log_tail()


def test_sw_batch_size_from_conf_and_request(radiology):
    server, _, studies, tmp = radiology
    # --conf unetpp_sw_batch_size overrides the app's config file (the TaskConfig, as the server builds it)
    probe = (
        "from monai_unetpp.label import UNetPlusPlusSegmentation as S\n"
        "s = S()\n"
        "s.init('m', 'model', {'unetpp_sw_batch_size': '3', 'unetpp_features': '[4,8]', "
        "'unetpp_roi_size': '[16,16,16]'}, None)\n"
        "t = s.infer()\n"
        "print(t.sw_batch_size, t.inferer({}).sw_batch_size, t.inferer({'sw_batch_size': '5'}).sw_batch_size)\n"
    )
    assert run_in_venv(["-c", probe], tmp).split() == ["3", "3", "5"]
    # a request may set it; a value that is no window count is answered with a message naming the option
    mark = len(server.log_text())
    server.infer(MODEL, "img1", tmp / "img1_sw4.nii.gz", params={"sw_batch_size": 4})
    assert "'sw_batch_size': 4" in server.log_text()[mark:]
    status, body = server.infer_response(MODEL, "img1", params={"sw_batch_size": 0})
    assert status == 422 and "sw_batch_size must be a whole number >= 1, got 0" in error_detail(body), body


def test_inference_backend_from_conf_and_request(radiology):
    server, _, studies, tmp = radiology
    # --conf unetpp_inference_backend sets the task's default; a request may choose the other backend
    probe = (
        "from monai_unetpp.label import UNetPlusPlusSegmentation as S\n"
        "s = S()\n"
        "s.init('m', 'model', {'unetpp_inference_backend': 'openvino', 'unetpp_features': '[4,8]', "
        "'unetpp_roi_size': '[16,16,16]'}, None)\n"
        "t = s.infer()\n"
        "print(t.config()['inference_backend'], t.inferer({}).backend, "
        "t.inferer({'inference_backend': 'torch'}).backend, t.config()['inference_precision'])\n"
    )
    printed = run_in_venv(["-c", probe], tmp).split()
    expected = ["['openvino',", "'auto',", "'torch']", "openvino", "torch", "['auto',", "'fp32',", "'bf16',", "'int8']"]
    assert printed == expected, printed
    # OpenVINO gives the label map that PyTorch gives, on the image's grid
    fp32 = {"inference_precision": "fp32"}
    torch_label = server.infer(MODEL, "img1", tmp / "img1_torch.nii.gz", params={"inference_backend": "torch", **fp32})
    mark = len(server.log_text())
    openvino = {"inference_backend": "openvino", **fp32}
    openvino_label = server.infer(MODEL, "img1", tmp / "img1_ov.nii.gz", params=openvino)
    assert "'inference_backend': 'openvino'" in server.log_text()[mark:], server.log_tail()
    assert_label_volume(openvino_label, studies / "img1.nii.gz", LABELS.values())
    a, b = (nib.load(str(p)).get_fdata() for p in (torch_label, openvino_label))
    assert (a == b).mean() > 0.999, (a == b).mean()
    status, body = server.infer_response(MODEL, "img1", params={"inference_backend": "tensorrt"})
    assert status == 422 and "backend must be one of" in error_detail(body) and "tensorrt" in error_detail(body), body
    # int8: OpenVINO only, calibrated on the request's image
    int8_label = server.infer(
        MODEL, "img1", tmp / "img1_int8.nii.gz", params={"inference_backend": "openvino", "inference_precision": "int8"}
    )
    assert_label_volume(int8_label, studies / "img1.nii.gz", LABELS.values())
    status, body = server.infer_response(
        MODEL, "img1", params={"inference_backend": "torch", "inference_precision": "int8"}
    )
    assert status == 422 and "precision='int8' runs in OpenVINO only" in error_detail(body), body


def test_a_bad_inference_mode_or_depth_is_answered_with_an_error_naming_it(radiology):
    server, _, _, tmp = radiology
    bad = {
        "inference_mode": ("fast", "inference_mode must be one of ['final', 'mean'], got 'fast'"),
        "inference_depth": (7, "inference_depth must be in 1..2 for this network, got 7"),
    }
    for option, (value, message) in bad.items():
        status, body = server.infer_response(MODEL, "img1", params={option: value})
        assert status == 422 and message in error_detail(body), (option, status, body[:300])
    status, body = server.infer_response(MODEL, "img1", params={"inference_depth": "two"})
    assert status == 422 and "inference_depth must be a whole number >= 1, got 'two'" in error_detail(body), body
    # a network trained without deep supervision has no mean mode and no pruning: the request is told so
    probe = (
        "from monai_unetpp.label import UNetPlusPlusSegmentation as S\n"
        "s = S()\n"
        "s.init('m', 'model', {'unetpp_deep_supervision': 'false', 'unetpp_features': '[4,8,16]', "
        "'unetpp_roi_size': '[16,16,16]'}, None)\n"
        "t = s.infer()\n"
        "for params in ({'inference_mode': 'mean'}, {'inference_depth': 1}):\n"
        "    try:\n"
        "        t.inferer(params)\n"
        "    except Exception as error:\n"
        "        print(type(error).__name__, error.status_code, error)\n"
    )
    printed = run_in_venv(["-c", probe], tmp).splitlines()
    assert printed[0].startswith("RequestError 422 inference_mode='mean' averages the deep-supervision heads"), printed
    assert printed[1].startswith("RequestError 422 inference_depth=1 needs a head on X^(0,1)"), printed


def test_a_truncated_image_is_answered_with_an_error_naming_it(radiology):
    server, _, studies, _ = radiology
    status, body = server.infer_response(MODEL, "broken")
    detail = error_detail(body)
    assert status == 422, (status, body[:300])
    assert "image broken cannot be read" in detail and str(studies / "broken.nii.gz") in detail, detail
    assert "truncated" in detail and "Replace the file" in detail, detail


def test_an_image_outside_the_studies_folder_is_refused(radiology):
    server, _, _, tmp = radiology
    outside = outside_image(tmp)
    # MONAI Label 0.8.5 passes an existing server path given as the image id on to the task
    status, body = server.infer_response(MODEL, str(outside))
    detail = error_detail(body)
    assert status == 403, (status, body[:300])
    assert str(outside) in detail and "outside this MONAI Label server's datastore" in detail, detail
    # the same file uploaded by the client (the request's file field) is segmented
    status, body = server.infer_response(MODEL, upload=outside)
    assert status == 200, (status, body[:300])
    (tmp / "uploaded_seg.nii.gz").write_bytes(body)
    assert_label_volume(tmp / "uploaded_seg.nii.gz", outside, LABELS.values())


def test_infer_options_from_the_viewer(radiology):
    server, _, studies, tmp = radiology
    mark = len(server.log_text())
    options = {"inference_mode": "mean", "inference_depth": 1}
    result = server.infer(MODEL, "img1", tmp / "img1_mean.nii.gz", params=options)
    assert_label_volume(result, studies / "img1.nii.gz", LABELS.values())
    log = server.log_text()[mark:]
    assert "UNetPlusPlusInferer" in log and "'inference_mode': 'mean'" in log, log[-3000:]
    assert "'inference_depth': 1" in log, log[-3000:]
    # older clients send the option's former name
    mark = len(server.log_text())
    server.infer(MODEL, "img1", tmp / "img1_old.nii.gz", params={"pruning_depth": 1})
    assert "'inference_depth': 1" in server.log_text()[mark:]


def test_twenty_concurrent_infer_requests(radiology):
    server, _, studies, tmp = radiology

    def one(i: int):
        image = f"img{i % 4}"
        return image, server.infer(MODEL, image, tmp / f"concurrent_{i}.nii.gz")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    assert len(results) == 20
    for image, result in results:
        assert_label_volume(result, studies / f"{image}.nii.gz", LABELS.values())


def test_corrected_label_then_train_publishes_a_model_that_infer_then_loads(radiology):
    server, app, studies, tmp = radiology
    model_file = app / "model" / f"{MODEL}.pt"
    before = model_file.read_bytes() if model_file.exists() else None

    # the annotator corrects the segmentation of the unlabelled image and submits it: one more training image
    prediction = server.infer(MODEL, "img3", tmp / "img3_before_training.nii.gz")
    server.submit_label("img3", corrected_label(prediction, tmp / "img3_corrected.nii.gz", value=3))
    # and submits a label of the wrong shape for img4, which MONAI Label stores as it is
    server.submit_label("img4", wrong_shape_label(studies / "img4.nii.gz", tmp / "img4_wrong.nii.gz", value=3))
    assert server.json("GET", "/info/")["datastore"]["completed"] == 5

    mark = len(server.log_text())
    task = server.train(MODEL, {"max_epochs": 2, "num_samples": 1})
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    # the bad pair was left out, by name, and did not stop the run
    log = server.log_text()[mark:]
    assert "UNet++ training: skipping image img4: label shape (16, 32, 32) differs from image shape" in log, log[-3000:]
    assert "4 of 5 (image, label) pairs used" in log, log[-3000:]
    assert model_file.is_file() and model_file.read_bytes() != before

    # the published checkpoint holds this model's network (ignite saves a lone object's state_dict unwrapped)
    checkpoint = torch.load(model_file, map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint)
    net = UNetPlusPlus(3, 1, len(LABELS) + 1, features=FEATURES, deep_supervision=True)
    assert set(state) == set(net.state_dict())
    stats = server.json("GET", "/info/")["train_stats"][MODEL]
    assert stats["total_epochs"] == 2 and stats["epoch"] == 2

    mark = len(server.log_text())
    result = server.infer(MODEL, "img3", tmp / "img3_trained.nii.gz")
    assert_label_volume(result, studies / "img3.nii.gz", LABELS.values())
    assert f"Infer model path: {model_file}" in server.log_text()[mark:]


def test_the_readmes_make_app_command_runs_as_printed(tmp_path):
    readme = (REPO / "README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("python -m monai_unetpp.label.make_app ")]
    args = shlex.split(line)[1:]
    out = run_in_venv(args, tmp_path)
    assert "start_server --app apps/radiology --studies <images folder> --host 127.0.0.1" in out
    written = (tmp_path / "apps" / "radiology" / "lib" / "configs" / f"{MODEL}.py").read_text()
    assert "labels = {'liver': 1, 'tumor': 2}" in written
