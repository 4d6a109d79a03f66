"""The study: every option on every cell of the data-set pool, against the advisor's pick.

A cell is a built-in data set (its parent) at a training size; each of its seeds redraws the
training subsample. Per seed: the advisor measures (probes, random twin, learning curve, the
fine-tuning pilot; timed from an empty cache, after the data is loaded, which the runs share),
then every option trains with default settings - ``head``, ``truncate`` at each cut, ``finetune``
(LP-FT), ``multicut``, ``scratch`` - and is scored by balanced accuracy on the test split. An
ensemble is scored from its members' runs (their saved models' outputs, combined as training
combines them: :func:`..trainer.train.ensemble_stage`; a member the ensemble trains on augmented
images at the cell's size, a run of its own: :func:`member_configs`). Per cell, the oracle is the
option with the best mean over seeds.

The forecaster the advisor decides with is fitted on these outcomes, so it is scored
**leave-one-data-set-out**: for each parent set, fitted on the cells of all the others only. The
advisor chooses among the table's advised options; the study reports its regret beside the
baselines' on the same runs - the forecast choosing among every option, always ``head``, always
``finetune``, always ``multicut``, always ``ensemble``, the former threshold rule, and a successive-halving race with
the advisor's time - and the one-seed pick regret (the regret of choosing by one seed's own test
accuracy; defined where a cell has two seeds or more, formerly called the noise floor),
the advisor's cost (measuring) and the training cost of its picks, both against training every
option once. It writes
``forecaster.json``, fitted on every cell: the model ``transferlab advise`` ships with.

Resumable: each finished run and each seed's measurements are kept in the study's folder and
reused when the settings match.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from ..bundle import load_bundle
from ..config import TrainConfig, for_strategy
from ..datasets import CATALOG
from ..errors import ConfigError
from ..features import FeatureCache, compute_outputs
from ..forecast import Signals, choose, fit_forecaster
from ..metrics import classification_metrics
from ..plan import cut_for, decide, signals_of
from ..prepare import PreparedRun, prepare
from ..report import save_figure, write_report
from ..strategies import (
    ALL_CUTS,
    AUTO,
    EVERY_CUT,
    FINAL_CUT,
    FINETUNING,
    STRATEGIES,
    advised_options,
    baseline_options,
    ensemble_entry,
    forecast_options,
)
from ..trainer.context import Stage
from ..trainer.loops import kept_epoch
from ..trainer.network import TRAINED_ON_VALIDATION
from ..trainer.train import ensemble_stage, member_settings, train_prepared
from .advise import Measurements, measure_prepared

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySettings:
    """The pool, sizes, seeds and budgets; ``None`` epochs: the product's defaults."""

    data: tuple[str, ...]
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]  # at sizes up to SEEDED_SIZES; larger sizes run the first seed only
    resolution: int
    test_per_class: int
    measure_per_class: int
    network_epochs: int | None = None


def within(settings: StudySettings, subset: dict) -> StudySettings:
    """``settings`` restricted to ``subset``'s sizes, seeds or data sets (each must be the pool's)."""
    for name, values in subset.items():
        outside = [v for v in values if v not in getattr(settings, name)]
        if outside:
            raise ConfigError(f"--{name} {', '.join(map(str, outside))} is not in the pool's "
                              f"{', '.join(map(str, getattr(settings, name)))}.")  # fmt: skip
    return dataclasses.replace(settings, **{name: tuple(values) for name, values in subset.items()})


SEEDED_SIZES = 30  # images per class up to which every seed runs (the noise is largest there)
QUICK = StudySettings(("orientation", "colour-shape"), (5,), (0, 1), 32, 20, 10, network_epochs=1)
# The pools: the nine small greyscale or generated sets at 64 px (the forecaster shipped today was fitted
# on them), and the colour sets read out of package archives at a user's resolution (``make pool-data``).
COLOUR_SETS = tuple(name for name, entry in CATALOG.items() if entry.colour)
FULL = StudySettings(tuple(name for name in CATALOG if name not in COLOUR_SETS), (5, 10, 30, 100), (0, 1, 2), 64, 100, 200)
COLOUR = StudySettings(COLOUR_SETS, (5, 10, 30), (0, 1, 2), 112, 100, 200)
POOLS = {"greyscale": FULL, "colour": COLOUR}


