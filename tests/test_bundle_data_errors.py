"""Bad data stops the train workflow with the data layer's DatasetError, naming the problem, before any training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLE_3D
from monai.bundle import ConfigWorkflow

from monai_unetpp.data import DatasetError, make_demo_dataset

CONFIGS = BUNDLE_3D / "configs"


def first_label(data: Path) -> Path:
    return sorted((data / "labelsTr").iterdir())[0]


def rewrite_label(data: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    path = first_label(data)
    label = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asarray(label.dataobj)).astype(np.uint8), label.affine), path)


def not_a_dataset(data: Path) -> None:
    for item in sorted(data.iterdir()):
        if item.is_dir():
            for f in item.iterdir():
                f.unlink()
            item.rmdir()
        else:
            item.unlink()
    (data / "notes.txt").write_text("not images")


def missing_label(data: Path) -> None:
    first_label(data).unlink()


def label_out_of_range(data: Path) -> None:
    rewrite_label(data, lambda a: np.where(a == 2, 7, a))


def label_shape_mismatch(data: Path) -> None:
    rewrite_label(data, lambda a: a[:-4])


def wrong_dimensions(data: Path) -> None:
    rewrite_label(data, lambda a: a[..., 0])


def truncated_json(data: Path) -> None:
    text = (data / "dataset.json").read_text()
    (data / "dataset.json").write_text(text[: len(text) // 2])


CASES = {
    "not_a_dataset": (not_a_dataset, {}, "is not a dataset"),
    "missing_label": (missing_label, {}, "label file not found"),
    "label_out_of_range": (label_out_of_range, {}, "outside the declared classes"),
    "label_shape_mismatch": (label_shape_mismatch, {}, "differs from image shape"),
    "wrong_dimensions": (wrong_dimensions, {}, "label has shape"),
    "truncated_json": (truncated_json, {}, "cannot read the JSON"),
    "num_classes_mismatch": (lambda data: None, {"num_classes": 4}, "set num_classes to 3"),
}


def dataset_error(error: BaseException) -> DatasetError | None:
    """The DatasetError in an exception chain (config evaluation may wrap it)."""
    while error is not None and not isinstance(error, DatasetError):
        error = error.__cause__ or error.__context__
    return error


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_fails_before_training(case, tmp_path):
    damage, overrides, message = CASES[case]
    data = tmp_path / "data"
    make_demo_dataset(data, num_cases=3, num_test=0, shape=(32, 32, 32))
    damage(data)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        bundle_root=str(tmp_path),
        features=[4, 8],
        patch_size=[16, 16, 16],
        num_workers=0,
        **overrides,
    )
    workflow.initialize()
    with pytest.raises(Exception) as raised:
        workflow.run()
    error = dataset_error(raised.value)
    assert error is not None, f"expected a DatasetError, got {raised.value!r}"
    assert message in str(error)
    assert not (tmp_path / "models").exists()  # nothing was trained


def test_a_datalist_file_is_used_instead_of_the_folder_layout(tmp_path):
    data = tmp_path / "data"
    make_demo_dataset(data, num_cases=3, num_test=0, shape=(32, 32, 32))
    cases = json.loads((data / "dataset.json").read_text())["training"]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": cases[:2], "validation": cases[2:]}))
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        bundle_root=str(tmp_path),
        datalist=str(datalist),
    )
    workflow.initialize()
    assert [Path(c["image"]).name for c in workflow.val_dataset_data] == [Path(cases[2]["image"]).name]
