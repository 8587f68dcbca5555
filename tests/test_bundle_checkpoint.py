"""Atomic checkpoints, the best model's own record, resuming, the checkpoint-folder guard and the per-class report of
monai_unetpp.bundle, on real ignite engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import seeded, tiny_net
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from monai_unetpp.bundle import (
    BestCheckpointSaver,
    CheckpointCheck,
    CheckpointError,
    CheckpointGuard,
    ClassMetricsReport,
    TrainingStateCheckpoint,
    atomic_save,
    best_record,
    checked_checkpoint,
    to_bool,
)


class FailsWhilePickled:
    """Pickling raises after torch.save has started writing: a save that breaks half way."""

    def __reduce__(self):
        raise OSError("disk full")


def test_atomic_save_keeps_the_previous_file_when_a_save_fails(tmp_path):
    path = tmp_path / "model.pt"
    good = tiny_net(depth=1).state_dict()
    atomic_save(good, path)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"weights": good, "broken": FailsWhilePickled()}, path)
    restored = torch.load(path, weights_only=True)
    assert restored.keys() == good.keys()
    assert all(torch.equal(restored[k], good[k]) for k in good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_save_survives_a_process_killed_mid_save(tmp_path):
    path, started = tmp_path / "model.pt", tmp_path / "started"
    atomic_save({"epoch": torch.tensor(1)}, path)
    child = textwrap.dedent(
        f"""
        import pathlib, time, torch
        from monai_unetpp.bundle import atomic_save

        class Slow:
            def __reduce__(self):
                pathlib.Path({str(started)!r}).touch()
                time.sleep(60)
                return (int, (0,))

        atomic_save({{"epoch": torch.tensor(2), "slow": Slow()}}, {str(path)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, "the saving process ended before it started to save"
            assert time.monotonic() < deadline, "the saving process never started to save"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert torch.load(path, weights_only=True)["epoch"].item() == 1


def engine_with_metrics(values: list[float]) -> Engine:
    """An evaluator-like engine whose epoch e reports values[e - 1] as its key metric."""
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "val_mean_dice"

    @engine.on(Events.EPOCH_COMPLETED)
    def set_metric(e):
        e.state.metrics["val_mean_dice"] = values[e.state.epoch - 1]

    return engine


def test_best_checkpoint_saver_keeps_the_best_model_as_a_plain_state_dict(tmp_path):
    net = tiny_net(depth=1)
    saver = BestCheckpointSaver(tmp_path, {"model": net})
    engine = engine_with_metrics([0.2, 0.5, 0.4])
    saver.attach(engine)
    weights_at = {}

    @engine.on(Events.EPOCH_COMPLETED)
    def change_weights(e):
        weights_at[e.state.epoch] = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)

    engine.run([0], max_epochs=3)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saver.state_dict() == {"best_metric": 0.5, "best_metric_epoch": 2, "run": saver.run_id}
    assert all(torch.equal(saved[k], weights_at[2][k]) for k in saved)
    tiny_net(depth=1).load_state_dict(saved)  # loadable without any wrapping key
    # the file carries its own score, beside the per-module versions that load_state_dict reads
    assert best_record(tmp_path / "model.pt") == {
        "metric": 0.5,
        "metric_name": "val_mean_dice",
        "epoch": 2,
        "run": saver.run_id,
    }


def test_best_checkpoint_saver_restored_state_blocks_a_worse_model(tmp_path):
    atomic_save(tiny_net(depth=1).state_dict(), tmp_path / "model.pt")  # a model.pt without a record
    before = (tmp_path / "model.pt").read_bytes()
    saver = BestCheckpointSaver(tmp_path, {"model": tiny_net(depth=1)})
    saver.load_state_dict({"best_metric": 0.9, "best_metric_epoch": 7})
    engine = engine_with_metrics([0.5])
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    assert (tmp_path / "model.pt").read_bytes() == before
    with pytest.raises(ValueError, match="save_dict is empty"):
        BestCheckpointSaver(tmp_path, {})


def train_engine(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Engine:
    def step(engine, batch):
        optimizer.zero_grad()
        loss = net(batch)[0].mean()
        loss.backward()
        optimizer.step()

    return Engine(step)


def test_training_state_checkpoint_resumes_after_the_saved_epoch(tmp_path):
    torch.manual_seed(0)
    data = [torch.randn(1, 1, 8, 8, 8) for _ in range(2)]
    net = tiny_net(depth=1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01)
    first = train_engine(net, optimizer)
    TrainingStateCheckpoint(tmp_path, {"network": net, "optimizer": optimizer}).attach(first)
    first.run(data, max_epochs=2)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["trainer"]["iteration"] == 4 and state["trainer"]["epoch_length"] == 2  # ignite: epoch 2

    resumed_net = tiny_net(depth=1)
    resumed_optimizer = torch.optim.AdamW(resumed_net.parameters(), lr=0.01)
    second = train_engine(resumed_net, resumed_optimizer)
    epochs_run = []
    second.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    checkpoint = TrainingStateCheckpoint(
        tmp_path, {"network": resumed_net, "optimizer": resumed_optimizer}, resume=True
    )
    checkpoint.attach(second)
    loaded = []
    second.add_event_handler(
        Events.STARTED,
        lambda e: loaded.append(
            all(torch.equal(a, b) for a, b in zip(net.parameters(), resumed_net.parameters(), strict=True))
        ),
    )
    second.run(data, max_epochs=3)
    assert loaded == [True]  # the network starts from the saved weights
    assert epochs_run == [3]
    assert second.state.iteration == 6
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["trainer"]["iteration"] == 6


def test_training_state_checkpoint_errors(tmp_path):
    net = tiny_net(depth=1)
    with pytest.raises(ValueError, match="interval must be a positive"):
        TrainingStateCheckpoint(tmp_path, {"network": net}, interval=0)
    with pytest.raises(ValueError, match="already has the key 'trainer'"):
        TrainingStateCheckpoint(tmp_path, {"trainer": net})
    engine = train_engine(net, torch.optim.SGD(net.parameters(), lr=0.1))
    TrainingStateCheckpoint(tmp_path, {"network": net}, resume=True).attach(engine)
    with pytest.raises(FileNotFoundError, match="no training state at"):
        engine.run([torch.randn(1, 1, 8, 8, 8)], max_epochs=1)


def test_class_metrics_report_names_classes_and_writes_csv(tmp_path, caplog):
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def set_details(e):
        e.state.metric_details = {
            "val_mean_dice": torch.tensor([[0.9, 0.5], [0.7, float("nan")]]),
            "val_hd95": torch.tensor([[1.0, 3.0], [2.0, 5.0]]),
        }

    report = ClassMetricsReport(
        tmp_path, ["val_mean_dice", "val_hd95"], {"0": "background", "1": "organ", "2": "lesion"}
    )
    report.attach(engine)
    with caplog.at_level("INFO"):
        engine.run([0], max_epochs=1)
    lines = (tmp_path / "metrics_per_class.csv").read_text().splitlines()
    assert lines[0] == "class,val_mean_dice,val_hd95"
    organ, lesion = (line.split(",") for line in lines[1:])
    assert organ[0] == "organ" and float(organ[1]) == pytest.approx(0.8) and float(organ[2]) == pytest.approx(1.5)
    assert lesion[0] == "lesion" and float(lesion[1]) == pytest.approx(0.5)  # NaN (absent class) ignored
    assert "organ" in caplog.text and "0.8000" in caplog.text

    wrong = ClassMetricsReport(tmp_path, "val_mean_dice", ["background", "organ"])
    with pytest.raises(ValueError, match="2 classes but 1 class names"):
        wrong(engine)


@pytest.mark.parametrize(
    "value, expected", [(True, True), ("true", True), ("False", False), ("no", False), ("1", True), (0, False)]
)
def test_to_bool_reads_command_line_flags(value, expected):
    assert to_bool(value) is expected


def test_to_bool_rejects_other_values():
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        to_bool("maybe", "resume")
    with pytest.raises(ValueError, match="must be true or false"):
        TrainingStateCheckpoint("models", {"network": tiny_net(depth=1)}, resume="ture")


# --- the best model carries its score: no crash order makes them disagree ------------------------------------------


def validate_with(saver: BestCheckpointSaver, dice: dict[int, float]):
    """A trainer handler that validates as MONAI's ValidationHandler does: an evaluator run at the trainer's epoch,
    here one that reports dice[epoch]."""

    def validate(trainer: Engine) -> None:
        evaluator = Engine(lambda e, b: None)
        evaluator.state.epoch = trainer.state.epoch
        evaluator.state.key_metric_name = "val_mean_dice"
        evaluator.state.metrics = {"val_mean_dice": dice[trainer.state.epoch]}
        saver(evaluator)

    return validate


def crash_at(epoch: int):
    """A trainer handler that kills the run at the end of ``epoch``: after validation, before the training state."""

    def crash(trainer: Engine) -> None:
        if trainer.state.epoch == epoch:
            raise KeyboardInterrupt("killed between the model.pt and the last.ckpt saves")

    return crash


def training_run(folder, dice: dict[int, float], resume: bool = False, crash: int | None = None, max_epochs: int = 2):
    """A trainer with the bundles' handler order: validation (model.pt), then the training state (last.ckpt)."""
    net = tiny_net(depth=1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    saver = BestCheckpointSaver(folder, {"model": net})
    trainer = train_engine(net, optimizer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate_with(saver, dice))
    if crash is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, crash_at(crash))
    state = TrainingStateCheckpoint(
        folder, {"network": net, "optimizer": optimizer, "best_model": saver}, resume=resume
    )
    state.attach(trainer)
    data = [seeded(1, 1, 8, 8, 8, seed=i) for i in range(2)]
    if crash is None:
        trainer.run(data, max_epochs=max_epochs)
    else:
        with pytest.raises(KeyboardInterrupt):
            trainer.run(data, max_epochs=max_epochs)
    return saver


def test_a_crash_between_the_two_saves_never_lets_a_worse_model_replace_the_better_one(tmp_path):
    # epoch 1: Dice 0.5, both files saved; epoch 2: Dice 0.9, model.pt saved, killed before last.ckpt
    training_run(tmp_path, {1: 0.5, 2: 0.9}, crash=2)
    best = (tmp_path / "model.pt").read_bytes()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["best_model"]["best_metric"] == 0.5  # stale
    # the resumed run repeats epoch 2 and gets 0.7: better than last.ckpt's 0.5, worse than the model on disk
    saver = training_run(tmp_path, {2: 0.7}, resume=True)
    assert (tmp_path / "model.pt").read_bytes() == best
    assert best_record(tmp_path / "model.pt")["metric"] == saver.best_metric == 0.9
    assert saver.best_metric_epoch == 2


def test_a_model_of_another_run_is_replaced_by_the_resumed_run(tmp_path):
    # run A: Dice 0.9 at epoch 1; run B (--overwrite) saves model.pt (Dice 0.3) and is killed before its last.ckpt
    training_run(tmp_path, {1: 0.9}, max_epochs=1)
    training_run(tmp_path, {1: 0.3}, crash=1, max_epochs=1)
    # resuming A: its best model is gone, so its next validation (0.4 < 0.9) writes one, and score and file agree
    saver = training_run(tmp_path, {2: 0.4}, resume=True)
    record = best_record(tmp_path / "model.pt")
    assert (record["metric"], record["epoch"], record["run"]) == (0.4, 2, saver.run_id)
    assert (saver.best_metric, saver.best_metric_epoch) == (0.4, 2)


# --- loading: a damaged file is named, with the fix ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_training_state_is_named_with_the_fix(tmp_path, damage):
    net = tiny_net(depth=1)
    path = atomic_save({"network": net.state_dict(), "trainer": {"epoch": 1}}, tmp_path / "last.ckpt")
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    handler = TrainingStateCheckpoint(tmp_path, {"network": net}, resume=True)
    with pytest.raises(CheckpointError) as raised:
        handler.load(Engine(lambda e, b: None))
    message = str(raised.value)
    assert str(path) in message and ("is empty" if damage == "empty" else "is truncated") in message
    assert "train without resume" in message
    with pytest.raises(CheckpointError, match=r"model.pt \(100 bytes\) is truncated"):
        (tmp_path / "model.pt").write_bytes(data[:100])
        checked_checkpoint(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="Train the bundle first"):
        checked_checkpoint(tmp_path / "missing.pt")


# --- the guard of the checkpoint folder -------------------------------------------------------------------------


def guarded_trainer(folder, **guard) -> Engine:
    engine = Engine(lambda e, b: None)
    CheckpointGuard(folder, **guard).attach(engine)
    return engine


def test_the_guard_refuses_to_replace_an_earlier_run_unless_told(tmp_path):
    atomic_save(tiny_net(depth=1).state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError) as raised:
        guarded_trainer(tmp_path).run([0], max_epochs=1)
    message = str(raised.value)
    # a model alone (a bundle as shipped) holds no training state: only a new run may replace it
    assert str(tmp_path / "model.pt") in message and "--overwrite true" in message
    assert "--resume true" not in message and "no training state to resume (last.ckpt)" in message
    atomic_save({"trainer": {}}, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match="Pass --resume true to continue that run.*or --overwrite true"):
        guarded_trainer(tmp_path).run([0], max_epochs=1)
    (tmp_path / "last.ckpt").unlink()
    assert not (tmp_path / "training.lock").exists()  # released on the way out
    for allowed in ({"resume": "true"}, {"overwrite": "true"}):
        guarded_trainer(tmp_path, **allowed).run([0], max_epochs=1)
    # a run that starts from this model.pt (MONAI Label adds a CheckpointLoader of it to fine-tune) may replace it
    engine = guarded_trainer(tmp_path)
    net = tiny_net(depth=1)
    CheckpointLoader(str(tmp_path / "model.pt"), {"model": net}).attach(engine)
    engine.run([0], max_epochs=1)


def test_the_guard_releases_the_lock_and_keeps_ignites_exception_semantics(tmp_path):
    engine = guarded_trainer(tmp_path)

    @engine.on(Events.EPOCH_COMPLETED)
    def fail(e):
        assert (tmp_path / "training.lock").is_file()  # held while training
        raise ValueError("a failure mid-run")

    with pytest.raises(ValueError, match="a failure mid-run"):  # not swallowed by the guard's own handler
        engine.run([0], max_epochs=1)
    assert not (tmp_path / "training.lock").exists()
    guarded_trainer(tmp_path).run([0], max_epochs=1)  # the folder is free again
    assert not (tmp_path / "training.lock").exists()


def test_the_check_names_a_model_of_another_network_before_the_loader_runs(tmp_path):
    atomic_save(tiny_net(depth=1).state_dict(), tmp_path / "model.pt")
    CheckpointCheck(tmp_path / "model.pt", network=tiny_net(depth=1))(Engine(lambda e, b: None))
    atomic_save({"model": tiny_net(depth=1).state_dict()}, tmp_path / "wrapped.pt")  # as the trainer saves it
    CheckpointCheck(tmp_path / "wrapped.pt", network=tiny_net(depth=1))(Engine(lambda e, b: None))
    with pytest.raises(CheckpointError, match=r"model.pt holds the weights of another network .* first encoder"):
        CheckpointCheck(tmp_path / "model.pt", network=tiny_net(depth=2))(Engine(lambda e, b: None))
