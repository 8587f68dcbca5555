"""The network's fast paths compute what the plain layers compute: split convolutions, the upsampling folded into
the next convolution, the oneDNN grouping of batch-1 3D convolutions, the CPU instance norm, checkpointing, each
switched on and off, and the whole network against MONAI's BasicUNetPlusPlus holding the same weights."""

from __future__ import annotations

import collections
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import seeded
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNetPlusPlus

from monai_unetpp import UNetPlusPlus
from monai_unetpp.networks.blocks import ConvNormAct
from monai_unetpp.networks.fast_paths import (
    FAST_PATHS,
    InstanceNorm,
    conv_nd,
    fast_path_settings,
    set_fast_paths,
    takes_slow_cpu_kernel,
    upsampled_conv,
)

# A smooth activation: with LeakyReLU a rounding difference that moves a value across 0 changes its gradient by
# 0.9x, so float32 gradients of two equal computations are only comparable away from the kink.
SMOOTH = {"act": "gelu", "norm": ("instance", {"affine": True})}


pytestmark = pytest.mark.usefixtures("one_thread")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def conv_kernels(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if "conv" in e.name}


@pytest.mark.parametrize(
    "shape",
    [(1, 8, 12, 10, 9), (2, 8, 12, 10, 9), (1, 8, 40, 40, 40), (1, 8, 20, 17), (2, 8, 33)],
    ids=["3d-batch1-small", "3d-batch2", "3d-batch1-large", "2d", "1d"],
)
def test_split_convolution_equals_convolution_of_the_concatenation(shape):
    spatial_dims = len(shape) - 2
    widths = (8, 8, 16) if shape[2] < 40 else (8, 8)
    ours = ConvNormAct(spatial_dims, sum(widths), 8, 3, dropout=0.0, bias=True, **SMOOTH)
    reference = Convolution(spatial_dims, sum(widths), 8, kernel_size=3, padding=1, dropout=0.0, **SMOOTH)
    reference.load_state_dict(ours.state_dict())
    parts = [seeded(shape[0], c, *shape[2:], seed=k).requires_grad_() for k, c in enumerate(widths)]
    parts_ref = [p.detach().clone().requires_grad_() for p in parts]

    y, y_ref = ours(parts), reference(torch.cat(parts_ref, dim=1))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = seeded(*y.shape, seed=9)
    y.backward(g), y_ref.backward(g)
    for p, q in zip(parts, parts_ref, strict=True):
        assert relative_error(p.grad, q.grad) < 1e-5
    for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True):
        if name != "conv.bias":  # the bias before instance norm has a zero gradient: only rounding is left
            assert relative_error(a.grad, b.grad) < 1e-5, name


