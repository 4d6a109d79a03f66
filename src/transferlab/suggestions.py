"""``transferlab suggest MODEL_DIR UNLABELED_DIR -n 50``: the unlabelled images worth labelling
next, best first (:mod:`.selection` on the model's frozen features and its head's
probabilities), as a CSV and a contact sheet a person can label from, with what the run's
learning curve says that many more labels would buy.

The forecast reads the run's folder (``MODEL_DIR/..``: its ``metrics.json`` names the data and
the split): the linear probe's leave-one-out accuracy on a quarter, a half and all of the
training images per class (at most ``--measure-per-class`` of each, as the advisor measures), the
gain per doubling, extended to the labelled images plus the suggested ones (the advisor's
learning curve, :func:`.advisor.measure.probe_learning_curve`). Of an ensemble suggest reads the
member whose body stayed frozen (:func:`frozen_model`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .advisor.measure import probe_learning_curve
from .bundle import read_info
from .data import per_class_subset, split_dataset
from .datasets import load_dataset
from .errors import ConfigError
from .features import compute_outputs
from .images import open_image
from .inference import Model
from .plan import gain_per_doubling
from .report import plot_contact_sheet, save_figure, write_report
from .selection import SELECTION, SELECTIONS, margins, select
from .strategies import STRATEGIES
from .unlabeled import load_unlabeled

log = logging.getLogger(__name__)

CONTACT_SHEET_LIMIT = 100  # images on the contact sheet (the CSV lists every suggestion)


@dataclass(frozen=True)
class Suggestion:
    rank: int
    image: str
    predicted: str  # the model's guess, to speed up labelling (check it)
    confidence: float
    margin: float  # top-1 minus top-2 probability: near 0, the model cannot tell two classes apart


@dataclass(frozen=True)
class LabelForecast:
    """What ``added`` more labelled images per class should buy, from the run's learning curve."""

    images_per_class: int
    added: float
    curve: tuple[tuple[int, float], ...]
    gain_per_doubling: float

    @property
    def gain(self) -> float:
        return self.gain_per_doubling * math.log2((self.images_per_class + self.added) / self.images_per_class)

    def text(self) -> str:
        return (f"the run's learning curve (probe accuracy {', '.join(f'{a:.1%}' for _, a in self.curve)} on "
                f"{', '.join(str(n) for n, _ in self.curve)} images per class) gains {100 * self.gain_per_doubling:+.1f} "
                f"points per doubling: labelling these ({self.added:.1f} more per class on {self.images_per_class}) is "
                f"forecast to add {100 * self.gain:+.1f} points")  # fmt: skip


def _frozen_body(model: Model) -> nn.Module:
    """The model's normalization and body on its device: the features its head reads."""
    network = model.network.eval()
    return nn.Sequential(network.normalize, network.body).to(model.device)


