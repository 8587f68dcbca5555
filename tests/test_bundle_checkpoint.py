"""Atomic checkpoints, resuming and the per-class report of monai_unetpp.bundle, on real ignite engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import tiny_net
from ignite.engine import Engine, Events

from monai_unetpp.bundle import (
    BestCheckpointSaver,
    ClassMetricsReport,
    TrainingStateCheckpoint,
    atomic_save,
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
    assert saver.state_dict() == {"best_metric": 0.5, "best_metric_epoch": 2}
    assert all(torch.equal(saved[k], weights_at[2][k]) for k in saved)
    tiny_net(depth=1).load_state_dict(saved)  # loadable without any wrapping key


def test_best_checkpoint_saver_restored_state_blocks_a_worse_model(tmp_path):
    saver = BestCheckpointSaver(tmp_path, {"model": tiny_net(depth=1)})
    saver.load_state_dict({"best_metric": 0.9, "best_metric_epoch": 7})
    engine = engine_with_metrics([0.5])
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    assert not (tmp_path / "model.pt").exists()
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
