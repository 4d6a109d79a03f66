"""Out-of-fold evidence: every candidate trained as its final run would be, on folds of the user's
own labelled images, giving class scores for images it never trained on.

Where data is small the labelled images (training and validation splits together; never the test
split) are cut into :data:`FOLDS` stratified folds (:func:`fold_plan`). For each fold a candidate
trains on the rest - split again into training and validation as a run splits its data, so early
stopping and interpolation run as they will in the final run - and scores the fold. A validation
split the data set brought (a ``val/`` folder: another style, another site) is where the final run
will select its model, so the check scores there too: the candidate trains on the whole training
split, validates on one half of the ``val/`` images and scores the other, then the halves swap.
Above :data:`FOLD_LIMIT` images per class the check is the final run itself: each candidate trains
on the run's training split and is scored on its validation split (the holdout), and a chosen
candidate's run is kept, so the final training resumes it instead of training it again; there the
candidates that train the body race epoch by epoch (:func:`race`). Each fold's scores are saved as
they come (``<cache>/crossfit/<images>/<candidate>/fold-<i>.npz``, keyed by the images and the
candidate's settings): an interrupted search resumes where it stopped, and ``advise`` then
``train`` on the same images score each fold once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import distributed
from ..config import TrainConfig, for_strategy
from ..data import Dataset, ImageSet, Splits, split_dataset
from ..plan import CutEvidence, best_cut
from ..prepare import PreparedRun
from ..strategies import ALL_CUTS, FINAL_CUT, STRATEGIES, ensemble_entry
from ..trainer.loops import AUGMENTATION_RECIPE, EpochCallback
from ..trainer.train import companion_name, fit_stages

log = logging.getLogger(__name__)

FOLDS = 3  # where every labelled image is scored out of fold
FOLD_LIMIT = 100  # labelled images per class (median) up to which folds run; above it the final run's own split
MIN_TO_FOLD = 3  # labelled images a class needs for folds: one scored, one to train and one to validate on the rest
RACE_STANDARD_ERRORS = 3.0  # how far behind the best on the first fold a fine-tuning candidate stops
RACE_EPOCH = 2  # in the final run's split: the epoch at which a later fine-tuning candidate meets the first
RACE_EPOCH_STANDARD_ERRORS = 1.0  # how far behind the first at that epoch it stops


@dataclass(frozen=True)
class Candidate:
    """One way to train that the search scores: a strategy of the table with its cut and, for one
    that trains the body, its BatchNorm setting and whether it trains on augmented images; for an
    ensemble's companion, the other backbone it reads."""

    name: str
    strategy: str
    cut: str | None = None  # None: the strategy's default
    freeze_bn: bool | None = None  # None: the strategy's default
    augment: bool | None = None  # None: the strategy's default
    backbone: str | None = None  # None: the run's

    def config(self, base: TrainConfig, out: Path) -> TrainConfig:
        """``base`` turned into a run of this candidate writing into ``out``."""
        changes = {name: value for name, value in (("freeze_bn", self.freeze_bn), ("augment", self.augment),
                                                   ("backbone", self.backbone)) if value is not None}  # fmt: skip
        return for_strategy(base, self.strategy, cut=self.cut, out=str(out), resume=False, tensorboard=None, plan=None,
                            companions=None, **changes)  # fmt: skip

    def run(self, prepared: PreparedRun) -> PreparedRun:
        """The prepared run it trains on: ``prepared``, or the same splits over its own backbone."""
        return prepared if self.backbone is None else prepared.over_backbone(self.backbone)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def candidates(evidence: tuple[CutEvidence, ...], augment: bool = False,
               companions: tuple[str, ...] = ()) -> list[Candidate]:  # fmt: skip
    """The table's candidates: each marked strategy; one that cuts reads the best single cut by the
    probe, LogME breaking ties as the plan's words do (:func:`.plan.best_cut`: ``head``, or its
    ``with_cut`` strategy at an earlier cut); one that trains the body with BatchNorm statistics
    frozen and adapted, on augmented images where ``augment`` (as the ensemble's member it may
    become would train); and the ensemble's companion on each of the ``companions`` backbones."""
    cut = best_cut(evidence).cut if evidence else FINAL_CUT
    found = []
    for entry in (s for s in STRATEGIES.values() if s.candidate):
        if entry.cuts == "final" and cut != FINAL_CUT and entry.with_cut:
            found.append(Candidate(f"{entry.with_cut}@{cut}", entry.with_cut, cut))
        elif "freeze_bn" in entry.options:
            augmented = augment if "augment" in entry.options else None
            found += [Candidate(entry.name, entry.name, freeze_bn=True, augment=augmented),
                      Candidate(f"{entry.name}-adapted-bn", entry.name, freeze_bn=False, augment=augmented)]  # fmt: skip
        else:
            found.append(Candidate(entry.name, entry.name))
    companion = ensemble_entry().companion
    if companion is not None:
        found += [Candidate(companion_name(companion, backbone), companion, backbone=backbone) for backbone in companions]
    return found


