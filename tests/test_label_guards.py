"""The checks between MONAI Label and the UNet++ tasks (monai_unetpp.label.guards), without a server: which image
files a request may read, which (image, label) pairs training keeps, and the errors the server answers with.

The servers of tests/test_label_radiology.py and tests/test_label_bundle.py run the same code through MONAI Label's
own client flow; these tests cover the cases a server test would spend minutes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_unetpp.data.readers import CorruptImageError
from monai_unetpp.label import (
    CheckedCacheDataset,
    ImageRequestError,
    LoadDatastoreImaged,
    TrainingDataError,
    check_training_pairs,
)
from monai_unetpp.label.guards import ImageOutsideDatastoreError, check_datastore_path, check_pair, datastore_folders

AFFINE = np.diag([1.2, 1.2, 2.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


@pytest.fixture
def studies(tmp_path, monkeypatch):
    """A studies folder with one image, and the environment of a MONAI Label server that serves it."""
    root = tmp_path / "studies"
    (root / "labels" / "final").mkdir(parents=True)
    _save(root / "img0.nii.gz", np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32))
    monkeypatch.setenv("MONAI_LABEL_STUDIES", str(root))
    monkeypatch.setenv("MONAI_LABEL_SESSION_PATH", str(tmp_path / "sessions"))
    return root


def _label(studies: Path, name: str, data: np.ndarray, affine: np.ndarray = AFFINE) -> dict:
    return {"image": str(studies / "img0.nii.gz"), "label": _save(studies / "labels" / "final" / name, data, affine)}


def test_check_pair_names_each_problem_and_the_fix(studies):
    good = np.zeros((8, 8, 8), np.uint8)
    good[2:4, 2:4, 2:4] = 1
    assert check_pair(_label(studies, "good.nii.gz", good), values=[1]) == (None, None)
    problem, _ = check_pair(_label(studies, "shape.nii.gz", good[:4]), values=[1])
    assert "label shape (4, 8, 8) differs from image shape (8, 8, 8)" in problem and "image's grid" in problem
    problem, _ = check_pair(_label(studies, "affine.nii.gz", good, np.diag([1.0, 1.0, 1.0, 1.0])), values=[1])
    assert "label affine differs from the image's" in problem
    problem, _ = check_pair(_label(studies, "fraction.nii.gz", good * np.float32(0.5)), values=[1])
    assert "non-integer values" in problem and "without interpolation" in problem
    problem, _ = check_pair(_label(studies, "negative.nii.gz", good.astype(np.int16) - 1), values=[1])
    assert "label values [-1]" in problem
    # a bundle's classes are a limit; a radiology model's undeclared values train as background, with a note
    three = good * 3
    problem, _ = check_pair(_label(studies, "three.nii.gz", three), num_classes=3)
    assert "label values [3] are not the classes 0..2" in problem
    problem, note = check_pair(_label(studies, "three.nii.gz", three), values=[1])
    assert problem is None and "label values [3] are not among the model's labels [1]" in note
    # a label cut short by an interrupted upload
    path = studies / "labels" / "final" / "cut.nii.gz"
    raw = Path(_label(studies, "cut.nii.gz", good)["label"]).read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    problem, _ = check_pair({"image": str(studies / "img0.nii.gz"), "label": str(path)}, values=[1])
    assert str(path) in problem and "truncated or corrupt" in problem


def test_check_training_pairs_leaves_out_bad_pairs_by_image_id(studies, caplog):
    good = np.ones((8, 8, 8), np.uint8)
    labels = {"a.nii.gz": good, "b.nii.gz": good[:4], "c.nii.gz": good}
    pairs = [_label(studies, name, data) for name, data in labels.items()]
    with caplog.at_level(logging.WARNING, logger="monai_unetpp.label.guards"):
        kept = check_training_pairs(pairs, values=[1])
    assert kept == [pairs[0], pairs[2]]
    assert "UNet++ training: skipping image img0: label shape (4, 8, 8)" in caplog.text
    assert "2 of 3 (image, label) pairs used" in caplog.text
    # nothing usable: a clear error listing why, not a training run on nothing
    with pytest.raises(TrainingDataError, match=r"all 1 were left out:\n  - img0: label shape \(4, 8, 8\)"):
        check_training_pairs(pairs[1:2], values=[1])
    with pytest.raises(TrainingDataError, match="no submitted \\(final\\) label"):
        check_training_pairs([], values=[1])
    assert check_training_pairs(pairs[1:2], values=[1], split="validation", required=False) == []


def test_pairs_outside_the_datastore_are_left_out(studies, tmp_path):
    good = np.ones((8, 8, 8), np.uint8)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    pair = {"image": _save(outside / "x.nii.gz", good.astype(np.float32)), "label": _save(outside / "y.nii.gz", good)}
    problem, _ = check_pair(pair, values=[1], folders=datastore_folders())
    assert "is outside this MONAI Label server's datastore" in problem and pair["image"] in problem
    assert check_training_pairs([pair], values=[1], restrict=False) == [pair]


def test_the_datastore_folders_and_what_lies_in_them(studies, tmp_path, monkeypatch):
    assert datastore_folders() == [studies.resolve(), (tmp_path / "sessions").resolve()]
    check_datastore_path(studies / "img0.nii.gz")
    check_datastore_path(studies / "labels" / ".." / "img0.nii.gz")
    # a studies folder of links to the images: MONAI Label resolves them before the task sees the path
    target = tmp_path / "archive" / "scan.nii.gz"
    target.parent.mkdir()
    target.write_bytes(b"")
    (studies / "linked.nii.gz").symlink_to(target)
    check_datastore_path(target)
    # the temporary file of an image uploaded with the request
    with tempfile.NamedTemporaryFile(suffix=".nii.gz") as upload:
        check_datastore_path(upload.name)
    for path in ("/etc/hostname", studies / ".." / "elsewhere.nii.gz", Path(tempfile.gettempdir()) / "mine.nii.gz"):
        with pytest.raises(ImageOutsideDatastoreError, match="Ask for an image by its id") as error:
            check_datastore_path(path)
        assert error.value.status_code == 403 and os.fspath(path) in str(error.value)
    # outside a server nothing is refused
    monkeypatch.delenv("MONAI_LABEL_STUDIES")
    assert datastore_folders() is None
    check_datastore_path("/etc/hostname")
    # a DICOMweb datastore's images come from its cache folder for that URL (tests/test_label_pacs.py serves one)
    url = "http://127.0.0.1:8042/dicom-web"
    monkeypatch.setenv("MONAI_LABEL_STUDIES", url)
    monkeypatch.setenv("MONAI_LABEL_DICOMWEB_CACHE_PATH", str(tmp_path / "dicom"))
    series = tmp_path / "dicom" / hashlib.md5(url.encode()).hexdigest() / "1.2.3.nii.gz"
    assert datastore_folders() == [(tmp_path / "sessions").resolve(), series.parent.resolve()]
    check_datastore_path(series)
    for path in (studies / "img0.nii.gz", tmp_path / "dicom" / "other" / "1.2.3.nii.gz"):
        with pytest.raises(ImageOutsideDatastoreError):
            check_datastore_path(path)
    # XNAT and DSA keep theirs in MONAI Label's datastore cache
    monkeypatch.setenv("MONAI_LABEL_DATASTORE", "xnat")
    monkeypatch.setenv("MONAI_LABEL_DATASTORE_CACHE_PATH", str(tmp_path / "cache"))
    assert (tmp_path / "cache").resolve() in datastore_folders()
    assert studies.resolve() not in datastore_folders()


def test_load_datastore_imaged_errors_name_the_image_and_the_fix(studies, tmp_path):
    loader = LoadDatastoreImaged(keys="image")
    image = studies / "img0.nii.gz"
    assert tuple(loader({"image": str(image)})["image"].shape) == (8, 8, 8)
    cut = studies / "cut.nii.gz"
    cut.write_bytes(image.read_bytes()[:200])
    with pytest.raises(ImageRequestError) as error:
        loader({"image": str(cut)})
    assert isinstance(error.value, CorruptImageError) and error.value.status_code == 422
    assert f"image cut cannot be read: {cut}: truncated" in str(error.value) and "Replace the file" in str(error.value)
    # the errors survive a DataLoader worker (pickled back to the main process)
    assert str(pickle.loads(pickle.dumps(error.value))) == str(error.value)
    outside = _save(tmp_path / "private.nii.gz", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ImageOutsideDatastoreError, match="private.nii.gz' is outside"):
        loader({"image": outside})
    assert LoadDatastoreImaged(keys="image", restrict=False)({"image": outside})["image"].shape == (4, 4, 4)


def test_checked_cache_dataset_keeps_good_pairs_and_falls_back_for_validation(studies, caplog):
    good = np.ones((8, 8, 8), np.uint8)
    a, bad = _label(studies, "a.nii.gz", good), _label(studies, "bad.nii.gz", good[:4])
    with caplog.at_level(logging.WARNING, logger="monai_unetpp.label.guards"):
        train = CheckedCacheDataset([a, bad], transform=[], num_classes=2, progress=False)
        assert [train[0]] == [a] and len(train) == 1
        # every validation pair bad (or none given): validate on the training pairs, which writes model.pt
        val = CheckedCacheDataset(
            [bad], [], num_classes=2, split="validation", required=False, fallback=[a, bad], progress=False
        )
    assert len(val) == 1 and "validation: no usable pair: using the 1 training pair(s)" in caplog.text
    assert len(CheckedCacheDataset([], [], num_classes=2, required=False, fallback=[a], progress=False)) == 1
    with pytest.raises(TrainingDataError):
        CheckedCacheDataset([bad], [], num_classes=2, progress=False)
    assert len(CheckedCacheDataset([bad], [], num_classes=2, check=False, progress=False)) == 1
