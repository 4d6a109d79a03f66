"""Engines that run a model's forward pass: PyTorch itself, or the model exported to ONNX and run
by ONNX Runtime on the CPU, in float32 or quantized to int8 (static quantization calibrated on
the user's own images: EfficientNet-Lite was designed for int8, with ReLU6 and no
squeeze-excitation)."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import get_same_padding

from .errors import ConfigError
from .hardware import int8_format, this_cpu

log = logging.getLogger(__name__)

# ONNX Runtime runs at most this many images at once: measured on EfficientNet-Lite0's body (best of
# 3, 2,000 images, nothing else running), float32 / int8 img/s at 112 px: batch 1 1,024 / 1,797,
# 4 1,030 / 2,066, 8 1,099 / 2,166, 12 984 / 1,921, 32 805 / 1,642, 64 746 / 1,473; at 224 px:
# batch 4 274 / 468, 8 247 / 453-479, 64 224 / 404 (the activations of a few images stay in cache).
ONNX_BATCH = 8
INT8_RECIPE = 6  # how quantize_onnx builds the int8 graph; part of the cache key of what it computes (6: pads folded)
ONNX_GRAPH = 2  # how write_onnx builds the graph (2: paddings folded into the convolutions); part of where one is kept


def int8_recipe() -> str:
    """The int8 recipe on this CPU (its version and format), a part of the cache key of what it computes."""
    return f"{INT8_RECIPE}-{int8_format(this_cpu()).name}"


class Bfloat16(torch.nn.Module):
    """``model`` run under ``torch.autocast("cpu", dtype=torch.bfloat16)``, its outputs back in float32.

    Measured on EfficientNet-Lite0 at 112 px, 2 cores (``python benchmarks/speed.py --only bf16``):
    inference 1.21x faster than float32 with features at cosine similarity 0.998; a training step
    0.91x (slower), so only the frozen body's forward passes use it.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x).float()


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ConfigError("ONNX needs onnx and onnxruntime (transferlab's dependencies): pip install onnx onnxruntime.") from error
    return onnxruntime


