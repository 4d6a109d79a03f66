"""int8 formats on each kind of CPU (docs/speed.md, "int8 on each kind of CPU").

Three steps, so that the CPU-dependent one can run under an emulator of another CPU:

    python benchmarks/int8_formats.py prepare --dir /tmp/int8      # here: float32 models, references, int8 models
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_formats.py run --dir /tmp/int8 --label avx2
    python benchmarks/int8_formats.py run --dir /tmp/int8 --label native
    python benchmarks/int8_formats.py report --dir /tmp/int8
    python benchmarks/int8_formats.py digits --dir /tmp/int8 --model runs/digits-int8/model   # issue 34's case
    python benchmarks/int8_formats.py sets --dir runs/int8-sets --resolution 112   # every set, the export's recipe

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
import functools
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


def _quantize(fp32: Path, out: Path, calibration: np.ndarray, form: str) -> None:
    """``fp32`` quantized into ``out`` in ``form`` by plain ONNX Runtime (min-max calibration on
    ``calibration``, biases in int32, nothing corrected): the recipe before issue 34."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from transferlab.quantization import prepared_graph

    activation = QuantType.QInt8 if form == "s8s8" else QuantType.QUInt8
    weight = QuantType.QUInt8 if form == "u8u8" else QuantType.QInt8

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i : i + 8] for i in range(0, len(calibration), 8))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": _unit(batch)}

    optimized = prepared_graph(fp32, out.with_suffix(".optimized.onnx"))
    quantize_static(str(optimized), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=form == "u8s8-reduce", activation_type=activation, weight_type=weight)  # fmt: skip
    optimized.unlink()


def speed_ups(fp32: Path, models: list[Path], images: np.ndarray, rounds: int = 7) -> list[float]:
    """Each of ``models``' speed-up over ``fp32`` on ``images`` (batches of 8): per round every model
    timed once, in turn, after a warm-up; the median over ``rounds`` of the per-round ratios (on
    these machines a single pass drifted from 1.4x to 1.9x for the same two models)."""
    sessions, unit = [_session(path) for path in (fp32, *models)], _unit(images)
    for session in sessions:
        session.run(None, {"images": unit[:8]})
    ratios = []
    for _ in range(rounds):
        times = []
        for session in sessions:
            started = time.perf_counter()
            for i in range(0, len(unit), 8):
                session.run(None, {"images": unit[i : i + 8]})
            times.append(time.perf_counter() - started)
        ratios.append([times[0] / t for t in times[1:]])
    return [float(r) for r in np.median(ratios, axis=0)]


def digits(root: Path, model_dir: Path) -> None:
    """Issue 34's case: the digits head model's float32 export quantized by plain ONNX Runtime
    (min-max, 200 images: the recipe before bias correction) and by transferlab's recipes (biases
    corrected, the first k convolutions float32, :mod:`transferlab.quantization`); top-class
    agreement with float32 on the 200 calibration images and on the digits test split, and the
    speed-up over float32 ONNX Runtime on 128 test images (:func:`speed_ups`). The recipes include
    7 and 15 float convolutions, which the export does not try (they cost speed)."""
    import torch

    import transferlab as tl
    from transferlab.data import per_class_subset
    from transferlab.datasets import load_dataset
    from transferlab.engines import quantize_onnx, write_onnx
    from transferlab.export import FLOAT_CONVS
    from transferlab.features import compute_outputs

    root.mkdir(parents=True, exist_ok=True)
    model, data = tl.load(model_dir, engine="pytorch"), load_dataset("digits")
    fp32 = root / "digits.fp32.onnx"
    write_onnx(model.network.eval(), torch.rand(2, 3, model.resolution, model.resolution), fp32)

    def pixels(split, per_class: int) -> np.ndarray:
        subset = per_class_subset(split, per_class, 0)
        return compute_outputs(None, subset, model.resolution, desc="decode").readable(subset.labels)[0]

    images = {"calibration": pixels(data.train, 20), "test": pixels(data.test, 1000)}  # as export --int8 takes them
    expected = {split: _run(fp32, x).argmax(1) for split, x in images.items()}
    recipes = {"ONNX Runtime min-max (before)": lambda out: _quantize(fp32, out, images["calibration"], "u8s8-reduce")}
    for float_convs in (*FLOAT_CONVS, 7, 15):
        recipes[f"bias corrected, first {float_convs} convolutions float32"] = functools.partial(
            lambda out, k: quantize_onnx(fp32, out, torch.from_numpy(_unit(images["calibration"])), k), k=float_convs)
    paths = [root / f"digits-{number}.onnx" for number in range(len(recipes))]
    for path, build in zip(paths, recipes.values()):
        build(path)
    print("| recipe | calibration images | test images | speed-up over float32 |\n|---|---|---|---|")
    for name, path, speed_up in zip(recipes, paths, speed_ups(fp32, paths, images["test"][:128])):
        agreement = {split: float((_run(path, x).argmax(1) == expected[split]).mean()) for split, x in images.items()}
        print(f"| {name} | {agreement['calibration']:.1%} | {agreement['test']:.1%} ({len(images['test'])}) "
              f"| {speed_up:.2f}x |", flush=True)


