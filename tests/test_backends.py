"""The inferer's runtimes: OpenVINO gives PyTorch fp32's label maps, reuses its conversion until the weights change,
keeps the folded upsampling in its graph, and PyTorch with a warning stands in where OpenVINO is missing."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn as nn
from conftest import seeded, tiny_net
from monai.data import MetaTensor

from monai_unetpp import UNetPlusPlus, UNetPlusPlusInferer, runtime

openvino = pytest.importorskip("openvino")

ROI = 16
#: 3 x 3 x 2 = 18 windows of 16^3 with overlap 0.25: batches of 4 end with one of 2
VOLUME = (1, 1, 40, 36, 28)


def with_random_biases(network: UNetPlusPlus) -> UNetPlusPlus:
    """``network`` with non-zero biases and norm affines: every term of the folded upsampling matters."""
    with torch.no_grad():
        for p in network.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.3)
    return network


def runs_int8(kernel: str) -> bool:
    """Whether a CPU plugin kernel name is an int8 one: "brgconv_avx512_I8" (AVX512-VNNI), "..._amx_i8" (AMX)."""
    return kernel.lower().endswith("_i8")


@pytest.fixture
def net():
    torch.manual_seed(0)
    return with_random_biases(tiny_net(depth=2).eval())


@pytest.fixture
def cache():
    runtime.compiled_networks.clear()
    yield runtime.compiled_networks
    runtime.compiled_networks.clear()


def infer(net, image, **kwargs):
    with torch.no_grad():
        return UNetPlusPlusInferer(ROI, sw_batch_size=4, **kwargs)(image, net)


def test_openvino_gives_torch_label_maps_converts_once_and_again_after_training(net, cache):
    image = MetaTensor(seeded(*VOLUME), affine=torch.diag(torch.tensor([2.0, 1.5, 3.0, 1.0])))
    reference = infer(net, image)
    out = infer(net, image, backend="openvino")

    assert isinstance(out, MetaTensor) and torch.equal(out.affine, image.affine)
    assert out.shape == reference.shape
    assert torch.equal(out.argmax(1), reference.argmax(1))
    assert (out - reference).abs().max() < 1e-4 * reference.abs().max()
    (entry,) = cache
    assert cache.conversions == 1 and entry.compiled_batches == [2, 4]  # the last, smaller batch compiled too
    # the network's own decisions for this window shape fold every node's upsampling, and the graph computes no
    # kernel: three 4^3 transposed convolutions, where the plain layers have three 2^3 ones and three more
    # convolutions (of the upsampled tensors); only int8 runs them as output phases
    assert entry.transposed_convolution_kernels() == [(4, 4, 4)] * 3 and entry.phase_convolutions == []
    # 6 in the encoder, per decoder node one per skip part and one after it (X01: 2, X11: 2, X02: 3), the head
    counts = entry.op_counts()
    assert counts["Convolution"] == 6 + 7 + 1 and "DepthToSpace" not in counts
    # what the CPU plugin keeps in its blocked layout: instance norm as MVN (no GroupNormalization, whose Reshapes
    # need reorders), and constant weight slices (no shape computations left from the trace)
    assert counts["MVN"] == 12 and "GroupNormalization" not in counts
    assert not {"ShapeOf", "Gather", "Reshape"} & set(counts)
    # each node's deconvolution bias enters as one slice broadcast along the first spatial axis and the border
    # slices' differences from it, placed by masks (Select), not as a constant of the output's size, nor cut and
    # joined (Split, Concat)
    assert counts["Select"] == 3 * 2 and not {"Concat", "VariadicSplit", "Split"} & set(counts)
    largest = max(op.get_byte_size() for op in entry.model.get_ordered_ops() if op.get_type_name() == "Constant")
    assert largest < 4 * 16**3 * 4  # less than one 16^3 window of the 4-channel level 0

    again = infer(net, image, backend="openvino")
    assert cache.conversions == 1 and torch.equal(again, out)

    with torch.no_grad():  # an edit that bumps no version counter of the parameter
        net.heads[-1].bias.data += torch.tensor([5.0, 0.0, -5.0])
    changed = infer(net, image, backend="openvino")
    assert cache.conversions == 2
    assert torch.equal(changed.argmax(1), infer(net, image).argmax(1))
    assert not torch.equal(changed.argmax(1), out.argmax(1))


def test_openvino_takes_monais_final_head_last(cache):
    from monai.networks.nets import BasicUNetPlusPlus

    torch.manual_seed(0)
    monai_net = BasicUNetPlusPlus(3, 1, 2, features=(4, 4, 8, 16, 32, 4), deep_supervision=True).eval()
    image = seeded(1, 1, 32, 32, 32)
    with torch.no_grad():
        out = UNetPlusPlusInferer(roi_size=32, backend="openvino")(image, monai_net)
        torch.testing.assert_close(out, monai_net(image)[-1], atol=1e-4, rtol=1e-4)


def test_openvino_pools_as_the_network_where_the_window_does_not_divide(net):
    # 18 and 14 do not divide by the network's factor 4: its ceil-mode pooling keeps each axis's last voxels at
    # the level below, where floor mode (which the export takes for windows that divide) would drop them
    window = seeded(2, 1, 18, 16, 14, seed=4)
    with torch.no_grad():
        reference = net(window)
    out = runtime.OpenVINONetwork(net, window)(window)
    assert out.shape == reference.shape
    assert (out - reference).abs().max() < 1e-4 * reference.abs().max()


def test_openvino_runs_the_pruned_network_in_mean_mode(cache):
    inference_mode = "mean"
    torch.manual_seed(1)
    net = tiny_net(depth=3).eval()
    image = seeded(*VOLUME, seed=1)
    reference = infer(net, image, inference_mode=inference_mode, inference_depth=2)
    out = infer(net, image, backend="openvino", inference_mode=inference_mode, inference_depth=2)
    assert torch.equal(out.argmax(1), reference.argmax(1))
    assert (out - reference).abs().max() < 1e-4 * reference.abs().max()
    (entry,) = cache
    # UNet++ L2 alone: two poolings and three decoder nodes, each with one folded transposed convolution
    counts = entry.op_counts()
    assert counts["MaxPool"] == 2 and entry.transposed_convolution_kernels() == [(4, 4, 4)] * 3


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_bf16_agrees_with_fp32(net, cache, backend):
    image = seeded(*VOLUME, seed=2)
    reference = infer(net, image)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = infer(net, image, backend=backend, precision="bf16")
    bf16_on_cpu = backend == "torch" or runtime.openvino_bf16_supported()
    said = any("runs in fp32" in str(w.message) for w in caught)
    assert said == (not bf16_on_cpu)
    assert out.dtype == torch.float32
    agreement = (out.argmax(1) == reference.argmax(1)).float().mean()
    assert agreement > 0.98
    assert (out - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize(
    ("dims", "kernel", "stride", "padding", "rewritten"),
    [
        (3, 4, 2, 1, True),  # the folded upsampling of a 3x3x3 convolution
        (2, 4, 2, 1, True),
        (1, 4, 2, 1, True),
        (3, 6, 2, 2, True),  # of a 5x5x5 convolution
        (2, 5, 3, 1, True),  # upsampling by 3
        (3, 2, 2, 0, False),  # a plain deconvolution: one tap per phase
        (2, 3, 2, 1, False),  # output 2n - 1, not a multiple of the input
    ],
)
def test_transposed_convolutions_as_output_phases_compute_the_same(dims, kernel, stride, padding, rewritten):
    import numpy as np
    from openvino import opset13 as ops

    rng = np.random.default_rng(dims * 100 + kernel)
    weight = rng.standard_normal((5, 7, *[kernel] * dims)).astype(np.float32)
    x = rng.standard_normal((2, 5, *[3 + axis for axis in range(dims)])).astype(np.float32)

    def model():
        data = ops.parameter(list(x.shape), np.float32)
        spec = [stride] * dims, None, [padding] * dims, [padding] * dims
        return openvino.Model([ops.convolution_backprop_data(data, ops.constant(weight), *spec)], [data])

    def run(m):
        return openvino.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]

    phased = model()
    assert runtime._as_phase_convolutions(phased) == ([(kernel,) * dims] if rewritten else [])
    types = {op.get_type_name() for op in phased.get_ordered_ops()}
    assert ("ConvolutionBackpropData" in types) != rewritten and ("DepthToSpace" in types) == rewritten
    expected = run(model())
    got = run(phased)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()


def test_the_quantized_phases_of_one_join_get_its_widest_range():
    import numpy as np
    from openvino import opset13 as ops

    data = ops.parameter([1, 4, 3, 3], np.float32)
    # NNCF's symmetric ranges, (-128 s, 127 s) per phase; the second phase's is the widest
    scales = [0.01, 0.03, 0.02, 0.015]
    quantizers = []
    for scale in scales:
        low, high = (ops.constant(np.float32(v).reshape(1, 1, 1, 1)) for v in (-128 * scale, 127 * scale))
        quantizers.append(ops.fake_quantize(data, low, high, low, high, 256))
    join = ops.depth_to_space(ops.concat(quantizers, 1), "blocks_first", 2)
    model = openvino.Model([join], [data])
    assert runtime._one_range_per_phase_join(model) == 1
    for quantizer in quantizers:
        limits = [float(quantizer.input_value(i).get_node().get_data().ravel()[0]) for i in range(1, 5)]
        assert limits == pytest.approx([-128 * 0.03, 127 * 0.03] * 2)  # one quantizer's range: still symmetric


def test_int8_calibrates_once_on_the_first_image_and_is_reused(net, cache):
    pytest.importorskip("nncf")
    image = seeded(*VOLUME, seed=3)
    reference = infer(net, image)
    out = infer(net, image, backend="openvino", precision="int8")
    (entry,) = cache
    assert entry.precision == "int8" and entry.compiled_batches == [2, 4]
    # what the CPU plugin runs: every convolution in int8 but the first (the image's intensities) and the head,
    # the transposed convolutions or the folded upsamplings' phases too, and the poolings (in the network's ceil
    # mode the plugin pooled in float32, and the convolution after each pooling too); a decoder node's same-level
    # inputs are read concatenated, by one convolution (6 in the encoder, 2 per decoder node, the head)
    layers = entry.kernels()
    if runtime._int8_convolutions_run_on_amx():
        # AMX reads input channels in blocks of 64, which every width here fits in: folding would save no
        # multiply-adds, so no node folds, and the plain deconvolutions run in int8 as they are
        assert entry.phase_convolutions == [] and entry.transposed_convolution_kernels() == [(2, 2, 2)] * 3
        phases = 0
    else:
        # AVX512-VNNI: the network's own decisions fold every node, and the folded transposed convolutions (most
        # ran in float32 there) run as their 8 output phases
        assert entry.phase_convolutions == [(4, 4, 4)] * 3 and entry.transposed_convolution_kernels() == []
        phases = 3 * 8
        # one quantization range per join: the phases are joined in int8 (one range per phase kept it float32)
        joins = [kernel for layer, kernel in layers if layer == "DepthToSpace"]
        assert len(joins) == 3 and all(map(runs_int8, joins))
    convolutions = [runs_int8(kernel) for layer, kernel in layers if layer == "Convolution"]
    assert len(convolutions) == 6 + 3 * 2 + 1 + phases
    assert convolutions == [False] + [True] * (len(convolutions) - 2) + [False]
    transposed = [runs_int8(kernel) for layer, kernel in layers if layer == "Deconvolution"]
    assert len(transposed) == len(entry.transposed_convolution_kernels()) and all(transposed)
    poolings = [kernel for layer, kernel in layers if layer == "Pooling"]
    assert len(poolings) == 2 and all(map(runs_int8, poolings))
    agreement = (out.argmax(1) == reference.argmax(1)).float().mean()
    assert agreement > 0.95
    assert (out - reference).abs().max() < 0.2 * reference.abs().max()

    inferer = UNetPlusPlusInferer(ROI, sw_batch_size=4, backend="openvino", precision="int8")
    other = seeded(*VOLUME, seed=4)
    with torch.no_grad():
        again = inferer(other, net)
    assert cache.conversions == 1  # the same weights, window and precision: no new calibration
    assert (again.argmax(1) == infer(net, other).argmax(1)).float().mean() > 0.95
    windows = inferer.windows(image)
    assert windows.shape == (18, 1, ROI, ROI, ROI)  # the inferer's own windows, the calibration set
    assert torch.equal(windows[0], image[0, :, :ROI, :ROI, :ROI])


def test_int8_on_amx_folds_where_a_channel_block_is_saved():
    # the default network's level-0 nodes (width 32, below it 32): X^{0,j} reads 32 j skip channels; in blocks of
    # 64, X^{0,1}'s skip and upsampled tensor (64) cost what its skip alone (32, read as 64) does, and so on
    def pays(skip: int, block: int) -> bool:
        return runtime._folding_pays_in_graph(32, skip, 32, [3] * 3, [2] * 3, block)

    assert [pays(32 * j, 64) for j in (1, 2, 3, 4)] == [False, True, False, True]
    assert [pays(32 * j, 1) for j in (1, 2, 3, 4)] == [True] * 4


def test_multiply_adds_count_every_tap_and_round_the_int8_layers_input_channels_to_the_block():
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv3d(2, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose3d(8, 4, (4, 2, 2), 2, (1, 0, 0)),  # one kernel size of 2: no output phases in int8
    ).eval()
    example = torch.zeros(3, 2, 8, 6, 4)
    voxels = 3 * 8 * 6 * 4  # the convolutions' outputs and the transposed convolution's inputs
    as_written = voxels * 27 * 2 * 8 + voxels * 27 * 8 * 8 + voxels * 16 * 8 * 4
    fp32 = runtime.OpenVINONetwork(layers, example)
    assert fp32.multiply_adds() == fp32.multiply_adds(64) == as_written
    # int8 leaves the first and the last convolution in float32 and quantizes the transposed convolution
    int8 = runtime.OpenVINONetwork(layers, example, "int8", calibration=torch.randn(6, 2, 8, 6, 4))
    assert int8.multiply_adds() == as_written
    assert int8.multiply_adds(64) == as_written + voxels * 16 * (64 - 8) * 4


@pytest.mark.skipif(
    not runtime._int8_convolutions_run_on_amx(),
    reason="the CPU plugin runs int8 without AMX here: the folded nodes run as output phases (tested above)",
)
def test_int8_on_amx_runs_the_folded_transposed_convolutions_in_int8(cache):
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    net = with_random_biases(UNetPlusPlus(3, 1, 3, features=(32, 64, 64), deep_supervision=True).eval())
    image = seeded(*VOLUME, seed=5)
    out = infer(net, image, backend="openvino", precision="int8")
    (entry,) = cache
    # X^{0,1} (32 + 32 channels, one block) is not folded, X^{1,1} and X^{0,2} are (64 skip channels + 64, 64 + 32)
    assert entry.transposed_convolution_kernels() == [(2, 2, 2), (4, 4, 4), (4, 4, 4)]
    assert entry.phase_convolutions == []
    transposed = [kernel for layer, kernel in entry.kernels() if layer == "Deconvolution"]
    assert len(transposed) == 3 and all(map(runs_int8, transposed))
    assert (out.argmax(1) == infer(net, image).argmax(1)).float().mean() > 0.95


def test_int8_refuses_an_image_of_one_value(net, cache):
    pytest.importorskip("nncf")
    with pytest.raises(ValueError, match=r"int8.*single value \(0.0\).*run a real image first"):
        infer(net, torch.zeros(VOLUME), backend="openvino", precision="int8")
    assert len(cache) == 0


def test_int8_in_pytorch_is_an_error_and_without_nncf_runs_fp32(net, monkeypatch):
    with pytest.raises(ValueError, match=r"precision='int8' runs in OpenVINO only: use backend='openvino'"):
        UNetPlusPlusInferer(ROI, precision="int8")
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.warns(UserWarning, match=r"needs the nncf package.*pip install \"nncf>=2.16\".*OpenVINO in fp32"):
        inferer = UNetPlusPlusInferer(ROI, sw_batch_size=4, backend="openvino", precision="int8")
    assert (inferer.backend, inferer.precision) == ("openvino", "fp32")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.warns(UserWarning, match=r"PyTorch fp32 instead"):
        inferer = UNetPlusPlusInferer(ROI, sw_batch_size=4, backend="openvino", precision="int8")
    assert (inferer.backend, inferer.precision) == ("torch", "fp32")


def test_auto_runs_openvino_on_the_cpu_and_pytorch_elsewhere_or_without_it(net, cache, monkeypatch):
    bf16 = runtime.openvino_bf16_supported()
    inferer = UNetPlusPlusInferer(ROI, sw_batch_size=4, backend="auto", precision="auto")
    assert (inferer.backend, inferer.precision) == ("openvino", "bf16" if bf16 else "fp32")
    image = seeded(*VOLUME, seed=5)
    with torch.no_grad():
        out = inferer(image, net)
    assert len(cache) == 1 and (out.argmax(1) == infer(net, image).argmax(1)).float().mean() > 0.98
    assert runtime.resolve_backend("auto", "auto", device="cuda") == ("torch", "fp32")
    assert runtime.resolve_backend("auto", "bf16", device="cuda") == ("torch", "bf16")
    assert runtime.resolve_backend("auto", "int8", device="cuda") == ("openvino", "int8")  # int8 is OpenVINO's
    monkeypatch.setitem(sys.modules, "openvino", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" chooses: nothing to warn about
        inferer = UNetPlusPlusInferer(ROI, sw_batch_size=4, backend="auto", precision="auto")
    assert (inferer.backend, inferer.precision) == ("torch", "fp32")
    with torch.no_grad():
        assert torch.equal(inferer(image, net), infer(net, image))


def test_without_openvino_the_inferer_warns_and_runs_pytorch(net, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    assert not runtime.openvino_available()
    with pytest.warns(UserWarning, match=r"pip install \"openvino>=2025.1\", the openvino extra"):
        inferer = UNetPlusPlusInferer(ROI, sw_batch_size=4, backend="openvino")
    assert inferer.backend == "torch"
    image = seeded(*VOLUME)
    with torch.no_grad():
        assert torch.equal(inferer(image, net), infer(net, image))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"backend": "tensorrt"}, r"backend must be one of .*'tensorrt'"), ({"precision": "fp16"}, r"precision .*'fp16'")],
)
def test_unknown_backend_or_precision_is_an_error_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetPlusPlusInferer(ROI, **kwargs)


def test_weights_fingerprint_follows_values_not_objects(net):
    import copy

    before = runtime.weights_fingerprint(net)
    assert runtime.weights_fingerprint(copy.deepcopy(net)) == before
    net.encoder[0].block.conv_0.conv.weight.data[0, 0, 0, 0, 0] += 1e-3
    assert runtime.weights_fingerprint(net) != before
