"""The scripts in benchmarks/ run end to end at tiny sizes (smoke tests: no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys

import pytest
import torch
from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"unetpp_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)
    del sys.modules[spec.name]


@pytest.fixture
def bench():
    yield from load_script("benchmark")


@pytest.fixture
def conv_floor():
    yield from load_script("cpu_conv_floor")


def test_quick_run_measures_both_networks_and_writes_json(bench, tmp_path, capsys):
    path = tmp_path / "results.json"
    report = bench.main(["--quick", "--device", "cpu", "--json", str(path)])

    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    assert report["parameters"]["ours"] == report["parameters"]["monai"]
    for check in report["checks"].values():
        flops = check["forward_flops_per_sample"]
        # the same architecture; ours folds upsamplings into convolutions where that saves work
        assert 0 < flops["ours"] <= flops["monai"]
        assert check["max_abs_output_difference"] < 1e-4
    tasks = {(row["task"], row["net"]) for row in report["rows"]}
    for dims in (2, 3):
        for net in ("ours", "ours+checkpointing", "monai"):
            assert (f"train {dims}D", net) in tasks
        for case in ("final", "mean"):
            assert {(f"sliding window {dims}D {case}", net) for net in ("ours", "monai")} <= tasks
        assert {(f"sliding window {dims}D pruned depth {k}", "ours") for k in (1, 2, 3)} <= tasks
    assert all(row["times"] and row["peak_bytes"] > 0 for row in report["rows"])
    assert "| train 3D | fp32 | ours |" in capsys.readouterr().out


def test_settings_follow_the_device_and_the_flags(bench):
    _, cpu = bench.parse_args(["--device", "cpu"])
    assert (cpu.batch, cpu.patch, cpu.threads, cpu.precisions) == (1, 32, 2, ("fp32",))
    assert cpu.sw_sizes() == ((64, 64, 40), 32)
    _, gpu = bench.parse_args(["--device", "cuda", "--volume", "128", "128", "96", "--repeats", "3"])
    assert (gpu.batch, gpu.patch, gpu.volume, gpu.repeats) == (2, 96, (128, 128, 96), 3)
    assert gpu.sw_sizes() == ((128, 128, 96), 96)
    assert "bf16+compile" in gpu.precisions


def test_conv_floor_measures_direct_and_winograd_convolutions(conv_floor, capsys):
    (row,) = conv_floor.main(["--quick"])
    assert row["direct_forward_gflops"] > 0 and row["winograd_gemm_s"] > 0 and row["winograd_transforms_s"] > 0
    # Winograd F(4, 3) is exact up to float32 rounding, amplified by its transforms
    assert row["winograd_relative_error"] < 1e-4
    assert "| 16 |" in capsys.readouterr().out


@pytest.fixture
def fast_inference():
    pytest.importorskip("openvino")
    yield from load_script("fast_inference")


def test_fast_inference_quick_run_measures_every_path_and_the_targets(fast_inference, tmp_path, capsys):
    path = tmp_path / "fast.json"
    report = fast_inference.main(["--quick", "--json", str(path)])

    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    rows = {row["path"]: row for row in report["rows"]}
    for net in ("ours", "monai"):
        for backend in ("torch", "openvino"):
            assert f"{net} {backend} fp32" in rows
    assert "ours openvino fp32 depth 2" in rows
    for row in rows.values():
        assert row["median_s"] > 0 and 0 <= row["dice"] <= 1
        # the same weights give the same label maps in every runtime (ours and MONAI's compute one function)
        assert row["argmax_agreement_with_own_torch_fp32"] > 0.999
    assert rows["ours openvino fp32"]["argmax_agreement_with_reference"] > 0.999
    assert {t["ratio"] for t in report["targets"]} >= {"fastest ours / monai torch fp32"}
    for target in report["targets"]:  # paired per repeat, and the ratio of the medians beside it
        a, b = target["ratio"].split(" / ")
        pairs = [x / y for x, y in zip(rows[a]["times"], rows[b]["times"], strict=True)] if a in rows else None
        assert pairs is None or target["value"] == statistics.median(pairs)
        assert target["ratio_of_medians"] > 0
    kernels = report["openvino_transposed_convolution_kernels"]
    assert set(map(tuple, kernels["monai openvino fp32"])) == {(2, 2, 2)}  # MONAI's deconvolutions
    assert (4, 4, 4) in set(map(tuple, kernels["ours openvino fp32"]))  # folded upsamplings, as in eager PyTorch
    # only int8 runs them as output phases (tests/test_backends.py), and --quick runs fp32 alone
    assert not any(report["openvino_phase_convolution_kernels"].values())
    assert "fastest ours / monai torch fp32:" in capsys.readouterr().out


def test_gpu_check_quick_runs_the_benchmark_and_writes_json(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--quick"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check_quick.json").read_text())
    assert {(row["task"], row["net"]) for row in report["rows"]} >= {("train 3D", "ours"), ("train 3D", "monai")}
    assert "wrote" in done.stdout

    bad = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--fast"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--fast'" in bad.stderr