def one_set(root: Path, name: str, resolution: int, cache_dir: str | None) -> dict:
    """A head trained on ``name`` (20 images per class) at ``resolution``, exported by ``export
    --int8`` (its recipe search, 200 calibration images); set beside float32 ONNX Runtime on up to
    30 test images per class: top-class agreement, accuracy of each, and the speed-up."""
    import transferlab as tl
    from transferlab.data import per_class_subset
    from transferlab.datasets import load_dataset
    from transferlab.export import export_int8
    from transferlab.features import compute_outputs

    out = root / f"{name}@{resolution}"
    tl.train(name, strategy="head", resolution=resolution, samples_per_class=20, test_per_class=30, out=str(out),
             cache_dir=cache_dir)  # the run's own test figures are not read: 30 a class keep it short
    model = tl.load(out / "model", engine="pytorch")
    exported = export_int8(out / "model", model.calibration_images(name))
    dataset = load_dataset(name)
    test = per_class_subset(dataset.test, 30, 1)
    pixels = compute_outputs(None, test, resolution, desc="decode").readable(test.labels)[0]
    fp32 = exported.path.with_suffix(".fp32.onnx")
    logits = {"float32": _run(fp32, pixels), "int8": _run(exported.path, pixels),
              "float32 under noise": _run(fp32, half_grey_level_noise(pixels))}  # fmt: skip
    correct = {kind: float((values.argmax(1) == test.labels).mean()) for kind, values in logits.items()}
    return {"set": name, "resolution": resolution, "calibration_agreement": exported.agreement,
            "float_convs": exported.float_convs, "held_out": exported.held_out, "test_images": len(test),
            "test_agreement": float((logits["int8"].argmax(1) == logits["float32"].argmax(1)).mean()),
            "test_float_under_noise": float((logits["float32 under noise"].argmax(1) == logits["float32"].argmax(1)).mean()),
            "accuracy": correct, "speed_up": speed_ups(fp32, [exported.path], pixels[:128])[0]}  # fmt: skip


def half_grey_level_noise(pixels: np.ndarray, seed: int = 0) -> np.ndarray:
    """``pixels`` in [0, 1], each moved by up to half a grey level (uniform, seeded): what float32
    itself does under the smallest change an 8-bit image can carry (the export's own check, on the
    test images)."""
    noise = (np.random.default_rng(seed).random(pixels.shape, dtype=np.float32) * 2 - 1) * (0.5 / 255)
    return np.clip(_unit(pixels) + noise, 0, 1)


def sets(root: Path, names: list[str], resolution: int, cache_dir: str | None) -> None:
    """``one_set`` for each of ``names`` (one JSON file each in ``root``, reused when run again); the table."""
    from resumable import record

    from transferlab.errors import ExportError

    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            record(root / f"{name}@{resolution}.json", functools.partial(one_set, root, name, resolution, cache_dir))
        except ExportError as refused:  # the export's own verdict is a result too; the other sets go on
            print(f"{name}@{resolution}: refused: {refused}", flush=True)
    print("| set, px | calibration agreement (held out) | test agreement | float32 under half a grey level (test) "
          "| accuracy float32 / int8 | float convolutions | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(root.glob(f"*@{resolution}.json")):
        row = json.loads(path.read_text())
        under_noise = f"{row['test_float_under_noise']:.1%}" if "test_float_under_noise" in row else "-"
        print(f"| {row['set']}, {row['resolution']} | {row['calibration_agreement']:.1%} "
              f"({row['held_out'][str(row['float_convs'])]['agreement']:.1%}) | {row['test_agreement']:.1%} "
              f"({row['test_images']}) | {under_noise} | {row['accuracy']['float32']:.1%} / {row['accuracy']['int8']:.1%} "
              f"| {row['float_convs']} | {row['speed_up']:.2f}x |")  # fmt: skip


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
    tl.train(str(data), strategy="head", resolution=112, use_cache=False, out=str(root / "run"))
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
    parser.add_argument("step", choices=("prepare", "run", "report", "digits", "sets"))
    parser.add_argument("--sets", nargs="+", default=["digits", "fashion-mnist", "textures", "emoji-apple", "furniture",
                                                       "cartoons"], help="sets: the built-in sets")  # fmt: skip
    parser.add_argument("--resolution", type=int, default=112, help="sets: the resolution")
    parser.add_argument("--cache-dir", help="sets: the feature cache")
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
    elif args.step == "sets":
        sets(args.dir, args.sets, args.resolution, args.cache_dir)
    elif args.step == "run":
        run(args.dir, args.label, args.formats.split(","))
    else:
        report(args.dir)


if __name__ == "__main__":
    main()
