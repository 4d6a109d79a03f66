"""Engines that run a model's forward pass: PyTorch itself, or the model exported to ONNX and run
by ONNX Runtime on the CPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .errors import ConfigError

ENGINES = ("pytorch", "onnxruntime")


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ConfigError("ONNX needs onnx and onnxruntime: pip install 'transferlab[export]'.") from error
    return onnxruntime


def write_onnx(model: torch.nn.Module, images: torch.Tensor, path: Path) -> None:
    """Export ``model`` (input ``images``: N x 3 x R x R, output ``logits``) with a dynamic batch."""
    _onnxruntime()
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow in timm code
        torch.onnx.export(model, (images,), str(partial), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)  # fmt: skip
    partial.replace(path)


class OnnxRunner:
    """An exported model run by ONNX Runtime on the CPU, called like the PyTorch module it replaces.

    Measured 1.15-1.17x faster than PyTorch (with tcmalloc) for EfficientNet-Lite0 inference at
    112 px on 2 cores (benchmarks/results.md).
    """

    def __init__(self, path: Path):
        self.session = _onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["logits"], {"images": images.contiguous().numpy()})[0])

    def eval(self) -> OnnxRunner:
        return self

    def to(self, *args, **kwargs) -> OnnxRunner:
        return self


def onnx_runner(model: torch.nn.Module, resolution: int, path: Path) -> OnnxRunner:
    """``model`` exported to ``path`` (kept there for reuse) and loaded into ONNX Runtime."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_onnx(model.eval().to(memory_format=torch.contiguous_format), torch.rand(2, 3, resolution, resolution), path)
    return OnnxRunner(path)


