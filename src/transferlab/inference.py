"""Using a trained model: ``model = transferlab.load("runs/x/model")``, then ``model.predict(images)``,
``model.evaluate(data)``, ``model.export("onnx")``."""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bundle import BundleInfo, load_bundle
from .config import ENGINES
from .data import ImageSet, image_files, per_class_subset
from .datasets import load_dataset
from .engines import Bfloat16, OnnxRunner, onnx_runner
from .errors import ConfigError, DataError, check_choice
from .export import INT8_FILE, export_bundle, export_int8
from .features import compute_outputs, to_unit_float
from .hardware import check_device, choose_engine, resolve_device, this_cpu
from .images import IMAGE_SUFFIXES, open_image, to_rgb
from .metrics import classification_metrics
from .report import plot_confusion, save_figure, write_report

log = logging.getLogger(__name__)

ImageInput = str | Path | Image.Image | np.ndarray


def _folders_opened(items: list[ImageInput]) -> tuple[list[ImageInput], np.ndarray]:
    """``items`` with each folder among them replaced by the image files in it and its sub-folders,
    and for each image whether a folder gave it."""
    found: list[ImageInput] = []
    from_folder: list[bool] = []
    for item in items:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            files = image_files(Path(item))
            if not files:
                raise DataError(f"Folder {str(item)!r} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
            found += files
            from_folder += [True] * len(files)
        else:
            found.append(item)
            from_folder.append(False)
    return found, np.asarray(from_folder, dtype=bool)


class _Inputs:
    """The images handed to ``predict``: file paths, PIL images or uint8 arrays (H x W or H x W x C)."""

    def __init__(self, items: list[ImageInput]):
        for item in items:
            if isinstance(item, (str, Path)) and not Path(item).is_file():
                raise DataError(f"Image {str(item)!r} does not exist.")
            if not isinstance(item, (str, Path, Image.Image, np.ndarray)):
                raise DataError(f"Cannot predict on a {type(item).__name__}: give file paths, PIL images or arrays.")
        self.items = items

    def open(self, index: int, min_side: int | None = None) -> Image.Image:
        item = self.items[index]
        if isinstance(item, (str, Path)):
            return open_image(item, min_side)
        return to_rgb(item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item)))

    def describe(self, index: int) -> str:
        item = self.items[index]
        return str(item) if isinstance(item, (str, Path)) else f"image {index}"


@dataclass(frozen=True)
class Prediction:
    """The ``top`` classes of one image, most probable first, as (class, probability)."""

    image: str
    top: list[tuple[str, float]]

    def to_json(self) -> dict:
        return {"image": self.image, "top": [[label, p] for label, p in self.top]}


