# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MeanDice, ValidationHandler, from_engine
from monai.transforms import AsDiscreted, Compose
from pictures import assert_not_blank, read_png

from monai_unetpp import DeepSupervisionDiceCELoss, SelectHeadd, UNetPlusPlus, UNetPlusPlusInferer
from monai_unetpp.visualize import (
    CurvePlotHandler,
    MontageHandler,
    SaveMontaged,
    montage_size,
    plot_curves,
    save_montage,
)


def blobs(shape: tuple[int, ...]) -> torch.Tensor:
    """A channel-first index label with class 1 in one corner box and class 2 in another."""
    label = torch.zeros((1, *shape))
    label[(0, *(slice(s // 5, s // 2) for s in shape))] = 1
    label[(0, *(slice(s // 2 + 2, s - 2) for s in shape))] = 2
    return label


def one_hot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.movedim(torch.nn.functional.one_hot(label[0].long(), num_classes), -1, 0).float()


def test_montage_size_layout():
    assert montage_size(3, True, 3) == (768, 3 * 256 + 22 + 8)
    assert montage_size(2, False, 2, panel_size=128) == (256, 128 + 22 + 8)
    assert montage_size(3, False, 1) == (512, 768)  # background only: no legend strip
    assert montage_size(2, True, 14, panel_size=100)[1] == 100 + 7 * 22 + 8  # 13 entries, 2 per legend row


@pytest.mark.parametrize("with_label", [True, False])
def test_save_montage_3d(tmp_path, with_label):
    shape = (24, 28, 20)
    label = blobs(shape)
    image = torch.rand((1, *shape)) + label
    out = save_montage(
        tmp_path / "sub" / "case.png", image, one_hot(label, 3), label if with_label else None, ["bg", "a", "b"]
    )
    pixels = read_png(out)
    width, height = montage_size(3, with_label, 3)
    assert pixels.shape == (height, width, 3)
    assert_not_blank(pixels)
    # the grey image is R = G = B; the prediction column carries a class colour blended over it
    prediction_column = pixels[: 3 * 256, -256:].astype(int)
    coloured = np.abs(prediction_column[..., 2] - prediction_column[..., 0]) > 40
    assert coloured.sum() > 1000


def test_save_montage_2d_index_prediction(tmp_path):
    label = blobs((40, 32))
    image = torch.rand((1, 40, 32))
    out = save_montage(tmp_path / "slice.png", image.numpy(), label.numpy(), label.numpy(), {1: "lesion"})
    pixels = read_png(out)
    assert pixels.shape[:2] == montage_size(2, True, 3)[::-1]
    assert_not_blank(pixels)


def test_empty_prediction_draws_no_overlay(tmp_path):
    image = torch.rand((1, 16, 16, 16))
    filled = save_montage(
        tmp_path / "filled.png", image, torch.ones((1, 16, 16, 16)), class_names=["bg", "fg"], slice_mode="middle"
    )
    empty = save_montage(
        tmp_path / "empty.png", image, torch.zeros((1, 16, 16, 16)), class_names=["bg", "fg"], slice_mode="middle"
    )
    a, b = read_png(filled), read_png(empty)
    assert a.shape == b.shape
    panels = slice(0, 3 * 256)  # above the legend strip, which is the same in both
    assert np.abs(a[panels, 256:].astype(int) - b[panels, 256:].astype(int)).mean() > 5
    np.testing.assert_array_equal(a[panels, :256], b[panels, :256])


def test_save_montaged_names_file_from_meta(tmp_path):
    shape = (20, 24, 16)
    label = blobs(shape)
    affine = torch.diag(torch.tensor([2.0, 1.0, 3.0, 1.0]))
    image = MetaTensor(torch.rand((1, *shape)), affine=affine, meta={"filename_or_obj": "/data/case_07.nii.gz"})
    transform = SaveMontaged(keys=("image", "pred"), output_dir=tmp_path, class_names=["bg", "a", "b"])
    data = {"image": image, "pred": torch.softmax(one_hot(label, 3) * 5, 0), "label": label}
    out = transform(data)
    assert out["image"] is image and out["pred"] is data["pred"]
    pixels = read_png(tmp_path / "case_07_montage.png")
    assert pixels.shape[:2] == montage_size(3, True, 3)[::-1]
    assert_not_blank(pixels)

    # no label in the data (inference), no file name (numbered), 2D
    transform = SaveMontaged(keys=("image", "pred"), output_dir=tmp_path, label_key="label", output_postfix="seg")
    transform({"image": torch.rand((1, 32, 32)), "pred": blobs((32, 32))})
    assert read_png(tmp_path / "case_0_seg.png").shape[:2] == montage_size(2, False, 3)[::-1]


def test_montage_errors(tmp_path):
    image = torch.rand((1, 16, 16, 16))
    with pytest.raises(ValueError, match="before Invertd"):
        save_montage(tmp_path / "x.png", image, torch.zeros((1, 32, 32, 32)))
    with pytest.raises(ValueError, match="channel-first"):
        save_montage(tmp_path / "x.png", torch.rand((16, 16)), torch.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match="slice_mode"):
        save_montage(tmp_path / "x.png", image, torch.zeros((1, 16, 16, 16)), slice_mode="top")
    with pytest.raises(ValueError, match="image_key, pred_key"):
        SaveMontaged(keys=("image",), output_dir=tmp_path)


def test_plot_curves_vector_metric(tmp_path):
    out = plot_curves(
        tmp_path / "curves.png",
        {1: 1.2, 2: 0.9, 3: 0.7},
        {"val_mean_dice": {1: 0.3, 3: 0.6}},
        iteration_loss=[(0.5, 1.3), (1.0, 1.1), (1.5, 1.0), (2.0, 0.8), (2.5, 0.7), (3.0, 0.7)],
        width=640,
        height=320,
    )
    pixels = read_png(out)
    assert pixels.shape == (320, 640, 3)
    assert_not_blank(pixels)


def test_curve_plot_handler_in_supervised_training(tmp_path):
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 2, features=(4, 4, 8), deep_supervision=True)
    label = (torch.rand(1, 16, 16, 16) > 0.5).float()
    data = [{"image": torch.rand(1, 16, 16, 16) + label, "label": label} for _ in range(2)]
    loader = DataLoader(Dataset(data), batch_size=1)
    post = Compose(
        [
            SelectHeadd(keys="pred"),
            AsDiscreted(keys="pred", argmax=True, to_onehot=2),
            AsDiscreted("label", to_onehot=2),
        ]
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=net,
        inferer=UNetPlusPlusInferer(roi_size=16),
        postprocessing=post,
        key_val_metric={
            "val_mean_dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))
        },
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=DataLoader(Dataset(data[:1]), batch_size=1),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-2),
        loss_function=DeepSupervisionDiceCELoss(),
        train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True)],
    )
    handler = CurvePlotHandler(tmp_path / "logs", evaluator=evaluator, width=600, height=300)
    handler.attach(trainer)
    trainer.run()

    assert sorted(handler.epoch_loss) == [1, 2]
    assert sorted(handler.metrics["val_mean_dice"]) == [1, 2]
    assert handler.metrics["val_mean_dice"][2] == pytest.approx(evaluator.state.metrics["val_mean_dice"])
    assert [p for p, _ in handler.iteration_loss] == [1.0, 2.0]
    pixels = read_png(tmp_path / "logs" / "training_curves.png")
    assert pixels.shape == (300, 600, 3)
    assert_not_blank(pixels)
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["training_curves.png"]  # no temporary files left


def test_montage_handler_draws_the_preprocessed_grid_before_postprocessing(tmp_path):
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=(4, 4, 8)).eval()
    names = ["/data/a.nii.gz", "/data/b.nii.gz"]
    data = [
        {"image": MetaTensor(torch.rand(1, 16, 16, 16), meta={"filename_or_obj": name}), "label": blobs((16, 16, 16))}
        for name in names
    ]
    # the post-processing changes the prediction's grid, as Invertd would: the montage must not see it
    post = Compose([AsDiscreted(keys="pred", argmax=True), lambda d: {**d, "pred": d["pred"][:, :8]}])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2),
        network=net,
        postprocessing=post,
        val_handlers=[MontageHandler(tmp_path, class_names=["bg", "a", "b"], panel_size=128)],
    )
    evaluator.run()
    for name in ("a", "b"):
        pixels = read_png(tmp_path / f"{name}_montage.png")
        assert pixels.shape[:2] == montage_size(3, True, 3, panel_size=128)[::-1]
        assert_not_blank(pixels)
    assert evaluator.state.output[0]["pred"].shape == (1, 8, 16, 16)
