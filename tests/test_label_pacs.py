"""Images from a PACS: a real Orthanc with its DICOMweb plugin, MONAI Label reading it, MONAI Label's own client.

The route of docs/monai_label.md, "Images from a PACS": a volume written as an MR series
(``monai_unetpp.label.pacs``) and uploaded to Orthanc, the radiology app of ``make_app`` started with
``--studies http://127.0.0.1:<port>/dicom-web`` and the documented settings, inference (a NIfTI label and a DICOM
SEG), a correction saved back into Orthanc as a DICOM SEG.

Orthanc 1.10 cannot bind one address, so Orthanc, MONAI Label and the client all run inside a network namespace
of their own (``unshare -rn``: only a loopback interface), driven by ``label_support/pacs_driver.py``; the test
checks from outside that the ports are closed here, and the servers are stopped by process id. One run per
module (~40 s); the tests check what it returned. Orthanc comes from ``bash scripts/setup_orthanc.sh``, which
``scripts/test.sh`` runs.
"""

from __future__ import annotations

import json
import locale
import os
import shutil
import socket
import subprocess
import threading

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from label_support.server import REPO, assert_label_volume, label_venv, run_in_venv, venv_python

from monai_unetpp import UNetPlusPlus
from monai_unetpp.label.pacs import dicomweb_plugin, orthanc_config, upload_to_orthanc, write_dicom_series

