"""The choice among the strategies (:mod:`.strategies`): the evidence, the decision, the plan.

Torch-free on purpose: the configuration, the CLI and the study's calibration read it without
loading a network.

The plan (:func:`make_plan`) forecasts every option's test accuracy, with an interval, from the
advisor's measurements (:mod:`.forecast`; its model is fitted on the study's outcomes) and takes
the best of the options the strategy table marks ``advised`` (since the study of 2026-12-01:
``multicut`` and ``ensemble``, the two not dominated); the other forecasts are the evidence. The
earlier rule, four thresholds on the same measurements (:func:`decide`), stays as a baseline the
study scores the forecast against:

* does pretraining help? When its *transfer gain* (best pretrained probe minus best random
  probe) is below a threshold, frozen features are no better than random ones, so the body must
  be trained: ``scratch`` with enough data, else ``finetune``;
* is the data small? Then keep the body frozen: ``head`` when the data is *similar* (the final
  cut probes within a margin of the best cut), else ``truncate`` at the best cut;
* otherwise ``finetune`` (with BatchNorm statistics fixed).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .forecast import Choice, Forecaster, Signals, choose
from .strategies import ALL_CUTS, FINAL_CUT, FINETUNING, FROM_SCRATCH, FROZEN_HEAD, STRATEGIES, advised_options


@dataclass(frozen=True)
class Thresholds:
    """The threshold rule's settings (the study's baseline): where "small" ends, when pretraining
    counts as no help, when scratch pays, how close counts as "similar".

    The defaults are what the first study's calibration found on its 16 cells (Fashion-MNIST and
    digits from ImageNet Lite0 and from a small network pretrained here, 10 to 1000 images per
    class): kept frozen up to 20 images per class, fine-tuned above; scratch without transfer gain
    from 100.
    """

    small_data: int = 20  # fewer training images per class than this: small
    scratch: int = 100  # without transfer gain, scratch from this many images per class, else finetune
    transfer_gain: float = 0.1  # pretraining adding less than this to the best probe accuracy: no gain
    similarity_margin: float = 0.02  # final cut's probe accuracy within this of the best cut's: similar


@dataclass(frozen=True)
class CutEvidence:
    """What was measured at one cut point."""

    cut: str
    channels: int
    probe_accuracy: float
    random_probe_accuracy: float  # the same probe on the features of randomly initialized weights
    logme: float
    batchnorm_gap: float | None
    images: int = 0  # how many labelled images the probe was scored on (0: not recorded)

    @property
    def probe_stderr(self) -> float:
        """The binomial standard error of the probe accuracy (0 when the count is not recorded)."""
        p = self.probe_accuracy
        return math.sqrt(max(p * (1 - p), 0.0) / self.images) if self.images else 0.0


@dataclass(frozen=True)
class Decision:
    """The strategy and cut chosen, and what pretraining adds (the measure both rules read)."""

    strategy: str
    cut: str
    transfer_gain: float


def best_cut(evidence: list[CutEvidence] | tuple[CutEvidence, ...]) -> CutEvidence:
    """The cut whose features probe best (LogME breaks ties)."""
    return max(evidence, key=lambda e: (e.probe_accuracy, e.logme))


def transfer_gain(evidence: list[CutEvidence] | tuple[CutEvidence, ...]) -> float:
    """What pretraining adds: the best probe accuracy on the pretrained features minus the best on
    the random twin's."""
    return max(e.probe_accuracy for e in evidence) - max(e.random_probe_accuracy for e in evidence)


def similarity_tolerance(best: CutEvidence, thresholds: Thresholds) -> float:
    """How far below the best cut the final cut may probe and still count as similar: the margin,
    or the best probe's standard error when that is larger - an earlier cut is only preferred
    when it is better beyond the noise of its own estimate."""
    return max(thresholds.similarity_margin, best.probe_stderr)