@dataclass(frozen=True)
class Fold:
    """The positions (in the labelled images) a fold scores and, when the data set brought its own
    validation split, those that validate the fold's run (else the rest is split as a run splits);
    ``final_run``: the fold is the run's own validation split, scored and validated on, its runs
    kept for the final training."""

    scored: np.ndarray
    validates: np.ndarray | None = None
    final_run: bool = False


def _stratified(labels: np.ndarray, positions: np.ndarray, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``positions`` dealt into ``parts`` parts class by class, each class spread over them evenly
    and the dealing carried on from one class to the next (classes of one image each alternate)."""
    dealt: list[list[int]] = [[] for _ in range(parts)]
    turn = 0
    for label in np.unique(labels[positions]):
        for position in rng.permutation(positions[labels[positions] == label]):
            dealt[turn % parts].append(int(position))
            turn += 1
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in dealt]


def fold_plan(labels: np.ndarray, seed: int, given: np.ndarray | None = None) -> list[Fold]:
    """The folds: with ``given`` positions (a validation split the data set brought: the user's word
    for what the model will meet), its two stratified halves, each scored by a run validated on the
    other; else :data:`FOLDS` stratified folds covering every image."""
    rng = np.random.default_rng(seed)
    if given is not None:
        first, second = _stratified(labels, np.asarray(given, dtype=np.int64), 2, rng)
        return [Fold(first, second), Fold(second, first)]
    return [Fold(part) for part in _stratified(labels, np.arange(len(labels)), FOLDS, rng)]


def labelled_folds(splits: Splits, seed: int) -> tuple[ImageSet, list[Fold]]:
    """The labelled images (training then validation split) and the folds that score them: above
    :data:`FOLD_LIMIT` images per class, the run's own validation split (the final run's, given or
    drawn); else :func:`fold_plan`'s."""
    labelled = splits.train.union(splits.val)
    val = np.arange(len(splits.train), len(labelled))
    if splits.labelled_per_class() > FOLD_LIMIT:
        return labelled, [Fold(val, val, final_run=True)]
    return labelled, fold_plan(labelled.labels, seed, val if splits.val_given else None)


def fold_obstacle(labelled: ImageSet, folds: list[Fold]) -> str | None:
    """Why ``folds``' runs cannot be trained, or None: a class with fewer than :data:`MIN_TO_FOLD`
    labelled images (the rest of a fold that scores one could not be split into training and
    validation), or a ``val/`` folder too small to halve. The final run's split always can."""
    if folds[0].final_run:
        return None
    if folds[0].validates is not None:
        given = len(folds[0].scored) + len(folds[0].validates)
        return None if all(len(f.scored) for f in folds) else f"your val/ folder holds {given} image, too few to halve"
    counts = np.bincount(labelled.labels, minlength=len(labelled.classes))
    thin = [repr(name) for name, count in zip(labelled.classes, counts) if 0 < count < MIN_TO_FOLD]
    if not thin:
        return None
    return (f"{', '.join(thin)} ha{'s' if len(thin) == 1 else 've'} fewer than {MIN_TO_FOLD} labelled images, too few "
            "to leave one out of a fold and train and validate on the rest")  # fmt: skip


