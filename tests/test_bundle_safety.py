"""No silent wrong output, nothing lost: the 3D bundle's own configs on tiny settings, against a mistyped dataset
folder, a longer resumed run, a second run into the same folder, a new run over a trained model, a read-only
checkpoint folder, left-over temporary files, a damaged model.pt and an empty test list."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BUNDLE_3D, TINY_BUNDLE
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow

from monai_unetpp.bundle import CheckpointError
from monai_unetpp.data import DatasetError, make_demo_dataset

CONFIGS = BUNDLE_3D / "configs"
#: one epoch of two 32^3 cases with a 2-level network on 16^3 patches, validated at its end
TINY = {**TINY_BUNDLE, "epochs": 1, "save_montages": False}


def workflow(root: Path, files: list[str], workflow_type: str | None, **overrides) -> ConfigWorkflow:
    flow = ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in files],
        workflow_type=workflow_type,
        bundle_root=str(root),
        **{**TINY, **overrides},
    )
    flow.initialize()
    return flow


def cause(error: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in an exception chain (config evaluation wraps what the components raise)."""
    while error is not None and not isinstance(error, kind):
        error = error.__cause__ or error.__context__
    return error


def fails_with(flow: ConfigWorkflow, kind: type[BaseException]) -> str:
    with pytest.raises(Exception) as raised:
        flow.run()
    error = cause(raised.value, kind)
    assert error is not None, f"expected a {kind.__name__}, got {raised.value!r}"
    return str(error)


@contextmanager
def logged(name: str) -> Iterator[list[str]]:
    """The messages of the logger ``name`` (caplog's handler does not survive the bundle's logging.conf)."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger(name).addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger(name).removeHandler(handler)


def model_files(root: Path) -> dict[str, bytes]:
    return {name: (root / "models" / name).read_bytes() for name in ("model.pt", "last.ckpt")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A bundle folder with data (3 cases, 1 test image) and a model trained for one epoch."""
    root = tmp_path_factory.mktemp("trained")
    make_demo_dataset(root / "data", num_cases=3, num_test=1, shape=(32, 32, 32))
    flow = workflow(root, ["train.json"], "train")
    flow.run()
    flow.finalize()
    return root


@pytest.fixture
def bundle(trained, tmp_path) -> Path:
    """A copy of the trained bundle folder, for a test to change."""
    return Path(shutil.copytree(trained, tmp_path / "bundle"))


# --- 3. demo data only when asked for ------------------------------------------------------------------------------


def test_a_mistyped_dataset_dir_stops_the_run_and_writes_nothing(bundle):
    before = model_files(bundle)
    typo = bundle / "dataa"
    for files, kind in ((["train.json"], "train"), (["inference.json"], "infer")):
        message = fails_with(workflow(bundle, files, kind, dataset_dir=str(typo)), DatasetError)
        assert f"dataset_dir {typo} does not exist" in message
        assert "--dataset_dir" in message and "--demo_data true" in message
    assert not typo.exists()  # no demo data written there
    assert model_files(bundle) == before  # nothing trained, nothing replaced


def test_demo_data_is_written_when_asked_for(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({**TINY, "bundle_root": str(tmp_path)})
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content("datalists")
    assert "does not exist" in str(cause(raised.value, DatasetError))
    parser["demo_data"] = "true"  # as the command line passes it
    assert len(parser.get_parsed_content("datalists")["training"]) > 0
    assert (tmp_path / "data" / "dataset.json").is_file()


# --- 5. a longer resumed run keeps decaying -------------------------------------------------------------------------


def test_extending_a_finished_run_continues_the_cosine_decay_to_the_new_end(bundle):
    # the run of `trained` finished its 1 epoch at learning rate 0; `--resume true --epochs 3` extends it
    flow = workflow(bundle, ["train.json"], "train", resume="true", epochs=3)
    optimizer = flow.trainer.optimizer
    lrs = []
    flow.trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
    flow.run()
    base = TINY.get("learning_rate", json.loads((CONFIGS / "train.json").read_text())["learning_rate"])
    # the 3-epoch cosine after epochs 1 and 2, then 0 at its end: never back up to the initial rate
    assert lrs == pytest.approx([base * (1 + math.cos(math.pi * t / 3)) / 2 for t in (1, 2)])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0, abs=1e-12)
    assert flow.trainer.state.epoch == 3


