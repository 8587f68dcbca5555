"""DeepSupervisionDiceCELoss refuses labels that do not fit the heads, instead of rounding, resizing or failing
deep inside torch; valid labels give exactly MONAI's DeepSupervisionLoss(DiceCELoss) value."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded
from monai.losses import DeepSupervisionLoss, DiceCELoss

from monai_unetpp import DeepSupervisionDiceCELoss

HEADS = [seeded(2, 3, 8, 6, seed=k) for k in range(3)]  # three heads of (B, C, H, W), all at the input's shape
LABEL = (seeded(2, 1, 8, 6, seed=9).abs() * 1.2).clamp(max=2).floor().long()  # classes 0, 1, 2


def _monai(index_labels: bool = True) -> DeepSupervisionLoss:
    options = {"softmax": True, "to_onehot_y": True} if index_labels else {"sigmoid": True, "lambda_ce": 0.5}
    return DeepSupervisionLoss(DiceCELoss(**options), weight_mode="exp")


@pytest.mark.parametrize(
    "label",
    [LABEL, LABEL.to(torch.uint8), LABEL.float(), LABEL.to(torch.int32)],
    ids=["int64", "uint8", "float32 whole numbers", "int32"],
)
def test_valid_index_labels_give_monais_value(label):
    torch.testing.assert_close(DeepSupervisionDiceCELoss()(HEADS, label), _monai()(HEADS, label))
    torch.testing.assert_close(DeepSupervisionDiceCELoss()(HEADS[0], label), _monai()(HEADS[0], label))


def test_binary_targets_may_be_masks_or_soft():
    masks = torch.cat([(LABEL == k) for k in range(3)], dim=1)
    for target in (masks.float(), masks, masks.float() * 0.8 + 0.1):  # soft targets: BCE and soft Dice take them
        expected = _monai(index_labels=False)(HEADS, target.float())
        torch.testing.assert_close(DeepSupervisionDiceCELoss(binary=True)(HEADS, target.float()), expected)
    DeepSupervisionDiceCELoss(binary=True)(HEADS, masks)  # bool masks pass the checks


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (LABEL.float() * 0.5, r"non-integer values \(0\.5\).*rounded down"),  # was rounded to 0 silently
        (LABEL.float()[:, :, :4, :3], r"spatial shape \(4, 3\).*differs from the logits' \(8, 6\)"),  # was resized
        (LABEL[:, :, :4, :3], r"spatial shape \(4, 3\)"),  # was NotImplementedError from interpolate
        (LABEL + 1, r"label values \[3\] are outside the classes 0\.\.2.*at least 4"),  # was an index error
        (LABEL - 1, r"label values \[-1\] are outside the classes 0\.\.2"),
        (LABEL[:1], r"batch size 1 .* differs from the logits' 2"),  # was an AssertionError about one-hot shapes
        (LABEL.repeat(1, 3, 1, 1), r"has 3 channels .* index labels need one"),
        (LABEL[:, 0], r"the label needs the logits' 4 dimensions.*label\[:, None\]"),
        (torch.full_like(LABEL, float("nan"), dtype=torch.float32), "holds NaN"),
    ],
    ids=["float 0.5", "float smaller", "int smaller", "class 3", "class -1", "batch", "channels", "no channel", "nan"],
)
def test_bad_index_labels_are_value_errors(label, message):
    with pytest.raises(ValueError, match=message):
        DeepSupervisionDiceCELoss()(HEADS, label)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ((LABEL > 0).float(), r"target has 1 channel\(s\) .* logits have 3.*binary=True needs \(B, 3, \.\.\.\)"),
        (LABEL.repeat(1, 3, 1, 1).float(), r"target values \[2\] are outside \[0, 1\]"),
        (-LABEL.repeat(1, 3, 1, 1).float(), r"target values \[-2, -1\] are outside \[0, 1\]"),
    ],
    ids=["channels", "above 1", "below 0"],
)
def test_bad_binary_targets_are_value_errors(target, message):
    with pytest.raises(ValueError, match=message):
        DeepSupervisionDiceCELoss(binary=True)(HEADS, target)


def test_heads_must_share_one_shape():
    with pytest.raises(ValueError, match=r"head 1 has shape \(2, 3, 4, 3\) but head 0 has \(2, 3, 8, 6\)"):
        DeepSupervisionDiceCELoss()([HEADS[0], HEADS[1][:, :, :4, :3]], LABEL)


def test_one_hot_targets_with_to_onehot_y_false():
    one_hot = torch.cat([(LABEL == k) for k in range(3)], dim=1).float()
    loss = DeepSupervisionDiceCELoss(to_onehot_y=False)
    expected = DeepSupervisionLoss(DiceCELoss(softmax=True))(HEADS, one_hot)
    torch.testing.assert_close(loss(HEADS, one_hot), expected)
    with pytest.raises(ValueError, match=r"to_onehot_y=False needs \(B, 3, \.\.\.\)"):
        loss(HEADS, LABEL)


def test_check_labels_false_skips_the_checks():
    loss = DeepSupervisionDiceCELoss(check_labels=False)
    torch.testing.assert_close(loss(HEADS, LABEL.float() * 0.5), _monai()(HEADS, LABEL.float() * 0.5))


def test_checks_work_under_torch_compile():
    torch._dynamo.reset()
    loss = DeepSupervisionDiceCELoss()
    compiled = torch.compile(loss, backend="eager")  # dynamo only: the checks are Python, no code generation needed
    torch.testing.assert_close(compiled(HEADS, LABEL), loss(HEADS, LABEL))
    with pytest.raises(ValueError, match="non-integer values"):
        compiled(HEADS, LABEL.float() * 0.5)
    with pytest.raises(ValueError, match="outside the classes"):
        compiled(HEADS, LABEL + 1)
    with pytest.raises(ValueError, match="spatial shape"):
        compiled(HEADS, LABEL[:, :, :4, :3])
    torch.testing.assert_close(compiled(HEADS, LABEL), loss(HEADS, LABEL))
    torch._dynamo.reset()