def decide(images_per_class: int, evidence: list[CutEvidence] | tuple[CutEvidence, ...],
           thresholds: Thresholds = Thresholds()) -> Decision:  # fmt: skip
    """The strategy and cut for ``images_per_class`` training images per class and the per-cut
    ``evidence`` (its last entry is the final cut); see the module's docstring."""
    final, best = evidence[-1], best_cut(evidence)
    small = images_per_class < thresholds.small_data
    similar = final.probe_accuracy >= best.probe_accuracy - similarity_tolerance(best, thresholds)
    gain = transfer_gain(evidence)
    if gain < thresholds.transfer_gain:  # frozen, the body is as good as random: train it
        strategy, cut = (FROM_SCRATCH if images_per_class >= thresholds.scratch else FINETUNING), FINAL_CUT
    elif small:
        strategy, cut = (FROZEN_HEAD, FINAL_CUT) if similar else (STRATEGIES[FROZEN_HEAD].with_cut, best.cut)
    else:
        strategy, cut = FINETUNING, FINAL_CUT
    return Decision(strategy, cut, gain)


THIN_EVIDENCE = 10  # labelled images per class measured: below this, say that the plan is a best guess


def gain_per_doubling(curve: tuple[tuple[int, float], ...]) -> float:
    """What each doubling of the labelled images bought along a learning curve (accuracy, 0-1)."""
    if len(curve) < 2:
        return 0.0
    (n_low, low), (n_high, high) = curve[0], curve[-1]
    return (high - low) / (math.log2(n_high / n_low) if n_high > n_low else 1.0)


def signals_of(images_per_class: int, evidence, curve: tuple[tuple[int, float], ...], pilot_gain: float | None,
               probe_all: float | None = None) -> Signals:  # fmt: skip
    """The forecaster's view of the measurements (:mod:`.forecast`)."""
    final, best = evidence[-1], best_cut(evidence)
    stage = best_cut(evidence[:-1]).probe_accuracy if len(evidence) > 1 else float("nan")
    return Signals(images_per_class, final.probe_accuracy, stage, best.probe_accuracy, transfer_gain(evidence),
                   gain_per_doubling(curve), pilot_gain, probe_all)  # fmt: skip


def decide_by_forecast(signals: Signals, evidence, forecaster: Forecaster) -> tuple[Decision, Choice]:
    """The strategy :func:`.forecast.choose` takes among the advised options from ``forecaster``'s
    forecasts, at its cut: ``truncate`` at the best probing cut before the final one, the others whole."""
    choice = choose(forecaster.predict(signals), advised_options())
    return Decision(choice.option, cut_for(choice.option, evidence), signals.transfer_gain), choice


def cut_for(strategy: str, evidence) -> str:
    """Where the plan cuts for ``strategy``: at the best probing cut before the final one for a
    strategy that cuts earlier, else where the strategy reads the body (the final features, or
    every cut)."""
    entry = STRATEGIES[strategy]
    return best_cut(evidence[:-1]).cut if entry.cuts == "earlier" else entry.default_cut([e.cut for e in evidence])


def _estimate_text(best: CutEvidence, curve: tuple[tuple[int, float], ...]) -> str:
    """The frozen estimate with its standard error, what more data bought, and whether the evidence is thin."""
    if not best.images:
        return ""
    text = (f" A frozen head at {best.cut} is estimated at {best.probe_accuracy:.1%} +- {best.probe_stderr:.1%} "
            f"(leave-one-out on {best.images} labelled images)")  # fmt: skip
    if len(curve) >= 2:
        text += (f"; on {', '.join(f'{n}' for n, _ in curve)} images per class it probed "
                 f"{', '.join(f'{a:.1%}' for _, a in curve)}: more data bought {100 * gain_per_doubling(curve):+.1f} "
                 f"points per doubling")  # fmt: skip
    text += "."
    if curve and curve[-1][0] < THIN_EVIDENCE:
        text += (f" The evidence is thin (fewer than {THIN_EVIDENCE} labelled images per class): take the plan as a best "
                 "guess and judge the model on a test split.")  # fmt: skip
    return text


def _all_cuts_text(signals: Signals) -> str:
    return "" if signals.probe_all is None else f"; every cut at once (multicut) probes at {signals.probe_all:.1%}"