def run_key(strategy: str, cut: str) -> str:
    return f"{strategy}@{cut}"


def always(strategy: str) -> str:
    """The run of ``strategy`` at its default cut (what "always <strategy>" trains)."""
    return run_key(strategy, STRATEGIES[strategy].default_cut([]))


def run_strategy(key: str):
    """The strategy-table entry of run ``key``."""
    return STRATEGIES[key.split("@")[0]]


def by_cell(records: list[SeedRecord]) -> dict[str, list[SeedRecord]]:
    """The seeds' records grouped by cell (``data@size``), in their order."""
    cells: dict[str, list[SeedRecord]] = {}
    for seed in records:
        cells.setdefault(seed.cell, []).append(seed)
    return cells


def _base_config(data: str, size: int, seed: int, settings: StudySettings, cache: str | None,
                 device: str = AUTO) -> TrainConfig:  # fmt: skip
    """What every run of a seed shares: the data, its size and subsample, the resolution, the device."""
    return TrainConfig(data=data, samples_per_class=size, test_per_class=settings.test_per_class, seed=seed,
                       resolution=settings.resolution, measure_per_class=settings.measure_per_class, cache_dir=cache,
                       strategy=AUTO, device=device)  # fmt: skip


def study_runs(cuts: list[str]) -> list[tuple[str, str]]:
    """Every (strategy, cut) the study runs on a seed, as the strategy table says: each forecast
    strategy at the final features, one that cuts earlier at each earlier cut."""
    return [(name, cut) for name in forecast_options() if not STRATEGIES[name].members  # ensembles: from their members
            for cut in (cuts[:-1] if STRATEGIES[name].cuts == "earlier" else [STRATEGIES[name].default_cut(cuts)])]  # fmt: skip


def _option_configs(base: TrainConfig, cuts: list[str], settings: StudySettings, folder: Path) -> dict[str, TrainConfig]:
    """Every option of a seed with its strategy's defaults (the CLI's), its epochs set by the settings."""
    configs = {}
    for s, c in study_runs(cuts):
        epochs = settings.network_epochs if STRATEGIES[s].trains_body else None
        configs[run_key(s, c)] = for_strategy(base, s, cut=None if c in (FINAL_CUT, ALL_CUTS) else c, epochs=epochs,
                                              out=str(folder / f"{s}-{c}"))  # fmt: skip
    return configs


def labelled_per_class(size: int) -> int:
    """The labelled images of a class in a seed of a cell of ``size``: its training images and as many
    to validate on (the protocol above)."""
    return 2 * size


AUGMENTED_MEMBER, HELD_OUT_MEMBER = "-augmented", "-held-out"  # folder suffixes of the runs below


def member_run(folder_name: str) -> bool:
    """Whether a study's run folder holds a run trained only as an ensemble's member
    (:func:`member_configs`), not one of the options the study scores."""
    return folder_name.endswith((AUGMENTED_MEMBER, HELD_OUT_MEMBER))


def member_configs(configs: dict[str, TrainConfig], ensemble: str, members: list[str], size: int,
                   runs: dict[str, RunResult]) -> list[TrainConfig]:  # fmt: skip
    """The members of the ensemble run ``ensemble`` as its strategy trains them at ``size`` (the
    table's defaults, :func:`.trainer.train.ensemble_members`, without companions: the study's pool
    is scored on one backbone, its ensemble is ``--companions none``): each the option's own run, or a run
    of its own where the ensemble trains that member otherwise - on augmented images at this many
    labelled images a class, or keeping out the validation images its temperature is fitted on,
    which the option's own run (in ``runs``) trained on."""
    augment = run_strategy(ensemble).augments_members(labelled_per_class(size))
    found = []
    for key in members:
        augmented = bool(member_settings(run_strategy(key).name, augment).get("augment"))
        held_out = runs[key].trained_on_validation
        changes = {**({"augment": True} if augmented else {}), **({"holdout": True} if held_out else {})}
        suffix = (AUGMENTED_MEMBER if augmented else "") + (HELD_OUT_MEMBER if held_out else "")
        config = configs[key]
        found.append(dataclasses.replace(config, **changes, out=f"{config.out}{suffix}") if changes else config)
    return found


