"""int8 quantization (issue 34): the float prefix names what stays float, bias correction brings each
layer's mean output back to float32's, and the export picks the recipe that agrees."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from transferlab.engines import write_onnx
from transferlab.quantization import (
    _biases,
    _is_quantized,
    channel_means,
    correct_biases,
    float_prefix,
    prepared_graph,
    quantize_qdq,
)


def folded_net() -> nn.Module:
    """Convolutions with ReLU6 (as EfficientNet-Lite's) whose weights span very different ranges per
    channel: rounding them shifts the mean outputs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
                        nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))  # fmt: skip
    with torch.no_grad():
        net[4].weight.mul_(torch.logspace(-2, 0.5, 8).view(1, 8, 1, 1))  # small and large input channels side by side
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantization")
    write_onnx(folded_net(), torch.rand(2, 3, 16, 16), root / "net.onnx")
    images = np.random.default_rng(0).random((48, 3, 16, 16), dtype=np.float32) * 0.2 + 0.4  # near-flat images
    return root, images


def test_the_float_prefix_runs_up_to_the_kth_convolution(exported):
    root, _ = exported
    model = onnx.load(str(root / "net.onnx"))
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    assert float_prefix(model, 0) == []
    assert float_prefix(model, 1)[-1] == convs[0] and float_prefix(model, 2)[-1] == convs[1]
    assert float_prefix(model, 99) == [node.name for node in model.graph.node]  # more than there are: all of it


def test_the_convolutions_of_the_float_prefix_stay_float_and_the_rest_are_quantized(exported):
    root, images = exported
    prepared = prepared_graph(root / "net.onnx", root / "net.prepared.onnx")
    kept = quantize_qdq(prepared, root / "prefix.onnx", images, reduce_range=True, float_convs=2)
    model = onnx.load(str(root / "prefix.onnx"))
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert kept == [node.name for node in convs[:2]]
    assert [_is_quantized(node, model) for node in convs] == [False, False, True]


def _plain_int8(root, images) -> tuple:
    """The net quantized by ONNX Runtime alone (7-bit weights, int32 biases), nothing corrected."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": images}])

        def get_next(self):
            return next(self.batches, None)

    fp32, int8 = root / "net.opt.onnx", root / "net.int8.onnx"
    prepared_graph(root / "net.onnx", fp32)
    quantize_static(str(fp32), str(int8), Batches(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    return fp32, int8


def _mean_gaps(fp32, int8, images) -> list[float]:
    """Per layer with a bias, the largest gap between float32's and the int8 model's mean output per channel."""
    reference, quantized = onnx.load(str(fp32)), onnx.load(str(int8))
    layers, quantized_layers = _biases(reference), _biases(quantized)
    expected = channel_means(reference, [node.output[0] for node, _, _ in layers.values()], images)
    measured = channel_means(quantized, [quantized_layers[name][0].output[0] for name in layers], images)
    return [float(np.abs(e - m).max()) for e, m in zip(expected, measured)]


def test_bias_correction_brings_every_layers_mean_output_to_float32s(exported):
    root, images = exported
    fp32, int8 = _plain_int8(root, images)
    before = _mean_gaps(fp32, int8, images)
    assert correct_biases(fp32, int8, images) == 4  # three convolutions and the fully-connected layer
    after = _mean_gaps(fp32, int8, images)
    assert max(before) > 1e-3  # rounding did shift the means
    assert all(gap < 1e-4 for gap in after), (before, after)
    reference, quantized = (onnx.load(str(path)) for path in (fp32, int8))
    fresh = np.random.default_rng(1).random((48, 3, 16, 16), dtype=np.float32) * 0.2 + 0.4  # images it was not corrected on
    logits = [channel_means(model, [model.graph.output[0].name], fresh)[0] for model in (reference, quantized)]
    assert np.abs(logits[0] - logits[1]).max() < before[-1]


@pytest.mark.slow
def test_issue_34s_digits_case_exports_and_agrees_on_images_it_was_not_calibrated_on(tmp_path):
    """scikit-learn's digits at 112 px, a head model, exported through the CLI. Plain ONNX Runtime
    agreed with float32 on 95.0% of the calibration images and 92.6% of the test images (issue 34's
    full-data model); with 20 images per class, as here, the export measured 97.5% and 97.3% of 300
    test images (AVX2, the first 3 convolutions float32), while float32 itself kept its top class on
    98.0% of the calibration images moved by half a grey level."""
    import re

    import transferlab as tl
    from conftest import run
    from transferlab.data import per_class_subset
    from transferlab.datasets import load_dataset

    tl.train("digits", strategy="head", resolution=112, samples_per_class=20, out=str(tmp_path / "run"), use_cache=False)
    model_dir = tmp_path / "run" / "model"
    result = run("export", str(model_dir), "--format", "onnx", "--int8", "--calibration", "digits", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    said = re.search(r"top class as PyTorch's on ([\d.]+)% of the calibration images \(the first (\d+) convolutions float32; "
                     r"PyTorch itself: ([\d.]+)% when", result.stdout)  # fmt: skip
    assert said and float(said.group(1)) >= 96.5 and int(said.group(2)) in (0, 1, 3), result.stdout
    assert int(said.group(2)) == 0 or "float32: /body/conv_stem/Conv" in result.stderr  # the layers kept float, named
    assert re.search(r"divergence [\d.]+ nats", result.stderr)  # every recipe's held-out score is logged
    test = per_class_subset(load_dataset("digits").test, 30, 1)
    images = [test.open(i) for i in range(len(test))]
    by_int8 = tl.load(model_dir, engine="onnxruntime-int8").predict(images)
    by_torch = tl.load(model_dir, engine="pytorch").predict(images)
    assert np.mean([a.top[0][0] == b.top[0][0] for a, b in zip(by_int8, by_torch)]) >= 0.965


def test_agreement_is_an_exact_ratio_190_of_200_is_not_refused_at_95_percent():
    """The count set's export was refused with "95.0% (< 95%)": float32's mean of 190 matches in 200
    is 0.94999999."""
    from transferlab.export import INT8_AGREEMENT, _agreement

    expected = torch.eye(2)[torch.zeros(200, dtype=torch.long)]
    logits = expected.clone()
    logits[:10] = torch.eye(2)[1]
    assert _agreement(logits, expected) == 0.95 >= INT8_AGREEMENT