MODEL = "segmentation_unetpp"
LABELS = {"organ": 1, "lesion": 2}
FEATURES = (4, 8, 16)
# Rotated 90 degrees about z with anisotropic voxels (right-handed, as a DICOM series always is): a label on
# another grid cannot pass for the series'.
AFFINE = np.array([[0.0, -1.2, 0.0, 10.0], [1.1, 0.0, 0.0, -5.0], [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (32, 28, 20)
DRIVER = REPO / "tests" / "label_support" / "pacs_driver.py"
READ_SEG = REPO / "tests" / "label_support" / "read_seg.py"
DRIVER_TIMEOUT = 900  # seconds; a normal run takes 40-140 s


def _need_orthanc() -> None:
    try:
        dicomweb_plugin()
        found = shutil.which("Orthanc") is not None
    except FileNotFoundError:
        found = False
    if found:
        return
    if shutil.which("apt-get") is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed and this system has no apt-get to install it")
    pytest.fail("Orthanc or its DICOMweb plugin is missing: install them with `bash scripts/setup_orthanc.sh`")


def _volume(path) -> np.ndarray:
    """An MR-like volume of whole numbers (what an MR series stores) with a bright block per label."""
    rng = np.random.default_rng(0)
    data = rng.normal(300.0, 40.0, SHAPE)
    data[6:14, 6:14, 4:10] += 500.0
    data[18:26, 14:22, 10:16] += 900.0
    nib.save(nib.Nifti1Image(np.round(data).astype(np.int16), AFFINE), path)
    return data


def _correction(path) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[6:14, 6:14, 4:10] = LABELS["organ"]
    label[18:26, 14:22, 10:16] = LABELS["lesion"]
    nib.save(nib.Nifti1Image(label, AFFINE), path)
    return label


def _outside_refused(ports: list[int]) -> list[bool]:
    refused = []
    for port in ports:
        with socket.socket() as s:
            s.settimeout(5)
            refused.append(s.connect_ex(("127.0.0.1", port)) != 0)
    return refused


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    _need_orthanc()
    label_venv()
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.fail(
            "`unshare -rn` (a user and network namespace) is refused here, so Orthanc, which listens on every "
            "interface, cannot be kept from other machines; enable unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1) or run the tests as root"
        )
    work = tmp_path_factory.mktemp("label_pacs")
    _volume(work / "volume.nii.gz")
    _correction(work / "correction.nii.gz")
    app = work / "app"
    # seeded weights: the prediction is the same on every run
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, len(LABELS) + 1, features=FEATURES, deep_supervision=True)
    torch.save(net.state_dict(), work / "pretrained.pt")
    job = {
        "app": str(app),
        "make_app": [str(app), "--labels", json.dumps(LABELS), "--features", ",".join(map(str, FEATURES))]
        + ["--roi-size", "32,32,32", "--target-spacing", "1.5,1.5,2"],
        "pretrained": str(work / "pretrained.pt"),
        "model": MODEL,
        "volume": str(work / "volume.nii.gz"),
        "labels": LABELS,
        "correction": str(work / "correction.nii.gz"),
        "correction_names": ["organ", "lesion"],
    }
    (work / "job.json").write_text(json.dumps(job))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        ["unshare", "-rn", venv_python(), str(DRIVER), str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=work,
        text=True,
    )
    # a driver that hangs is stopped with SIGTERM, on which it stops the servers
    watchdog = threading.Timer(DRIVER_TIMEOUT, driver.terminate)
    watchdog.start()
    try:
        output, ready = "", []
        for line in driver.stdout:
            output += line
            if line.startswith("READY"):
                ready = line.split()
                break
        outside = {}
        if len(ready) == 4:
            ports = [int(p) for p in ready[1:]]
            names = ("orthanc_http", "orthanc_dicom", "monailabel")
            outside = dict(zip(names, _outside_refused(ports), strict=True))
        try:
            driver.stdin.write("go\n")
            driver.stdin.close()
        except BrokenPipeError:
            pass
        output += driver.stdout.read()
        driver.wait()
    finally:
        watchdog.cancel()
    facts = json.loads((work / "facts.json").read_text())
    logs = "\n".join(
        f"--- {name} (end):\n" + (work / name).read_text(errors="replace")[-3000:]
        for name in ("orthanc.log", "monailabel.log")
        if (work / name).exists()
    )
    assert "error" not in facts, f"{facts['error']}\n{output}\n{logs}"
    assert driver.returncode == 0, f"{output}\n{logs}"
    facts["outside_refused"] = outside
    return facts, work, logs


def _series_image(facts) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(facts["series_dir"]))
    return reader.Execute()


@pytest.fixture(scope="module")
def segs(pacs):
    """The DICOM SEG files the run got, read in the MONAI Label venv: name -> (metadata, segment-number image)."""
    facts, work, _ = pacs
    files = [f for f in ("inferred_seg.dcm", "stored_seg_0.dcm") if (work / f).is_file()]
    args = [str(a) for f in files for a in (work / f, work / f"{f}.nii.gz")]
    found = json.loads(run_in_venv([str(READ_SEG), *args], work)) if files else []
    return {f: (meta, sitk.ReadImage(str(work / f"{f}.nii.gz"))) for f, meta in zip(files, found, strict=True)}


def _on_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image`` resampled (nearest neighbour, 0 outside) onto ``reference``'s grid."""
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def test_the_servers_ran_in_a_network_of_their_own(pacs):
    facts, *_ = pacs
    assert facts["interfaces"] == ["lo"]
    # the namespace's ports are not this machine's: nothing answers on them out here
    assert facts["outside_refused"] == {"orthanc_http": True, "orthanc_dicom": True, "monailabel": True}
    config = facts["orthanc_config"]
    assert config["RemoteAccessAllowed"] is False and config["DicomWeb"]["Enable"] is True
    assert facts["orthanc_version"].startswith("1.")
    # Orthanc and the server were stopped by process id, and both had answered until then
    assert facts["stopped"] is True and len(facts["exit_status"]) == 2


def test_monai_label_lists_the_uploaded_series(pacs):
    facts, *_ = pacs
    assert facts["info_labels"] == LABELS
    # the search filter of the docs (MR) finds the series: MONAI Label's default lists only CT
    assert facts["next_sample"]["id"] == facts["series_uid"]
    assert facts["info_datastore"]["total"] == 1 and facts["info_datastore"]["completed"] == 0


def test_infer_returns_the_label_on_the_series_grid(pacs):
    facts, work, _ = pacs
    first = assert_label_volume(work / "label_1.nii.gz", work / "volume.nii.gz", LABELS.values())
    second = assert_label_volume(work / "label_2.nii.gz", work / "volume.nii.gz", LABELS.values())
    np.testing.assert_array_equal(first, second)
    # the grid of the series as a DICOM reader builds it (origin, direction, spacing in LPS)
    series, label = _series_image(facts), sitk.ReadImage(str(work / "label_1.nii.gz"))
    assert label.GetSize() == series.GetSize()
    np.testing.assert_allclose(label.GetOrigin(), series.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(label.GetDirection(), series.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(label.GetSpacing(), series.GetSpacing(), atol=1e-4)
    # the second request read the series from MONAI Label's DICOMweb cache, which the guards allow
    assert any(p.endswith(f"{facts['series_uid']}.nii.gz") for p in facts["cache_files"]), facts["cache_files"]
    # the datastore's listing is its cache: the series it downloaded, not the PACS
    assert facts["datastore_objects"] == [facts["series_uid"]], facts["datastore_objects"]
    assert facts["present_values"], "the seeded network predicted background only"


def test_a_dicom_seg_of_the_prediction_names_its_segments(pacs, segs):
    facts, work, logs = pacs
    assert facts["dicom_seg_status"] == 200, f"{facts.get('dicom_seg_error')}\n{logs}"
    meta, seg = segs["inferred_seg.dcm"]
    names = {value: name for name, value in LABELS.items()}
    assert meta["modality"] == "SEG" and meta["referenced_series"] == [facts["series_uid"]]
    assert sorted(meta["segments"].values()) == sorted(names[v] for v in facts["present_values"])
    # the SEG's voxels are the NIfTI label's, segment by segment
    label = sitk.ReadImage(str(work / "label_1.nii.gz"))
    expected = sitk.GetArrayFromImage(label)
    got = _on_grid(seg, label)
    for number, name in meta["segments"].items():
        np.testing.assert_array_equal(got == int(number), expected == LABELS[name], err_msg=name)


def test_a_saved_correction_is_stored_in_orthanc(pacs, segs):
    facts, work, _ = pacs
    assert facts["save_label"]["image"] == facts["series_uid"]
    assert len(facts["stored_seg"]) == 1, (facts["seg_series_before"], facts["seg_series_after"])
    meta, seg = segs["stored_seg_0.dcm"]
    assert meta["modality"] == "SEG" and meta["referenced_series"] == [facts["series_uid"]]
    assert sorted(meta["segments"].values()) == ["lesion", "organ"]
    # what Orthanc holds is the correction, on the series' grid
    reference = sitk.ReadImage(str(work / "correction.nii.gz"))
    expected = sitk.GetArrayFromImage(reference)
    got = _on_grid(seg, _series_image(facts))
    for number, name in meta["segments"].items():
        np.testing.assert_array_equal(got == int(number), expected == LABELS[name], err_msg=name)
    # and MONAI Label counts the series as labelled
    assert facts["info_datastore_after"]["completed"] == 1


# ---------------------------------------------------------------------------------------------------------------
# monai_unetpp.label.pacs without servers


def test_a_series_keeps_the_volumes_grid_and_values(tmp_path):
    # a CT volume of fractional values: stored with a rescale slope, back within half a step
    rng = np.random.default_rng(1)
    data = rng.normal(0.0, 100.0, SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "ct.nii.gz")
    encoding = locale.getpreferredencoding(False)
    series = write_dicom_series(tmp_path / "ct.nii.gz", tmp_path / "ct", modality="CT")
    assert len(series["files"]) == SHAPE[2] and series["slope"] > 0
    assert locale.getpreferredencoding(False) == encoding  # GDCM's writer would leave the process in the C locale
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(tmp_path / "ct"), series["series_uid"])
    assert len(names) == SHAPE[2]
    reader.SetFileNames(names)
    back, original = reader.Execute(), sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    np.testing.assert_allclose(back.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), original.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(back.GetSpacing(), original.GetSpacing(), atol=1e-5)
    error = np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(original)).max()
    assert error <= series["slope"] / 2 + 1e-6
    # whole numbers are stored as they are
    _volume(tmp_path / "mr.nii.gz")
    mr = write_dicom_series(tmp_path / "mr.nii.gz", tmp_path / "mr", modality="MR")
    assert (mr["slope"], mr["intercept"]) == (1.0, 0.0) and mr["study_uid"] != series["study_uid"]
    with pytest.raises(ValueError, match="holds .dcm files already"):
        write_dicom_series(tmp_path / "mr.nii.gz", tmp_path / "mr")


def test_series_that_dicom_cannot_hold_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.full(SHAPE, 0.5, np.float32), AFFINE), tmp_path / "float.nii.gz")
    with pytest.raises(ValueError, match=r"an MR series stores whole numbers .* or write it as CT"):
        write_dicom_series(tmp_path / "float.nii.gz", tmp_path / "a", modality="MR")
    with pytest.raises(ValueError, match="modality must be one of CT, MR, got 'XA'"):
        write_dicom_series(tmp_path / "float.nii.gz", tmp_path / "b", modality="XA")
    with pytest.raises(FileNotFoundError, match="none.nii.gz: no such volume file"):
        write_dicom_series(tmp_path / "none.nii.gz", tmp_path / "d")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), AFFINE), tmp_path / "two.nii.gz")
    with pytest.raises(ValueError, match="two.nii.gz: a DICOM series holds a 3D volume of one channel"):
        write_dicom_series(tmp_path / "two.nii.gz", tmp_path / "c")


