"""The multi-GPU configs with torchrun: two CPU processes with the gloo backend stand in for two GPUs with nccl."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BUNDLE_3D, TINY_BUNDLE

from monai_unetpp.bundle import validation_sampler
from monai_unetpp.data import make_demo_dataset

CONFIGS = BUNDLE_3D / "configs"
TINY = {**TINY_BUNDLE, "epochs": 2, "val_interval": 1}


def torchrun(root: Path, config_files: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    args = [  # `torchrun ...` is `python -m torch.distributed.run ...`
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps([str(CONFIGS / f) for f in config_files]),
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--logging_file",
        str(CONFIGS / "logging.conf"),
        "--bundle_root",
        str(root),
    ]
    for key, value in TINY.items():
        args += [f"--{key}", json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_training_and_evaluation(tmp_path):
    # 4 training cases (2 per rank) and 2 validation cases (1 per rank)
    make_demo_dataset(tmp_path / "data", num_cases=6, num_test=0, shape=(32, 32, 32))
    torchrun(tmp_path, ["train.json", "multi_gpu_train.json"])
    state = torch.load(tmp_path / "models" / "last.ckpt", weights_only=True)
    assert state["trainer"]["iteration"] == 4  # 2 epochs x 2 batches per rank: the sampler split the data
    assert not any(k.startswith("module.") for k in state["network"])  # saved without the DDP wrapper
    weights = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in weights)

    torchrun(tmp_path, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"])
    with open(tmp_path / "eval" / "metrics_per_class.csv", newline="") as f:
        assert [row["class"] for row in csv.DictReader(f)] == ["organ", "lesion"]


def test_each_validation_image_counts_once_in_the_processes_mean():
    def shares(count: int, world: int) -> list[list[int]]:
        return [list(validation_sampler(range(count), num_replicas=world, rank=r)) for r in range(world)]

    assert shares(3, 2) == [[0, 2], [1]]  # more images than processes: each image on one process
    assert shares(1, 2) == [[0], [0]]  # one image, two processes: on both, the mean is still the image's
    assert shares(2, 4) == [[0], [1], [0], [1]]
    with pytest.raises(ValueError, match="holds 3 image.*fewer than the 4 processes.*--num_validation 4"):
        validation_sampler(range(3), num_replicas=4, rank=0)
