"""Export a trained bundle to ONNX or TorchScript, checked against the PyTorch model."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .bundle import load_bundle
from .config import EXPORT_FORMATS
from .engines import OnnxRunner, onnx_runner, write_onnx
from .errors import ExportError, check_choice
from .hardware import int8_format, this_cpu

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
INT8_AGREEMENT = 0.95  # an int8 model must give PyTorch's top class on at least this share of the calibration images
INT8_FILE = "model.int8.onnx"


def _reference(model: torch.nn.Module, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, resolution, resolution, generator=generator)
    with torch.no_grad():
        return images, model(images)


def _export_onnx(model, images, path: Path) -> np.ndarray:
    write_onnx(model, images, path)
    return OnnxRunner(path)(images).numpy()


def _export_torchscript(model, images, path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, images)
    traced.save(str(path))
    with torch.no_grad():
        return torch.jit.load(str(path))(images).numpy()


def export_bundle(model_dir: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, float]:
    """Write ``model.onnx`` or ``model.torchscript.pt`` (inputs: N x 3 x R x R in [0, 1]).

    Returns the file and the largest absolute difference of its logits from PyTorch's on a
    fixed random batch; raises ExportError above ``PARITY_TOLERANCE``.
    """
    check_choice("--format", fmt, EXPORT_FORMATS)
    model, info = load_bundle(model_dir)
    model = model.eval().to(memory_format=torch.contiguous_format)
    path = Path(out) if out else Path(model_dir) / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    images, expected = _reference(model, info.preprocessing.resolution)
    exported = (_export_onnx if fmt == "onnx" else _export_torchscript)(model, images, path)
    difference = float(np.abs(exported - expected.numpy()).max())
    if difference > PARITY_TOLERANCE:
        raise ExportError(f"{path}: logits differ from PyTorch by {difference:.2e} (> {PARITY_TOLERANCE}).")
    log.info("exported %s (max |difference| %.2e)", path, difference)
    return path, difference


def export_int8(model_dir: str | Path, calibration: torch.Tensor, out: str | Path | None = None,
                verbose: bool = False) -> tuple[Path, float]:  # fmt: skip
    """Write ``model.int8.onnx``: the bundle quantized to int8, calibrated on ``calibration`` (the
    user's own images, N x 3 x R x R in [0, 1]). Returns the file and the share of those images
    on which its top class agrees with PyTorch's; raises ExportError below ``INT8_AGREEMENT``.
    ``verbose``: each quantized tensor's error against float32 is logged and written beside the
    file (:mod:`.int8_layers`), before any refusal."""
    model, info = load_bundle(model_dir)
    model = model.eval().to(memory_format=torch.contiguous_format)
    path = Path(out) if out else Path(model_dir) / INT8_FILE
    path.unlink(missing_ok=True)
    runner = onnx_runner(model, info.preprocessing.resolution, path, calibration)
    with torch.no_grad():
        expected = torch.cat([model(chunk) for chunk in calibration.split(64)]).argmax(1)
    agreement = float((torch.cat([runner(chunk) for chunk in calibration.split(64)]).argmax(1) == expected).float().mean())
    if verbose:
        from .int8_layers import layer_errors, report

        report(layer_errors(path.with_suffix(".fp32.onnx"), path, calibration), path.with_suffix(".layers.json"))
    if agreement < INT8_AGREEMENT:
        cpu = this_cpu()
        raise ExportError(f"{path}: the int8 model agrees with PyTorch's top class on {agreement:.1%} of the "
                          f"{len(calibration)} calibration images (< {INT8_AGREEMENT:.0%}) on this CPU ({cpu.kind}, "
                          f"int8 format {int8_format(cpu).name}). Calibrate on more, and more varied, images like "
                          "those it will see (--calibration), or keep the float32 export (--format onnx without "
                          "--int8).")  # fmt: skip
    log.info("exported %s (top class as PyTorch's on %.1f%% of %d images)", path, 100 * agreement, len(calibration))
    return path, agreement