def test_the_orthanc_config_serves_dicomweb_to_this_machine_only(tmp_path):
    plugin = tmp_path / "libOrthancDicomWeb.so"
    plugin.write_bytes(b"")
    path = orthanc_config(tmp_path / "orthanc", http_port=18042, plugin=plugin)
    config = json.loads(path.read_text())
    assert config["RemoteAccessAllowed"] is False and config["DicomServerEnabled"] is False
    assert config["HttpPort"] == 18042 and config["Plugins"] == [str(plugin)]
    assert config["StorageDirectory"] == str(tmp_path / "orthanc" / "db") and config["DicomWeb"]["Enable"]
    assert dicomweb_plugin([tmp_path]) == plugin
    with pytest.raises(FileNotFoundError, match="scripts/setup_orthanc.sh"):
        dicomweb_plugin([tmp_path / "none"])
    with pytest.raises(ValueError, match="http_port must be a port number 1-65535, got 0"):
        orthanc_config(tmp_path / "x", http_port=0, plugin=plugin)


def test_an_upload_to_no_orthanc_names_the_url(tmp_path):
    _volume(tmp_path / "mr.nii.gz")
    files = write_dicom_series(tmp_path / "mr.nii.gz", tmp_path / "mr")["files"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ConnectionError, match=f"cannot reach Orthanc at http://127.0.0.1:{closed}/instances"):
            upload_to_orthanc(files[:1], f"http://127.0.0.1:{closed}")
