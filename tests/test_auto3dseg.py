"""The ``unetpp`` Auto3DSeg template, run by MONAI's own ``AutoRunner`` on a tiny synthetic dataset: data analysis,
generation from the data statistics, training of both folds, and the ensemble's predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.apps.auto3dseg import AutoRunner, BundleGen, OptunaGen
from monai.apps.auto3dseg.utils import import_bundle_algo_history
from monai.bundle import ConfigWorkflow
from monai.utils.enums import AlgoKeys

from monai_unetpp.auto3dseg import (
    FRAGMENT,
    UnetppAlgo,
    bundle_ids,
    class_names,
    fold_datalist,
    inference_configs,
    templates_path,
    training_configs,
)
from monai_unetpp.auto3dseg.params import command_value
from monai_unetpp.auto3dseg.run import run_training
from monai_unetpp.bundle import CheckpointError, best_record
from monai_unetpp.data import make_demo_dataset

SHAPE = (24, 24, 24)
NUM_CLASSES = 3
LEARNING_RATE = 0.003
TINY_WIDTHS = (4, 8, 8, 16, 16, 16)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """Four labelled 24^3 volumes in two folds and two test volumes, with Auto3DSeg's input config."""
    root = tmp_path_factory.mktemp("auto3dseg")
    data = make_demo_dataset(root / "data", num_cases=4, num_test=2, shape=SHAPE, num_classes=NUM_CLASSES)
    description = json.loads((data / "dataset.json").read_text())
    datalist = {
        "training": [{**case, "fold": i % 2} for i, case in enumerate(description["training"])],
        "testing": [{"image": image} for image in description["test"]],
    }
    (root / "datalist.json").write_text(json.dumps(datalist, indent=2))
    config = {
        "modality": "MRI",
        "datalist": str(root / "datalist.json"),
        "dataroot": str(data),
        "class_names": ["organ", "lesion"],
    }
    return {"root": root, "data": data, "datalist": datalist, "input": config, "work": root / "work"}


def _runner(task: dict, **options) -> AutoRunner:
    runner = AutoRunner(
        work_dir=str(task["work"]),
        input=dict(task["input"]),
        algos=["unetpp"],
        templates_path_or_url=templates_path(),
        **options,
    )
    runner.set_num_fold(2)
    runner.set_analyze_params({"do_ccp": False, "device": "cpu", "worker": 0})
    return runner


@pytest.fixture(scope="module")
def generated(task):
    """Data analysis and algorithm generation: one folder per fold, planned from the data statistics."""
    _runner(task, train=False, ensemble=False).run()
    return task


@pytest.fixture(scope="module")
def trained(generated):
    """Training of both folds (one epoch of a tiny network with the plan's strides) and the mean ensemble."""
    fragment = yaml.safe_load((generated["work"] / "unetpp_0" / "configs" / FRAGMENT).read_text())
    levels = len(fragment["features"])
    runner = _runner(generated, analyze=False, algo_gen=False, train=True, ensemble=True)
    runner.set_training_params(
        {
            "num_epochs": 1,
            "num_epochs_per_validation": 1,
            "learning_rate": LEARNING_RATE,
            "num_images_per_batch": 1,
            "num_crops_per_image": 1,
            "num_workers": 0,
            "features": list(TINY_WIDTHS[:levels]),
            "patch_size": [16, 16, 16],
        }
    )
    runner.set_prediction_params({"mode": "mean"})
    runner.run()
    return generated


def test_templates_path_is_found_by_bundlegen(tmp_path):
    generator = BundleGen(algo_path=str(tmp_path), algos=["unetpp"], templates_path_or_url=templates_path())
    assert [type(algo).__name__ for algo in generator.algos] == ["UnetppAlgo"]
    assert isinstance(generator.algos[0], UnetppAlgo)


def test_generation_writes_a_bundle_per_fold(generated):
    work, datalist = generated["work"], generated["datalist"]
    for fold in (0, 1):
        algo = work / f"unetpp_{fold}"
        fragment = yaml.safe_load((algo / "configs" / FRAGMENT).read_text())
        assert fragment["num_classes"] == NUM_CLASSES and fragment["in_channels"] == 1
        assert fragment["dataset_dir"] == str(generated["data"])
        split = json.loads((algo / "datalist.json").read_text())
        expected = sorted(str(generated["data"] / c["image"]) for c in datalist["training"] if c["fold"] == fold)
        assert sorted(c["image"] for c in split["validation"]) == expected
        assert len(split["training"]) == 2 and len(split["testing"]) == 2
        meta = json.loads((algo / "configs" / "metadata.json").read_text())
        assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
            "0": "background",
            "1": "organ",
            "2": "lesion",
        }
        # the bundle's own configs, copied from the shipped 3D bundle
        assert (algo / "configs" / "train.json").is_file() and (algo / "configs" / "inference.json").is_file()


