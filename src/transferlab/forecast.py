"""Each option's accuracy, forecast with an interval from the advisor's measurements, and the
choice among them.

The measurements (:class:`Signals`) are cheap: linear probes on the frozen features at every cut
(leave-one-out on the labelled images), the same on the architecture with random weights, a probe
learning curve, and a one-epoch fine-tuning pilot. What they say about the options' accuracies is
learnt from the study's outcomes: per option, a ridge regression of its test accuracy, taken
relative to the probe that estimates it, on the signals (:class:`Forecaster`, fitted by
``transferlab study``, shipped as ``forecaster.json``). Its residual spread on the study's cells
is the interval. :func:`choose` takes the best forecast, unless the runner-up is inside the
combined interval: then the option with the higher worst case (forecast minus its spread).

Torch-free, like :mod:`.strategies` and :mod:`.plan`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .strategies import STRATEGIES, forecast_options

SIGNAL_NAMES = ("log2 images per class", "final probe", "best probe - final probe", "transfer gain",
                "probe gain per doubling", "pilot gain")  # fmt: skip
RIDGE = 1.0  # on standardized signals; the intercept is not penalized
SHIPPED = Path(__file__).with_name("forecaster.json")


@dataclass(frozen=True)
class Signals:
    """What the advisor measured on a data set, in the form the forecaster reads."""

    images_per_class: int
    probe_final: float  # the probe on the final features (head's estimate)
    probe_stage: float  # the best probe before the final cut (truncate's estimate)
    probe_best: float  # the best probe of all cuts
    transfer_gain: float  # best pretrained probe minus best random-weights probe
    curve_slope: float  # probe accuracy bought per doubling of the data (learning curve)
    pilot_gain: float | None  # validation accuracy added by one pilot epoch of fine-tuning (None: not run)
    probe_all: float | None = None  # the probe on every cut's features at once (multicut's estimate; None: not measured)

    def vector(self) -> np.ndarray:
        """The signals in :data:`SIGNAL_NAMES`' order; one not measured is NaN."""
        pilot_gain = math.nan if self.pilot_gain is None else self.pilot_gain
        return np.array([math.log2(max(1, self.images_per_class)), self.probe_final, self.probe_best - self.probe_final,
                         self.transfer_gain, self.curve_slope, pilot_gain])  # fmt: skip

    @property
    def probe_random(self) -> float:
        """The best probe on the random twin's features (``scratch``'s starting point)."""
        return self.probe_best - self.transfer_gain

    def anchor(self, option: str) -> float:
        """The measurement of an option's starting point, which its forecast is taken relative to, as
        the strategy table names it: the final features' probe for ``head`` and ``finetune`` (LP-FT
        starts from that probe), the best earlier cut's for ``truncate`` (NaN on a body without
        earlier cuts: the option does not apply), the probe on every cut at once for ``multicut``,
        the random twin's best probe for ``scratch``."""
        value = getattr(self, STRATEGIES[option].anchor)
        return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Forecast:
    option: str
    accuracy: float
    spread: float  # the residual standard deviation of this option's model on the study's cells

    @property
    def worst_case(self) -> float:
        return self.accuracy - self.spread


@dataclass(frozen=True)
class OptionModel:
    weights: tuple[float, ...]  # intercept first, then one per standardized signal
    spread: float


@dataclass(frozen=True)
class Forecaster:
    """One ridge model per option over the standardized signals, and the cells it was fitted on."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    models: dict[str, OptionModel]
    cells: int
    source: str = ""  # what it was fitted on

    def predict(self, signals: Signals) -> list[Forecast]:
        """Each option's forecast; a signal not measured reads as its mean on the studied cells."""
        standardized = np.nan_to_num((signals.vector() - np.array(self.mean)) / np.array(self.scale), nan=0.0)
        x = np.concatenate([[1.0], standardized])
        return [Forecast(option, float(np.clip(signals.anchor(option) + x @ np.array(m.weights), 0.0, 1.0)), m.spread)
                for option, m in self.models.items()
                if option in STRATEGIES and not math.isnan(signals.anchor(option))]  # fmt: skip

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict) -> Forecaster:
        models = {option: OptionModel(tuple(m["weights"]), m["spread"]) for option, m in data["models"].items()}
        return Forecaster(tuple(data["mean"]), tuple(data["scale"]), models, data["cells"], data.get("source", ""))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @staticmethod
    def load(path: str | Path = SHIPPED) -> Forecaster:
        return Forecaster.from_json(json.loads(Path(path).read_text()))


def fit_forecaster(rows: list[tuple[Signals, dict[str, float]]], cells: int, source: str = "") -> Forecaster:
    """Fit on ``rows`` of (signals, each option's measured accuracy, where it applies) from
    ``cells`` studied cells (``source`` says which)."""
    x = np.array([signals.vector() for signals, _ in rows])
    mean, scale = x.mean(0), np.where(x.std(0) > 1e-9, x.std(0), 1.0)
    design = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    penalty = RIDGE * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    models = {}
    for option in forecast_options():
        rows_with = np.array([option in outcome for _, outcome in rows])
        if not rows_with.any():
            continue
        target = np.array([outcome[option] - signals.anchor(option) for signals, outcome in rows if option in outcome])
        a = design[rows_with]
        weights = np.linalg.solve(a.T @ a + penalty, a.T @ target)
        residuals = target - a @ weights
        dof = max(1, len(target) - a.shape[1])
        models[option] = OptionModel(tuple(float(w) for w in weights), float(math.sqrt(residuals @ residuals / dof)))
    return Forecaster(tuple(float(m) for m in mean), tuple(float(s) for s in scale), models, cells, source)


@dataclass(frozen=True)
class Choice:
    option: str
    forecasts: tuple[Forecast, ...]  # best forecast first
    reason: str


def choose(forecasts: list[Forecast], among: list[str] | None = None) -> Choice:
    """The option of ``among`` (default, or when the forecaster forecasts none of them: every
    forecast one) with the best forecast - unless the runner-up is within the two forecasts'
    combined spread, then the one of the two with the higher worst case (forecast minus spread). A
    single option is taken as it is; every forecast is kept, best first, as the evidence."""
    ranked = tuple(sorted(forecasts, key=lambda f: f.accuracy, reverse=True))
    candidates = [f for f in ranked if among is not None and f.option in among] or list(ranked)
    if len(candidates) == 1:
        return Choice(candidates[0].option, ranked, f"'{candidates[0].option}' is the option auto trains (the study's best "
                      "rule, docs/advisor.md); the other forecasts say what each option alone should reach")  # fmt: skip
    top, runner = candidates[0], candidates[1]
    if top.accuracy - runner.accuracy >= math.hypot(top.spread, runner.spread):
        return Choice(top.option, ranked, f"'{top.option}' is forecast best, clear of '{runner.option}' beyond both intervals")
    safer = max((top, runner), key=lambda f: f.worst_case)
    other = runner if safer is top else top
    return Choice(safer.option, ranked,
                  f"'{top.option}' and '{runner.option}' are within each other's intervals ({top.accuracy:.1%} and "
                  f"{runner.accuracy:.1%}, +- {math.hypot(top.spread, runner.spread):.1%} together); '{safer.option}' "
                  f"has the smaller worst-case loss (at worst {safer.worst_case:.1%} against {other.worst_case:.1%})")  # fmt: skip