def ensembles(cuts: list[str]) -> dict[str, list[str]]:
    """Every ensemble of the table by its run key, with its members' run keys (each at its default cut)."""
    return {run_key(name, FINAL_CUT): [run_key(m, STRATEGIES[m].default_cut(cuts)) for m in entry.members]
            for name, entry in STRATEGIES.items() if entry.members}  # fmt: skip


def saved_outputs(run: PreparedRun, model_dir: Path) -> Stage:
    """The validation and test logits of the model saved in ``model_dir`` on ``run``'s splits (and
    the training split's labels, whose counts weigh the classes)."""
    network, _ = load_bundle(model_dir)
    resolution, logits, labels = network.preprocessing.resolution, {}, {"train": run.splits.train.labels}
    for split in ("val", "test"):
        images = getattr(run.splits, split)
        values, labels[split] = compute_outputs(network, images, resolution, desc=f"ensemble {split}").readable(images.labels)
        logits[split] = torch.from_numpy(np.asarray(values))
    return Stage({}, labels, logits, [])


def _ensemble_run(prepared: Callable[[], PreparedRun], folder: Path, member_configs: list[TrainConfig],
                  member_runs: list[RunResult]) -> RunResult:  # fmt: skip
    """An ensemble scored from its members' saved models (a run of its own would train them again,
    to the same weights): balanced test accuracy, the sum of the members' seconds (training combines
    the outputs its members already computed; re-reading them here is the study's cost, not the
    ensemble's), and its validation accuracy as its one-step trajectory. Kept in ``folder`` like a run."""
    record = folder / "study-run.json"
    key = {"version": RUN_VERSION, "members": [_key(config) for config in member_configs], "seconds": "members"}
    if (result := read_record(record, key, RunResult)) is not None:
        return result
    run = prepared()
    stage, _ = ensemble_stage([saved_outputs(run, Path(config.out) / "model") for config in member_configs],
                              class_weight=ensemble_entry().class_weight)  # fmt: skip
    test_labels = stage.labels["test"]
    balanced = classification_metrics(test_labels, stage.logits["test"].argmax(1).numpy(), run.classes)["balanced_accuracy"]
    val_accuracy = float((stage.logits["val"].argmax(1).numpy() == stage.labels["val"]).mean())
    result = RunResult(balanced, sum(r.seconds for r in member_runs), (val_accuracy,))
    write_record(record, key, result)
    return result


def _trajectory(metrics: dict) -> list[float]:
    """Validation accuracy after each epoch the run trained, as a race would watch it (for
    ``finetune``: the linear probe's chosen epoch, then each epoch of the whole network)."""
    trajectory = [row["val_accuracy"] for row in metrics["history"]]
    if "probe_history" in metrics:
        trajectory.insert(0, kept_epoch(metrics["probe_history"])["val_accuracy"])
    return trajectory


@dataclass(frozen=True)
class RunResult:
    """One option's outcome on one seed: balanced test accuracy, training seconds, and the
    validation accuracy after each epoch (what a race watches)."""

    balanced_accuracy: float
    seconds: float
    trajectory: tuple[float, ...]
    trained_on_validation: bool = False  # a network that trained on its validation images too (nothing chosen there)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: dict) -> RunResult:
        return RunResult(data["balanced_accuracy"], data["seconds"], tuple(data["trajectory"]),
                         data.get("trained_on_validation", False))  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """The advisor's measurements on one seed and the seconds they took from an empty cache."""

    measurements: Measurements
    seconds: float

    def to_json(self) -> dict:
        return {"measurements": self.measurements.to_json(), "seconds": self.seconds}

    @staticmethod
    def from_json(data: dict) -> Measured:
        return Measured(Measurements.from_json(data["measurements"]), data["seconds"])


