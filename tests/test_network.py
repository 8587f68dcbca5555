"""UNetPlusPlus: shapes, the deep-supervision contract, inference modes, pruning, export and bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded, tiny_net

from monai_unetpp import UNetPlusPlus


def head_at(net: UNetPlusPlus, x: torch.Tensor, column: int) -> torch.Tensor:
    """Head X^{0,column} of the full network, from the training-mode list (final head first)."""
    net.train()
    with torch.no_grad():
        heads = net(x)
    net.eval()
    return heads[net.depth - column]


@pytest.mark.parametrize("spatial_dims,shape", [(1, (2, 1, 37)), (2, (2, 1, 33, 20)), (3, (1, 1, 17, 24, 19))])
@pytest.mark.parametrize("upsample", ["deconv", "nontrainable", "pixelshuffle"])
def test_output_shape_matches_any_input_shape(spatial_dims, shape, upsample):
    net = tiny_net(spatial_dims, upsample=upsample)
    x = seeded(*shape)
    heads = net.train()(x)
    assert isinstance(heads, list) and len(heads) == net.depth
    assert all(h.shape == (shape[0], 3, *shape[2:]) for h in heads)
    with torch.no_grad():
        y = net.eval()(x)
    assert isinstance(y, torch.Tensor) and y.shape == (shape[0], 3, *shape[2:])


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_any_depth_builds_the_nested_grid(depth):
    net = tiny_net(2, depth=depth)
    assert net.depth == depth
    assert len(net.encoder) == depth + 1
    # column j holds X^{0..depth-j, j}: depth * (depth + 1) / 2 decoder nodes in all
    assert [len(c) for c in net.decoder] == list(range(depth, 0, -1))
    x = seeded(1, 1, 2**depth + 3, 2**depth)
    assert len(net.train()(x)) == depth
    assert net.eval()(x).shape == (1, 3, 2**depth + 3, 2**depth)


def test_dense_skips_concatenate_every_earlier_node_of_the_level():
    net = tiny_net(2, depth=3)
    for j, column in enumerate(net.decoder, start=1):
        for i, node in enumerate(column):
            first_conv = node.block.conv_0.conv
            # j same-level nodes X^{i,0..j-1} plus Up(X^{i+1,j-1}), each with the level's width
            assert first_conv.in_channels == (j + 1) * net.features[i]
            assert node.up is not None


def test_parameter_count_matches_monai_basic_unetplusplus():
    from monai.networks.nets import BasicUNetPlusPlus

    ours = UNetPlusPlus(3, 1, 2, deep_supervision=True)
    monai_net = BasicUNetPlusPlus(3, 1, 2, deep_supervision=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in monai_net.parameters())


def test_paper_preset_is_the_reference_architecture():
    net = UNetPlusPlus.from_preset("paper", spatial_dims=2, in_channels=1, out_channels=1)
    assert net.features == (32, 64, 128, 256, 512) and net.deep_supervision
    assert sum(p.numel() for p in net.parameters()) == 9_041_700  # the paper's "9.04M" for UNet++ w/ DS
    assert not any(isinstance(m, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)) for m in net.modules())
    deconvs = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert deconvs and all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in deconvs)
    override = UNetPlusPlus.from_preset("paper", spatial_dims=2, in_channels=1, out_channels=1, features=(8, 16))
    assert override.depth == 1


def test_without_deep_supervision_there_are_no_unused_heads():
    net = tiny_net(2, deep_supervision=False)
    assert len(net.heads) == 1
    x = seeded(1, 1, 16, 16)
    out = net.train()(x)
    assert isinstance(out, torch.Tensor)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_every_parameter_gets_a_gradient_with_deep_supervision():
    net = tiny_net(2)
    sum(h.sum() for h in net.train()(seeded(1, 1, 16, 16))).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_final_and_mean_modes():
    net = tiny_net(2)
    x = seeded(2, 1, 24, 16)
    heads = [head_at(net, x, c) for c in range(1, net.depth + 1)]
    with torch.no_grad():
        torch.testing.assert_close(net(x), heads[-1])
        torch.testing.assert_close(net(x, inference_mode="mean"), torch.stack(heads).mean(0))
        net.set_inference(inference_mode="mean")
        torch.testing.assert_close(net(x), torch.stack(heads).mean(0))
        torch.testing.assert_close(net(x, inference_mode="final"), heads[-1])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pruned_forward_equals_the_head_of_the_full_network(spatial_dims):
    net = tiny_net(spatial_dims, depth=3)
    x = seeded(1, 1, *([19] * spatial_dims))
    for k in (1, 2, 3):
        expected = head_at(net, x, k)
        with torch.no_grad():
            torch.testing.assert_close(net(x, inference_depth=k), expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(net.pruned(k)(x), expected, rtol=1e-5, atol=1e-5)
            net.set_inference(inference_depth=k)
            torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
            net.set_inference(inference_depth=net.depth)


def executed_nodes(net: UNetPlusPlus, x: torch.Tensor, **kwargs) -> set[str]:
    ran: set[str] = set()
    names = {m: n for n, m in net.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, *_: ran.add(names[mod]))
        for n, m in net.named_modules()
        if n.count(".") in (1, 2) and n.startswith(("encoder.", "decoder.")) and not n.endswith((".up", ".block"))
    ]
    with torch.no_grad():
        net(x, **kwargs)
    for h in hooks:
        h.remove()
    return {n for n in ran if n.count(".") == (1 if n.startswith("encoder") else 2)}


def test_pruning_runs_only_the_nodes_with_i_plus_j_at_most_k():
    net = tiny_net(2, depth=4).eval()
    x = seeded(1, 1, 32, 32)
    for k in range(1, 5):
        ran = executed_nodes(net, x, inference_depth=k)
        expected = {f"encoder.{i}" for i in range(k + 1)}
        expected |= {f"decoder.{j - 1}.{i}" for j in range(1, k + 1) for i in range(k - j + 1)}
        assert ran == expected


def count_flops(net: torch.nn.Module, x: torch.Tensor, **kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, **kwargs)
    return counter.get_total_flops()


def test_pruning_saves_flops_and_parameters():
    net = tiny_net(3, depth=3).eval()
    x = seeded(1, 1, 16, 16, 16)
    flops = [count_flops(net, x, inference_depth=k) for k in (1, 2, 3)]
    assert flops[0] < flops[1] < flops[2]
    assert flops[0] < 0.3 * flops[2]
    sizes = [sum(p.numel() for p in net.pruned(k).parameters()) for k in (1, 2, 3)]
    assert sizes[0] < sizes[1] < sizes[2] == sum(p.numel() for p in net.parameters())


def test_pruned_copy_is_standalone():
    net = tiny_net(2, depth=3)
    small = net.pruned(2)
    assert small.depth == 2 and not small.training
    assert set(small.state_dict()) < set(net.state_dict())
    for key, value in small.state_dict().items():
        assert torch.equal(value, net.state_dict()[key])
    with pytest.raises(ValueError, match="inference_depth must be in 1..2"):
        small(seeded(1, 1, 16, 16), inference_depth=3)
    assert small.pruned(1).depth == 1


@pytest.mark.parametrize("pruned", [False, True])
def test_torchscript_in_train_and_eval(pruned):
    net = tiny_net(2)
    if pruned:
        net = net.pruned(2)
    x = seeded(1, 1, 20, 16)
    scripted = torch.jit.script(net)
    scripted.train(), net.train()
    torch.manual_seed(0)
    for a, b in zip(scripted(x), net(x), strict=True):
        torch.testing.assert_close(a, b)
    scripted.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
        torch.testing.assert_close(
            scripted(x, inference_mode="mean", inference_depth=1), net(x, inference_mode="mean", inference_depth=1)
        )


def test_monai_convert_to_torchscript_verifies(tmp_path):
    from monai.networks.utils import convert_to_torchscript

    net = tiny_net(3, depth=2).eval()
    convert_to_torchscript(net, filename_or_obj=tmp_path / "net.ts", verify=True, inputs=[seeded(1, 1, 16, 16, 16)])
    assert (tmp_path / "net.ts").stat().st_size > 0


def test_onnx_export_matches_onnxruntime(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    net = tiny_net(3, depth=2).eval()
    x = seeded(1, 1, 16, 20, 18)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), opset_version=17, input_names=["image"], output_names=["logits"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ort_out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(ort_out), net(x), rtol=1e-4, atol=1e-4)


def test_torch_compile_matches_eager():
    net = tiny_net(2, depth=2).eval()
    x = seeded(1, 1, 16, 16)
    compiled = torch.compile(net)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_captures_training_and_inference_in_one_graph():
    # batch-1 3D, widths of 16: the oneDNN grouping, the folded upsampling and the CPU instance norm all apply
    net = UNetPlusPlus(3, 1, 2, features=(16, 16, 32), deep_supervision=True)
    x = seeded(1, 1, 32, 32, 32)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break is an error
    heads, heads_ref = compiled.train()(x), net.train()(x)
    for a, b in zip(heads, heads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    sum(h.square().mean() for h in heads).backward()
    with torch.no_grad():
        torch.testing.assert_close(
            compiled.eval()(x, inference_depth=1), net.eval()(x, inference_depth=1), rtol=1e-5, atol=1e-5
        )


def test_monai_verify_net_in_out_style_eval_returns_one_tensor():
    from monai.inferers import SlidingWindowInferer

    net = tiny_net(3, depth=2).eval()
    with torch.no_grad():
        out = SlidingWindowInferer(roi_size=16, sw_batch_size=2)(seeded(1, 1, 30, 21, 16), net)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 30, 21, 16)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"features": (8,)}, "at least two positive widths"),
        ({"features": (8, 0)}, "at least two positive widths"),
        ({"kernel_size": 4}, "kernel_size must be a positive odd number"),
        ({"upsample": "bilinear"}, "upsample must be"),
        ({"spatial_dims": 4}, "spatial_dims must be 1, 2 or 3"),
        ({"inference_mode": "best"}, r"inference_mode must be one of \['final', 'mean'\], got 'best'"),
        ({"inference_depth": 9}, r"inference_depth must be in 1..3"),
        ({"deep_supervision": False, "inference_depth": 2}, "build the network with deep_supervision=True"),
        ({"deep_supervision": False, "inference_mode": "mean"}, "build with deep_supervision=True"),
        ({"inference_depth": 1.7}, "inference_depth must be a whole number, got 1.7"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, match):
    args = {"spatial_dims": 2, "features": (4, 8, 8, 8), "deep_supervision": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        UNetPlusPlus(in_channels=1, out_channels=2, **args)
    with pytest.raises(ValueError, match="Unknown preset"):
        UNetPlusPlus.from_preset("nope")


@pytest.mark.parametrize("name", ["in_channels", "out_channels"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_bad_channel_counts_name_the_argument(name, value):
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": (4, 8), name: value}
    with pytest.raises(ValueError, match=f"{name} must be a positive whole number of channels, got {value!r}"):
        UNetPlusPlus(**args)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 2, 16, 16), "expected 1 input channels, got 2"),
        ((1, 1, 16, 16, 16), r"expected a 4D input"),
        ((1, 1, 16), r"expected a 4D input"),
        ((1, 1, 7, 16), r"at least 8 \(2 \*\* depth\)"),
    ],
)
def test_bad_input_names_expected_and_got(shape, match):
    net = tiny_net(2, depth=3).eval()
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))
    assert net.accepts_spatial_shape((8, 9)) and not net.accepts_spatial_shape((7, 9))
    assert not net.accepts_spatial_shape((8, 8, 8))


def test_shape_api_is_monais():
    # SegResNetDS: shape_factor() lists the downsampling factor per axis, is_valid_shape(x) takes the input Tensor
    net = tiny_net(2, depth=3).eval()
    assert net.shape_factor() == [8, 8]
    assert net.is_valid_shape(torch.zeros(1, 1, 8, 9)) and not net.is_valid_shape(torch.zeros(1, 1, 7, 9))
    assert not net.is_valid_shape(torch.zeros(1, 1, 8, 8, 8))
    with pytest.warns(DeprecationWarning, match="accepts_spatial_shape"):
        assert net.is_valid_shape((8, 9))


def test_old_keyword_names_warn_and_still_work():
    net = tiny_net(2, depth=3, deep_supervision=True).eval()
    x = seeded(1, 1, 16, 16)
    with torch.no_grad():
        expected = net(x, inference_mode="mean", inference_depth=2)
        with pytest.warns(DeprecationWarning, match="inference_depth"):
            torch.testing.assert_close(net(x, mode="mean", depth=2), expected)
    with pytest.warns(DeprecationWarning, match="inference_mode"):
        net.set_inference(mode="mean")
    assert net.inference_mode == "mean"
    with pytest.raises(ValueError, match="both inference_depth=1 and its deprecated name depth=2"):
        net.set_inference(inference_depth=1, depth=2)
    assert net.valid_inference_depths() == [3, 2, 1]
    assert tiny_net(2, depth=3, deep_supervision=False).valid_inference_depths() == [3]


def test_metatensor_input_from_monai_pipelines():
    from monai.data import MetaTensor

    net = tiny_net(3, depth=2)
    x = MetaTensor(seeded(1, 1, 16, 17, 16), affine=torch.eye(4))
    assert len(net.train()(x)) == 2
    with torch.no_grad():
        for k in (1, 2):
            assert net.eval()(x, inference_depth=k, inference_mode="mean").shape == (1, 3, 16, 17, 16)


def test_instance_norm_needs_more_than_one_voxel_at_the_deepest_level():
    net = UNetPlusPlus(3, 1, 2, features=(4, 8, 8), norm="instance").eval()
    with pytest.raises(ValueError, match="at least one spatial side must exceed 4"):
        net(torch.zeros(1, 1, 4, 4, 4))
    assert not net.accepts_spatial_shape((4, 4, 4)) and net.accepts_spatial_shape((4, 5, 4))
    assert net(torch.zeros(1, 1, 4, 5, 4)).shape == (1, 2, 4, 5, 4)
    batch_norm = UNetPlusPlus(3, 1, 2, features=(4, 8, 8), norm="batch").eval()
    assert batch_norm.accepts_spatial_shape((4, 4, 4)) and batch_norm(torch.zeros(1, 1, 4, 4, 4)).shape == (
        1,
        2,
        4,
        4,
        4,
    )
