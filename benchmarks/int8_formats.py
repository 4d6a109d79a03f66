"""int8 formats on each kind of CPU (docs/speed.md, "int8 on each kind of CPU").

Three steps, so that the CPU-dependent one can run under an emulator of another CPU:

    python benchmarks/int8_formats.py prepare --dir /tmp/int8      # here: float32 models, references, int8 models
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_formats.py run --dir /tmp/int8 --label avx2
    python benchmarks/int8_formats.py run --dir /tmp/int8 --label native
    python benchmarks/int8_formats.py report --dir /tmp/int8
    python benchmarks/int8_formats.py digits --dir /tmp/int8 --model runs/digits-int8/model   # issue 34's case

``prepare`` trains the test suite's head model on its colour folder at 112 px and exports it, exports
EfficientNet-Lite0's body, keeps Fashion-MNIST images (200 calibration, 1,000 training, 100 test)
and their float32 outputs, and quantizes both models in each format. ``run`` (ONNX Runtime and
NumPy only: no torch, so it is quick to start under an emulator) runs the int8 models on the CPU it
finds, timing the body's pass (meaningless under an emulator), and writes each quantized layer's
error on the test case (``layers-<label>-<format>-colours.json``, :mod:`transferlab.int8_layers`).
``report`` prints the table:
top-class agreement on the test case, feature cosine, the agreement of a float32-trained logistic
head, and the time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from transferlab.int8_layers import layer_errors
from transferlab.int8_layers import report as layer_report

FORMATS = ("u8s8", "u8s8-reduce", "s8s8", "u8u8")  # activations x weights; reduce: 7-bit weights
TEST_IMAGES = 100


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(path: Path, images: np.ndarray) -> np.ndarray:
    session = _session(path)
    return np.concatenate([session.run(None, {"images": _unit(images[i : i + 8])})[0] for i in range(0, len(images), 8)])


def _pooling_nodes(model_path: Path) -> list[str]:
    """The global pooling node and the one that feeds it (the last activation)."""
    import onnx

    nodes = onnx.load(str(model_path)).graph.node
    pool = next(n for n in nodes if n.op_type == "GlobalAveragePool")
    return [pool.name, *(n.name for n in nodes if pool.input[0] in n.output)]


def _quantize(fp32: Path, out: Path, calibration: np.ndarray, form: str, method: str = "MinMax",
              options: dict | None = None, float_pooling: bool = False) -> None:  # fmt: skip
    """``fp32`` quantized into ``out`` in ``form``, calibrated on ``calibration`` by ``method``
    (ONNX Runtime's ``CalibrationMethod``: MinMax, Percentile, Entropy) with ``options`` (its
    ``extra_options``, e.g. ``CalibPercentile``); ``float_pooling``: the last activation and the
    pooling stay in float."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    activation = QuantType.QInt8 if form == "s8s8" else QuantType.QUInt8
    weight = QuantType.QUInt8 if form == "u8u8" else QuantType.QInt8

    class Batches(CalibrationDataReader):  # equal batches: the histogram calibrators need them
        def __init__(self):
            self.batches = iter(calibration[i : i + 8] for i in range(0, len(calibration) - len(calibration) % 8 or 1, 8))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": _unit(batch)}

    optimized = out.with_suffix(".optimized.onnx")
    quant_pre_process(str(fp32), str(optimized))
    quantize_static(str(optimized), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=form == "u8s8-reduce", activation_type=activation, weight_type=weight,
                    calibrate_method=getattr(CalibrationMethod, method), extra_options=options or {},
                    nodes_to_exclude=_pooling_nodes(optimized) if float_pooling else None)  # fmt: skip
    optimized.unlink()


DIGITS_RECIPES = {  # name: (calibration images, method, options[, float pooling]); 7-bit weights (AVX2's format)
    "min-max, 200 images": (200, "MinMax", {}),
    "min-max, 200 images, the last activation and the pooling in float": (200, "MinMax", {}, True),
    "min-max, 1,000 images": (1000, "MinMax", {}),
    "percentile 99.999, 1,000 images": (1000, "Percentile", {"CalibPercentile": 99.999}),
    "percentile 99.99, 1,000 images": (1000, "Percentile", {"CalibPercentile": 99.99}),
    "entropy, 200 images": (200, "Entropy", {}),
}


