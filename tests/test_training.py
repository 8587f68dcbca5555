"""Loss, inferer and SelectHead in MONAI's own engines: a real SupervisedTrainer and SupervisedEvaluator run."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_net
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MeanDice, from_engine
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import BasicUNetPlusPlus
from monai.transforms import Activationsd, AsDiscreted, Compose

from monai_unetpp import DeepSupervisionDiceCELoss, SelectHead, SelectHeadd, UNetPlusPlusInferer, reduce_heads


def synthetic_items(n: int, size: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(n):
        label = torch.zeros(1, size, size, size)
        label[:, 2:8, 2:8, 2:8] = 1
        label[:, 9:14, 9:14, 9:14] = 2
        items.append({"image": label + 0.3 * torch.randn(label.shape, generator=g), "label": label})
    return items


def test_loss_weights_the_final_head_first():
    loss = DeepSupervisionDiceCELoss()
    label = torch.randint(0, 3, (2, 1, 8, 8))
    good = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).float() * 20
    bad = torch.zeros_like(good)
    # exp weights (1, 0.5): the final head's error costs twice the auxiliary head's
    final_wrong, aux_wrong = loss([bad, good], label), loss([good, bad], label)
    assert final_wrong > aux_wrong
    assert torch.isclose(loss(good, label), loss([good], label))
    same = DeepSupervisionDiceCELoss(weight_mode="same")
    assert torch.isclose(same([bad, good], label), same([good, bad], label))
    custom = DeepSupervisionDiceCELoss(weights=[0.0, 1.0])
    assert custom([good, bad], label) > custom([bad, good], label)  # only the auxiliary head counts


def test_binary_paper_loss_is_bce_plus_dice():
    from monai.losses import DiceLoss

    logits, mask = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    expected = DiceLoss(sigmoid=True)(logits, mask) + 0.5 * torch.nn.BCEWithLogitsLoss()(logits, mask)
    torch.testing.assert_close(DeepSupervisionDiceCELoss(binary=True)(logits, mask), expected)


def test_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="weight_mode must be"):
        DeepSupervisionDiceCELoss(weight_mode="linear")
    with pytest.raises(ValueError, match="empty list of heads"):
        DeepSupervisionDiceCELoss()([], torch.zeros(1, 1, 4, 4))


def test_select_head():
    heads = [torch.full((1, 2), float(v)) for v in (3, 2, 1)]
    assert SelectHead()(heads).eq(3).all() and SelectHead(-1)(heads).eq(1).all()
    assert SelectHead("mean")(heads).eq(2).all()
    assert SelectHead()(heads[1]) is heads[1]
    assert SelectHeadd(keys="pred")({"pred": heads, "x": 1})["pred"].eq(3).all()
    with pytest.raises(ValueError, match="out of range for 3 heads"):
        SelectHead(5)(heads)
    with pytest.raises(ValueError, match="index must be"):
        SelectHead("max")


def test_inferer_modes_and_depths_equal_the_network_output():
    net = tiny_net(depth=2).eval()
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        for mode in ("final", "mean"):
            for depth in (1, 2):
                # one window covering the image: the inferer's output is exactly the network's
                out = UNetPlusPlusInferer(roi_size=16, inference_mode=mode, inference_depth=depth)(image, net)
                torch.testing.assert_close(out, net(image, inference_mode=mode, inference_depth=depth))
        # a network left in training mode still yields one Tensor: the final head
        net.train()
        torch.testing.assert_close(UNetPlusPlusInferer(roi_size=16)(image, net), net(image)[0])


def test_inferer_stitches_one_buffer_and_rejects_foreign_networks():
    net = tiny_net(depth=2).eval()
    calls = []

    def counting(x, **kwargs):
        out = net(x, **kwargs)
        calls.append(type(out))
        return out

    counting.inference_depth = net.inference_depth  # duck-typed like a UNetPlusPlus
    with torch.no_grad():
        inferer = UNetPlusPlusInferer(roi_size=16, sw_batch_size=2, inference_mode="mean")
        out = inferer(torch.randn(1, 1, 30, 20, 16), counting)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 30, 20, 16)
    assert calls and all(t is torch.Tensor for t in calls)
    with pytest.raises(ValueError, match="apply to a UNetPlusPlus"):
        UNetPlusPlusInferer(roi_size=16, inference_depth=1)(torch.randn(1, 1, 16, 16, 16), torch.nn.Identity())
    # the network validates the settings, once, before any window runs
    for settings, match in (
        ({"inference_mode": "best"}, "inference_mode must be one of"),
        ({"inference_depth": 7}, "must be in 1..2 for this network, got 7"),
    ):
        with pytest.raises(ValueError, match=match):
            UNetPlusPlusInferer(roi_size=16, **settings)(torch.randn(1, 1, 16, 16, 16), net)
    with pytest.raises(ValueError, match="whole number"):
        UNetPlusPlusInferer(roi_size=16, inference_depth=1.7)


def test_inferer_refuses_a_training_network_and_takes_monais_final_head_last():
    # in training mode the network returns every head, whatever inference_depth says
    training = tiny_net(depth=2).train()
    with pytest.raises(ValueError, match="inference_depth=1 prunes in eval mode only.*call network.eval"):
        UNetPlusPlusInferer(roi_size=16, inference_depth=1)(torch.randn(1, 1, 16, 16, 16), training)
    training.inference_depth = 1
    with pytest.raises(ValueError, match="inference_depth=1 prunes in eval mode only"):
        UNetPlusPlusInferer(roi_size=16)(torch.randn(1, 1, 16, 16, 16), training)
    # MONAI's BasicUNetPlusPlus lists its heads final last, in eval too
    monai_net = BasicUNetPlusPlus(3, 1, 2, features=(4, 4, 8, 16, 32, 4), deep_supervision=True).eval()
    image = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        heads = monai_net(image)
        torch.testing.assert_close(UNetPlusPlusInferer(roi_size=32)(image, monai_net), heads[-1])
    with pytest.raises(TypeError, match="got one Tensor"):
        reduce_heads(heads[-1])


def test_inferer_old_keyword_names_warn_and_still_work():
    net = tiny_net(depth=2).eval()
    image = torch.randn(1, 1, 20, 16, 16)
    with pytest.warns(DeprecationWarning, match="inference_mode"):
        old = UNetPlusPlusInferer(roi_size=16, mode="mean", depth=2)
    assert (old.inference_mode, old.inference_depth, old.mode) == ("mean", 2, "constant")  # .mode: the blend mode
    with torch.no_grad():
        new = UNetPlusPlusInferer(roi_size=16, inference_mode="mean", inference_depth=2)
        torch.testing.assert_close(old(image, net), new(image, net))


def test_supervised_trainer_and_evaluator_run():
    torch.manual_seed(0)
    net = tiny_net(depth=2)
    post = Compose(
        [
            SelectHeadd(keys="pred"),
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=3),
        ]
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(synthetic_items(2, 24)), batch_size=1),
        network=net,
        inferer=UNetPlusPlusInferer(roi_size=16, sw_batch_size=2, inference_mode="mean"),
        postprocessing=post,
        key_val_metric={
            "val_dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))
        },
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(Dataset(synthetic_items(2)), batch_size=2),
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), 1e-2),
        loss_function=DeepSupervisionDiceCELoss(),
        inferer=SimpleInferer(),
        postprocessing=post,
        key_train_metric={
            "train_dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))
        },
    )
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    assert trainer.state.iteration == 1 and torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))
    assert "train_dice" in trainer.state.metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    evaluator.run()
    assert 0.0 <= evaluator.state.metrics["val_dice"] <= 1.0
    # the evaluator ran the network in eval mode: one stitched Tensor per case, not a list of heads
    assert isinstance(evaluator.state.output[0]["pred"], torch.Tensor)


def test_monai_sliding_window_would_stitch_every_head():
    """Why the inferer exists: MONAI's sliding window stitches one buffer per list element."""
    net = tiny_net(depth=2).train()
    with torch.no_grad():
        raw = SlidingWindowInferer(roi_size=16)(torch.randn(1, 1, 16, 16, 16), net)
        ours = UNetPlusPlusInferer(roi_size=16)(torch.randn(1, 1, 16, 16, 16), net)
    assert isinstance(raw, (list, tuple)) and len(raw) == net.depth
    assert isinstance(ours, torch.Tensor)
