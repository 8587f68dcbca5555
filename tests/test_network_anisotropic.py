"""UNetPlusPlus with per-level, per-axis strides and kernel sizes (DynUNet's and nnU-Net's convention): the layers
they build, any input size, pruning, TorchScript, ONNX, the fast paths and bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import seeded

from monai_unetpp import UNetPlusPlus
from monai_unetpp.networks.fast_paths import set_fast_paths, upsampled_conv

# z pooled from the third level on, and left unconvolved (3 x 3 x 1) on the first two, as nnU-Net plans 5 mm slices
STRIDES = [(2, 2, 1), (2, 2, 1), (2, 2, 2)]
KERNELS = [(3, 3, 1), (3, 3, 1), 3, 3]


pytestmark = pytest.mark.usefixtures("one_thread")


def ct_net(**kwargs) -> UNetPlusPlus:
    args = {"features": (4, 8, 8, 8), "strides": STRIDES, "kernel_size": KERNELS, "deep_supervision": True}
    return UNetPlusPlus(3, 1, 2, **{**args, **kwargs})


def test_strides_and_kernel_sizes_build_the_layers():
    net = ct_net()
    assert net.strides == ((2, 2, 1), (2, 2, 1), (2, 2, 2))
    assert net.kernel_sizes == ((3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3))
    assert net.shape_factor() == [8, 8, 2]
    for i, node in enumerate(net.encoder):
        assert node.block.conv_0.conv.kernel_size == net.kernel_sizes[i]
        assert node.block.conv_1.conv.padding == tuple(k // 2 for k in net.kernel_sizes[i])
        if i > 0:
            assert node.pool.kernel_size == node.pool.stride == net.strides[i - 1] and node.pool.ceil_mode
    for column in net.decoder:
        for i, node in enumerate(column):
            # X^{i,j} undoes the pooling of level i + 1 and convolves with level i's kernel
            assert node.up.deconv.kernel_size == node.up.deconv.stride == net.strides[i]
            assert node.block.conv_0.conv.kernel_size == net.kernel_sizes[i]


def test_isotropic_strides_spelled_out_are_the_default_network():
    x = seeded(1, 1, 17, 16, 18)
    nets = []
    for args in ({}, {"strides": [2, 2, 2], "kernel_size": [3, 3, 3, 3]}, {"strides": [(2, 2, 2)] * 3}):
        torch.manual_seed(0)
        nets.append(UNetPlusPlus(3, 1, 2, features=(4, 8, 8, 8), **args).eval())
    with torch.no_grad():
        reference = nets[0](x)
        for net in nets[1:]:
            assert net.state_dict().keys() == nets[0].state_dict().keys()
            assert torch.equal(net(x), reference)


@pytest.mark.parametrize("upsample", ["deconv", "nontrainable"])
@pytest.mark.parametrize("shape", [(1, 1, 19, 13, 5), (2, 1, 8, 9, 2), (1, 1, 24, 16, 7)])
def test_output_shape_is_the_input_shape_for_any_size(upsample, shape):
    net = ct_net(upsample=upsample)
    x = seeded(*shape)
    heads = net.train()(x)
    assert len(heads) == 3 and all(h.shape == (shape[0], 2, *shape[2:]) for h in heads)
    with torch.no_grad():
        assert net.eval()(x).shape == (shape[0], 2, *shape[2:])


@pytest.mark.parametrize("upsample", ["deconv", "nontrainable", "pixelshuffle"])
def test_a_stride_of_one_or_three_keeps_the_input_shape(upsample):
    # 2D, stride 1 on the second axis at level 1; pixel shuffle takes factors that are the same on every axis
    strides = [3, (2, 2)] if upsample == "pixelshuffle" else [(2, 1), (3, 2)]
    net = UNetPlusPlus(2, 1, 2, features=(4, 8, 8), strides=strides, upsample=upsample, deep_supervision=True)
    factor = [6, 6] if upsample == "pixelshuffle" else [6, 2]
    assert net.shape_factor() == factor
    x = seeded(2, 1, 13, 7)
    assert all(h.shape == (2, 2, 13, 7) for h in net.train()(x))


def test_pruning_equals_the_full_networks_head():
    net = ct_net()
    x = seeded(1, 1, 17, 16, 6)
    with torch.no_grad():
        heads = net.train()(x)  # final first: heads[depth - k] is the head on X^{0,k}
        net.eval()
        for k in (1, 2):
            small = net.pruned(k)
            assert small.strides == net.strides[:k] and small.kernel_sizes == net.kernel_sizes[: k + 1]
            assert small.shape_factor() == [2**k, 2**k, 1]
            torch.testing.assert_close(net(x, inference_depth=k), heads[net.depth - k])
            torch.testing.assert_close(small(x), heads[net.depth - k])
    # the pruned network takes the smaller inputs its own depth allows, and no smaller
    assert net.pruned(2).accepts_spatial_shape((4, 4, 2)) and not net.accepts_spatial_shape((4, 4, 2))
    assert net.valid_inference_depths() == [3, 2, 1]


def test_torchscript_agrees_with_eager():
    net = ct_net(upsample="nontrainable")
    x = seeded(1, 1, 17, 16, 5)
    scripted = torch.jit.script(net)
    for a, b in zip(scripted.train()(x), net.train()(x), strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        scripted.eval(), net.eval()
        torch.testing.assert_close(scripted(x), net(x))
        torch.testing.assert_close(scripted(x, inference_mode="mean", inference_depth=2), net(x, "mean", 2))
        torch.testing.assert_close(torch.jit.script(net.pruned(1))(x), net(x, inference_depth=1))
    with pytest.raises(torch.jit.Error, match=r"at least \[8, 8, 2\]"):
        scripted(seeded(1, 1, 16, 16, 1))


def test_onnx_export_agrees_with_onnxruntime(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    net = ct_net().eval()
    x = seeded(1, 1, 19, 16, 6)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), opset_version=17, input_names=["image"], output_names=["logits"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ort_out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(ort_out), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "scale,kernel_size", [((2, 2, 1), (3, 3, 1)), ((2, 2, 1), (3, 3, 3)), ((1, 3, 2), (3, 5, 1)), ((3, 1), (3, 3))]
)
def test_folded_upsampling_takes_any_factor_per_axis(scale, kernel_size):
    dims = len(scale)
    below = seeded(2, 4, *[5, 4, 3][:dims]).requires_grad_()
    up_weight = (0.3 * seeded(4, 6, *scale, seed=1)).requires_grad_()
    up_bias = seeded(6, seed=2).requires_grad_()
    weight = (0.1 * seeded(8, 6, *kernel_size, seed=3)).requires_grad_()
    padding = [k // 2 for k in kernel_size]
    y = upsampled_conv(below, up_weight, up_bias, weight, padding)
    deconv, conv = (F.conv_transpose2d, F.conv2d) if dims == 2 else (F.conv_transpose3d, F.conv3d)
    y_ref = conv(deconv(below, up_weight, up_bias, stride=scale), weight, padding=padding)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    leaves = [below, up_weight, up_bias, weight]
    g = seeded(*y.shape, seed=4)
    for a, b in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(y_ref, leaves, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fast_paths_on_and_off_compute_the_same():
    # batch 1, widths of 16: the folded upsampling (with the (2, 2, 1) factors), the oneDNN grouping and the CPU
    # instance norm all apply; a smooth activation keeps float32 gradients comparable
    args = {"features": (16, 16, 32), "strides": [(2, 2, 1), 2], "kernel_size": [(3, 3, 1), 3, 3], "act": "gelu"}
    fast = UNetPlusPlus(3, 1, 2, deep_supervision=True, **args)
    with set_fast_paths(False):
        plain = UNetPlusPlus(3, 1, 2, deep_supervision=True, **args)
    plain.load_state_dict(fast.state_dict())
    folded: list[str] = []
    for name, module in fast.named_modules():
        if name.endswith(".up"):
            module.register_forward_hook(lambda m, i, o, name=name: folded.append(name))
    x = seeded(1, 1, 32, 32, 8)
    heads, heads_ref = fast(x), plain(x)
    assert "decoder.0.0.up" not in folded  # X^{0,1} folded its (2, 2, 1) deconvolution into its convolution
    for a, b in zip(heads, heads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    sum(h.square().mean() for h in heads).backward()
    sum(h.square().mean() for h in heads_ref).backward()
    for (name, a), b in zip(fast.named_parameters(), plain.parameters(), strict=True):
        if not name.endswith("conv_0.conv.bias") and not name.endswith("conv_1.conv.bias"):  # zero before the norm
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)
    with torch.no_grad():
        fast.eval(), plain.eval()
        odd = seeded(1, 1, 33, 30, 9)  # cropped upsampling: nothing folds, the other fast paths still apply
        torch.testing.assert_close(fast(odd), plain(odd), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"strides": [2, 2]}, r"strides must have one entry per downsampling, len\(features\) - 1 = 3"),
        ({"strides": [(2, 2), 2, 2]}, r"strides\[0\] must be a positive whole number or 3 of them"),
        ({"strides": [2, 0, 2]}, r"strides\[1\] must be a positive whole number"),
        ({"strides": [2, 2, 2.5]}, r"strides\[2\] must be a positive whole number"),
        ({"kernel_size": [3, 3, 3]}, r"one entry per level, len\(features\) = 4 of them, got 3"),
        ({"kernel_size": [3, (3, 3, 2), 3, 3]}, r"kernel_size\[1\] must be a positive odd number"),
        ({"kernel_size": 4}, "kernel_size must be a positive odd number"),
        ({"features": (4, 8, 8), "strides": [2, 2], "kernel_size": (3, 3, 1)}, "is ambiguous"),
        ({"upsample": "pixelshuffle", "strides": STRIDES}, r"pixelshuffle.*strides\[0\] = \(2, 2, 1\)"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, match):
    args = {"features": (4, 8, 8, 8), "strides": STRIDES, **kwargs}
    with pytest.raises(ValueError, match=match):
        UNetPlusPlus(3, 1, 2, **args)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((8, 8, 1), r"at least \[8, 8, 2\] \(shape_factor\(\), per axis\)"),
        ((7, 9, 9), r"at least \[8, 8, 2\]"),
        ((8, 8, 2), r"instance normalisation at least one spatial side must exceed \[8, 8, 2\]"),
    ],
)
def test_too_small_inputs_name_the_factor_per_axis(shape, match):
    net = ct_net().eval()
    assert not net.accepts_spatial_shape(shape) and not net.is_valid_shape(torch.zeros(1, 1, *shape))
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(1, 1, *shape))
    # one voxel more on any axis gives the deepest level a second voxel
    assert net.accepts_spatial_shape((8, 8, 3)) and net.eval()(seeded(1, 1, 8, 8, 3)).shape == (1, 2, 8, 8, 3)
    # without instance norm a single deepest voxel is fine
    assert ct_net(norm="batch").eval()(seeded(1, 1, 8, 8, 2)).shape == (1, 2, 8, 8, 2)