def test_hyperparameter_search_regenerates_a_fold(generated, tmp_path):
    """Auto3DSeg's Optuna driver re-exports a fold with new parameters from the recorded generation."""
    algo = import_bundle_algo_history(str(generated["work"]), only_trained=False)[0][AlgoKeys.ALGO]
    shutil.copytree(algo.output_path, tmp_path / "unetpp_0")
    algo.output_path = str(tmp_path / "unetpp_0")
    OptunaGen(algo=algo, params={"learning_rate": 0.01, "num_epochs": 3})
    override = tmp_path / "unetpp_0_override"
    fragment = yaml.safe_load((override / "configs" / FRAGMENT).read_text())
    assert fragment["learning_rate"] == 0.01 and fragment["epochs"] == 3
    original = yaml.safe_load((tmp_path / "unetpp_0" / "configs" / FRAGMENT).read_text())
    assert fragment["strides"] == original["strides"] and fragment["patch_size"] == original["patch_size"]
    assert (override / "datalist.json").read_text() == (tmp_path / "unetpp_0" / "datalist.json").read_text()
    assert (override / "configs" / "train.json").is_file()


def test_every_fold_is_trained_and_scored(trained):
    history = import_bundle_algo_history(str(trained["work"]), only_trained=True)
    assert sorted(h[AlgoKeys.ID] for h in history) == ["unetpp_0", "unetpp_1"]
    for entry in history:
        algo_dir = trained["work"] / entry[AlgoKeys.ID]
        record = best_record(algo_dir / "models" / "model.pt")
        assert record is not None and record["epoch"] == 1
        assert 0.0 <= entry[AlgoKeys.SCORE] <= 1.0
        assert entry[AlgoKeys.SCORE] == pytest.approx(record["metric"])
        assert entry[AlgoKeys.ALGO].get_score() == pytest.approx(record["metric"])


def test_training_parameters_reach_the_training(trained):
    for fold in (0, 1):
        algo_dir = trained["work"] / f"unetpp_{fold}"
        state = torch.load(algo_dir / "models" / "last.ckpt", weights_only=True)
        trainer = state["trainer"]
        assert trainer["max_epochs"] == 1 and trainer["iteration"] == trainer["epoch_length"]  # num_epochs
        assert state["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(LEARNING_RATE)  # learning_rate
        assert state["lr_scheduler"]["T_max"] == 1
        levels = len(yaml.safe_load((algo_dir / "configs" / FRAGMENT).read_text())["features"])
        widths = {weight.shape[0] for weight in state["network"].values() if weight.ndim == 5}
        assert max(widths) == max(TINY_WIDTHS[:levels])  # features, over the plan's
        fragment = yaml.safe_load((algo_dir / "configs" / FRAGMENT).read_text())
        assert fragment["patch_size"] == [16, 16, 16] and fragment["learning_rate"] == LEARNING_RATE
        log = (algo_dir / "runs" / "train.log").read_text()
        assert "Epoch[1] Complete" in log and "Epoch[2]" not in log


def test_ensemble_writes_predictions(trained):
    data = trained["data"]
    outputs = sorted((trained["work"] / "ensemble_output").rglob("*.nii.gz"))
    assert len(outputs) == 2
    for case in trained["datalist"]["testing"]:
        image = nib.load(data / case["image"])
        name = Path(case["image"]).name.replace(".nii.gz", "_ensemble.nii.gz")
        (prediction_path,) = [p for p in outputs if p.name == name]
        prediction = nib.load(prediction_path)
        assert prediction.shape == image.shape == SHAPE
        np.testing.assert_allclose(prediction.affine, image.affine, atol=1e-4)
        values = np.unique(np.asarray(prediction.dataobj))
        assert prediction.get_data_dtype() == np.uint8 and set(values.tolist()) <= set(range(NUM_CLASSES))


def test_inferer_gives_probabilities_on_the_image_grid(trained):
    algo = import_bundle_algo_history(str(trained["work"]), only_trained=True)[0][AlgoKeys.ALGO]
    image = trained["data"] / trained["datalist"]["testing"][0]["image"]
    (probabilities,) = algo.predict([{"image": str(image)}], {"num_sw_batch_size": 2})
    assert tuple(probabilities.shape) == (NUM_CLASSES, *SHAPE)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(SHAPE), atol=1e-4, rtol=0)


