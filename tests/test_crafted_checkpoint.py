"""A crafted checkpoint that runs code when unpickled is refused by every path that loads one: bundle inference and
evaluation, resuming a training, export, and the MONAI Label infer task.

With the package's floors (torch >= 2.6, MONAI >= 1.5.1) every load is ``weights_only``; MONAI 1.5.0's
``CheckpointLoader`` and torch < 2.6's default were not, and ran the file's code.
"""

from __future__ import annotations

import pickle
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import BUNDLE_3D, TINY_BUNDLE, tiny_net
from ignite.engine import Engine
from monai.bundle import ConfigWorkflow, ckpt_export

from monai_unetpp.bundle import TrainingStateCheckpoint
from monai_unetpp.data import make_demo_dataset

TINY = TINY_BUNDLE


class Payload:
    """Unpickling this creates ``marker``: the stand-in for any code an attacker's file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Payload(marker)}, path)
    return path


def refused(error: BaseException | None) -> bool:
    """Whether ``error`` or one of its causes is torch's refusal of a weights-only load."""
    while error is not None:
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def test_the_payload_runs_where_a_load_is_not_weights_only(tmp_path):
    # the control: what every load path below must prevent
    marker = tmp_path / "pwned"
    torch.load(crafted(tmp_path / "model.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.fixture
def bundle(tmp_path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(BUNDLE_3D / "configs", root / "configs")
    make_demo_dataset(root / "data", num_cases=2, num_test=1, shape=(32, 32, 32))
    return root


@pytest.mark.parametrize("files", [["inference.json"], ["train.json", "evaluate.json"]], ids=["inference", "evaluate"])
def test_bundle_inference_and_evaluation_refuse_it(bundle, files):
    marker = bundle / "pwned"
    crafted(bundle / "models" / "model.pt", marker)
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / f) for f in files], workflow_type=None, bundle_root=str(bundle), **TINY
    )
    with pytest.raises(Exception) as caught:
        workflow.initialize()
        workflow.run()
    assert refused(caught.value), repr(caught.value)
    assert not marker.exists()


def test_resume_refuses_it(tmp_path):
    marker = tmp_path / "pwned"
    crafted(tmp_path / "last.ckpt", marker)
    net = tiny_net(depth=1)
    handler = TrainingStateCheckpoint(tmp_path, {"network": net}, resume=True)
    engine = Engine(lambda e, b: None)
    with pytest.raises(pickle.UnpicklingError):
        handler.load(engine)
    assert not marker.exists()


def test_export_refuses_it(bundle):
    marker = bundle / "pwned"
    model = crafted(bundle / "models" / "model.pt", marker)
    with pytest.raises(Exception) as caught:
        ckpt_export(
            net_id="network_def",
            filepath=str(bundle / "models" / "model.ts"),
            ckpt_file=str(model),
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=str(bundle / "configs" / "inference.json"),
            bundle_root=str(bundle),
            **TINY,
        )
    assert refused(caught.value), repr(caught.value)
    assert not marker.exists()


def test_monai_label_infer_task_refuses_it(tmp_path):
    from label_support.server import run_in_venv

    marker = tmp_path / "pwned"
    model = crafted(tmp_path / "model.pt", marker)
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import pickle
            from monai_unetpp import UNetPlusPlus
            from monai_unetpp.label import UNetPlusPlusInferTask

            net = UNetPlusPlus(3, 1, 2, features=(4, 8), deep_supervision=True)
            task = UNetPlusPlusInferTask(path=[{str(model)!r}], network=net, labels={{"organ": 1}})
            try:
                task._get_network("cpu", {{}})
            except pickle.UnpicklingError as error:
                print("refused:", str(error).splitlines()[0])
            """
        )
    )
    out = run_in_venv([str(script)], tmp_path)
    assert "refused: Weights only load failed" in out, out
    assert not marker.exists()
