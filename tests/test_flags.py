"""Arguments as a command line or a config gives them: Python Fire passes ``--flag false`` as the string
``"false"``, which is truthy. Every public flag reads ``"true"``/``"false"`` as booleans and refuses other strings,
and other values of the wrong kind are refused naming the argument, not taken silently."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNetPlusPlus

from monai_unetpp import DeepSupervisionDiceCELoss, SelectHead, UNetPlusPlus, UNetPlusPlusInferer
from monai_unetpp.data import SimpleITKReader, check_dataset, make_demo_dataset, prepare_dataset
from monai_unetpp.networks import load_basic_unetplusplus
from monai_unetpp.plan import predict_training_memory
from monai_unetpp.runtime import torch_precision
from monai_unetpp.transforms import (
    IntensityMixtureRefined,
    MaskOutsideInputd,
    SequentialLabelsd,
    nonzero_region,
    scale_intensity,
)

TINY = {"spatial_dims": 3, "features": (4, 8, 16)}


def test_the_network_reads_its_flags_from_strings():
    net = UNetPlusPlus(**TINY, deep_supervision="false", bias="false", checkpointing="false", align_corners="false")
    assert (net.deep_supervision, len(net.heads)) == (False, 1)
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m not in net.heads)
    assert isinstance(net.train()(torch.randn(1, 1, 16, 16, 16)), torch.Tensor)  # one head: no list
    assert len(UNetPlusPlus(**TINY, deep_supervision="true").heads) == 2
    with pytest.raises(ValueError, match="deep_supervision must be true or false, got 'maybe'"):
        UNetPlusPlus(**TINY, deep_supervision="maybe")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"features": (4.7, 8, 16)}, r"features must be whole numbers of channels, one per level, got \(4.7, 8, 16\)"),
        ({"features": (True, 8)}, "features must be whole numbers"),
        ({"spatial_dims": True}, "spatial_dims must be 1, 2 or 3, got True"),
        ({"spatial_dims": "3"}, "spatial_dims must be 1, 2 or 3, got '3'"),
    ],
)
def test_the_network_refuses_widths_and_dimensions_that_are_no_whole_numbers(bad, message):
    with pytest.raises(ValueError, match=message):
        UNetPlusPlus(**{**TINY, **bad})


def test_monais_six_widths_warn_whatever_the_top_width():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        UNetPlusPlus(3, 1, 2, features=(4, 8, 16, 32, 64, 8))
    assert any("narrows at the deepest level" in str(w.message) for w in caught)


def test_losses_transforms_readers_and_the_planner_read_their_flags_from_strings():
    assert DeepSupervisionDiceCELoss(binary="false", check_labels="false").binary is False
    assert MaskOutsideInputd("pred", "image", remove_source="false").remove_source is False
    reader = SimpleITKReader(reverse_indexing="false", series_meta="true", affine_lps_to_ras="true")
    assert (reader.reverse_indexing, reader.series_meta, reader.affine_lps_to_ras) == (False, True, True)
    one_head = predict_training_memory([16, 16, 16], 2, [4, 8, 16], deep_supervision="false").gib()
    assert one_head == predict_training_memory([16, 16, 16], 2, [4, 8, 16], deep_supervision=False).gib()
    assert one_head < predict_training_memory([16, 16, 16], 2, [4, 8, 16], deep_supervision="true").gib()
    with pytest.raises(ValueError, match="binary must be true or false"):
        DeepSupervisionDiceCELoss(binary="sigmoid")


def test_migration_reads_deep_supervision_from_a_string():
    monai_net = BasicUNetPlusPlus(3, features=(4, 4, 8, 16, 32, 4), deep_supervision=True)
    assert len(load_basic_unetplusplus(monai_net.state_dict(), deep_supervision="false").heads) == 1
    assert len(UNetPlusPlus.from_basic_unetplusplus(monai_net, deep_supervision=False).heads) == 1
    with pytest.raises(ValueError, match="features are read from the weights"):
        UNetPlusPlus.from_basic_unetplusplus(monai_net, features=(4, 8))


def test_demo_false_as_a_string_writes_no_demo_data_into_a_missing_folder(tmp_path):
    missing = tmp_path / "mistyped"
    with pytest.raises(Exception, match="demo=True"):
        prepare_dataset(missing, demo="false")
    assert not missing.exists()


def test_depths_and_modes_given_as_strings_or_twice_are_refused_by_name():
    net = UNetPlusPlus(**TINY, deep_supervision=True).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="inference_depth must be a whole number in 1..2 for this network, got '1'"):
        net(x, inference_depth="1")
    with pytest.raises(ValueError, match=r"got inference_depth=1 and the deprecated forward\(depth=...\) with 2"):
        with pytest.warns(DeprecationWarning):
            net(x, inference_depth=1, depth=2)
    with pytest.raises(ValueError, match="inference_depth must be a whole number, or None .* got 'null'"):
        UNetPlusPlusInferer(roi_size=16, inference_depth="null")
    with pytest.raises(ValueError, match=r"intensity_range must be two numbers .* got \('1000', '200'\)"):
        scale_intensity(("1000", "200"))
    assert scale_intensity(("50", "100")).scaler.a_min == 50.0
    with pytest.raises(ValueError, match="index must be a head index"):
        SelectHead(True)
    with pytest.raises(ValueError, match="precision in PyTorch must be 'fp32' or 'bf16', got 'fp16'"):
        torch_precision("fp16", torch.device("cpu"))


def test_inferer_loss_and_label_values_of_the_wrong_kind_are_refused_by_name():
    with pytest.raises(ValueError, match="inference_mode must be one of .* got 'gaussian' .*blend_mode"):
        UNetPlusPlusInferer(roi_size=16, inference_mode="gaussian")
    with pytest.raises(ValueError, match="sw_batch_size must be a whole number of windows >= 1, got 0"):
        UNetPlusPlusInferer(roi_size=16, sw_batch_size=0)
    with pytest.raises(ValueError, match="values must be whole label values .* got '12'"):
        SequentialLabelsd("label", "12")
    with pytest.raises(ValueError, match="weights must be a list of non-negative numbers"):
        DeepSupervisionDiceCELoss(weights="1,1,1")
    heads, label = [torch.randn(1, 2, 8, 8, 8)] * 3, torch.zeros(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="has 2 weights for 3 heads"):
        DeepSupervisionDiceCELoss(weights=[1, 1])(heads, label)
    assert torch.isfinite(DeepSupervisionDiceCELoss(weights=[1, 1, 1])(heads, label))


def test_a_numpy_array_and_refinement_arguments_of_the_wrong_kind_are_refused_by_name():
    with pytest.raises(TypeError, match="takes a torch.Tensor .* got a ndarray"):
        UNetPlusPlus(**TINY)(np.zeros((1, 1, 16, 16, 16), np.float32))
    for bad, message in (
        ({"background": 1.5}, "background must be a class index >= 0, got 1.5"),
        ({"background": True}, "background must be a class index"),
        ({"prior_weight": "0.5"}, "prior_weight must be a number, got '0.5'"),
    ):
        with pytest.raises(ValueError, match=message):
            IntensityMixtureRefined("pred", "image", **bad)


def test_settings_given_twice_and_counts_of_the_wrong_kind_are_refused_by_name(tmp_path):
    net = UNetPlusPlus(**TINY, deep_supervision=True).eval()
    with pytest.raises(ValueError, match="inference_mode set on the inferer and again in its call"):
        UNetPlusPlusInferer(roi_size=16, inference_mode="final")(
            torch.zeros(1, 1, 16, 16, 16), net, inference_mode="mean"
        )
    with pytest.raises(ValueError, match="margin must be a whole number of voxels >= 0, got -1"):
        nonzero_region(torch.zeros(1, 4, 4), margin=-1)
    with pytest.raises(ValueError, match="num_classes must be a whole number from 2 to 10 .* got '3'"):
        make_demo_dataset(tmp_path / "demo", num_classes="3")
    assert not (tmp_path / "demo").exists()
    with pytest.raises(ValueError, match="num_classes must be a whole number >= 1 .* got '3'"):
        check_dataset([{"image": "a.nii.gz"}], num_classes="3")
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\), got '0.2'"):
        prepare_dataset(tmp_path, val_fraction="0.2")
    with pytest.raises(ValueError, match="batch_size must be a whole number of patches >= 1, got '2'"):
        predict_training_memory([16, 16, 16], "2", [4, 8, 16])