def frozen_view(model: Model, folder: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """(the readable images, their features at the model's cut, its head's probabilities, unreadable count)."""
    images = load_unlabeled(folder).with_fit(model.fit)  # made square as the model was trained
    features = compute_outputs(_frozen_body(model), images, model.resolution, desc="features")
    values = np.asarray(features.values)[features.valid]
    with torch.no_grad():
        probabilities = torch.softmax(model.network.head.cpu()(torch.from_numpy(values)), 1).numpy()
    names = [images.describe(i) for i in np.flatnonzero(features.valid)]
    return names, values, probabilities, len(features.skipped)


def frozen_model(model_dir: str | Path) -> Path:
    """The model suggest reads in ``model_dir``: the model itself, or an ensemble's member whose body
    stayed frozen (its features are the pretrained network's, as the selection wants them)."""
    info, _ = read_info(model_dir)
    for member in info.members:
        if not STRATEGIES[read_info(Path(model_dir) / member.folder)[0].strategy].trains_body:
            log.info("%s is an ensemble: suggest reads its frozen member %s", model_dir, member.folder)
            return Path(model_dir) / member.folder
    if info.members:
        raise ConfigError(f"{model_dir} is an ensemble without a member whose body stayed frozen; suggest reads one "
                          "frozen body and its head.")  # fmt: skip
    return Path(model_dir)


def label_forecast(model: Model, added_per_class: float, run_dir: Path) -> LabelForecast | None:
    """The forecast from the run's own training images (``None`` without the run's ``metrics.json``
    in ``run_dir``)."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return None
    config = json.loads(metrics_path.read_text())["config"]
    dataset = load_dataset(config["data"], config.get("data_dir"))
    if tuple(dataset.train.classes) != tuple(model.classes):
        return None  # a class selection or another data set: no forecast rather than a wrong one
    train = split_dataset(dataset, config["val_fraction"], config["samples_per_class"], None, config["seed"]).train
    sample = per_class_subset(train, config["measure_per_class"], config["seed"]).with_fit(model.fit)  # as the advisor measures
    features = compute_outputs(_frozen_body(model), sample, model.resolution, desc="learning curve")
    values, labels = features.readable(sample.labels)
    curve = probe_learning_curve(np.asarray(values), labels, config["seed"])
    return LabelForecast(int(train.counts().min()), added_per_class, curve, gain_per_doubling(curve))


def suggest(model_dir: str | Path, unlabeled_dir: str | Path, n: int = 50, out: str | Path = "runs/suggest",
            method: str = SELECTION, device: str = "auto", seed: int = 0) -> dict:  # fmt: skip
    """The ``n`` images of ``unlabeled_dir`` to label next for the model in ``model_dir``, best first;
    ``suggestions.csv``, ``contact_sheet.png``, ``suggestions.json`` and ``report.html`` in ``out``."""
    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}.")
    if method not in SELECTIONS:
        raise ConfigError(f"--method must be one of {', '.join(SELECTIONS)}, got {method!r}.")
    model = Model(frozen_model(model_dir), engine="pytorch", device=device)
    names, features, probabilities, unreadable = frozen_view(model, unlabeled_dir)
    rows = select(features, probabilities, n, method, seed)
    gaps = margins(probabilities)
    suggestions = [Suggestion(rank + 1, names[row], model.classes[int(probabilities[row].argmax())],
                              float(probabilities[row].max()), float(gaps[row])) for rank, row in enumerate(rows)]  # fmt: skip
    forecast = label_forecast(model, len(suggestions) / len(model.classes), Path(model_dir).parent)
    result = {"model": str(model_dir), "unlabeled": str(unlabeled_dir), "method": method, "images": len(names),
              "unreadable": unreadable, "suggestions": [asdict(s) for s in suggestions],
              "forecast": None if forecast is None else {**asdict(forecast), "gain": forecast.gain, "text": forecast.text()}}  # fmt: skip
    _write(Path(out), result, suggestions)
    return result


def _write(out: Path, result: dict, suggestions: list[Suggestion]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "suggestions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "image", "predicted", "confidence", "margin"])
        writer.writerows([s.rank, s.image, s.predicted, f"{s.confidence:.4f}", f"{s.margin:.4f}"] for s in suggestions)
    (out / "suggestions.json").write_text(json.dumps(result, indent=2))
    shown = suggestions[:CONTACT_SHEET_LIMIT]
    sheet = plot_contact_sheet([np.asarray(open_image(s.image)) for s in shown],
                               [f"#{s.rank} {s.predicted}? margin {s.margin:.2f}" for s in shown])  # fmt: skip
    summary = {"model": result["model"], "unlabelled images": f"{result['images']} read, {result['unreadable']} unreadable",
               "selection": result["method"], "suggested": len(suggestions),
               "forecast": result["forecast"]["text"] if result["forecast"] else "no learning curve: the run's "
               "metrics.json is not beside the model folder"}  # fmt: skip
    table = (["rank", "image", "the model's guess", "confidence", "margin"],
             [[s.rank, s.image, s.predicted, s.confidence, s.margin] for s in suggestions])  # fmt: skip
    write_report(out / "report.html", "transferlab suggest: the images to label next", summary,
                 {"Contact sheet, best first (the model's guess and its margin)": save_figure(sheet, out / "contact_sheet.png")},
                 tables={"Suggestions": table})  # fmt: skip
    log.info("wrote %s", out)
