"""Using a trained model from Python: ``tl.load(dir)`` -> ``.classes``, ``.predict``, ``.evaluate``, ``.export``."""

import shutil

import numpy as np
import pytest
from PIL import Image

import transferlab as tl
from transferlab import export as export_module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_folder

    root = tmp_path_factory.mktemp("inference")
    data = write_folder(root / "d", per_class=10)
    tl.train(str(data), strategy="head", resolution=32, out=str(root / "run"), cache_dir=str(root / "cache"))
    return root, data, tl.load(root / "run" / "model")


def test_predict_takes_paths_pil_images_and_arrays_alike(trained):
    _, data, model = trained
    path = sorted((data / "green").iterdir())[0]
    image = Image.open(path)
    by_path, by_pil, by_array, by_grey = model.predict([path, image, np.asarray(image), np.asarray(image.convert("L"))])
    assert by_path.top == by_pil.top == by_array.top and by_path.image == str(path) and by_pil.image == "image 1"
    assert by_path.top[0][0] == "green" and len(by_grey.top) == 3
    assert model.predict(str(path), top_k=1)[0].top == by_path.top[:1]
    assert sum(p for _, p in by_path.top) == pytest.approx(1.0, abs=1e-5)


def test_predict_refuses_missing_files_and_other_objects(trained, tmp_path):
    _, _, model = trained
    with pytest.raises(tl.DataError, match="does not exist"):
        model.predict([tmp_path / "nope.png"])
    with pytest.raises(tl.DataError, match="Cannot predict on a dict"):
        model.predict([{}])
    with pytest.raises(tl.ConfigError, match="--top-k must be at least 1, got 0"):
        model.predict([tmp_path], top_k=0)


def test_a_folder_stands_for_the_image_files_in_it_and_its_sub_folders(trained, tmp_path):
    _, data, model = trained
    folder = tmp_path / "new"
    shutil.copytree(data / "green", folder / "monday")
    shutil.copy(next((data / "red").iterdir()), folder / "loose.png")
    (folder / "notes.txt").write_text("not an image")
    files = sorted(folder.rglob("*.png"))
    one = next((data / "blue").iterdir())
    predicted = model.predict([folder, one])
    assert [p.image for p in predicted] == [str(f) for f in files] + [str(one)]
    assert [p.top for p in predicted[:-1]] == [p.top for p in model.predict(files)]
    assert predicted[-1].top[0][0] == "blue"
    (folder / "monday" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert [p.image for p in model.predict(folder)] == [str(f) for f in files]  # skipped, with a warning
    with pytest.raises(tl.DataError, match="cannot read image .*broken.jpg"):
        model.predict([folder, folder / "monday" / "broken.jpg"])  # named: an error, folders or not
    (tmp_path / "empty" / "inner").mkdir(parents=True)
    with pytest.raises(tl.DataError, match="holds no images"):
        model.predict(tmp_path / "empty")


def test_evaluate_reports_balanced_metrics_and_writes_a_report(trained, tmp_path):
    root, data, model = trained
    metrics = model.evaluate(str(data), out=tmp_path / "ev")
    assert model.classes == ("blue", "green", "red") and metrics["num_images"] == 30
    assert metrics["accuracy"] >= 0.9 and metrics["majority_baseline"] == pytest.approx(1 / 3)
    assert set(metrics["per_class"]) == set(model.classes)
    assert (tmp_path / "ev" / "report.html").read_text().count("<td>green</td>") == 1


def test_export_checks_parity_and_says_so_when_it_fails(trained, tmp_path, monkeypatch):
    _, _, model = trained
    assert model.export("torchscript", tmp_path / "m.pt").exists()
    with pytest.raises(tl.ConfigError, match="must be one of onnx, torchscript"):
        model.export("tflite")
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)  # any difference at all now fails
    with pytest.raises(tl.ExportError, match="logits differ from PyTorch"):
        model.export("torchscript", tmp_path / "again.pt")


def test_int8_engine_and_export_agree_with_pytorch(trained, tmp_path):
    root, data, _ = trained
    options = {"resolution": 112, "use_cache": False, "cache_dir": str(tmp_path / "cache")}
    fp32 = tl.train(str(data), strategy="head", out=str(tmp_path / "f"), **options)
    int8 = tl.train(str(data), strategy="head", out=str(tmp_path / "i"), engine="onnxruntime-int8", **options).metrics
    assert abs(int8["val_accuracy"] - fp32.metrics["val_accuracy"]) <= 0.005
    model = fp32.model
    with pytest.raises(tl.ConfigError, match="has no model.int8.onnx"):
        tl.load(fp32.out / "model", engine="onnxruntime-int8")
    path = model.export("onnx", int8_calibration=str(data))
    assert path.name == "model.int8.onnx" and path.stat().st_size < (fp32.out / "model" / "model.safetensors").stat().st_size / 2
    images = sorted(data.rglob("*.png"))
    by_int8 = tl.load(fp32.out / "model", engine="onnxruntime-int8").predict(images)
    by_torch = model.predict(images)
    assert np.mean([a.top[0][0] == b.top[0][0] for a, b in zip(by_int8, by_torch)]) >= 0.95
    small = {**options, "resolution": 32}  # small maps quantize too since the "same" paddings are constants
    small_fp32 = tl.train(str(data), strategy="head", out=str(tmp_path / "sf"), **small).metrics
    small_int8 = tl.train(str(data), strategy="head", out=str(tmp_path / "si"), engine="onnxruntime-int8", **small).metrics
    assert abs(small_int8["val_accuracy"] - small_fp32["val_accuracy"]) <= 0.05


def test_bf16_engine_keeps_the_predictions(trained, tmp_path):
    root, data, model = trained
    fp32 = tl.train(str(data), strategy="head", resolution=32, out=str(tmp_path / "f"), use_cache=False).metrics
    bf16 = tl.train(str(data), strategy="head", resolution=32, out=str(tmp_path / "b"), use_cache=False,
                    engine="pytorch-bf16").metrics  # fmt: skip
    assert bf16["val_accuracy"] == fp32["val_accuracy"] and abs(bf16["val_loss"] - fp32["val_loss"]) < 0.05
    images = sorted(data.rglob("*.png"))
    by_bf16 = tl.load(root / "run" / "model", engine="pytorch-bf16").predict(images)
    assert [p.top[0][0] for p in by_bf16] == [p.top[0][0] for p in model.predict(images)]
