"""MONAI's own unit tests of BasicUNetPlusPlus (tests/networks/nets/test_basic_unetplusplus.py in the MONAI
repository), run on UNetPlusPlus: the same cases, adapted only where the contracts differ.

The adaptations, each one a line of the README's "Migrating from BasicUNetPlusPlus":
- ``features``: MONAI's six widths are five levels and the top node's width; ours are the levels, and the top row
  has the level-0 width, so the cases build ours with the first five;
- eval output: MONAI returns a list (``result[0]``), ours one Tensor;
- training with deep supervision: a list of heads, final first (MONAI: final last);
- scripting: ``torch.jit.script`` and a save/load round trip that gives the same output, as MONAI's
  ``test_script_save``.
A MONAI release that changes what these cases ask shows up as a difference between this file and MONAI's.
"""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks import eval_mode

from monai_unetpp import UNetPlusPlus

CASES_1D = []
for mode in ["pixelshuffle", "nontrainable", "deconv", None]:
    kwargs = {"spatial_dims": 1, "in_channels": 5, "out_channels": 8}
    if mode is not None:
        kwargs["upsample"] = mode
    CASES_1D.append((kwargs, (10, 5, 33), (10, 8, 33)))

CASES_2D = []
for mode in ["pixelshuffle", "nontrainable", "deconv"]:
    for d1 in range(33, 64, 14):
        for d2 in range(63, 33, -21):
            kwargs = {"spatial_dims": 2, "in_channels": 2, "out_channels": 3, "features": (12, 12, 13, 14, 15, 16)}
            CASES_2D.append(({**kwargs, "upsample": mode}, (2, 2, d1, d2), (2, 3, d1, d2)))

CASES_3D = [
    (
        {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "features": (16, 20, 21, 22, 23, 11)}
        | {"upsample": "pixelshuffle"},
        (2, 1, 33, 34, 35),
        (2, 2, 33, 34, 35),
    ),
    (
        {"spatial_dims": 3, "in_channels": 2, "out_channels": 7, "features": (14, 15, 16, 17, 18, 11)}
        | {"upsample": "deconv"},
        (3, 2, 33, 37, 34),
        (3, 7, 33, 37, 34),
    ),
    (
        {"spatial_dims": 3, "in_channels": 4, "out_channels": 2, "features": (14, 15, 16, 17, 18, 10)}
        | {"upsample": "nontrainable"},
        (5, 4, 34, 35, 37),
        (5, 2, 34, 35, 37),
    ),
]


def ours(**monai_kwargs) -> UNetPlusPlus:
    """UNetPlusPlus for BasicUNetPlusPlus's arguments: five level widths of MONAI's six (its default widths too)."""
    features = monai_kwargs.pop("features", (32, 32, 64, 128, 256, 32))
    return UNetPlusPlus(features=tuple(features)[:5], **monai_kwargs)


@pytest.mark.parametrize("input_param,input_shape,expected_shape", CASES_1D + CASES_2D + CASES_3D)
def test_shape(input_param, input_shape, expected_shape):
    net = ours(**input_param)
    with eval_mode(net):
        result = net(torch.randn(input_shape))
    assert isinstance(result, torch.Tensor)  # MONAI: result[0]
    assert result.shape == expected_shape


def test_deep_supervision_shape():
    net = ours(spatial_dims=2, deep_supervision=True, in_channels=3, out_channels=3)
    test_data = torch.randn(16, 3, 32, 32)
    with eval_mode(net):
        result = net(test_data)
    assert result.shape == test_data.shape  # MONAI: result[0]
    heads = net.train()(test_data)
    assert len(heads) == 4 and all(h.shape == test_data.shape for h in heads)


def test_script():
    net = ours(spatial_dims=2, deep_supervision=True, in_channels=1, out_channels=3)
    test_data = torch.randn(16, 1, 32, 32)
    with eval_mode(net):
        expected = net(test_data)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    reloaded = torch.jit.load(buffer)
    with eval_mode(reloaded):
        torch.testing.assert_close(reloaded(test_data), expected, rtol=1e-4, atol=1e-5)