def digits(root: Path, model_dir: Path) -> None:
    """Issue 34's case: the digits head model's float32 export (``export --int8`` keeps it beside
    ``model.int8.onnx``) quantized by each recipe; top-class agreement with float32 on the first 200
    calibration images and on the digits test split."""
    import transferlab as tl
    from transferlab.data import per_class_subset
    from transferlab.datasets import load_dataset
    from transferlab.features import compute_outputs

    root.mkdir(parents=True, exist_ok=True)
    fp32, resolution, data = model_dir / "model.int8.fp32.onnx", tl.load(model_dir).resolution, load_dataset("digits")

    def pixels(split, per_class: int) -> np.ndarray:
        subset = per_class_subset(split, per_class, 0)
        return compute_outputs(None, subset, resolution, desc="decode").readable(subset.labels)[0]

    calibration = {count: pixels(data.train, count // 10) for count in (200, 1000)}  # spread over the 10 classes
    images = {"calibration": calibration[200], "test": pixels(data.test, 1000)}
    expected = {split: _run(fp32, x).argmax(1) for split, x in images.items()}
    for number, (name, (count, method, options, *float_pooling)) in enumerate(DIGITS_RECIPES.items()):
        out = root / f"digits-{number}.onnx"
        _quantize(fp32, out, calibration[count], "u8s8-reduce", method, options, bool(float_pooling))
        agreement = {split: float((_run(out, x).argmax(1) == expected[split]).mean()) for split, x in images.items()}
        print(f"| {name} | {agreement['calibration']:.1%} | {agreement['test']:.1%} ({len(images['test'])} images) |", flush=True)


def prepare(root: Path) -> None:
    import torch
    from conftest import write_folder

    import transferlab as tl
    from transferlab.bundle import load_bundle
    from transferlab.data import per_class_subset
    from transferlab.datasets import load_dataset
    from transferlab.engines import write_onnx
    from transferlab.features import compute_outputs
    from transferlab.surgery import Normalize, body_at

    root.mkdir(parents=True, exist_ok=True)
    data = write_folder(root / "colours", per_class=10)  # the int8 test's own case (tests/test_inference.py)
    tl.train(str(data), strategy="head", resolution=112, epochs=10, lr=0.01, use_cache=False, out=str(root / "run"))
    np.save(root / "colours.npy", tl.load(root / "run" / "model").calibration_images(str(data)).numpy())
    network, _ = load_bundle(root / "run" / "model")
    write_onnx(network.eval(), torch.rand(2, 3, 112, 112), root / "colours.onnx")
    backbone = tl.build_backbone("efficientnet_lite0")
    body = torch.nn.Sequential(Normalize(backbone.preprocessing.mean, backbone.preprocessing.std), body_at(backbone))
    write_onnx(body.eval(), torch.rand(2, 3, 112, 112), root / "lite0.onnx")
    fashion = load_dataset("fashion-mnist")
    for name, split, per_class, seed in (("cal", fashion.train, 20, 0), ("train", fashion.train, 100, 1),
                                         ("test", fashion.test, TEST_IMAGES // 10, 0)):  # fmt: skip
        subset = per_class_subset(split, per_class, seed)
        pixels, labels = compute_outputs(None, subset, 112).readable(subset.labels)
        np.save(root / f"fm_{name}.npy", pixels)
        np.save(root / f"fm_{name}_y.npy", labels)
    np.save(root / "ref_colours.npy", _run(root / "colours.onnx", np.load(root / "colours.npy")))
    for name in ("train", "test"):
        np.save(root / f"ref_{name}.npy", _run(root / "lite0.onnx", np.load(root / f"fm_{name}.npy")))
    for form in FORMATS:
        _quantize(root / "colours.onnx", root / f"q-{form}.colours.onnx", np.load(root / "colours.npy"), form)
        _quantize(root / "lite0.onnx", root / f"q-{form}.lite0.onnx", np.load(root / "fm_cal.npy"), form)


def run(root: Path, label: str, forms: list[str]) -> None:
    test = np.load(root / "fm_test.npy")
    for form in forms:
        colours = _run(root / f"q-{form}.colours.onnx", np.load(root / "colours.npy"))
        np.save(root / f"out-{label}-{form}-colours.npy", colours)
        errors = layer_errors(root / "colours.onnx", root / f"q-{form}.colours.onnx", _unit(np.load(root / "colours.npy")))
        layer_report(errors, root / f"layers-{label}-{form}-colours.json")  # where the test case loses it, per layer
        _run(root / f"q-{form}.lite0.onnx", test[:8])  # warm-up
        started = time.perf_counter()
        np.save(root / f"out-{label}-{form}-test.npy", _run(root / f"q-{form}.lite0.onnx", test))
        (root / f"out-{label}-{form}-seconds.txt").write_text(f"{time.perf_counter() - started:.3f}")
        print(label, form, "done", flush=True)


def report(root: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.load(root / "ref_train.npy"))
    head = LogisticRegression(max_iter=3000).fit(scaler.transform(np.load(root / "ref_train.npy")),
                                                 np.load(root / "fm_train_y.npy"))  # fmt: skip
    reference, expected = np.load(root / "ref_test.npy"), np.load(root / "ref_colours.npy").argmax(1)
    by_reference = head.predict(scaler.transform(reference))
    rows = {}
    for path in sorted(root.glob("out-*-colours.npy")):
        label, form = path.name.removeprefix("out-").removesuffix("-colours.npy").split("-", 1)
        features = np.load(root / f"out-{label}-{form}-test.npy")
        cosine = np.sum(features * reference, 1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1))
        timing = root / f"out-{label}-{form}-seconds.txt"
        rows[f"{label} {form}"] = {"seconds": float(timing.read_text()) if timing.exists() else None,
                                   "agreement": float((np.load(path).argmax(1) == expected).mean()),
                                   "cosine": float(cosine.mean()), "cosine_min": float(cosine.min()),
                                   "head_agreement": float((head.predict(scaler.transform(features)) == by_reference).mean())}  # fmt: skip
    print(f"| CPU, format | top class as float32 (test case) | feature cosine (mean, min) | head agreement | seconds, {TEST_IMAGES} images |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        seconds = f"{row['seconds']:.2f}" if row["seconds"] is not None else "-"
        print(f"| {name} | {row['agreement']:.1%} | {row['cosine']:.3f}, {row['cosine_min']:.3f} | {row['head_agreement']:.0%} "
              f"| {seconds} |")
    (root / "report.json").write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "run", "report", "digits"))
    parser.add_argument("--model", type=Path, default=Path("runs/digits-int8/model"), help="digits: the model folder")
    parser.add_argument("--dir", default="/tmp/int8", type=Path)
    parser.add_argument("--label", default="native", help="run: the CPU's name in the table")
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()
    if args.step == "prepare":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's folder generator
        prepare(args.dir)
    elif args.step == "digits":
        digits(args.dir, args.model)
    elif args.step == "run":
        run(args.dir, args.label, args.formats.split(","))
    else:
        report(args.dir)


if __name__ == "__main__":
    main()
