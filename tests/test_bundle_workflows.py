"""The bundles' standard commands, in model-zoo order on tiny settings: train, resume, evaluate, infer, export.

Each bundle runs from its own folder in the repository with ``bundle_root`` in a temporary folder, so models, logs,
predictions and the (tiny) demo data land there, as for a user who points ``bundle_root`` elsewhere.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, onnx_export, run, verify_net_in_out
from pictures import assert_real_picture

from monai_unetpp import UNetPlusPlusInferer
from monai_unetpp.data import make_demo_dataset
from monai_unetpp.visualize import montage_size

BUNDLES = Path(__file__).parents[1] / "bundles"

#: overrides that make every command take seconds: a 2-level network, small patches, one epoch of two cases
TINY = {
    "features": [4, 8, 16],
    "batch_size": 1,
    "num_samples": 1,
    "epochs": 1,
    "val_interval": 1,
    "num_workers": 0,
    "sw_batch_size": 4,
}
PATCH = {3: [16, 16, 16], 2: [16, 16]}


class Bundle:
    """A bundle folder with its outputs under ``root``."""

    def __init__(self, spatial_dims: int, root: Path, progress_bar: bool | str) -> None:
        self.spatial_dims = spatial_dims
        self.configs = BUNDLES / f"unetpp_{spatial_dims}d_segmentation" / "configs"
        self.root = root
        self.overrides = {
            **TINY,
            "patch_size": PATCH[spatial_dims],
            "bundle_root": str(root),
            "progress_bar": progress_bar,
        }

    def files(self, *names: str) -> list[str]:
        return [str(self.configs / name) for name in names]

    def workflow(self, names: list[str], workflow_type: str | None, **overrides) -> ConfigWorkflow:
        workflow = ConfigWorkflow(
            config_file=self.files(*names), workflow_type=workflow_type, **{**self.overrides, **overrides}
        )
        workflow.initialize()
        return workflow

    def network(self) -> torch.nn.Module:
        parser = ConfigParser()
        parser.read_config(self.files("inference.json"))
        parser.update(self.overrides)
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(self.root / "models" / "model.pt", weights_only=True))
        return net.eval()


@pytest.fixture(scope="module", params=[3, 2], ids=["3d", "2d"])
def trained(request, tmp_path_factory) -> Bundle:
    """A bundle trained for one epoch on a tiny demo set (3 cases of 32 voxels a side: 2 train, 1 validation)."""
    dims = request.param
    # the 2D run gets the flag as the command line passes it: a string
    bundle = Bundle(dims, tmp_path_factory.mktemp(f"bundle{dims}d"), progress_bar=True if dims == 3 else "false")
    make_demo_dataset(bundle.root / "data", spatial_dims=dims, num_cases=3, num_test=1, shape=(32,) * dims)
    workflow = bundle.workflow(["train.json"], "train")
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    return bundle


def test_train_writes_an_atomic_plain_state_dict_logs_and_a_training_state(trained):
    models = trained.root / "models"
    assert sorted(p.name for p in models.iterdir()) == ["last.ckpt", "model.pt"]  # no temporary file left
    net = trained.network()  # model.pt is a plain state_dict that torch.load(weights_only=True) reads
    assert net.deep_supervision and net.spatial_dims == trained.spatial_dims
    state = torch.load(models / "last.ckpt", weights_only=True)
    assert set(state) == {"network", "optimizer", "lr_scheduler", "best_model", "trainer"}
    assert state["trainer"]["iteration"] == 2  # one epoch of two cases
    assert list((trained.root / "runs").glob("events.out.tfevents.*"))
    assert_real_picture(trained.root / "runs" / "training_curves.png", (1000, 400))


def test_resume_continues_from_the_last_epoch(trained):
    workflow = trained.workflow(["train.json"], "train", resume="true", epochs=2)  # as `--resume true` gives it
    workflow.run()
    assert workflow.trainer.state.epoch == 2
    assert workflow.trainer.state.iteration == 4  # 2 from the first run, 2 from this one
    assert torch.load(trained.root / "models" / "last.ckpt", weights_only=True)["trainer"]["iteration"] == 4


def test_evaluate_reports_per_class_dice_and_hd95(trained):
    workflow = trained.workflow(["train.json", "evaluate.json"], None)
    workflow.run()
    with open(trained.root / "eval" / "metrics_per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows] == ["organ", "lesion"]
    for row in rows:
        assert 0.0 <= float(row["val_mean_dice"]) <= 1.0
        assert set(row) == {"class", "val_mean_dice", "val_hd95"}
    montages = sorted((trained.root / "eval" / "montages").glob("*_montage.png"))
    assert len(montages) == 1  # the one validation case
    assert_real_picture(montages[0], montage_size(trained.spatial_dims, has_label=True, num_classes=3))


def test_inference_writes_segmentations_in_the_image_space(trained):
    workflow = trained.workflow(["inference.json"], "infer")
    assert workflow.check_properties() == []
    workflow.run()
    image = sorted((trained.root / "data" / "imagesTs").iterdir())[0]
    pred = trained.root / "eval" / image.name.replace(".nii.gz", "_seg.nii.gz")
    source, seg = nib.load(image), nib.load(pred)
    assert seg.shape == source.shape
    np.testing.assert_allclose(seg.affine, source.affine, atol=1e-4)
    assert seg.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
    montage = trained.root / "eval" / image.name.replace(".nii.gz", "_montage.png")
    assert_real_picture(montage, montage_size(trained.spatial_dims, has_label=False, num_classes=3))


def test_inference_mode_and_depth_from_the_command_line(trained, tmp_path):
    # the keyword overrides of `python -m monai.bundle run ... --inference_depth 1 --inference_mode mean
    # --output_dir DIR --dataset#data "[{'image': PATH}]"`, on a training image this time
    image = sorted((trained.root / "data" / "imagesTr").iterdir())[0]
    run(
        config_file=trained.files("inference.json"),
        meta_file=trained.files("metadata.json")[0],
        logging_file=trained.files("logging.conf")[0],
        **{
            **trained.overrides,
            "inference_depth": 1,
            "inference_mode": "mean",
            "output_dir": str(tmp_path),
            "dataset#data": [{"image": str(image)}],
        },
    )
    assert [p.name for p in tmp_path.glob("*_seg.nii.gz")] == [image.name.replace(".nii.gz", "_seg.nii.gz")]
    parser = ConfigParser()
    parser.read_config(trained.files("inference.json"))
    parser.update({**trained.overrides, "inference_depth": 1, "inference_mode": "mean"})
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, UNetPlusPlusInferer)
    assert (inferer.inference_depth, inferer.inference_mode) == (1, "mean")


def test_exports_give_the_checkpoint_outputs(trained):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    models = trained.root / "models"
    common = {
        "net_id": "network_def",
        "ckpt_file": str(models / "model.pt"),
        "meta_file": trained.files("metadata.json")[0],
        "config_file": trained.files("inference.json"),
        **trained.overrides,
    }
    size = [1, 1, *PATCH[trained.spatial_dims]]
    ckpt_export(filepath=str(models / "model.ts"), **common)
    onnx_export(filepath=str(models / "model.onnx"), use_trace=True, input_shape=size, **common)

    x = torch.randn(size)
    with torch.no_grad():
        expected = trained.network()(x)
    torch.testing.assert_close(torch.jit.load(str(models / "model.ts"))(x), expected, atol=1e-4, rtol=1e-4)
    session = onnxruntime.InferenceSession(str(models / "model.onnx"))
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_out, expected.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_verify_net_in_out_with_the_default_network(spatial_dims):
    configs = BUNDLES / f"unetpp_{spatial_dims}d_segmentation" / "configs"
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        device="cpu",
        n=1,
    )