@dataclass(frozen=True)
class SeedRecord:
    """Everything the study keeps of one seed of a cell: the advisor's measurements and every run."""

    data: str
    size: int
    seed: int
    measured: Measured
    runs: dict[str, RunResult]

    @property
    def cell(self) -> str:
        return f"{self.data}@{self.size}"


def read_record(path: Path, key: dict, kind: type[RunResult | Measured]):
    """The ``kind`` of result saved at ``path`` by a run of exactly ``key``; ``None`` when there is
    none, or it was made another way (then it is redone)."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config") == key:
            return kind.from_json(saved["result"])
    return None


def write_record(path: Path, key: dict, result: RunResult | Measured) -> None:
    """``result`` saved at ``path`` with the ``key`` of the run that made it (read by :func:`read_record`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": key, "result": result.to_json()}))


RUN_VERSION, MEASUREMENT_VERSION = 3, 4  # bump one when runs or the advisor's measurements change: they are redone


def _key(config: TrainConfig, version: int = RUN_VERSION) -> dict:
    """What identifies a run or a measurement: the settings that differ from the defaults (a new
    option with a default leaves finished runs valid), its version and its strategy's recipe (an
    ensemble's: its own and its members')."""
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig(data=config.data))))
    values = json.loads(json.dumps(dataclasses.asdict(config)))
    entry = STRATEGIES.get(config.strategy)
    recipes = [] if entry is None else [s.recipe for s in (entry, *(STRATEGIES[m] for m in entry.members))]
    recipe = {"recipe": recipes[0] if len(recipes) == 1 else recipes} if any(r > 1 for r in recipes) else {}  # its own
    # redo, and an ensemble's where a member's changed
    return {"version": version, **recipe, **{k: v for k, v in values.items() if v != defaults[k]}}


def _run(prepared: Callable[[], PreparedRun], config: TrainConfig) -> RunResult:
    """Balanced test accuracy, seconds and validation trajectory of training ``config`` on
    ``prepared()``, or the recorded result of this exact run from an earlier study (kept in the
    run's folder; then nothing is prepared)."""
    record = Path(config.out) / "study-run.json"
    if (result := read_record(record, _key(config), RunResult)) is not None:
        return result
    run = prepared()
    started = time.perf_counter()
    metrics = train_prepared(run, config)
    result = RunResult(metrics["balanced_accuracy"], time.perf_counter() - started, tuple(_trajectory(metrics)),
                       metrics.get("validation") == TRAINED_ON_VALIDATION)  # fmt: skip
    write_record(record, _key(config), result)
    return result


class Unfinished(Exception):
    """A seed that still has something to run, met where nothing may run (``finished_only``)."""


def _unfinished() -> PreparedRun:
    raise Unfinished


def run_seed(data: str, size: int, seed: int, settings: StudySettings, out: Path, cache: str | None,
             device: str = AUTO, finished_only: bool = False) -> SeedRecord:  # fmt: skip
    """The advisor's measurements (timed) and every option's outcome on one seed of a cell; with
    ``finished_only``, only what earlier runs saved (:class:`Unfinished` when anything is missing)."""
    base = _base_config(data, size, seed, settings, cache, device)
    folder = out / f"{data}@{size}" / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "measurements.json"
    # the data is loaded only when something is still to run
    prepared = _unfinished if finished_only else functools.cache(lambda: prepare(base))
    if (measured := read_record(record, _key(base, MEASUREMENT_VERSION), Measured)) is None:
        with tempfile.TemporaryDirectory(prefix="transferlab-study-") as cold:  # timed from an empty cache
            run = prepared()
            started = time.perf_counter()
            measurements = measure_prepared(run.with_cache(FeatureCache(cold)), base)
            measured = Measured(measurements, time.perf_counter() - started)
        write_record(record, _key(base, MEASUREMENT_VERSION), measured)
    cuts = [e.cut for e in measured.measurements.evidence]  # one per cut point of the backbone
    configs = _option_configs(base, cuts, settings, folder)
    runs = {key: _run(prepared, config) for key, config in configs.items()}
    for key, members in ensembles(cuts).items():
        trained = member_configs(configs, key, members, size, runs)
        member_runs = [runs[m] if c is configs[m] else _run(prepared, c) for m, c in zip(members, trained)]
        runs[key] = _ensemble_run(prepared, folder / key.replace("@", "-"), trained, member_runs)
    return SeedRecord(data, size, seed, measured, runs)


