"""Where an int8 model loses what its float32 original computes, layer by layer (ONNX Runtime's
quantization debugging, ``onnxruntime.quantization.qdq_loss_debug``).

For every tensor the int8 (QDQ) model quantizes, on a few of the calibration images, two
signal-to-quantization-noise ratios in dB (higher is better; 20 dB is an error a tenth of the
signal's size):

* ``own_db`` - the tensor just before its quantize/dequantize pair against just after, inside the
  int8 model: what quantizing this tensor alone costs;
* ``accumulated_db`` - the int8 model's tensor against the float model's same tensor: everything
  upstream included, so the layer where it falls is where the model loses it.

``transferlab export MODEL --format onnx --int8 --calibration DATA --verbose`` logs them and writes
``<int8 file>.layers.json``; ``benchmarks/int8_formats.py`` keeps them in its output.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .quantization import prepared_graph, spread

log = logging.getLogger(__name__)

IMAGES = 40  # calibration images the comparison runs on (every tensor of every image is kept in memory)


@dataclass(frozen=True)
class LayerError:
    """One quantized tensor's signal-to-quantization-noise ratios (dB; ``None``: not measurable)."""

    tensor: str
    own_db: float | None
    accumulated_db: float | None


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def layer_errors(fp32: Path, int8: Path, calibration, images: int = IMAGES) -> list[LayerError]:
    """Per tensor of the ``int8`` model quantized from ``fp32``, in graph order: its own and its
    accumulated error on ``images`` of ``calibration`` spread evenly over it (its classes come in
    order; N x 3 x R x R floats in [0, 1], a tensor or an array: no torch needed, so it runs under
    a CPU emulator too)."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    sample = np.ascontiguousarray(np.asarray(calibration[spread(len(calibration), images)], dtype=np.float32))

    class OneBatch(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(sample[i : i + 1] for i in range(len(sample)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    with tempfile.TemporaryDirectory(prefix="transferlab-int8-") as scratch:
        optimized, float_outputs, int8_outputs = (Path(scratch) / name for name in ("f.onnx", "f.aug.onnx", "q.aug.onnx"))
        prepared_graph(fp32, optimized)  # the graph the int8 model was quantized from: the same names
        modify_model_output_intermediate_tensors(str(optimized), str(float_outputs))
        modify_model_output_intermediate_tensors(str(int8), str(int8_outputs))
        float_activations = collect_activations(str(float_outputs), OneBatch())
        int8_activations = collect_activations(str(int8_outputs), OneBatch())
    errors = compute_activation_error(create_activation_matching(int8_activations, float_activations))
    return [LayerError(name, _finite(error["qdq_err"]), _finite(error["xmodel_err"]) if "xmodel_err" in error else None)
            for name, error in errors.items()]  # fmt: skip


def report(errors: list[LayerError], path: Path, worst: int = 8) -> Path:
    """Write ``errors`` to ``path`` (JSON) and log the ``worst`` tensors by accumulated error."""
    path.write_text(json.dumps([asdict(e) for e in errors], indent=2))
    ranked = sorted((e for e in errors if e.accumulated_db is not None), key=lambda e: e.accumulated_db)
    lines = [f"{'tensor':<48} {'own dB':>7} {'accumulated dB':>15}"]
    lines += [f"{e.tensor[-48:]:<48} {e.own_db if e.own_db is not None else float('nan'):>7.1f} {e.accumulated_db:>15.1f}"
              for e in ranked[:worst]]  # fmt: skip
    log.info("int8: the %d tensors furthest from float32 (all %d in %s):\n%s", min(worst, len(ranked)), len(errors), path,
             "\n".join(lines))  # fmt: skip
    return path