def fold_splits(labelled: ImageSet, fold: Fold, config: TrainConfig, unlabeled: ImageSet | None = None,
                val_given: bool = False) -> Splits:  # fmt: skip
    """A fold's run: its test split is the fold, its training and validation splits the rest - the
    fold's own validation images (half of a ``val/`` folder: given, as in the final run), or the
    rest split as ``config`` splits a run's data - and the run's ``unlabeled`` images, so a
    candidate that learns from them is scored with them. The final run's fold is that run's
    training and validation split (``val_given``: whether the data set brought it), with no test
    split (it scores the validation split)."""
    rest = np.setdiff1d(np.arange(len(labelled)), fold.scored)
    if fold.final_run:
        return Splits(labelled.subset(rest), labelled.subset(fold.scored), None, unlabeled, val_given)
    if fold.validates is None:
        splits = split_dataset(Dataset("fold", labelled.subset(rest), None), config.val_fraction, seed=config.seed)
        return Splits(splits.train, splits.val, labelled.subset(fold.scored), unlabeled)
    train, val = labelled.subset(np.setdiff1d(rest, fold.validates)), labelled.subset(fold.validates)
    return Splits(train, val, labelled.subset(fold.scored), unlabeled, val_given=True)


def _key(labelled: ImageSet, fold: Fold, config: TrainConfig, unlabeled: ImageSet | None) -> str:
    """What decides a fold's scores: the images, the candidate's settings (not where it writes) and
    its strategy's recipe (a new recipe scores the folds again)."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "resume", "tensorboard")}
    settings["class_weight"] = config.resolved_class_weight  # the strategy's default, where none was given
    settings["augment"] = config.resolved_augment and AUGMENTATION_RECIPE  # unaugmented folds: keys as before
    settings["recipe"] = config.strategy_entry.recipe
    validates = None if fold.validates is None else fold.validates.tolist()
    images = [labelled.fingerprint(), None if unlabeled is None else unlabeled.fingerprint()]
    text = json.dumps([images, fold.scored.tolist(), validates, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class FoldScores:
    """A candidate's out-of-fold logits over the scored images (readable ones, fold by fold) and their labels."""

    logits: np.ndarray
    labels: np.ndarray
    seconds: float  # training time, saved folds counted at what they cost when they ran
    checkpoints: str | None = None  # the final run's fold: where its run is kept for the final training


class RacedOut(Exception):
    """A fine-tuning candidate stopped mid-run in the final run's split: clearly behind the first."""


def _correct(logits, labels: np.ndarray) -> np.ndarray:
    return (np.asarray(logits).argmax(1) == labels).astype(float)


def clearly_behind(best: np.ndarray, other: np.ndarray, standard_errors: float) -> bool:
    """Whether ``other``'s per-image correctness is below ``best``'s on the same images by more than
    ``standard_errors`` standard errors of the paired difference."""
    difference = best - other
    stderr = difference.std(ddof=1) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return bool(difference.mean() > standard_errors * stderr > 0)