# ---------------------------------------------------------------------------------------------
# Scoring: pure functions of the seeds' records.


def signals(seed: SeedRecord) -> Signals:
    m = seed.measured.measurements
    return signals_of(m.images_per_class, m.evidence, m.learning_curve, m.pilot["gain"], m.probe_all)


def option_run(seed: SeedRecord, option: str) -> str:
    """The run an advised option stands for on this seed: at the plan's cut (for a strategy that
    cuts earlier, the best probing earlier cut)."""
    return run_key(option, cut_for(option, seed.measured.measurements.evidence))


def outcome(seed: SeedRecord) -> dict[str, float]:
    """Each advised option's balanced test accuracy on this seed (those that need an earlier cut
    only where the body has one)."""
    has_earlier_cuts = len(seed.measured.measurements.evidence) > 1
    options = [option for option in forecast_options() if has_earlier_cuts or STRATEGIES[option].cuts != "earlier"]
    return {option: seed.runs[option_run(seed, option)].balanced_accuracy for option in options}


def cell_means(seeds: list[SeedRecord]) -> dict[str, float]:
    """Every run's balanced accuracy averaged over the cell's seeds."""
    return {key: float(np.mean([s.runs[key].balanced_accuracy for s in seeds])) for key in seeds[0].runs}


def regret(seeds: list[SeedRecord], picks: list[str]) -> float:
    """Points lost by taking run ``picks[i]`` on seed ``i``, against the cell's oracle (means over seeds)."""
    means = cell_means(seeds)
    return 100 * float(np.mean([max(means.values()) - means[pick] for pick in picks]))


PICK_NOISE = "one-seed pick regret"  # formerly "noise floor"


def one_seed_pick_regret(seeds: list[SeedRecord]) -> float | None:
    """The regret of choosing each seed's run by that seed's own test accuracies: how far one seed's
    best strays from the cell's (``None`` with a single seed, where it is 0 by construction)."""
    if len(seeds) < 2:
        return None
    return regret(seeds, [max(s.runs, key=lambda k: s.runs[k].balanced_accuracy) for s in seeds])


def _defined(values) -> list[float]:
    return [v for v in values if v is not None]


def points(value: float | None) -> str:
    """Points of regret as the tables print them ("-": not defined)."""
    return "-" if value is None else f"{value:.2f}"


def trained(key: str) -> bool:
    """Whether run ``key`` trained (an ensemble's is scored from its members' runs)."""
    return not run_strategy(key).members