def _pilot_text(signals: Signals) -> str:
    if signals.pilot_gain is None:
        return "no fine-tuning pilot ran (the check below trains the final run itself), its signal read at the studied mean"
    return f"one pilot epoch of fine-tuning moved validation accuracy by {100 * signals.pilot_gain:+.1f} points"


def explain(decision: Decision, choice: Choice, signals: Signals, evidence, forecaster: Forecaster,
            curve: tuple[tuple[int, float], ...] = ()) -> str:  # fmt: skip
    """The decision in words a practitioner can check against the evidence table."""
    final, best = evidence[-1], best_cut(evidence)
    forecasts = "; ".join(f"{f.option} {f.accuracy:.1%} +- {f.spread:.1%}" for f in choice.forecasts)
    depth = ("the final features probe best of all cuts" if best.cut == final.cut else
             f"an earlier cut ({best.cut}) probes at {best.probe_accuracy:.1%} against {final.probe_accuracy:.1%} for the "
             "final features")  # fmt: skip
    return (
        f"Forecast test accuracy (a model fitted on {forecaster.source or f'{forecaster.cells} studied cells'}; +- its "
        f"spread there): "
        f"{forecasts}. {choice.reason}. Hence the forecast's pick, '{decision.strategy}' at cut '{decision.cut}'. The measurements behind it: "
        f"{signals.images_per_class} training images per class; {depth}{_all_cuts_text(signals)}; pretraining adds {signals.transfer_gain:+.1%} to "
        f"the best probe over the same network with random weights; {_pilot_text(signals)}. Check it: 'probe acc' is the "
        f"leave-one-out accuracy of a linear "
        f"classifier on the features at each depth, 'random' the same on the random network; LogME ranks the depths "
        f"without training; a large BatchNorm gap means the target's activations at that depth look unlike the "
        f"source's.{_estimate_text(best, curve)}"
    )