def race(trajectory: list[np.ndarray]) -> Callable[[np.ndarray], EpochCallback]:
    """In the final run's split, what watches a candidate that trains the body: with ``trajectory``
    empty it is the first and records its correctness epoch by epoch there; a later one meets it at
    :data:`RACE_EPOCH` and stops (:class:`RacedOut`) if clearly behind it at the same epoch (by
    :data:`RACE_EPOCH_STANDARD_ERRORS`: the loser's remaining epochs are the cost saved)."""
    first = not trajectory

    def watch(labels: np.ndarray) -> EpochCallback:
        def each_epoch(row: dict, val_logits) -> None:
            correct = _correct(val_logits, labels)
            if first:
                if row["epoch"] == len(trajectory) + 1:  # from epoch 1 on (a run resumed mid-way records nothing)
                    trajectory.append(correct)
            elif row["epoch"] == RACE_EPOCH and len(trajectory) >= RACE_EPOCH and len(trajectory[0]) == len(correct) \
                    and clearly_behind(trajectory[RACE_EPOCH - 1], correct, RACE_EPOCH_STANDARD_ERRORS):
                raise RacedOut(f"{correct.mean():.3f} against {trajectory[RACE_EPOCH - 1].mean():.3f} at epoch {RACE_EPOCH}")

        return each_epoch

    return watch


@contextmanager
def fold_runs_quiet(quiet: bool = True) -> Iterator[None]:
    """The package's INFO lines held back while a fold's run trains (``quiet``): a check trains a
    dozen such runs, each saying what the final run then says once (its engine, epochs, alpha); the
    fold bar shows their progress, warnings still show, and ``--debug`` shows every line."""
    package = logging.getLogger(__name__.split(".")[0])
    level = package.level
    if quiet and package.getEffectiveLevel() == logging.INFO:
        package.setLevel(logging.WARNING)
    try:
        yield
    finally:
        package.setLevel(level)


def score_fold(prepared: PreparedRun, labelled: ImageSet, base: TrainConfig, candidate: Candidate, number: int,
               fold: Fold, out: Path, trajectory: list[np.ndarray] | None = None) -> dict:  # fmt: skip
    """``candidate`` trained on the rest of fold ``number`` and scored on it: its logits, labels and
    seconds, saved in ``out`` (a saved fold of the same images and settings is reused). In the
    final run's split its run is kept (resumable, ``checkpoints`` in the record) and, given a
    ``trajectory``, raced (:func:`race`; the record of one that lost says ``raced``)."""
    folder = out / candidate.name
    config = candidate.config(base, folder / f"fold-{number}")
    learns = "unlabeled" in STRATEGIES[candidate.strategy].options  # the others would only warn, fold after fold
    unlabeled = prepared.splits.unlabeled if learns else None
    saved, key = folder / f"fold-{number}.npz", _key(labelled, fold, config, unlabeled)
    record = dict(np.load(saved)) if saved.exists() else {}
    if record and str(record["key"]) == key:
        log.info("%s, fold %d: reused %s", candidate.name, number + 1, saved)
        if trajectory is not None and not trajectory and "trajectory" in record:  # the first: later ones race its epochs
            trajectory.extend(record["trajectory"])
        return record
    if fold.final_run:  # scored on its validation split: a network keeps it out (it may not train on it)
        held_out = config.holdout or STRATEGIES[candidate.strategy].trains_body
        config = dataclasses.replace(config, out=str(folder / f"run-{key}"), resume=True, holdout=held_out)
    racing = fold.final_run and trajectory is not None and distributed.world_size() == 1  # one process may not stop alone
    watch = race(trajectory) if racing else None
    first = watch is not None and not trajectory
    started = time.perf_counter()
    try:
        splits = fold_splits(labelled, fold, config, unlabeled, prepared.splits.val_given)
        with fold_runs_quiet(not fold.final_run):  # the final run's split: its run is the final training
            _, _, stages = fit_stages(candidate.run(prepared).with_splits(splits), config, Path(config.out), watch=watch)
        last = list(stages.values())[-1]
        split = "val" if fold.final_run else "test"
        found = {"logits": last.logits[split].numpy(), "labels": last.labels[split]}
        if fold.final_run and STRATEGIES[candidate.strategy].trains_body:  # the frozen ones cost little to redo
            found["checkpoints"] = config.out
    except RacedOut as behind:
        log.info("%s: stopped in the final run's split, clearly behind the first fine-tuning candidate (%s)",
                 candidate.name, behind)  # fmt: skip
        found = {"raced": str(behind)}
    if first and trajectory:
        found["trajectory"] = np.stack(trajectory)
    folder.mkdir(parents=True, exist_ok=True)
    partial = saved.with_name(f".{saved.name}.{os.getpid()}")  # whole or absent, whichever process writes it
    with open(partial, "wb") as handle:
        np.savez(handle, key=key, seconds=time.perf_counter() - started, **found)
    os.replace(partial, saved)
    return dict(np.load(saved))