def race(seed: SeedRecord, budget: float) -> str | None:
    """Successive halving over every run of the seed with ``budget`` seconds: rounds of equal
    shares, each arm watched by its validation trajectory (an epoch costs its run's seconds over
    its epochs), the better half kept; the last arm standing (best watched) is the pick. ``None``
    where the first round's shares watch no arm at all: the race cannot run on that budget (its
    first cut would drop arms it never saw; a computed head's one step is its whole run)."""
    arms = {key: (run.seconds / len(run.trajectory), run.trajectory) for key, run in seed.runs.items()}
    spent = dict.fromkeys(arms, 0.0)
    alive = list(arms)
    rounds = max(1, math.ceil(math.log2(len(alive))))

    def watched(key: str) -> float:
        per_epoch, trajectory = arms[key]
        epochs = min(len(trajectory), int(spent[key] / per_epoch))
        return trajectory[epochs - 1] if epochs else -1.0

    for round_number in range(rounds):
        for key in alive:
            spent[key] += budget / rounds / len(alive)
        if round_number == 0 and max(map(watched, alive)) < 0:
            return None
        alive = sorted(alive, key=watched, reverse=True)[: max(1, len(alive) // 2)]
    return alive[0]


def score_parent(train: list[SeedRecord], test: dict[str, list[SeedRecord]]) -> dict[str, dict]:
    """Per cell of a held-out parent set (``test``: cell -> seeds): the forecaster fitted on
    ``train`` seeds only, its picks' regret, the baselines' regrets, the one-seed pick regret and cost."""
    forecaster = fit_forecaster([(signals(s), outcome(s)) for s in train], len({s.cell for s in train}),
                                "the other data sets")  # fmt: skip
    scored = {}
    for cell, seeds in test.items():
        picks = [option_run(s, choose(forecaster.predict(signals(s)), advised_options()).option) for s in seeds]
        any_option = [option_run(s, choose(forecaster.predict(signals(s))).option) for s in seeds]
        rule = [decide(m.images_per_class, m.evidence) for m in (s.measured.measurements for s in seeds)]
        brute_force = [sum(r.seconds for key, r in s.runs.items() if trained(key)) for s in seeds]
        means = cell_means(seeds)
        oracle = max(means, key=means.get)
        halving = [race(s, s.measured.seconds) for s in seeds]
        scored[cell] = {
            "seeds": len(seeds), "oracle": oracle, "oracle_accuracy": means[oracle],
            "picks": picks, "advisor": regret(seeds, picks),
            **{f"always {name}": regret(seeds, [always(name)] * len(seeds)) for name in baseline_options()},
            "forecast, any option": regret(seeds, any_option),
            "threshold rule": regret(seeds, [run_key(d.strategy, d.cut) for d in rule]),
            "successive halving": None if None in halving else regret(seeds, halving),
            PICK_NOISE: one_seed_pick_regret(seeds),
            "cost": float(np.median([s.measured.seconds / b for s, b in zip(seeds, brute_force)])),
            "training cost": float(np.median([s.runs[p].seconds / b for s, p, b in zip(seeds, picks, brute_force)])),
        }  # fmt: skip
    return scored


RULES = ("advisor", "forecast, any option", *(f"always {name}" for name in baseline_options()),
         "threshold rule", "successive halving")  # fmt: skip


def leave_one_parent_out(records: list[SeedRecord]) -> dict[str, dict]:
    """Every cell scored with the forecaster fitted on the other parent sets' cells."""
    cells = by_cell(records)
    scored = {}
    for parent in dict.fromkeys(s.data for s in records):
        held_out = {cell: seeds for cell, seeds in cells.items() if seeds[0].data == parent}
        scored.update(score_parent([s for s in records if s.data != parent], held_out))
    return scored


def paired_test(scored: dict[str, dict], rule: str, baseline: str, draws: int = 100_000) -> dict:
    """How much less ``rule`` regrets than ``baseline`` over the cells (mean of the paired differences,
    points) and the two-sided p-value of a sign-flip permutation test of those differences: the chance
    that a difference as large comes from cells whose differences are noise, symmetric about 0."""
    differences = np.array([c[baseline] - c[rule] for c in scored.values()])
    flips = np.random.default_rng(0).choice([-1.0, 1.0], size=(draws, len(differences)))
    extreme = np.abs((flips * differences).mean(1)) >= abs(differences.mean()) - 1e-12
    return {"rule": rule, "baseline": baseline, "mean_difference": float(differences.mean()),
            "p_value": float((1 + extreme.sum()) / (draws + 1))}  # fmt: skip


def paired_test_by_set(scored: dict[str, dict], rule: str, baseline: str) -> dict:
    """:func:`paired_test` with data sets, not cells, as the units: the cells of one set are not
    independent, so each set's paired differences are averaged first; the sign-flip test is exact
    (every one of the 2^n sign patterns) over the n sets."""
    by_set: dict[str, list[float]] = {}
    for cell, c in scored.items():
        by_set.setdefault(cell.rsplit("@", 1)[0], []).append(c[baseline] - c[rule])
    differences = np.array([np.mean(values) for values in by_set.values()])
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * len(differences))).reshape(len(differences), -1).T
    extreme = np.abs((signs * differences).mean(1)) >= abs(differences.mean()) - 1e-12
    return {"rule": rule, "baseline": baseline, "sets": len(differences), "mean_difference": float(differences.mean()),
            "p_value": float(extreme.mean())}  # fmt: skip