@dataclass(frozen=True)
class Plan:
    """What to train and why. Saved as ``plan.json``; ``train --strategy auto --plan FILE`` reruns it."""

    strategy: str
    cut: str
    lr: float
    epochs: int
    resolution: int
    backbone: str
    images_per_class: int
    class_balance: float  # smallest class / largest class
    freeze_bn: bool  # the strategy's default: finetune with BatchNorm statistics fixed, as the study measured it
    transfer_gain: float
    evidence: tuple[CutEvidence, ...]
    explanation: str
    forecasts: tuple[dict, ...] = ()  # per option: forecast accuracy and spread, best first
    signals: dict = field(default_factory=dict)  # what the forecaster read
    pilot: dict = field(default_factory=dict)  # the fine-tuning pilot's validation accuracies and cost
    candidates: tuple[dict, ...] = ()  # with several candidate backbones: the ranking that chose ``backbone``
    learning_curve: tuple[tuple[int, float], ...] = ()  # (images per class, probe accuracy) at the best cut
    members: tuple[dict, ...] = ()  # a combination checked on the user's images: candidate, strategy, cut,
    #                                  freeze_bn, augment, holdout, weight, temperature (``advisor.decide``); empty: one
    crossfit: dict = field(default_factory=dict)  # the out-of-fold evidence per candidate, its cost and the reason
    config: dict = field(default_factory=dict)  # the configuration as typed when the plan was made
    resolved_config: dict = field(default_factory=dict)  # the run that carries the plan out, every default filled in
    fit: str = "crop"  # how non-square images become square (:data:`.images.FITS`)
    fit_check: dict = field(default_factory=dict)  # the two fits compared on the sample, where its images are not square
    augment: bool = False  # the planned network trains on augmented images (as the check scored it)
    holdout: bool = False  # the planned network keeps the validation images out (the check's kept run was scored there)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict) -> Plan:
        known = {f.name for f in fields(Plan)}
        data = {k: v for k, v in data.items() if k in known}  # a plan of an older release keeps what still applies
        data["evidence"] = tuple(CutEvidence(**e) for e in data["evidence"])
        for name in ("forecasts", "candidates", "members"):
            data[name] = tuple(data.get(name, ()))
        data["learning_curve"] = tuple(tuple(point) for point in data.get("learning_curve", ()))
        return Plan(**data)

    @staticmethod
    def load(path: str | Path) -> Plan:
        return Plan.from_json(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    def evidence_table(self) -> str:
        """The per-cut evidence as a fixed-width text table, the plan's cut marked (every cut, for a
        plan that reads them all)."""
        lines = [f"{'cut':<12} {'channels':>8} {'probe acc':>9} {'+-':>6} {'random':>7} {'LogME':>8} {'BN gap':>8}"]
        for e in self.evidence:
            gap = f"{e.batchnorm_gap:8.3f}" if e.batchnorm_gap is not None else f"{'-':>8}"
            marker = "  <- plan" if self.cut in (e.cut, ALL_CUTS) else ""
            lines.append(f"{e.cut:<12} {e.channels:>8} {e.probe_accuracy:>9.4f} {e.probe_stderr:>6.3f} "
                         f"{e.random_probe_accuracy:>7.4f} {e.logme:>8.3f} {gap}{marker}")  # fmt: skip
        return "\n".join(lines)

    def forecast_table(self) -> str:
        """Each option's forecast test accuracy with its interval, the plan's option marked."""
        lines = [f"{'option':<10} {'forecast':>8} {'+-':>6} {'worst':>6}"]
        for f in self.forecasts:
            marker = "  <- plan" if f["option"] == self.strategy else ""
            lines.append(f"{f['option']:<10} {f['accuracy']:>8.1%} {f['spread']:>6.1%} "
                         f"{f['accuracy'] - f['spread']:>6.1%}{marker}")  # fmt: skip
        return "\n".join(lines)


    def crossfit_table(self) -> str:
        """Each candidate's out-of-fold accuracy, its 90% interval, log loss and weight (empty when the
        check did not run)."""
        rows = self.crossfit.get("candidates", {})
        if not rows:
            return ""
        width = max(24, *(len(name) for name in rows))
        lines = [f"{'checked on your images':<{width}} {'accuracy':>8} {'90% interval':>15} {'log loss':>8} {'weight':>6}"]
        for name, row in rows.items():
            weight = "" if row.get("weight") is None else f"{row['weight']:.2f}"
            lines.append(f"{name:<{width}} {row['accuracy']:>8.1%} {row['interval'][0]:>7.1%}-{row['interval'][1]:<7.1%} "
                         f"{row['log_loss']:>8.3f} {weight:>6}")  # fmt: skip
        return "\n".join(lines)


def make_plan(images_per_class: int, class_balance: float, resolution: int, backbone: str, evidence,
              curve: tuple[tuple[int, float], ...] = (), pilot: dict | None = None, candidates: tuple[dict, ...] = (),
              forecaster: Forecaster | None = None, probe_all: float | None = None) -> Plan:  # fmt: skip
    """The plan the forecast makes from the measurements (the shipped forecaster unless one is
    given), with the chosen strategy's default epochs and rate."""
    forecaster = forecaster or Forecaster.load()
    pilot = pilot or {}
    signals = signals_of(images_per_class, evidence, curve, pilot.get("gain"), probe_all)
    decision, choice = decide_by_forecast(signals, evidence, forecaster)
    strategy = STRATEGIES[decision.strategy]
    return Plan(
        strategy=decision.strategy, cut=decision.cut, lr=strategy.lr, epochs=strategy.epochs, resolution=resolution,
        backbone=backbone, images_per_class=images_per_class, class_balance=class_balance,
        freeze_bn=strategy.freeze_bn, transfer_gain=decision.transfer_gain, evidence=tuple(evidence),
        explanation=explain(decision, choice, signals, evidence, forecaster, curve),
        forecasts=tuple(asdict(f) for f in choice.forecasts), signals=asdict(signals), pilot=pilot,
        candidates=candidates, learning_curve=curve,
    )  # fmt: skip
