"""Migrating from MONAI's BasicUNetPlusPlus: the same network and weights, for every upsampling and dimension, from a
built network, a state_dict or a checkpoint file, and clear errors where no equivalent exists."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded
from monai.networks.nets import BasicUNetPlusPlus

from monai_unetpp import UNetPlusPlus
from monai_unetpp.networks import (
    basic_unetplusplus_features,
    convert_basic_unetplusplus_state_dict,
    load_basic_unetplusplus,
)

WIDTHS = (4, 4, 8, 16, 32, 4)  # MONAI's doubling pattern, as its default (32, 32, 64, 128, 256, 32)
SHAPES = {1: (2, 2, 32), 2: (2, 2, 32, 48), 3: (1, 2, 32, 16, 32)}  # sides divisible by 16


def monai_network(spatial_dims: int, **kwargs) -> BasicUNetPlusPlus:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return BasicUNetPlusPlus(spatial_dims, 2, 3, features=WIDTHS, **kwargs)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("upsample", ["deconv", "nontrainable", "pixelshuffle"])
def test_the_converted_network_computes_monais_outputs(spatial_dims, upsample):
    reference = monai_network(spatial_dims, upsample=upsample, deep_supervision=True)
    ours = UNetPlusPlus.from_basic_unetplusplus(reference)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    x = seeded(*SHAPES[spatial_dims])
    heads, heads_ref = ours.train()(x), reference.train()(x)
    assert len(heads) == len(heads_ref) == 4
    for a, b in zip(heads, heads_ref[::-1], strict=True):  # MONAI lists the final head last
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        out_ref = reference.eval()(x)
        torch.testing.assert_close(ours.eval()(x), out_ref[-1], rtol=1e-4, atol=1e-5)
        mean_ref = torch.stack(out_ref).mean(0)
        torch.testing.assert_close(ours(x, inference_mode="mean"), mean_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "act, norm",
    [
        (("elu", {"alpha": 0.5}), ("instance", {"eps": 0.5, "affine": True})),
        (("gelu", {"approximate": "tanh"}), ("batch", {"eps": 0.5, "momentum": 0.5})),
        (("prelu", {"init": 0.1}), ("group", {"num_groups": 2, "eps": 0.5})),
    ],
)
def test_every_layer_argument_is_carried_over(act, norm):
    reference = monai_network(3, act=act, norm=norm, deep_supervision=True)
    ours = UNetPlusPlus.from_basic_unetplusplus(reference)
    x = seeded(*SHAPES[3])
    heads, heads_ref = ours.train()(x), reference.train()(x)  # batch norm's momentum updates the running stats
    torch.testing.assert_close(heads[0], heads_ref[-1], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x)[-1], rtol=1e-4, atol=1e-5)


def test_without_deep_supervision_only_the_final_head_is_kept():
    reference = monai_network(2, deep_supervision=False, act="relu", norm="batch", dropout=0.1)
    ours = UNetPlusPlus.from_basic_unetplusplus(reference.eval())
    assert not ours.training and len(ours.heads) == 1 and not ours.deep_supervision
    x = seeded(*SHAPES[2])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x)[0], rtol=1e-4, atol=1e-5)


def test_a_checkpoint_file_loads_with_monais_outputs(tmp_path):
    reference = monai_network(3, upsample="nontrainable", deep_supervision=True).eval()
    path = tmp_path / "model.pt"
    torch.save({"model": reference.state_dict(), "epoch": 7}, path)  # a bundle checkpoint's layout
    ours = load_basic_unetplusplus(path, deep_supervision=True, upsample="nontrainable").eval()
    x = seeded(*SHAPES[3])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x)[-1], rtol=1e-4, atol=1e-5)
    converted = convert_basic_unetplusplus_state_dict(reference.state_dict())
    assert set(converted) == set(ours.state_dict()) and len(converted) == len(reference.state_dict())
    # the wrong layer arguments are an error, not a silently different network
    with pytest.raises(ValueError, match="do not fit UNetPlusPlus"):
        load_basic_unetplusplus(path, deep_supervision=True, upsample="deconv")


def test_widths_without_an_equivalent_are_an_error():
    with pytest.raises(ValueError, match=r"no UNetPlusPlus equivalent.*\(12, 12, 24, 48, 96, 12\)"):
        basic_unetplusplus_features((12, 12, 13, 14, 15, 16))
    with pytest.raises(ValueError, match="no UNetPlusPlus equivalent"):
        UNetPlusPlus.from_basic_unetplusplus(BasicUNetPlusPlus(2, 1, 2, features=(8, 8, 9, 10, 11, 8)))
    with pytest.raises(ValueError, match=r"features=\(32, 32, 32, 32, 32, 32\)"):
        basic_unetplusplus_features(32)  # a scalar: MONAI repeats it six times
    assert basic_unetplusplus_features((32, 32, 64, 128, 256, 32)) == (32, 32, 64, 128, 256)
    with pytest.raises(ValueError, match="not a parameter of MONAI's BasicUNetPlusPlus"):
        convert_basic_unetplusplus_state_dict({"conv_0_0.conv_0.conv.weight": torch.zeros(1), "encoder.0.x": 1})
    with pytest.raises(ValueError, match="holds no BasicUNetPlusPlus state_dict"):
        convert_basic_unetplusplus_state_dict({"network": {"encoder.0.block.conv_0.conv.weight": torch.zeros(1)}})


def test_monai_style_arguments_get_a_clear_answer():
    with pytest.raises(ValueError, match="features must be a sequence of widths.*from_basic_unetplusplus"):
        UNetPlusPlus(2, 1, 2, features=32)
    with pytest.warns(UserWarning, match=r"pass features=\(32, 32, 64, 128, 256\)"):
        UNetPlusPlus(2, 1, 2, features=(32, 32, 64, 128, 256, 32))