def frozen_single_cut(key: str) -> bool:
    """Whether run ``key`` is a frozen head on one cut (``head``, ``truncate``)."""
    entry = run_strategy(key)
    return entry.computed and entry.cuts != ALL_CUTS


def multicut_gaps(records: list[SeedRecord], up_to: int = SEEDED_SIZES) -> dict[str, float]:
    """Per cell up to ``up_to`` images per class: the points by which ``multicut`` trails the best
    frozen head on one cut (``head``, ``truncate`` at every cut; means over seeds; negative: it leads)."""
    gaps = {}
    for cell, seeds in by_cell([seed for seed in records if seed.size <= up_to]).items():
        means = cell_means(seeds)
        best_frozen = max(value for key, value in means.items() if frozen_single_cut(key))
        gaps[cell] = 100 * (best_frozen - means[always(EVERY_CUT)])
    return gaps


def summarize(scored: dict[str, dict]) -> dict:
    """Mean and worst regret of the advisor and each baseline, the one-seed pick regret (over the
    cells where it is defined; ``None`` where none is), the advisor's cost."""
    summary = {}
    for rule in (*RULES, PICK_NOISE):
        values = _defined(c[rule] for c in scored.values())
        summary[rule] = {"mean": float(np.mean(values)) if values else None, "worst": max(values, default=None)}
    for name in ("cost", "training cost"):
        costs = [c[name] for c in scored.values()]
        summary[name] = {"median": float(np.median(costs)), "max": float(max(costs))}
    return summary


def table(scored: dict[str, dict]) -> str:
    """The per-cell table in Markdown: oracle, the advisor's picks, regrets (points), the one-seed
    pick regret ("-" with one seed), cost."""
    header = "| cell | oracle | advisor's picks | " + " | ".join((*RULES, PICK_NOISE, "cost")) + " |"
    lines = [header, "|---" * (len(RULES) + 5) + "|"]
    for cell, c in scored.items():
        lines.append(f"| {cell} | {c['oracle']} {c['oracle_accuracy']:.3f} | {', '.join(c['picks'])} | "
                     + " | ".join(points(c[rule]) for rule in (*RULES, PICK_NOISE)) + f" | {c['cost']:.1%} |")  # fmt: skip
    summary = summarize(scored)
    for kind in ("mean", "worst"):
        lines.append(f"| **{kind}** | | | " + " | ".join(points(summary[r][kind]) for r in (*RULES, PICK_NOISE)) +
                     f" | {summary['cost']['median' if kind == 'mean' else 'max']:.1%} |")  # fmt: skip
    return "\n".join(lines)


def parent_table(scored: dict[str, dict]) -> str:
    """Per parent data set, in Markdown: its cells, the oracles' mean accuracy, the advisor's and the
    baselines' mean regret (points), the one-seed pick regret and the advisor's median cost."""
    parents: dict[str, list[dict]] = {}
    for cell, c in scored.items():
        parents.setdefault(cell.split("@")[0], []).append(c)
    lines = ["| data set | cells | oracle | " + " | ".join((*RULES, PICK_NOISE, "cost")) + " |", "|---" * (len(RULES) + 5) + "|"]
    for parent, cells in parents.items():
        means = [_defined(c[r] for c in cells) for r in (*RULES, PICK_NOISE)]
        lines.append(f"| {parent} | {len(cells)} | {np.mean([c['oracle_accuracy'] for c in cells]):.3f} | "
                     + " | ".join(points(float(np.mean(m)) if m else None) for m in means)
                     + f" | {np.median([c['cost'] for c in cells]):.1%} |")  # fmt: skip
    return "\n".join(lines)