class Model:
    """A trained transfer model loaded from its folder (``OUT/model``)."""

    def __init__(self, directory: str | Path, engine: str = "auto", device: str = "auto"):
        check_choice("--engine", engine, ("auto", *ENGINES))
        self.directory = Path(directory)
        self.network, self.info = load_bundle(self.directory)
        self.device = resolve_device(check_device(device))
        if engine == "auto":  # ONNX Runtime only where it is faster and the model is exported already
            exported = (self.directory / "model.onnx").exists()
            engine = choose_engine("auto", self.device, this_cpu(), importlib.util.find_spec("onnxruntime") is not None,
                                   0, self.resolution, exported).engine  # fmt: skip
        self.engine = engine
        self._runner = self._runner_for(engine)

    def _runner_for(self, engine: str):
        """The network on ``engine``: PyTorch's on the device, ONNX Runtime's on the CPU."""
        if engine == "onnxruntime":  # exported once next to the bundle
            return onnx_runner(self.network, self.resolution, self.directory / "model.onnx")
        if engine == "onnxruntime-int8":
            if not (self.directory / INT8_FILE).exists():
                raise ConfigError(f"{self.directory} has no {INT8_FILE}: make it with 'transferlab export "
                                  f"{self.directory} --format onnx --int8 --calibration DATA' (your own images).")  # fmt: skip
            return OnnxRunner(self.directory / INT8_FILE)
        network = self.network.to(self.device)
        return Bfloat16(network) if engine == "pytorch-bf16" else network

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def resolution(self) -> int:
        return self.info.preprocessing.resolution

    @property
    def fit(self) -> str:
        """How the model makes a non-square image square, as it was trained (:data:`.images.FITS`)."""
        return self.info.preprocessing.fit

    def __repr__(self) -> str:
        return f"Model({str(self.directory)!r}, {self.info.strategy} on {self.info.backbone}, {len(self.classes)} classes)"

    def predict(self, images: ImageInput | list[ImageInput], top_k: int = 3) -> list[Prediction]:
        """The ``top_k`` classes with probabilities for each image (a path, a PIL image or an array;
        a folder's path stands for the image files in it and its sub-folders, sorted by path). An
        image that cannot be read is an error, but one a folder gave: that one is skipped with a
        warning and has no prediction."""
        if top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {top_k}.")
        items, from_folder = _folders_opened(list(images) if isinstance(images, (list, tuple)) else [images])
        source = _Inputs(items)
        image_set = ImageSet(source, np.arange(len(items)), np.zeros(len(items), dtype=np.int64), ("?",), self.fit)
        outputs = compute_outputs(self._runner, image_set, self.resolution, strict=not from_folder.any(), desc="predict")
        named = np.flatnonzero(~outputs.valid & ~from_folder)
        if len(named):  # decoded leniently for the folders' sake; the warning above says why it failed
            raise DataError(f"cannot read image {source.describe(int(named[0]))}.")
        logits = outputs.values
        shifted = np.exp(logits - logits.max(1, keepdims=True))
        probabilities = shifted / shifted.sum(1, keepdims=True)
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(top_k, len(self.classes))]
        return [
            Prediction(source.describe(i), [(self.classes[c], float(probabilities[i, c])) for c in top[i]])
            for i in np.flatnonzero(outputs.valid)
        ]

    def evaluate(self, data: str, out: str | Path | None = None, data_dir: str | None = None,
                 samples_per_class: int | None = None, seed: int = 0) -> dict:  # fmt: skip
        """Accuracy, balanced accuracy, per-class precision/recall and the confusion matrix on
        ``data`` (its test split when it has one); with ``out``, also metrics.json and report.html there."""
        images = _labelled_for(self.info, data, data_dir).with_fit(self.fit)
        if samples_per_class is not None:
            images = per_class_subset(images, samples_per_class, seed)
        to_model = np.asarray([self.classes.index(c) for c in images.classes])
        outputs = compute_outputs(self._runner, images, self.resolution, desc="evaluate")
        predictions = outputs.values.argmax(1)[outputs.valid]
        labels = to_model[images.labels][outputs.valid]
        metrics = {"model": str(self.directory), "data": data, "num_images": int(len(labels)),
                   "skipped_files": len(outputs.skipped), "skipped": list(outputs.skipped), "classes": list(self.classes),
                   **classification_metrics(labels, predictions, self.classes)}  # fmt: skip
        if out is not None:
            _write_evaluation(Path(out), metrics)
        return metrics

    def export(self, fmt: str, out: str | Path | None = None, int8_calibration: str | None = None) -> Path:
        """Write the model as ``onnx`` or ``torchscript`` (checked against PyTorch); returns the file.
        ``int8_calibration`` (data: a folder, CSV or built-in name) writes an int8 ONNX model
        calibrated on up to 200 of its images instead."""
        if int8_calibration is None:
            return export_bundle(self.directory, fmt, out)[0]
        return export_int8(self.directory, self.calibration_images(int8_calibration), out).path

    def calibration_images(self, data: str, count: int = 200, data_dir: str | None = None) -> torch.Tensor:
        """Up to ``count`` of ``data``'s training images (spread over its classes), decoded as unit floats."""
        dataset = load_dataset(data, data_dir)
        images = per_class_subset(dataset.train, max(1, count // len(dataset.train.classes))).with_fit(self.fit)
        decoded = compute_outputs(None, images, self.resolution, desc="calibration")
        return to_unit_float(torch.from_numpy(decoded.readable(images.labels)[0]))


def load(directory: str | Path, engine: str = "auto", device: str = "auto") -> Model:
    """The model trained into ``directory`` (``OUT/model``); ``engine`` runs it with PyTorch (on
    ``device``) or ONNX Runtime; ``auto`` chooses for this machine (:func:`.hardware.choose_engine`)."""
    return Model(directory, engine, device)


def _labelled_for(info: BundleInfo, data: str, data_dir: str | None) -> ImageSet:
    dataset = load_dataset(data, data_dir)
    images = dataset.test if dataset.test is not None else dataset.train
    if set(images.classes) != set(info.classes):
        only_data = sorted(set(images.classes) - set(info.classes))
        only_model = sorted(set(info.classes) - set(images.classes))
        raise DataError(
            f"The classes of {data!r} differ from the model's: only in the data {only_data}, only in the model {only_model}."
        )
    return images


def _write_evaluation(out: Path, metrics: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    counts = np.asarray(metrics["confusion_matrix"])
    figure = save_figure(plot_confusion(counts, metrics["classes"], f"Confusion matrix on {metrics['data']}"),
                         out / "confusion.png")  # fmt: skip
    summary = {k: v for k, v in metrics.items() if k not in ("confusion_matrix", "skipped", "per_class")}
    per_class = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in metrics["per_class"].items()]
    write_report(out / "report.html", f"transferlab evaluate: {metrics['data']}", summary, {"Confusion matrix": figure},
                 tables={"Per class": (["class", "precision", "recall", "F1", "images"], per_class)})  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