def raced_out(first_fold: dict[str, dict], chosen: list[Candidate]) -> list[str]:
    """The candidates that train the body and, on the first fold, score below the best candidate by
    more than :data:`RACE_STANDARD_ERRORS` standard errors of the paired difference: not worth
    their remaining folds (successive halving's first cut; the frozen ones cost little and stay)."""
    correct = {name: _correct(r["logits"], r["labels"]) for name, r in first_fold.items()}
    best = max(correct, key=lambda name: correct[name].mean())
    return [c.name for c in chosen if STRATEGIES[c.strategy].trains_body
            and clearly_behind(correct[best], correct[c.name], RACE_STANDARD_ERRORS)]  # fmt: skip


def _scores(records: list[dict]) -> FoldScores:
    checkpoints = records[-1].get("checkpoints")
    return FoldScores(np.concatenate([r["logits"] for r in records]), np.concatenate([r["labels"] for r in records]),
                      sum(float(r["seconds"]) for r in records), None if checkpoints is None else str(checkpoints))  # fmt: skip


def cross_fit(prepared: PreparedRun, base: TrainConfig, chosen: list[Candidate], out: Path) -> dict[str, FoldScores]:
    """The candidates' out-of-fold scores on ``prepared``'s labelled images, fold by fold (a bar per
    fold and candidate); a candidate that trains the body and is clearly behind after the first fold
    runs no more folds and is left out (:func:`raced_out`); in the final run's split, one clearly
    behind the first fine-tuning candidate mid-run (:func:`race`)."""
    labelled, folds = labelled_folds(prepared.splits, base.seed)
    records: dict[str, list[dict]] = {c.name: [] for c in chosen}
    active = list(chosen)
    with tqdm(total=len(folds) * len(chosen), desc="out-of-fold", unit="fold") as progress:
        for number, fold in enumerate(folds):
            trajectory: list[np.ndarray] = []
            for candidate in active:
                progress.set_postfix_str(f"{candidate.name}, fold {number + 1}")
                body = STRATEGIES[candidate.strategy].trains_body
                records[candidate.name].append(score_fold(prepared, labelled, base, candidate, number, fold, out,
                                                          trajectory if body else None))  # fmt: skip
                progress.update(1)
            dropped = [c.name for c in active if "raced" in records[c.name][-1]]
            if number == 0 and len(folds) > 1:
                dropped += raced_out({c.name: records[c.name][0] for c in active}, active)
            if dropped:
                log.info("left out after fold %d, clearly behind: %s", number + 1, ", ".join(dropped))
                progress.total -= len(dropped) * (len(folds) - 1 - number)
            active = [c for c in active if c.name not in dropped]
    scores = {c.name: _scores(records[c.name]) for c in active}
    reference = next(iter(scores.values())).labels
    for name, found in scores.items():
        if not np.array_equal(found.labels, reference):
            raise RuntimeError(f"candidate {name} scored other images than the others; the folds cannot be compared.")
    return scores


def fold_cut(candidate: Candidate) -> str:
    """The cut a candidate reads, in a plan's words."""
    entry = STRATEGIES[candidate.strategy]
    return candidate.cut or (ALL_CUTS if entry.cuts == "all" else FINAL_CUT)
