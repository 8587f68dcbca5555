"""The memory model against the CPU allocator: predicted peak training memory within 15 % of the measured peak of one
real training step (forward, Dice + CE on every head, backward, AdamW), for configurations that vary the patch,
batch, widths, depth, strides, kernel sizes, classes, checkpointing and deep supervision.

The measured peak is the CPU allocator's own running total of live bytes, which ``torch.profiler`` records with
every allocation (``measure_training_memory``); the prediction counts tensors from the configuration alone.
"""

from __future__ import annotations

import pytest

from monai_unetpp import UNetPlusPlus
from monai_unetpp.plan import measure_training_memory, predict_training_memory

ANISOTROPIC = {"strides": [[2, 2, 1], [2, 2, 1], [2, 2, 2]], "kernel_size": [[3, 3, 1], [3, 3, 1], 3, 3]}
CONFIGS = {
    "3d": {"patch_size": [24, 24, 24], "batch_size": 2, "features": [8, 16, 32, 64], "out_channels": 3},
    "3d_batch4": {"patch_size": [16, 16, 16], "batch_size": 4, "features": [16, 16, 32], "out_channels": 2},
    "3d_deep": {"patch_size": [24, 24, 16], "batch_size": 2, "features": [8, 16, 32, 32, 32], "out_channels": 4},
    "3d_odd_sides": {"patch_size": [21, 19, 17], "batch_size": 3, "features": [8, 8, 16], "out_channels": 2},
    "3d_checkpointing": {
        "patch_size": [24, 24, 24],
        "batch_size": 2,
        "features": [8, 16, 32, 64],
        "out_channels": 3,
        "checkpointing": True,
    },
    "3d_one_head": {
        "patch_size": [24, 24, 16],
        "batch_size": 2,
        "features": [8, 16, 32],
        "out_channels": 3,
        "deep_supervision": False,
    },
    "3d_anisotropic": {"patch_size": [32, 32, 8], "batch_size": 2, "features": [4, 8, 16, 32], "out_channels": 3}
    | ANISOTROPIC,
    "2d": {"patch_size": [64, 64], "batch_size": 4, "features": [8, 16, 32, 64], "out_channels": 3},
    "2d_kernel5_anisotropic": {
        "patch_size": [64, 48],
        "batch_size": 2,
        "features": [16, 32, 64],
        "out_channels": 5,
        "strides": [[2, 1], 2],
        "kernel_size": 5,
    },
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_predicted_peak_is_within_15_percent_of_the_measured(name):
    config = CONFIGS[name]
    measured = measure_training_memory(**config)
    predicted = predict_training_memory(**config).total
    error = predicted / measured - 1
    print(f"{name}: measured {measured / 2**20:.2f} MiB, predicted {predicted / 2**20:.2f} MiB ({error:+.1%})")
    assert abs(error) < 0.15, f"{name}: measured {measured} B, predicted {predicted} B ({error:+.1%})"


@pytest.mark.parametrize("name", ["3d_deep", "3d_anisotropic", "2d_kernel5_anisotropic"])
def test_the_persistent_part_counts_the_networks_parameters_exactly(name):
    config = CONFIGS[name]
    network = UNetPlusPlus(
        len(config["patch_size"]),
        1,
        config["out_channels"],
        features=config["features"],
        strides=config.get("strides"),
        kernel_size=config.get("kernel_size", 3),
        deep_supervision=config.get("deep_supervision", True),
    )
    parameters = sum(p.numel() for p in network.parameters())
    # parameters, gradients and AdamW's two moments, in fp32
    assert predict_training_memory(**config).persistent == 4 * 4 * parameters


def test_more_of_anything_predicts_more_memory_and_bad_arguments_are_named():
    base = CONFIGS["3d"]
    total = predict_training_memory(**base).total
    assert predict_training_memory(**(base | {"batch_size": 4})).total > total
    assert predict_training_memory(**(base | {"patch_size": [32, 32, 32]})).total > total
    assert predict_training_memory(**(base | {"checkpointing": True})).total < total
    assert predict_training_memory(**base, precision="amp").activations < predict_training_memory(**base).activations
    with pytest.raises(ValueError, match="precision"):
        predict_training_memory(**base, precision="fp8")
    with pytest.raises(ValueError, match="strides has 2 entries"):
        predict_training_memory(**(base | {"strides": [2, 2]}))
