"""torch.compile on the MetaTensors that MONAI's data pipeline yields: one graph (fullgraph=True), eager's values,
MONAI's metadata on the outputs, in eval and in training, and MONAI's own SupervisedTrainer(compile=True).

The tests compile with the ``aot_eager`` backend: it captures the graph and its backward as inductor does, without
the C++ compilation, which takes minutes on a small CPU."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded
from monai.data import MetaTensor

from monai_unetpp import UNetPlusPlus

pytestmark = pytest.mark.usefixtures("one_thread")


def ct_image(name: str, spacing: float, seed: int = 0) -> MetaTensor:
    """A batch of one image as a MONAI DataLoader yields it: a MetaTensor with an affine and a file name."""
    affine = torch.diag(torch.tensor([0.8, 0.8, spacing, 1.0], dtype=torch.float64))
    return MetaTensor(seeded(1, 1, 16, 12, 6, seed=seed), affine=affine, meta={"filename_or_obj": name})


def anisotropic_net() -> UNetPlusPlus:
    args = {"features": (4, 8, 8), "strides": [(2, 2, 1), 2], "kernel_size": [(3, 3, 1), 3, 3]}
    return UNetPlusPlus(3, 1, 2, deep_supervision=True, **args)


def assert_meta_of(out: MetaTensor, image: MetaTensor) -> None:
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == image.meta["filename_or_obj"]
    torch.testing.assert_close(out.affine, image.affine)


def test_eager_metatensor_in_gives_the_plain_result_with_the_inputs_metadata():
    net = anisotropic_net().eval()
    image = ct_image("a.nii.gz", 5.0)
    with torch.no_grad():
        out = net(image)
        plain = net(image.as_tensor())
        by_name = net(x=image)
    assert type(plain) is torch.Tensor
    assert_meta_of(out, image)
    assert_meta_of(by_name, image)
    assert torch.equal(out.as_tensor(), plain) and torch.equal(by_name.as_tensor(), plain)
    heads = net.train()(image)
    assert len(heads) == 2
    for head in heads:
        assert_meta_of(head, image)


def test_compile_fullgraph_on_metatensors_equals_eager_in_eval_and_training():
    net = anisotropic_net()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break is an error
    first, second = ct_image("a.nii.gz", 5.0), ct_image("b.nii.gz", 3.0, seed=1)

    heads, heads_ref = compiled.train()(first), net.train()(first)
    assert len(heads) == len(heads_ref) == 2
    for head, ref in zip(heads, heads_ref, strict=True):
        assert_meta_of(head, first)
        torch.testing.assert_close(head.as_tensor(), ref.as_tensor(), rtol=1e-5, atol=1e-5)
    sum(h.square().mean() for h in heads).backward()
    assert all(p.grad is not None for p in net.parameters())

    with torch.no_grad():
        compiled.eval(), net.eval()
        for image in (first, second):  # the metadata is each call's own, not the first trace's
            out = compiled(image)
            assert_meta_of(out, image)
            torch.testing.assert_close(out.as_tensor(), net(image.as_tensor()), rtol=1e-5, atol=1e-5)


def supervised_trainer(net: torch.nn.Module, **kwargs):
    from monai.engines import SupervisedTrainer
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    image = ct_image("a.nii.gz", 5.0)
    label = MetaTensor((seeded(1, 1, 16, 12, 6, seed=2) > 0).float(), affine=image.affine)
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": image, "label": label}],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True)),
        **kwargs,
    )


def small_net() -> UNetPlusPlus:
    # one downsampling: the trainer tests compile a network twice, and tracing time grows with the nodes
    return UNetPlusPlus(3, 1, 2, features=(4, 8), strides=[(2, 2, 1)], deep_supervision=True)


def test_monai_supervised_trainer_compile_flag_cannot_wrap_a_list_output():
    # MONAI 1.6.1's SupervisedTrainer(compile=True) makes the prediction a MetaTensor after the step, which fails
    # for the deep-supervision list; if a MONAI release fixes it, this fails and the network's docstring changes
    trainer = supervised_trainer(small_net(), compile=True, compile_kwargs={"backend": "aot_eager"})
    with pytest.warns(UserWarning, match="Will convert to PyTorch Tensor"):
        with pytest.raises(ValueError, match="only one element tensors can be converted"):
            trainer.run()


def test_monai_supervised_trainer_runs_a_network_compiled_in_place():
    # the workaround the network's docstring gives: compile the network itself (same module, same state_dict
    # keys), let the trainer pass its MetaTensors
    net = small_net()
    net.compile(fullgraph=True, backend="aot_eager")
    trainer = supervised_trainer(net, decollate=False)
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    heads = trainer.state.output["pred"]
    assert len(heads) == net.depth and all(isinstance(h, MetaTensor) for h in heads)
    assert_meta_of(heads[0], trainer.state.output["image"])
    assert "encoder.0.block.conv_0.conv.weight" in net.state_dict()