def test_a_fold_is_a_monai_bundle(trained, monkeypatch):
    """``python -m monai.bundle run`` from the fold's folder: inference.json + the fragment segment the test list."""
    algo_dir = trained["work"] / "unetpp_1"
    monkeypatch.chdir(algo_dir)
    workflow = ConfigWorkflow(
        config_file=["configs/inference.json", f"configs/{FRAGMENT}"], workflow_type="infer", num_workers=0
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    segmentations = sorted((algo_dir / "eval").glob("*_seg.nii.gz"))
    assert len(segmentations) == 2
    assert nib.load(segmentations[0]).shape == SHAPE


def test_widths_of_another_depth_than_the_plan_are_refused_before_training(generated, tmp_path):
    algo_dir = tmp_path / "unetpp_0"
    shutil.copytree(generated["work"] / "unetpp_0", algo_dir)
    levels = len(yaml.safe_load((algo_dir / "configs" / FRAGMENT).read_text())["strides"]) + 1

    def models() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in (algo_dir / "models").glob("*")}

    before = models()
    with pytest.raises(ValueError, match=f"has {levels - 1} widths, but the plan in .* has {levels} levels"):
        run_training(algo_dir, features=list(TINY_WIDTHS[: levels - 1]), num_epochs=1, overwrite=True)
    assert models() == before


def test_training_command_layers_the_configs(generated):
    algo = import_bundle_algo_history(str(generated["work"]), only_trained=False)[0][AlgoKeys.ALGO]
    algo.device_setting.update({"n_devices": 1, "NUM_NODES": 1, "CMD_PREFIX": ""})
    cmd, _ = algo._create_cmd({"num_epochs": 3, "patch_size": [16, 16, 16]})
    assert f"--config_file={command_value('c', training_configs(algo.output_path))}" in cmd
    assert "--num_epochs=3" in cmd and "--patch_size=[16,16,16]" in cmd
    algo.device_setting.update({"n_devices": 2, "CUDA_VISIBLE_DEVICES": "0,1"})
    cmd, _ = algo._create_cmd({})
    assert cmd.startswith(str(Path(algo.output_path, "scripts", "train.py").as_posix()))  # torchrun prepends itself
    assert "multi_gpu_train.json" in cmd
    with pytest.raises(ValueError, match="bundle_root"):
        algo._create_cmd({"bundle_root": "/elsewhere"})
    assert inference_configs(algo.output_path)[-1].endswith(FRAGMENT)


@pytest.mark.parametrize(
    "value", [[16, 16, 16], [0.5, 1.5], ["/a/train.json", "/b/hyper_parameters.yaml"], 0.003, True, "true", "1e-3"]
)
def test_command_values_read_back_through_fire(value):
    assert fire.Fire(lambda x: x, command=[f"--x={command_value('x', value)}"]) == value


def test_auto3dseg_names_map_onto_bundle_ids():
    assert bundle_ids({"num_epochs": 2, "num_epochs_per_validation": 1, "learning_rate": 0.1, "train#x": 1}) == {
        "epochs": 2,
        "val_interval": 1,
        "learning_rate": 0.1,
        "train::x": 1,
    }
    with pytest.raises(ValueError, match="num_epochs=2 and epochs=3"):
        bundle_ids({"num_epochs": 2, "epochs": 3})
    with pytest.raises(ValueError, match="whitespace"):
        command_value("dataset_dir", "/my data")


def test_bad_inputs_are_named(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}))
    with pytest.raises(ValueError, match=f"{datalist}.*no 'fold' entry"):
        fold_datalist(datalist, tmp_path, 0)
    with pytest.raises(ValueError, match="no case in fold 3"):
        fold_datalist({"training": [{"image": "a", "label": "b", "fold": 0}]}, tmp_path, 3)
    with pytest.raises(ValueError, match="exclusive classes"):
        class_names({"class_names": [{"name": "tumour", "index": [1, 2]}]}, 3)
    with pytest.raises(ValueError, match="2 foreground names"):
        class_names({"class_names": ["a", "b", "c", "d"]}, 3)


def test_training_resumes_and_keeps_an_earlier_model(trained):
    """Runs last: fold 1 trains on. Without resume or overwrite a new training refuses to replace its model."""
    algo_dir = trained["work"] / "unetpp_1"
    before = (algo_dir / "models" / "model.pt").read_bytes()
    with pytest.raises(RuntimeError) as refused:
        run_training(algo_dir, num_epochs=2, num_workers=0)
    assert isinstance(refused.value.__cause__, CheckpointError) and "--resume true" in str(refused.value.__cause__)
    assert (algo_dir / "models" / "model.pt").read_bytes() == before
    assert yaml.safe_load((algo_dir / "configs" / FRAGMENT).read_text())["epochs"] == 1  # the refused run left it
    run_training(algo_dir, resume=True, num_epochs=2, num_workers=0)
    trainer = torch.load(algo_dir / "models" / "last.ckpt", weights_only=True)["trainer"]
    assert trainer["max_epochs"] == 2 and trainer["iteration"] == 2 * trainer["epoch_length"]
    assert "Epoch[2] Complete" in (algo_dir / "runs" / "train.log").read_text()
    fragment = yaml.safe_load((algo_dir / "configs" / FRAGMENT).read_text())
    assert fragment["epochs"] == 2 and "resume" not in fragment