class StaticSamePadding(torch.nn.Module):
    """timm's ``Conv2dSame`` (TensorFlow "same" padding, computed from the input's size at every
    call) with its padding fixed for one input size: exported, it is a constant ``Pad`` that
    :func:`write_onnx` folds into the convolution, instead of a shape computation before every
    strided convolution that also cuts the int8 graph apart."""

    def __init__(self, conv: Conv2dSame, height: int, width: int):
        super().__init__()
        self.conv = conv
        pad_h, pad_w = (get_same_padding(size, k, s, d) for size, k, s, d in
                        zip((height, width), conv.kernel_size, conv.stride, conv.dilation))  # fmt: skip
        self.padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        return F.conv2d(F.pad(x, self.padding), conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def with_static_padding(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """A copy of ``model`` whose ``Conv2dSame`` layers pad by constants for inputs shaped like
    ``images`` (``model`` itself when it has none). Measured on EfficientNet-Lite0, int8 vs float32
    ONNX Runtime at 112 px: 1.77x with cosine similarity 0.87 of the features before, 2.03x and 0.97
    after; float32 unchanged."""
    if not any(isinstance(module, Conv2dSame) for module in model.modules()):
        return model
    model = copy.deepcopy(model)  # the probing pass below must not touch the caller's model (BatchNorm statistics)
    sizes: dict[Conv2dSame, torch.Size] = {}
    record = lambda module, inputs: sizes.__setitem__(module, inputs[0].shape[-2:])  # noqa: E731  (returns None: inputs kept)
    hooks = [module.register_forward_pre_hook(record) for module in model.modules() if isinstance(module, Conv2dSame)]
    with torch.no_grad():
        model(images[:1])
    for hook in hooks:
        hook.remove()
    for name, module in list(model.named_modules()):
        if module in sizes:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, StaticSamePadding(module, *map(int, sizes[module])))
    return model


def write_onnx(model: torch.nn.Module, images: torch.Tensor, path: Path) -> None:
    """Export ``model`` (input ``images``: N x 3 x R x R, output ``logits``) with a dynamic batch,
    its "same" paddings fixed for R x R and folded into the convolutions (:func:`.onnx_graph.fold_pads`)."""
    _onnxruntime()
    import onnx

    from .onnx_graph import fold_pads

    partial = path.with_suffix(".partial")
    model = with_static_padding(model, images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow in timm code
        torch.onnx.export(model, (images,), str(partial), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)  # fmt: skip
    graph = onnx.load(str(partial))
    if fold_pads(graph):
        onnx.save(graph, str(partial))
    partial.replace(path)


class OnnxRunner:
    """An exported model run by ONNX Runtime on the CPU, called like the PyTorch module it replaces.

    Measured 1.43x faster than PyTorch (both with tcmalloc; 2.34x under glibc malloc) for
    EfficientNet-Lite0 inference at 112 px on 2 cores (docs/speed.md).
    """

    def __init__(self, path: Path):
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the graph clean-up notes of quantized models are not for users
        # threads sleep instead of spinning between runs (PyTorch's spin less: threads.py): beside a busy
        # process 1.55-1.82x faster, alone 0.90-0.97x (docs/speed.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs for float images (N x 3 x R x R, any memory layout)."""
        return self._run(images.contiguous().numpy())

    def run_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Outputs for uint8 images, converted to unit floats here a few at a time in NumPy: no
        PyTorch thread pool spinning beside ONNX Runtime's own (measured on EfficientNet-Lite0's body
        at 112 px, 1,024 images, best of 5: float32 / int8 1,032 / 1,928 img/s against 911 / 1,569
        with PyTorch converting)."""
        return self._run(np.ascontiguousarray(pixels.numpy()), scale=255)

    def _run(self, array: np.ndarray, scale: int | None = None) -> torch.Tensor:
        outputs = []
        for start in range(0, len(array), ONNX_BATCH):
            chunk = array[start : start + ONNX_BATCH]
            chunk = chunk if scale is None else chunk.astype(np.float32) / np.float32(scale)
            outputs.append(self.session.run(["logits"], {"images": chunk})[0])
        return torch.from_numpy(np.concatenate(outputs) if outputs else np.zeros((0,), np.float32))

    def eval(self) -> OnnxRunner:
        return self

    def to(self, *args, **kwargs) -> OnnxRunner:
        return self


def quantize_onnx(fp32: Path, int8: Path, calibration: torch.Tensor, float_convs: int = 0,
                  prepared: Path | None = None) -> list[str]:  # fmt: skip
    """Static int8 quantization of ``fp32`` into ``int8`` (:func:`.quantization.quantize_qdq`: the
    graph optimized and its shapes inferred first, ONNX Runtime's ``quant_pre_process``: measured
    2.2x over float32 against 1.9x without it, same features), calibrated on ``calibration`` (N x 3
    x R x R images in [0, 1]); 7-bit weights on a CPU without VNNI (:func:`.hardware.int8_format`);
    the first ``float_convs`` convolutions kept float (their names returned). ``prepared``: that
    optimized graph, made once by the caller that quantizes one model several ways."""
    form = int8_format(this_cpu())
    log.info("int8 format %s: %s", form.name, form.why)
    _onnxruntime()
    from .quantization import prepared_graph, quantize_qdq

    partial, graph = int8.with_suffix(".partial"), prepared or prepared_graph(fp32, int8.with_suffix(".optimized.onnx"))
    try:
        kept_float = quantize_qdq(graph, partial, calibration.numpy(), form.reduce_range, float_convs)
    finally:
        if prepared is None:
            graph.unlink(missing_ok=True)
    partial.replace(int8)
    return kept_float


def onnx_runner(model: torch.nn.Module, resolution: int, path: Path, calibration: torch.Tensor | None = None) -> OnnxRunner:
    """``model`` exported to ``path`` (kept there for reuse) and loaded into ONNX Runtime; with
    ``calibration`` images, quantized to int8 on them (the float32 export kept beside it)."""
    fp32 = path if calibration is None else path.with_suffix(".fp32.onnx")
    if not fp32.exists():
        fp32.parent.mkdir(parents=True, exist_ok=True)
        write_onnx(model.eval().to(memory_format=torch.contiguous_format), torch.rand(2, 3, resolution, resolution), fp32)
    if calibration is not None and not path.exists():
        quantize_onnx(fp32, path, calibration)
    return OnnxRunner(path)