@pytest.mark.parametrize(
    "shape,kernel_size,bias",
    [
        ((1, 16, 8, 6, 7), 3, True),
        ((2, 4, 5, 6, 4), 3, False),
        ((2, 4, 5, 6, 4), 5, True),
        ((1, 4, 6, 9), 3, True),
        ((2, 4, 7), 1, True),
    ],
    ids=["3d-batch1", "3d-no-bias", "3d-kernel5", "2d", "1d-kernel1"],
)
def test_folded_upsampling_equals_convolution_of_the_deconvolution(shape, kernel_size, bias):
    dims = len(shape) - 2
    below = seeded(*shape).requires_grad_()
    up_weight = (0.3 * seeded(shape[1], 8, *[2] * dims, seed=1)).requires_grad_()
    up_bias = seeded(8, seed=2).requires_grad_() if bias else None
    weight = (0.1 * seeded(32, 8, *[kernel_size] * dims, seed=3)).requires_grad_()
    padding = [kernel_size // 2] * dims
    leaves = [t for t in (below, up_weight, up_bias, weight) if t is not None]

    y = upsampled_conv(below, up_weight, up_bias, weight, padding)
    deconv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    y_ref = conv(deconv(below, up_weight, up_bias, stride=2), weight, padding=padding)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = seeded(*y.shape, seed=4)
    grads = torch.autograd.grad(y, leaves, g)
    grads_ref = torch.autograd.grad(y_ref, leaves, g)
    for a, b in zip(grads, grads_ref, strict=True):
        assert relative_error(a, b) < 1e-5


def test_network_folds_the_upsampling_where_it_saves_work():
    net = UNetPlusPlus(3, 1, 2, features=(16, 16, 32, 64), deep_supervision=True)
    ran: list[str] = []
    for name, module in net.named_modules():
        if name.endswith(".up"):
            module.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    net(seeded(1, 1, 32, 32, 32))
    # X^{0,j} and X^{1,j} fold their deconvolution; at level 2 (8^3 voxels, 64 -> 32 channels) computing the
    # folded kernel would cost more than it saves
    assert ran == ["decoder.0.2.up"]
    ran.clear()
    net(seeded(1, 1, 32, 30, 33))  # odd sizes: the upsampled tensor is cropped, so nothing folds
    assert len(ran) == 6


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_batch1_3d_convolution_runs_on_onednn_with_the_same_result():
    x = seeded(1, 16, 16, 16, 16).requires_grad_()
    w = (0.1 * seeded(32, 16, 3, 3, 3, seed=1)).requires_grad_()
    b = seeded(32, seed=2).requires_grad_()
    x_ref, w_ref, b_ref = (t.detach().clone().requires_grad_() for t in (x, w, b))
    g = seeded(1, 32, 16, 16, 16, seed=3)

    def ours() -> torch.Tensor:
        y = conv_nd(x, w, b, [1, 1, 1], onednn_batch1=True)
        y.backward(g)
        return y

    def plain() -> torch.Tensor:
        y = F.conv3d(x_ref, w_ref, b_ref, padding=1)
        y.backward(g)
        return y

    # PyTorch's own choice for this shape is its im2col kernel; ours must avoid it in forward and backward
    assert "aten::slow_conv3d_forward" in conv_kernels(plain)
    kernels = conv_kernels(ours)
    assert "aten::mkldnn_convolution" in kernels and "aten::slow_conv3d_forward" not in kernels
    x.grad = w.grad = b.grad = x_ref.grad = w_ref.grad = b_ref.grad = None
    torch.testing.assert_close(ours(), plain(), rtol=1e-5, atol=1e-5)
    for a, ref in ((x, x_ref), (w, w_ref), (b, b_ref)):
        assert relative_error(a.grad, ref.grad) < 1e-5


@pytest.mark.parametrize("affine,track", [(True, False), (False, False), (True, True)])
def test_instance_norm_equals_torch_instance_norm(affine, track):
    reference = torch.nn.InstanceNorm3d(6, affine=affine, track_running_stats=track)
    ours = InstanceNorm(6, affine=affine, track_running_stats=track)
    if affine:
        with torch.no_grad():
            reference.weight.copy_(seeded(6, seed=1))
            reference.bias.copy_(seeded(6, seed=2))
    ours.load_state_dict(reference.state_dict())
    x = 3 * seeded(2, 6, 7, 8, 5) + 2
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(reference, mode)()
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    if track:
        torch.testing.assert_close(ours.running_mean, reference.running_mean)


def network_pair(spatial_dims: int, width: int, **kwargs) -> tuple[UNetPlusPlus, BasicUNetPlusPlus]:
    """Ours and MONAI's BasicUNetPlusPlus (the straightforward reference: concatenations, one module per node) in
    the same architecture and with the same weights."""
    # MONAI upsamples level i + 1 to half its width (to its full width into level 0): the widths must double
    features = (width, width, 2 * width, 4 * width, 8 * width)
    # seeded weights: a test's tolerance must not depend on the random state that earlier tests leave behind
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reference = BasicUNetPlusPlus(spatial_dims, 1, 3, features=(*features, width), deep_supervision=True, **kwargs)
    ours = UNetPlusPlus(spatial_dims, 1, 3, features=features, deep_supervision=True, **kwargs)
    with torch.no_grad():
        for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
            a.copy_(b)
    return ours, reference


@pytest.mark.parametrize(
    "width,shape",
    [(16, (1, 1, 32, 32, 32)), (4, (2, 1, 32, 16, 32)), (4, (1, 1, 48, 32))],
    ids=["3d-batch1-onednn-grouping-below-level-1", "3d-batch2", "2d"],
)
def test_network_equals_monai_basic_unetplusplus_with_the_same_weights(width, shape):
    ours, reference = network_pair(len(shape) - 2, width, **SMOOTH)
    x = seeded(*shape)
    heads, heads_ref = ours.train()(x), reference.train()(x)[::-1]  # MONAI lists the final head last
    for a, b in zip(heads, heads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    sum((h * seeded(*h.shape, seed=n)).sum() for n, h in enumerate(heads)).backward()
    sum((h * seeded(*h.shape, seed=n)).sum() for n, h in enumerate(heads_ref)).backward()
    for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True):
        if not name.endswith("conv.bias"):
            assert relative_error(a.grad, b.grad) < 1e-4, name
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x)[-1], rtol=1e-4, atol=1e-5)
        mean_ref = torch.stack(reference(x), dim=0).mean(dim=0)
        torch.testing.assert_close(ours(x, inference_mode="mean"), mean_ref, rtol=1e-4, atol=1e-5)


