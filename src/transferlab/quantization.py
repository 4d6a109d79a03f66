"""Static int8 quantization of an ONNX model, built to agree with its float32 original.

ONNX Runtime's ``quantize_static`` writes the graph (QDQ format, per-channel int8 weights, uint8
activations whose ranges are calibrated on the user's images). Two steps on top of it:

* **Bias correction** (Nagel et al. 2019, "Data-Free Quantization", its empirical variant):
  rounding a layer's weights shifts the mean of its outputs (the inputs after ReLU6 are all
  positive, so the errors do not cancel); layer by layer, in graph order, each convolution's and
  the head's int32 bias is moved by the difference between the float model's and the int8 model's
  mean output per channel on the calibration images, upstream layers already corrected. The
  graph is unchanged, so it runs as fast: 1.59x float32 against 1.58x for plain ONNX Runtime on
  the digits case (medians of 7 interleaved rounds, AVX2).
* **A float prefix**: the graph's first ``float_convs`` convolutions, and every node before them,
  stay float32 (:func:`float_prefix`), where quantization noise on near-flat images is amplified
  most. :func:`transferlab.export.export_int8` chooses how many on held-out calibration images.

Measured on issue 34's case (the head model of scikit-learn's digits at 112 px, 7-bit weights
on AVX2, 200 calibration images, top class as float32 on 539 test images; ``python
benchmarks/int8_formats.py digits``): plain ONNX Runtime 92.6%; bias corrected 96.5%, with the
first 1, 3, 7 convolutions float32 97.4%, 98.1%, 98.9% (docs/speed.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .onnx_graph import probe_session

log = logging.getLogger(__name__)

MEAN_BATCH = 16  # images per pass when the mean outputs are measured
CORRECTION_IMAGES = 64  # calibration images the bias correction measures means on (spread over them)


def float_prefix(model, float_convs: int) -> list[str]:
    """The names of the nodes of ``model`` (an ``onnx.ModelProto``, in graph order) up to and
    including its ``float_convs``-th convolution: none for 0."""
    if float_convs <= 0:
        return []
    names, seen = [], 0
    for node in model.graph.node:
        names.append(node.name)
        seen += node.op_type == "Conv"
        if seen == float_convs:
            return names
    return names


def prepared_graph(fp32: Path, out: Path) -> Path:
    """``fp32`` optimized and its shapes inferred into ``out`` (ONNX Runtime's ``quant_pre_process``):
    the graph :func:`quantize_qdq` quantizes, with the node names its int8 models keep. Returns ``out``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32), str(out))
    return out


def quantize_qdq(prepared: Path, int8: Path, calibration: np.ndarray, reduce_range: bool, float_convs: int = 0) -> list[str]:
    """``prepared`` (a float32 graph through :func:`prepared_graph`) quantized into ``int8`` (QDQ,
    per-channel int8 weights, 7-bit with ``reduce_range``, uint8 activations) on ``calibration`` (N x
    3 x R x R float32 in [0, 1]), its first ``float_convs`` convolutions kept float, its biases
    corrected (:func:`correct_biases`). Returns the names of the convolutions kept float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(_batches(calibration))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    graph = onnx.load(str(prepared))
    keep_float = float_prefix(graph, float_convs)
    quantize_static(str(prepared), str(int8), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=keep_float)  # fmt: skip
    correct_biases(prepared, int8, calibration[spread(len(calibration), CORRECTION_IMAGES)])
    return [node.name for node in graph.graph.node if node.op_type == "Conv" and node.name in keep_float]


def spread(count: int, most: int) -> np.ndarray:
    """At most ``most`` positions evenly spread over ``count`` (calibration images come class by class)."""
    return np.unique(np.linspace(0, count - 1, min(most, count)).round().astype(int))


def _batches(images: np.ndarray) -> Iterable[np.ndarray]:
    return (np.ascontiguousarray(images[i : i + MEAN_BATCH], dtype=np.float32) for i in range(0, len(images), MEAN_BATCH))


def _biases(model) -> dict[str, tuple]:
    """Per convolution or fully-connected layer of ``model`` with a stored bias: the layer's node,
    the stored tensor and its scale (None where the bias is stored in float; else it is int32,
    dequantized with that scale and zero point 0, as ONNX Runtime writes it)."""
    stored = {tensor.name: tensor for tensor in model.graph.initializer}
    dequantized = {node.output[0]: node for node in model.graph.node if node.op_type == "DequantizeLinear"}
    found = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        bias = node.input[2]
        if bias in stored:
            found[node.name] = (node, stored[bias], None)
        elif bias in dequantized and dequantized[bias].input[0] in stored:
            scale = _array(stored[dequantized[bias].input[1]])
            found[node.name] = (node, stored[dequantized[bias].input[0]], scale)
    return found


def _array(tensor) -> np.ndarray:
    """An ONNX tensor's values."""
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _is_quantized(node, model) -> bool:
    """Whether ``node``'s weights pass through a DequantizeLinear (in ``model``)."""
    return any(other.op_type == "DequantizeLinear" and node.input[1] in other.output for other in model.graph.node)


def channel_means(model, tensors: list[str], images: np.ndarray) -> list[np.ndarray]:
    """Per channel, the mean of each of ``tensors`` of ``model`` (an ``onnx.ModelProto``) over
    ``images`` (and over the positions of a feature map)."""
    import onnx

    session = probe_session(model, tensors, onnx.TensorProto.FLOAT)
    sums = [0.0] * len(tensors)
    for batch in _batches(images):
        for position, output in enumerate(session.run(tensors, {"images": batch})):
            sums[position] = sums[position] + (output.mean(axis=(2, 3)) if output.ndim == 4 else output).sum(0)
    return [total / len(images) for total in sums]


def correct_biases(fp32: Path, int8: Path, calibration: np.ndarray) -> int:
    """Move the bias of every quantized layer of ``int8`` so that its mean output per channel on
    ``calibration`` is ``fp32``'s (the graph ``int8`` was quantized from: the same node names),
    one layer at a time in graph order; rewrites ``int8`` and returns how many layers moved. An
    int32 bias moves by whole steps of its scale (``input scale x weight scale``, tiny).

    One layer at a time: corrected together, the layers of one block over-corrected one another
    (measured on the digits case: agreement fell to 12%)."""
    import onnx
    from onnx import numpy_helper

    reference, quantized = onnx.load(str(fp32)), onnx.load(str(int8))
    float_biases, biases = _biases(reference), _biases(quantized)
    layers = [name for name, (node, _, _) in biases.items() if name in float_biases and _is_quantized(node, quantized)]
    targets = channel_means(reference, [float_biases[name][0].output[0] for name in layers], calibration)
    for name, target in zip(tqdm(layers, desc="int8 bias correction", unit="layer", leave=False), targets):
        node, stored, scale = biases[name]
        (measured,) = channel_means(quantized, [node.output[0]], calibration)
        shift = (target - measured).astype(np.float32)
        moved = _array(stored) + (shift if scale is None else np.round(shift / scale).astype(np.int32))
        stored.CopyFrom(numpy_helper.from_array(moved.astype(_array(stored).dtype), stored.name))
    onnx.save(quantized, str(int8))
    log.info("int8: biases of %d layers corrected to float32's mean outputs on %d images", len(layers), len(calibration))
    return len(layers)
