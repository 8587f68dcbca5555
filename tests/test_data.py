# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Demo data, dataset discovery (Decathlon, paired folders, datalists) and the checks that run before training."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_unetpp.data import DatasetError, check_dataset, demo_settings_hint, make_demo_dataset, prepare_dataset

SHAPE_3D = (20, 20, 16)


@pytest.fixture(scope="module")
def demo_3d(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "d3", num_cases=5, num_test=2, shape=SHAPE_3D)


@pytest.fixture
def dataset(demo_3d, tmp_path) -> Path:
    """A private copy of the demo to damage."""
    return Path(shutil.copytree(demo_3d, tmp_path / "copy"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_is_deterministic(demo_3d, tmp_path):
    again = make_demo_dataset(tmp_path / "again", num_cases=5, num_test=2, shape=SHAPE_3D)
    assert _files(again) == _files(demo_3d)
    other = make_demo_dataset(tmp_path / "other", num_cases=5, num_test=2, shape=SHAPE_3D, seed=1)
    first = "imagesTr/demo_000.nii.gz"
    assert not np.array_equal(nib.load(other / first).get_fdata(), nib.load(demo_3d / first).get_fdata())


def test_demo_layout_and_content(demo_3d):
    description = json.loads((demo_3d / "dataset.json").read_text())
    assert description["labels"] == {"0": "background", "1": "organ", "2": "lesion"}
    assert description["numTraining"] == len(description["training"]) == 5
    assert description["numTest"] == len(description["test"]) == 2
    assert "modality" in description and "channel_names" in description
    seen = set()
    for case in description["training"]:
        image, label = nib.load(demo_3d / case["image"]), nib.load(demo_3d / case["label"])
        assert image.shape == label.shape == SHAPE_3D
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        np.testing.assert_allclose(image.affine, label.affine)
        np.testing.assert_allclose(np.abs(np.diag(image.affine)[:3]), (1.5, 1.5, 2.0))
        assert np.any(image.affine[:3, 3] != 0)
        values = np.asarray(label.dataobj)
        seen.update(np.unique(values).tolist())
        organ, background = image.get_fdata()[values == 1], image.get_fdata()[values == 0]
        assert organ.mean() > background.mean() + 3 * background.std() / 2  # learnable, but not one threshold
    assert seen == {0, 1, 2}
    assert sorted(p.name for p in (demo_3d / "labelsTs").iterdir()) == ["demo_005.nii.gz", "demo_006.nii.gz"]


def test_demo_2d_is_hw_nifti(tmp_path):
    root = make_demo_dataset(tmp_path / "d2", spatial_dims=2, num_cases=2, num_test=1, num_classes=4, shape=(32, 40))
    image = nib.load(root / "imagesTr" / "demo_000.nii.gz")
    assert image.shape == (32, 40)
    assert json.loads((root / "dataset.json").read_text())["labels"]["3"] == "structure_3"
    lists = prepare_dataset(root, spatial_dims=2, num_classes=4)
    assert len(lists["training"]) == 1 and len(lists["validation"]) == 1 and len(lists["test"]) == 1


def test_demo_never_overwrites(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an empty folder"):
        make_demo_dataset(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_prepare_generates_demo_once_and_caches(tmp_path, caplog):
    root = tmp_path / "new"
    with caplog.at_level(logging.WARNING, logger="monai_unetpp"):
        lists = prepare_dataset(root, num_classes=3, demo=True)
    assert "synthetic 3D demo dataset" in caplog.text and str(root) in caplog.text
    assert [len(lists[k]) for k in ("training", "validation", "test")] == [12, 4, 4]
    for case in lists["training"] + lists["validation"]:
        assert Path(case["image"]).is_absolute() and Path(case["label"]).is_file()
    assert {case["image"] for case in lists["training"]}.isdisjoint(case["image"] for case in lists["validation"])
    lists["training"].clear()  # callers get copies: the cached result is untouched
    assert prepare_dataset(root, num_classes=3)["validation"] == lists["validation"]
    other_split = prepare_dataset(root, num_classes=3, seed=1)
    assert other_split["validation"] != lists["validation"]


def test_prepare_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not a dataset"):
        prepare_dataset(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(DatasetError, match="demo=True"):
        prepare_dataset(tmp_path / "missing", demo=False)
    assert not (tmp_path / "missing").exists()


def test_prepare_pairs_folders_without_dataset_json(dataset):
    with_json = prepare_dataset(dataset)
    (dataset / "dataset.json").unlink()
    (dataset / "imagesTr" / "._demo_000.nii.gz").write_bytes(b"\0")  # macOS archive debris is ignored
    assert prepare_dataset(dataset) == with_json


def test_prepare_pairs_nnunet_channel_files(dataset):
    (dataset / "dataset.json").unlink()
    for path in sorted((dataset / "imagesTr").iterdir()):
        stem = path.name[: -len(".nii.gz")]
        shutil.copy(path, path.with_name(f"{stem}_0001.nii.gz"))
        path.rename(path.with_name(f"{stem}_0000.nii.gz"))
    lists = prepare_dataset(dataset)
    case = lists["training"][0]
    assert [Path(p).name for p in case["image"]] == [f"{Path(case['label']).name[:-7]}_000{c}.nii.gz" for c in (0, 1)]


def test_prepare_reads_a_datalist(dataset, tmp_path):
    datalist = {
        "training": [
            {"image": "imagesTr/demo_000.nii.gz", "label": "labelsTr/demo_000.nii.gz", "fold": 0},
            {"image": str(dataset / "imagesTr/demo_001.nii.gz"), "label": "labelsTr/demo_001.nii.gz", "fold": 1},
            {"image": "imagesTr/demo_002.nii.gz", "label": "labelsTr/demo_002.nii.gz", "fold": 1},
        ],
        "validation": [{"image": "imagesTr/demo_003.nii.gz", "label": "labelsTr/demo_003.nii.gz"}],
        "testing": [{"image": "imagesTs/demo_005.nii.gz"}],
    }
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    lists = prepare_dataset(dataset, datalist=tmp_path / "datalist.json")
    assert [Path(c["image"]).name for c in lists["training"]] == [f"demo_00{i}.nii.gz" for i in range(3)]
    assert lists["validation"][0]["label"] == str(dataset / "labelsTr/demo_003.nii.gz")
    assert lists["test"] == [{"image": str(dataset / "imagesTs/demo_005.nii.gz")}]
    del datalist["validation"]
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    by_fold = prepare_dataset(dataset, datalist=tmp_path / "datalist.json", fold=1)
    assert [Path(c["image"]).name for c in by_fold["validation"]] == ["demo_001.nii.gz", "demo_002.nii.gz"]


def _save_like(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, affine), path)


def _label(root: Path, case: int = 1) -> Path:
    return root / "labelsTr" / f"demo_00{case}.nii.gz"


def _damage_out_of_range(root):
    label = nib.load(_label(root))
    _save_like(_label(root), np.where(np.asarray(label.dataobj) == 2, 7, label.dataobj).astype(np.uint8), label.affine)
    return _label(root), "outside the declared classes 0..2"


def _damage_shape(root):
    _save_like(_label(root), np.zeros((20, 20, 15), np.uint8), nib.load(_label(root)).affine)
    return _label(root), "differs from image shape"


def _damage_affine(root):
    affine = nib.load(_label(root)).affine.copy()
    affine[0, 3] += 3.0
    _save_like(_label(root), np.asarray(nib.load(_label(root)).dataobj), affine)
    return _label(root), "affine differs"


def _damage_dims(root):
    image = root / "imagesTr" / "demo_001.nii.gz"
    _save_like(image, np.zeros((20, 20), np.float32), np.eye(4))
    return image, "2 spatial dimensions"


def _damage_corrupt(root):
    image = root / "imagesTr" / "demo_001.nii.gz"
    image.write_bytes(b"not a nifti file")
    return image, "unreadable image"


def _damage_truncated(root):
    image = root / "imagesTr" / "demo_001.nii.gz"
    image.write_bytes(image.read_bytes()[:-2000])
    return image, "truncated or corrupt"


def _damage_float_labels(root):
    label = nib.load(_label(root))
    _save_like(_label(root), np.asarray(label.dataobj).astype(np.float32) * 0.5, label.affine)
    return _label(root), "non-integer values"


def _damage_missing_label(root):
    _label(root).unlink()
    return _label(root), "label file not found"


@pytest.mark.parametrize(
    "damage",
    [
        _damage_out_of_range,
        _damage_shape,
        _damage_affine,
        _damage_dims,
        _damage_corrupt,
        _damage_truncated,
        _damage_float_labels,
        _damage_missing_label,
    ],
)
def test_bad_data_names_the_file(dataset, damage):
    path, message = damage(dataset)
    with pytest.raises(DatasetError, match=message) as error:
        prepare_dataset(dataset)
    assert str(path) in str(error.value)
    assert prepare_dataset(dataset, check=False)["training"]  # the checks, not the discovery, refuse it


def test_unpaired_files_without_dataset_json(dataset):
    (dataset / "dataset.json").unlink()
    _label(dataset).unlink()
    shutil.copy(_label(dataset, 2), dataset / "labelsTr" / "orphan.nii.gz")
    with pytest.raises(DatasetError, match="do not pair") as error:
        prepare_dataset(dataset)
    assert "demo_001.nii.gz: image has no label" in str(error.value)
    assert "orphan.nii.gz: label has no image" in str(error.value)


def test_declared_labels_must_match_num_classes(dataset):
    with pytest.raises(DatasetError, match="set num_classes to 3"):
        prepare_dataset(dataset, num_classes=2)


def test_check_dataset_lists_every_problem(dataset):
    cases = [
        {"image": str(dataset / "imagesTr/demo_000.nii.gz"), "label": str(dataset / "labelsTr/demo_000.nii.gz")},
        {"image": str(dataset / "imagesTr/demo_001.nii.gz")},
        {"image": str(dataset / "imagesTr/missing.nii.gz"), "label": str(dataset / "labelsTr/demo_002.nii.gz")},
    ]
    with pytest.raises(DatasetError) as error:
        check_dataset(cases, num_classes=3)
    assert len(error.value.problems) == 2
    assert "demo_001.nii.gz: image has no label" in str(error.value)
    assert "missing.nii.gz: image file not found" in str(error.value)
    assert check_dataset(cases[:1], num_classes=3) is not None
    assert check_dataset(cases[1:2], num_classes=3, require_label=False)
    with pytest.raises(DatasetError, match="empty"):
        check_dataset([], num_classes=3)


def test_truncation_check_survives_multimember_gzip(dataset):
    """A valid .nii.gz written as two gzip members has a trailer that disagrees; it must still pass."""
    image = dataset / "imagesTr" / "demo_000.nii.gz"
    raw = gzip.decompress(image.read_bytes())
    image.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    check_dataset([{"image": str(image), "label": str(_label(dataset, 0))}], num_classes=3)


def test_concurrent_demo_writers_agree(tmp_path):
    """Ranks of a multi-GPU run may all ask for the demo at once: every one returns, one set of files remains."""
    root = tmp_path / "shared"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: prepare_dataset(root, spatial_dims=2, check=False, demo=True), range(3)))
    assert results[0] == results[1] == results[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # no staging folder left behind


def test_demo_made_for_other_settings_says_how_to_regenerate(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", num_cases=2, num_test=0, shape=SHAPE_3D)
    with pytest.raises(DatasetError, match="holds demo data generated for other settings"):
        prepare_dataset(root, spatial_dims=2)


def test_datalist_paths_relative_to_the_datalist(dataset, tmp_path):
    (tmp_path / "lists").mkdir()
    shutil.move(dataset / "labelsTr", tmp_path / "lists" / "masks")
    datalist = {
        "training": [
            {"image": f"imagesTr/demo_00{i}.nii.gz", "label": f"masks/demo_00{i}.nii.gz", "fold": i % 2}
            for i in range(4)
        ],
        "validation": [{"image": "imagesTr/demo_004.nii.gz", "label": "masks/demo_004.nii.gz"}],
    }
    (tmp_path / "lists" / "datalist.json").write_text(json.dumps(datalist))
    lists = prepare_dataset(dataset, datalist=tmp_path / "lists" / "datalist.json")
    assert lists["validation"][0]["label"] == str(tmp_path / "lists" / "masks" / "demo_004.nii.gz")
    with pytest.raises(DatasetError, match="already has a validation list"):
        prepare_dataset(dataset, datalist=tmp_path / "lists" / "datalist.json", fold=0)


def test_absolute_datalist_needs_no_dataset_dir(dataset, tmp_path):
    cases = [
        {"image": str(dataset / f"imagesTr/demo_00{i}.nii.gz"), "label": str(_label(dataset, i))} for i in range(3)
    ]
    (tmp_path / "absolute.json").write_text(json.dumps({"training": cases}))
    lists = prepare_dataset(tmp_path / "unused", datalist=tmp_path / "absolute.json")
    assert len(lists["training"]) == 2 and len(lists["validation"]) == 1
    assert not (tmp_path / "unused").exists()
    with pytest.raises(DatasetError, match="datalist file .* not found"):
        prepare_dataset(dataset, datalist="missing.json")


# The reader's own data check runs in check_dataset for every format, not for NIfTI only.


@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mha", ".mhd"])
def test_check_dataset_refuses_a_truncated_image_of_any_format(dataset, suffix):
    import SimpleITK as sitk

    case = {"image": str(dataset / "imagesTr/demo_000.nii.gz"), "label": str(_label(dataset, 0))}
    image = dataset / f"imagesTr/other{suffix}"
    sitk.WriteImage(sitk.ReadImage(case["image"]), str(image))
    check_dataset([{**case, "image": str(image)}], num_classes=3)
    data_file = image.with_suffix(".raw") if suffix == ".mhd" else image
    data_file.write_bytes(data_file.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated or corrupt image file") as error:
        check_dataset([{**case, "image": str(image)}], num_classes=3)
    assert str(image) in str(error.value)


def test_check_dataset_refuses_a_corrupt_compressed_label(dataset):
    label = _label(dataset, 0)
    data = bytearray(label.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = bytes(8)
    label.write_bytes(bytes(data))
    case = {"image": str(dataset / "imagesTr/demo_000.nii.gz"), "label": str(label)}
    with pytest.raises(DatasetError, match="truncated or corrupt image file") as error:
        check_dataset([case], num_classes=3)
    assert str(label) in str(error.value)


# Channels: a 2-channel image with in_channels 1 fails before training, naming the file, in any split.


def _two_channel_copy(dataset: Path, case: int) -> Path:
    source = nib.load(dataset / f"imagesTr/demo_00{case}.nii.gz")
    data = np.asarray(source.dataobj)
    path = dataset / f"imagesTr/two_channels_{case}.nii.gz"
    _save_like(path, np.stack([data, data], axis=-1), source.affine)
    return path


def test_check_dataset_counts_channels(dataset):
    two = _two_channel_copy(dataset, 1)
    lists = {
        "training": [{"image": str(dataset / "imagesTr/demo_000.nii.gz"), "label": str(_label(dataset, 0))}],
        "validation": [{"image": str(two), "label": str(_label(dataset, 1))}],  # found before the first epoch
        "test": [],
    }
    check_dataset(lists, num_classes=3)  # in_channels None: not checked, as before
    with pytest.raises(DatasetError, match="expected in_channels=1") as error:
        check_dataset(lists, num_classes=3, in_channels=1)
    assert f"{two}: image has 2 channel(s)" in str(error.value)
    assert "set in_channels to 2" in str(error.value)
    assert len(error.value.problems) == 1
    with pytest.raises(DatasetError, match="expected in_channels=2") as error:
        check_dataset(lists, num_classes=3, in_channels=2)
    assert "demo_000.nii.gz: image has 1 channel(s)" in str(error.value) and str(two) not in str(error.value)


def test_check_dataset_adds_up_the_channel_files_of_a_case(dataset):
    files = [str(dataset / "imagesTr/demo_000.nii.gz"), str(_two_channel_copy(dataset, 0))]
    case = {"image": files, "label": str(_label(dataset, 0))}
    check_dataset([case], num_classes=3, in_channels=3)
    with pytest.raises(DatasetError, match=r"case has 3 channels over 2 files \(demo_000.nii.gz: 1, two_channels_0"):
        check_dataset([case], num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match="in_channels must be None"):
        check_dataset([case], num_classes=3, in_channels=0)


def test_prepare_dataset_checks_channels(dataset):
    _two_channel_copy(dataset, 1).replace(dataset / "imagesTr/demo_001.nii.gz")
    with pytest.raises(DatasetError, match="expected in_channels=1"):
        prepare_dataset(dataset, in_channels=1)


# The "demo data generated for other settings" hint: only when the demo was generated with other settings.


def test_demo_settings_hint_names_only_settings_that_differ(demo_3d):
    description = json.loads((demo_3d / "dataset.json").read_text())
    assert demo_settings_hint(description, demo_3d, spatial_dims=3, num_classes=3) is None
    assert demo_settings_hint(description, demo_3d, spatial_dims=3, num_classes=3, in_channels=1) is None
    hint = demo_settings_hint(description, demo_3d, spatial_dims=2, num_classes=4)
    assert hint.startswith(f"{demo_3d} holds demo data generated for other settings")
    assert "spatial_dims=3 (requested 2)" in hint and "num_classes=3 (requested 4)" in hint
    assert "in_channels=1 (requested 2)" in demo_settings_hint(description, demo_3d, 3, 3, in_channels=2)
    assert demo_settings_hint({**description, "name": "Task09_Spleen"}, demo_3d, 2, 4) is None  # not a demo


def test_damaged_demo_with_matching_settings_gets_no_other_settings_hint(dataset):
    path, message = _damage_truncated(dataset)
    with pytest.raises(DatasetError, match=message) as error:
        prepare_dataset(dataset, spatial_dims=3, num_classes=3)
    assert str(path) in str(error.value)
    assert "other settings" not in str(error.value)