def test_checkpointing_changes_memory_not_results():
    net = UNetPlusPlus(3, 1, 2, features=(4, 8, 16), deep_supervision=True, **SMOOTH)
    checkpointed = UNetPlusPlus(3, 1, 2, features=(4, 8, 16), deep_supervision=True, checkpointing=True, **SMOOTH)
    checkpointed.load_state_dict(net.state_dict())
    x = seeded(1, 1, 24, 24, 24)
    for model in (net, checkpointed):
        sum(h.square().sum() for h in model.train()(x)).backward()
    for (name, a), b in zip(checkpointed.named_parameters(), net.parameters(), strict=True):
        assert relative_error(a.grad, b.grad) < 1e-5, name
    # only the blocks' inputs are kept for backward
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        checkpointed(x)
    with_checkpointing, saved = sum(saved), []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        net(x)
    assert with_checkpointing < 0.5 * sum(saved)
    with torch.no_grad():
        torch.testing.assert_close(checkpointed.eval()(x), net.eval()(x))


def test_scripted_network_takes_the_same_fast_paths():
    net = UNetPlusPlus(3, 1, 2, features=(4, 8, 16), deep_supervision=True)
    scripted = torch.jit.script(copy.deepcopy(net))
    x = seeded(1, 1, 20, 16, 24)  # batch-1 3D: the oneDNN grouping and the CPU instance norm both apply
    for a, b in zip(scripted.train()(x), net.train()(x), strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(scripted.eval()(x, inference_depth=1), net.eval()(x, inference_depth=1))


@pytest.mark.parametrize("upsample", ["deconv", "nontrainable", "pixelshuffle"])
def test_every_upsampling_scripts(upsample):
    # only deconvolutions fold: the scripted forward must compile without the folded branch's module for the others
    net = UNetPlusPlus(3, 1, 2, features=(16, 16), upsample=upsample).eval()
    x = seeded(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(copy.deepcopy(net))(x), net(x))


def test_bf16_autocast_takes_the_fast_paths_and_stays_close_to_float32():
    net = UNetPlusPlus(3, 1, 2, features=(16, 16, 32), deep_supervision=True)
    x = seeded(1, 1, 32, 32, 32)
    with torch.no_grad():
        reference = net.train()(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        heads = net(x)
    sum(h.float().square().mean() for h in heads).backward()
    assert relative_error(heads[0].float(), reference) < 5e-2
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_onnx_export_keeps_plain_convolutions_and_a_dynamic_batch(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    net = UNetPlusPlus(3, 1, 2, features=(32, 32), deep_supervision=True).eval()
    path = tmp_path / "net.onnx"
    # a batch-1 3D example that takes the oneDNN grouping in eager mode
    example = seeded(1, 1, 16, 16, 16)
    torch.onnx.export(net, (example,), str(path), dynamic_shapes=({0: torch.export.Dim("batch")},))
    groups = {
        a.i for n in onnx.load(str(path)).graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"
    }
    assert groups == {1}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (example, seeded(3, 1, 16, 16, 16, seed=1)):
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out), net(x), rtol=1e-4, atol=1e-4)


def test_switches_are_per_device_scoped_and_checked():
    before = fast_path_settings()
    assert before["cpu"] == dict.fromkeys(FAST_PATHS, True)
    assert before["cuda"] == dict.fromkeys(FAST_PATHS, False)  # measured on CPU only: off on CUDA
    with set_fast_paths(False):
        assert not any(fast_path_settings()["cpu"].values())
        with set_fast_paths(device="cuda", folded_upsampling=True):
            assert fast_path_settings()["cuda"]["folded_upsampling"]
            assert not fast_path_settings()["cpu"]["folded_upsampling"]
    assert fast_path_settings() == before
    with pytest.raises(ValueError, match="unknown fast path.*fold_upsampling"):
        set_fast_paths(fold_upsampling=False)
    with pytest.raises(ValueError, match="device must be one of"):
        set_fast_paths(device="mps")
    assert fast_path_settings() == before


def built(**switches: bool) -> UNetPlusPlus:
    with set_fast_paths(**switches), torch.random.fork_rng():
        torch.manual_seed(0)
        return UNetPlusPlus(3, 1, 2, features=(16, 16, 32), deep_supervision=True, **SMOOTH)


def kernels_of_a_training_step(net: UNetPlusPlus, x: torch.Tensor) -> collections.Counter[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sum(h.square().mean() for h in net.train()(x)).backward()
    return collections.Counter(e.name for e in prof.events())


def upsamplings_run(net: UNetPlusPlus, x: torch.Tensor) -> int:
    ran: list[str] = []
    hooks = [m.register_forward_hook(lambda *_: ran.append("up")) for n, m in net.named_modules() if n.endswith(".up")]
    with torch.no_grad():
        net.train()(x)
    for hook in hooks:
        hook.remove()
    return len(ran)


@pytest.mark.parametrize("name", FAST_PATHS)
def test_each_fast_path_switched_off_computes_the_same_the_plain_way(name):
    fast, plain = built(), built(**{name: False})
    x = seeded(1, 1, 32, 32, 32)  # batch-1 3D with doubling sides: every fast path applies somewhere
    fast_kernels, plain_kernels = kernels_of_a_training_step(fast, x), kernels_of_a_training_step(plain, x)
    for (key, a), b in zip(fast.named_parameters(), plain.parameters(), strict=True):
        if not key.endswith("conv.bias"):
            assert relative_error(a.grad, b.grad) < 1e-4, key
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)
    # and the plain way is really taken
    if name == "concat_free_conv":
        assert "aten::cat" in plain_kernels
    elif name == "folded_upsampling":
        assert all(node.fold is None for column in plain.decoder for node in column)
        assert upsamplings_run(plain, x) == 3 and upsamplings_run(fast, x) < 3
    elif name == "onednn_batch1_conv3d":
        assert plain_kernels["aten::slow_conv3d_forward"] > fast_kernels["aten::slow_conv3d_forward"]
    else:
        assert "aten::instance_norm" in plain_kernels and "aten::instance_norm" not in fast_kernels
        assert type(plain.encoder[0].block.conv_0.adn.N) is torch.nn.InstanceNorm3d


def test_every_fast_path_off_is_monai_basic_unetplusplus_exactly():
    with set_fast_paths(False):
        ours, reference = network_pair(3, 4, **SMOOTH)
    x = seeded(1, 1, 32, 16, 32)
    for a, b in zip(ours.train()(x), reference.train()(x)[::-1], strict=True):
        assert torch.equal(a, b)


def test_the_slow_kernel_rule_is_pytorchs():
    # takes_slow_cpu_kernel copies PyTorch's choice of convolution kernel: asked of PyTorch itself, so that a
    # release that changes it fails here
    select = torch._C._select_conv_backend
    for batch, channels, side, out, kernel in [
        (1, 16, 16, 32, 3),
        (1, 16, 32, 32, 3),
        (1, 32, 32, 32, 3),
        (1, 16, 40, 32, 3),
        (2, 16, 16, 32, 3),
        (1, 16, 16, 32, 5),
        (1, 64, 8, 64, 3),
        (1, 32, 24, 64, 1),
    ]:
        x = torch.zeros(batch, channels, side, side, side)
        w = torch.zeros(out, channels, kernel, kernel, kernel)
        p = [kernel // 2] * 3
        backend = select(x, w, None, [1, 1, 1], p, [1, 1, 1], False, [0, 0, 0], 1, None)
        assert takes_slow_cpu_kernel(x, w) == (backend == torch._C._ConvBackend.Slow3d), (x.shape, w.shape, backend)