def _plot_regrets(scored: dict[str, dict]):
    figure, axis = plt.subplots(figsize=(11, 0.6 + 0.35 * len(scored) * 1.2))
    cells = list(scored)
    height = 0.8 / len(RULES)
    for i, rule in enumerate(RULES):
        regrets = [np.nan if scored[c][rule] is None else scored[c][rule] for c in cells]  # None: not defined
        axis.barh(np.arange(len(cells)) + i * height, regrets, height, label=rule)
    defined = [i for i, c in enumerate(cells) if scored[c][PICK_NOISE] is not None]
    axis.plot([scored[cells[i]][PICK_NOISE] for i in defined], np.asarray(defined) + 0.4, "k|", markersize=12,
              label=PICK_NOISE)  # fmt: skip
    axis.set_yticks(np.arange(len(cells)) + 0.4, cells, fontsize=8)
    axis.invert_yaxis()
    axis.set(xlabel="regret (points of balanced accuracy, leave one data set out)", title="Regret per cell")
    axis.legend(fontsize=8)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def run_study(quick: bool = False, out: str | Path = "runs/study", cache_dir: str | None = None,
              settings: StudySettings | None = None, device: str = AUTO, pool: str = "greyscale",
              subset: dict | None = None, finished_only: bool = False, resolution: int | None = None) -> dict:  # fmt: skip
    """Run every seed of every cell of ``pool`` (:data:`POOLS`; reusing finished ones), score
    leave-one-data-set-out, write study.json, table.md, forecaster.json (fitted on every cell) and
    report.html into ``out``. ``subset``: some of the pool's ``sizes``, ``seeds`` or ``data`` only
    (what is outside the pool is refused); ``finished_only``: score the seeds earlier runs finished,
    train nothing (a study still running, or stopped); ``resolution``: instead of the pool's (runs
    of another resolution in ``out`` are not reused: their records are keyed by their settings)."""
    settings = within(settings or (QUICK if quick else POOLS[pool]), subset or {})
    if resolution is not None:
        settings = dataclasses.replace(settings, resolution=resolution)
    out = Path(out)
    started = time.perf_counter()
    jobs = [(d, n, s) for n in settings.sizes for d in settings.data  # every set early
            for s in (settings.seeds if n <= SEEDED_SIZES else settings.seeds[:1])]  # fmt: skip
    records = []
    for d, n, s in tqdm(jobs, desc="study", unit="seed"):
        try:
            records.append(run_seed(d, n, s, settings, out, cache_dir, device, finished_only))
        except Unfinished:
            log.info("%s@%d, seed %d: not finished, left out", d, n, s)
    if not records:
        raise ConfigError(f"No finished seed in {out}: run the study without --finished first.")
    scored = leave_one_parent_out(records)
    cells = len(scored)
    source = (f"transferlab study{' --quick' if quick else f' --pool {pool}'}: {cells} cells of {len(settings.data)} data sets, "
              f"{', '.join(map(str, settings.sizes))} images per class, seeds {', '.join(map(str, settings.seeds))} up to "
              f"{SEEDED_SIZES} per class and the first above, "
              f"{settings.resolution} px")  # fmt: skip
    forecaster = fit_forecaster([(signals(s), outcome(s)) for s in records], cells, source).save(out / "forecaster.json")
    gaps = multicut_gaps(records)
    summary = {"quick": quick, "settings": dataclasses.asdict(settings), "cells": scored, "summary": summarize(scored),
               f"advisor against always {FINETUNING}": paired_test(scored, "advisor", f"always {FINETUNING}"),
               f"advisor against always {FINETUNING}, by data set": paired_test_by_set(scored, "advisor",
                                                                                       f"always {FINETUNING}"),
               "multicut against the best frozen head": {"gaps": gaps, "within_one_point": float(np.mean(
                   [gap <= 1.0 for gap in gaps.values()]))},
               "seconds": time.perf_counter() - started}  # fmt: skip
    (out / "study.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(parent_table(scored) + "\n\n" + table(scored) + "\n")
    figures = {"Regret per cell": save_figure(_plot_regrets(scored), out / "regrets.png")}
    header = ["cell", "oracle", *RULES, PICK_NOISE, "cost"]
    rows = [[cell, c["oracle"], *[c[r] for r in RULES], points(c[PICK_NOISE]), c["cost"]] for cell, c in scored.items()]
    headline = {f"{rule}: {kind}": value for rule, values in summary["summary"].items() for kind, value in values.items()}
    write_report(out / "report.html", "transferlab study" + (" (quick)" if quick else ""),
                 {"forecaster": str(forecaster), "fitted on": source, **headline}, figures,
                 tables={"Cells, leave one data set out": (header, rows)})  # fmt: skip
    return summary