# --- 7. one run per folder, and no silent replacement ---------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from monai_unetpp.bundle.checkpoint import _FolderLock

    _FolderLock(Path(sys.argv[1])).acquire()
    print("locked", flush=True)
    time.sleep(300)
    """
)


def test_a_second_run_into_the_folder_stops_and_a_dead_runs_lock_is_taken_over(bundle):
    lock = bundle / "models" / "training.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = model_files(bundle)
        flow = workflow(bundle, ["train.json"], "train", overwrite="true")
        message = fails_with(flow, CheckpointError)
        assert str(lock) in message and f"PID {holder.pid}" in message
        assert flow.trainer.state.iteration == 0  # before any training
        assert model_files(bundle) == before
    finally:
        holder.kill()
        holder.wait()
    # the killed run left its lock file and, say, two half-written checkpoints
    stale = [bundle / "models" / ".model.pt.k3j2h1.tmp", bundle / "models" / ".last.ckpt.x8a0c.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    assert lock.is_file()
    with logged("monai_unetpp.bundle.checkpoint") as messages:
        workflow(bundle, ["train.json"], "train", overwrite="true").run()
    assert any(f"from PID {holder.pid}" in m for m in messages), messages
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["last.ckpt", "model.pt"]  # lock released


def test_a_new_run_refuses_to_replace_a_trained_model(bundle):
    before = model_files(bundle)
    flow = workflow(bundle, ["train.json"], "train")
    message = fails_with(flow, CheckpointError)
    assert str(bundle / "models" / "model.pt") in message
    assert "--resume true" in message and "--overwrite true" in message
    assert flow.trainer.state.iteration == 0
    assert model_files(bundle) == before


# --- 8. a checkpoint folder that cannot be written ------------------------------------------------------------------


def test_a_read_only_checkpoint_folder_stops_the_run_before_the_first_epoch(trained, tmp_path, monkeypatch):
    root = tmp_path / "bundle"
    shutil.copytree(trained / "data", root / "data")
    models = root / "models"
    models.mkdir()
    models.chmod(0o555)
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, **kwargs):  # root writes into a 0o555 folder anyway: make it refuse as it would for a user
        if Path(kwargs.get("dir") or ".").resolve() == models.resolve():
            raise PermissionError(13, "Permission denied", str(models))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    try:
        flow = workflow(root, ["train.json"], "train")
        message = fails_with(flow, CheckpointError)
    finally:
        models.chmod(0o755)
    assert f"cannot write in the checkpoint folder {models}" in message and "--ckpt_dir" in message
    assert flow.trainer.state.iteration == 0


# --- 10. a damaged model.pt, an empty test list ----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated"])
@pytest.mark.parametrize("files", [["inference.json"], ["train.json", "evaluate.json"]], ids=["infer", "evaluate"])
def test_a_damaged_model_stops_inference_and_evaluation_naming_the_file(bundle, damage, files):
    model = bundle / "models" / "model.pt"
    data = model.read_bytes()
    model.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    message = fails_with(workflow(bundle, files, None), CheckpointError)
    assert str(model) in message and ("is empty" if damage == "empty" else "is truncated") in message
    assert "Train the bundle first" in message


def test_an_empty_test_list_stops_inference_naming_the_dataset(trained, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(trained / "models", root / "models")
    make_demo_dataset(root / "data", num_cases=3, num_test=0, shape=(32, 32, 32))
    message = fails_with(workflow(root, ["inference.json"], "infer"), DatasetError)
    assert f"dataset_dir {root / 'data'} has no test cases" in message and "--dataset#data" in message
    assert not (root / "eval").exists()
