"""The configuration of a run: one definition of every parameter, its default, its help and its check.

The CLI builds its options from these fields (``field_help``), so a default or a help text is
written once, here. Every check lives in :meth:`TrainConfig.__post_init__` and fails with a
``ConfigError`` that says "X must be ..., got Y".

Which strategy-specific options apply to which strategy is the strategy table's to say
(:mod:`.strategies`); a config that sets one for a strategy it does not apply to is refused.

A plan from the advisor is merged into a config in one place, :func:`with_plan`, with this
precedence: what the user set explicitly (``cut``, ``epochs``, ``lr``, ``resolution``, ``fit``,
``freeze_bn``, ``augment``) wins; the plan fills everything left unset.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from .cachedir import default_cache_root
from .datasets import CATALOG
from .errors import ConfigError, check_choice
from .hardware import check_device, resolve_device
from .images import FITS
from .inits import DATA_DEPENDENT, DEFAULT_HEAD_INIT, initializer_names, resolve_initializer
from .offline import OFFLINE_BACKBONES, installed_offline_backbones
from .plan import Plan
from .strategies import (
    ALL_CUTS,
    AUTO,
    AUTO_SUMMARY,
    FINAL_CUT,
    REGULARIZER_STRENGTHS,
    SCHEDULES,
    SPECIFIC_OPTIONS,
    STEP_OPTIONS,
    STRATEGIES,
    TUNE_MODES,
    Strategy,
    applying_to,
    class_weighted,
    ensemble_entry,
    get_strategy,
)

log = logging.getLogger(__name__)

CLASS_WEIGHTS = ("none", "balanced", "balanced-sampling")
ENGINES = ("pytorch", "pytorch-bf16", "onnxruntime", "onnxruntime-int8")  # what runs a frozen forward pass (engines.py)
EXPORT_FORMATS = ("onnx", "torchscript")  # what a model exports to (export.py)
INTERPOLATE_AUTO, INTERPOLATE_NONE = "auto", "none"  # --interpolate's words beside a number (trainer/interpolate.py)
NO_COMPANIONS = "none"  # --companions none: an ensemble of its members alone


def option(default, help, **cli):  # noqa: A002 - the argparse word
    """A config field with its help text (and CLI hints: ``flag``, ``choices``) as metadata; a text or
    a choice that reads the strategy table is a function, called when the help is asked for, so a
    strategy registered later shows up (:func:`field_help`)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def _strategy_defaults_text(what: str) -> str:
    ensembles = [name for name, s in STRATEGIES.items() if s.members]
    return "default: " + ", ".join([*(f"{getattr(s, what):g} ({name})" for name, s in STRATEGIES.items()
                                      if not s.members and what in s.options),
                                    *(f"each member its own ({name})" for name in ensembles)])


def _strategy_help() -> str:
    return f"one of {', '.join(STRATEGIES)}, or {AUTO}: {AUTO_SUMMARY}; 'transferlab strategies' says what each trains"


def _class_weight_help() -> str:
    weighted = class_weighted()
    return ("imbalanced data: balanced weighs each class's images by n / (classes x its count) (the closed-form "
            "multicut head by weighted least squares); balanced-sampling draws every class equally often, where "
            f"batches are drawn (default: balanced for {' and '.join(weighted)}, as measured on imbalanced folders "
            "(docs/advisor.md); none for the others)")


def _augment_help() -> str:
    ensemble = ensemble_entry()
    return (f"random resized crop and flip while the body trains, no flip where a probe on the pretrained features "
            f"finds your images' mirrors look like other classes (default: off, but for the network members of "
            f"{ensemble.name} and auto's fine-tuning from {ensemble.augment_members_from} labelled images a class, as "
            "measured)")


def _freeze_bn_help() -> str:
    frozen = [name for name, s in STRATEGIES.items() if s.freeze_bn and not s.members]
    return (f"keep BatchNorm statistics fixed while the body trains (default: on for {', '.join(frozen)}, as "
            "measured; off for the others)")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved into ``metrics.json``."""

    data: str = option(None, f"a folder root/<class>/<image> (or root/train/..., root/test/...), a CSV of path,label, "
                             f"or a built-in data set: {', '.join(CATALOG)}")  # fmt: skip
    out: str = option("runs/latest", "output folder")
    strategy: str = option(AUTO, _strategy_help, choices=lambda: (*STRATEGIES, AUTO))
    backbone: str = option("efficientnet_lite0", "registered, timm or torchvision name, or a model folder")
    backbones: tuple[str, ...] = option((), "auto, advise, rank: candidate backbones, comma-separated ('a,b'); the advisor "
                                            "ranks them and chooses the source with the strategy")  # fmt: skip
    companions: tuple[str, ...] | None = option(None, "other pretrained backbones, comma-separated, on each of which "
                                                      "a frozen multicut head joins the ensemble and the candidates auto "
                                                      "and advise check (their features see your images another way); "
                                                      "none: no companions (default: the other offline ImageNet "
                                                      "backbones whose weights are installed, where --backbone is "
                                                      "one of them, as measured in docs/advisor.md)")  # fmt: skip
    weights: str | None = option(None, "state-dict file to load into the backbone instead of its pretrained weights")
    pretrained: bool = option(True, "random backbone weights", flag="--no-pretrained")
    cut: str | None = option(None, "cut point (stage name); default: final, or the middle stage for truncate "
                                   "('transferlab backbones --cuts NAME' lists them)")  # fmt: skip
    resolution: int | None = option(None, "input size in pixels (default: the backbone's)")
    fit: str | None = option(None, "how a non-square image becomes square: crop (its centre) or squash (the whole "
                                   "image, stretched); default: auto and advise compare both on your images, other "
                                   "strategies crop", choices=FITS)  # fmt: skip
    classes: str | None = option(None, "train on some classes only: indices/ranges '0-4' or names 'Bag,Sandal'")
    samples_per_class: int | None = option(None, "keep this many training (and at most this many validation) images per class")
    test_per_class: int | None = option(None, "subsample the test split per class")
    val_fraction: float = option(0.1, "share of each class held out for validation")
    epochs: int | None = option(None, lambda: _strategy_defaults_text("epochs"))
    lr: float | None = option(None, lambda: _strategy_defaults_text("lr"))
    batch_size: int = option(64, "images per optimizer step")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    head_init: str = option(DEFAULT_HEAD_INIT, f"initializer of the new head, one of: {', '.join(initializer_names())}")
    dropout: float = option(0.0, "dropout before the head")
    class_weight: str | None = option(None, _class_weight_help, choices=CLASS_WEIGHTS)
    layer_decay: float = option(0.85, "lr factor per layer group downwards (1: one rate)")
    warmup_epochs: float = option(1.0, "epochs of linear warm-up before the cosine decay")
    patience: int | None = option(None, "early stopping: epochs without a validation-loss gain, then the best epoch's "
                                        "weights kept; 0: none, the last epoch's kept (default: 3, or 0 for a pretrained "
                                        "network where the smallest validation class has fewer than 10 images, too few "
                                        "to choose an epoch by)")  # fmt: skip
    augment: bool | None = option(None, _augment_help)
    freeze_bn: bool | None = option(None, _freeze_bn_help)
    gradual_unfreeze: bool = option(False, "unfreeze the body top-down over the first half of the epochs")
    tune: str = option("all", "which body parameters train: all, bias (BitFit), norm (normalization layers), "
                              "lora (low-rank adapters, merged on save)", choices=TUNE_MODES)  # fmt: skip
    lora_rank: int = option(4, "with --tune lora: the adapters' rank")
    regularizer: str = option("none", "l2-sp pulls the body towards its pretrained weights (Li et al. 2018); "
                                      "bss shrinks the batch features' smallest singular value (Chen et al. 2019)",
                              choices=tuple(REGULARIZER_STRENGTHS))  # fmt: skip
    regularizer_strength: float | None = option(None, "the regularizer's strength (default: its paper's, "
                                                      "0.01 for l2-sp, 0.001 for bss)")  # fmt: skip
    schedule: str = option("cosine", "warm-up + cosine, or one-cycle (Smith 2018)", choices=SCHEDULES)
    init: str = option("kaiming-normal", "initializer of the body's layers")
    holdout: bool = option(False, "keep the validation images out of every fit (by default the closed-form head "
                                  "fits them too, its penalty and temperature chosen and the validation images scored "
                                  "leave-one-out, and a pretrained network trains on them where nothing is chosen on "
                                  "them: fewer than 10 in the smallest class, no --patience; a val/ folder is always "
                                  "held out)")
    unlabeled: str | None = option(None, "a folder of images without labels to learn from "
                                         "too (default: DATA/unlabeled/ when it exists); kept only when the validation "
                                         "images say they help")  # fmt: skip
    interpolate: str = option(INTERPOLATE_AUTO, "the weights (1 - alpha) x the linear probe's + alpha x the "
                                                "fine-tuned network's (WiSE-FT); auto: alpha on 0, 0.1, ..., 1 chosen on "
                                                "validation (measured: docs/strategies.md); a number in [0, 1]; none: the "
                                                "fine-tuned network (alpha 1)")
    resume: bool = option(False, "continue an interrupted run from OUT/checkpoint.pt")
    plan: str | None = option(None, "with --strategy auto: carry out this saved plan.json")
    time_budget: str | None = option(None, "auto, advise: cap on checking the candidates on your own images out of fold "
                                           "(e.g. 90s, 10m, 1h); when the estimate exceeds it the forecast decides "
                                           "alone; 0: always the forecast (default: no cap)")  # fmt: skip
    measure_per_class: int = option(200, "auto, advise, rank: labelled images per class the advisor measures on")
    seed: int = option(0, "seed of splits, data order, augmentation and initialization")
    data_dir: str | None = option(None, "folder holding Fashion-MNIST's *-ubyte.gz files (default: Debian's path)")
    cache_dir: str | None = option(None, "cache folder: features in DIR/features, ONNX models in DIR/onnx (default: "
                                         "$TRANSFERLAB_CACHE, else ~/.cache/transferlab)")
    use_cache: bool = option(True, "recompute features, write none", flag="--no-cache")
    strict: bool = option(False, "fail on an unreadable image instead of skipping it")
    max_memory: float | None = option(4.0, "keep training inside about this many GB of resident "
                                           "memory by passes of fewer images per step (the same effective batch); "
                                           "on a GPU, its free memory bounds the passes instead")
    tensorboard: str | None = option(None, "write losses, accuracies, learning rates and the confusion matrix per "
                                           "epoch to this folder for TensorBoard")  # fmt: skip
    engine: str = option("auto", "engine of the frozen body's forward passes; auto: the fastest that is correct on this "
                                 "machine (see docs/speed.md), said in the log and metrics.json", choices=("auto", *ENGINES))
    device: str = option("auto", "where the networks run: auto (the first GPU when CUDA has one, else the CPU), cpu, "
                                 "cuda or cuda:N")  # fmt: skip

    def __post_init__(self):
        if not self.data:
            raise ConfigError("DATA must name a data set, a folder or a CSV file, got nothing.")
        if self.strategy != AUTO:
            get_strategy(self.strategy)
        check_choice("--engine", self.engine, ("auto", *ENGINES))
        check_device(self.device)
        if self.class_weight is not None:
            check_choice("--class-weight", self.class_weight, CLASS_WEIGHTS)
        check_choice("--tune", self.tune, TUNE_MODES)
        check_choice("--regularizer", self.regularizer, tuple(REGULARIZER_STRENGTHS))
        check_choice("--schedule", self.schedule, SCHEDULES)
        if self.fit is not None:
            check_choice("--fit", self.fit, FITS)
        for name, flag in (("head_init", "--head-init"), ("init", "--init")):
            resolve_initializer(getattr(self, name), flag)
            if getattr(self, name) in DATA_DEPENDENT:
                raise ConfigError(f"{flag} {getattr(self, name)} needs a batch of data to size each layer: the init lab "
                                  "uses it; choose another initializer here.")  # fmt: skip
        _check(self.resolution is None or 16 <= self.resolution <= 1024, "resolution", "between 16 and 1024 pixels",
               self.resolution)  # fmt: skip
        _check(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
        _check(0 < self.val_fraction < 1, "val_fraction", "between 0 and 1", self.val_fraction)
        _check(self.patience is None or self.patience >= 0, "patience", "at least 0", self.patience)
        for name in ("batch_size", "measure_per_class", "lora_rank"):
            _check(getattr(self, name) >= 1, name, "at least 1", getattr(self, name))
        for name in ("epochs", "samples_per_class", "test_per_class"):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, "at least 1", value)
        _check(self.lr is None or self.lr > 0, "lr", "positive", self.lr)
        _check(self.regularizer_strength is None or self.regularizer_strength >= 0, "regularizer_strength", "at least 0",
               self.regularizer_strength)  # fmt: skip
        _check(self.max_memory is None or self.max_memory > 0, "max_memory", "positive (GB)", self.max_memory)
        _check(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)
        for name in ("warmup_epochs", "weight_decay"):
            _check(getattr(self, name) >= 0, name, "at least 0", getattr(self, name))
        _check(interpolation_alpha(self.interpolate) is not None or self.interpolate in (INTERPOLATE_AUTO, INTERPOLATE_NONE),
               "interpolate", f"{INTERPOLATE_AUTO}, {INTERPOLATE_NONE} or a number in [0, 1]", self.interpolate)
        _check(self.time_budget is None or duration_seconds(self.time_budget) is not None, "time_budget",
               "a duration such as 90s, 10m or 1h", self.time_budget)  # fmt: skip
        if self.companions is not None and NO_COMPANIONS in self.companions and len(self.companions) > 1:
            raise ConfigError(f"--companions {NO_COMPANIONS} goes alone, got {','.join(self.companions)}.")
        if self.time_budget is not None and self.strategy != AUTO:
            raise ConfigError(f"--time-budget goes with --strategy auto, got --strategy {self.strategy}.")
        if self.plan and self.strategy != AUTO:
            raise ConfigError(f"--plan goes with --strategy auto, got --strategy {self.strategy}.")
        _check_options(self)

    @property
    def strategy_entry(self) -> Strategy:
        """The strategy table's entry for this run (not for ``auto``, which a plan resolves first)."""
        return get_strategy(self.strategy)

    @property
    def cache_root(self) -> Path:
        """The cache folder: ``--cache-dir``, else ``$TRANSFERLAB_CACHE``, else ~/.cache/transferlab."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_root()

    @property
    def resolved_device(self) -> str:
        """The device this run's networks go on (:func:`.hardware.resolve_device`)."""
        return resolve_device(self.device)

    @property
    def starts_pretrained(self) -> bool:
        """Whether the run starts from pretrained weights (``auto`` measures them; ``scratch`` does not)."""
        return self.strategy == AUTO or self.strategy_entry.pretrained

    @property
    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else self.strategy_entry.epochs

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else self.strategy_entry.lr

    @property
    def resolved_freeze_bn(self) -> bool:
        return self.freeze_bn if self.freeze_bn is not None else self.strategy_entry.freeze_bn

    @property
    def resolved_augment(self) -> bool:
        return bool(self.augment)

    def members_augment(self, labelled_per_class: float) -> bool:
        """Whether an ensemble's network members (and ``auto``'s fine-tuning candidates, which may
        become them) train on augmented images where the median class has ``labelled_per_class``
        labelled images: as typed, else the ensemble's default at that size."""
        return self.augment if self.augment is not None else ensemble_entry().augments_members(labelled_per_class)

    def resolved_companions(self, backbone: str | None = None) -> tuple[str, ...]:
        """The other backbones on which an ensemble's companion trains beside ``backbone`` (default:
        this run's): those typed (none for 'none'), else, from pretrained weights of its own, the other
        offline ImageNet backbones whose weights are installed, where it is one of them."""
        backbone = backbone or self.backbone
        if self.companions is not None:
            typed = () if self.companions == (NO_COMPANIONS,) else self.companions
        else:
            ours = self.pretrained and self.weights is None and backbone in OFFLINE_BACKBONES
            typed = installed_offline_backbones() if ours else ()
        return tuple(name for name in dict.fromkeys(typed) if name != backbone)

    @property
    def resolved_class_weight(self) -> str:
        return self.class_weight_for(self.strategy_entry)

    def class_weight_for(self, entry: Strategy) -> str:
        """The class weight a part trained as ``entry`` uses: the one typed, else the entry's default."""
        return self.class_weight if self.class_weight is not None else entry.class_weight

    def resolved_cut(self, cut_names: list[str]) -> str:
        """The cut to use: the one set, else the strategy's default (:meth:`Strategy.default_cut`)."""
        return self.cut or self.strategy_entry.default_cut(cut_names)

    def resolved(self, cut: str, resolution: int) -> dict:
        """The configuration as it ran, every default filled in: what ``metrics.json`` records beside
        what was typed (the ``cut`` and ``resolution`` the run used are given: the backbone decides them)."""
        entry = self.strategy_entry
        settings = {**dataclasses.asdict(self), "cut": cut, "resolution": resolution, "epochs": self.resolved_epochs,
                    "lr": self.resolved_lr, "device": self.resolved_device, "cache_dir": str(self.cache_root),
                    "class_weight": self.resolved_class_weight}
        settings["freeze_bn"] = self.resolved_freeze_bn if "freeze_bn" in entry.options else None
        settings["augment"] = self.resolved_augment
        if "regularizer_strength" in entry.options:
            settings["regularizer_strength"] = self.resolved_regularizer_strength
        return {name: value for name, value in settings.items() if name in entry.options or name not in SPECIFIC_OPTIONS}

    @property
    def resolved_regularizer_strength(self) -> float:
        if self.regularizer_strength is not None:
            return self.regularizer_strength
        return REGULARIZER_STRENGTHS[self.regularizer]


def duration_seconds(text: str) -> float | None:
    """Seconds in a duration such as ``90s``, ``10m``, ``1.5h`` or ``120`` (seconds); ``None`` if it is not one."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        return None
    return value if value >= 0 else None


def interpolation_alpha(setting: str) -> float | None:
    """The alpha an ``--interpolate`` setting names as a number in [0, 1]; ``None`` for anything else."""
    try:
        alpha = float(setting)
    except ValueError:
        return None
    return alpha if 0.0 <= alpha <= 1.0 else None


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _set_options(config: TrainConfig) -> list[str]:
    """The strategy-specific options ``config`` sets to something other than their defaults."""
    return [name for name in SPECIFIC_OPTIONS if getattr(config, name) != _DEFAULTS[name]]


def _check_options(config: TrainConfig) -> None:
    """Every option set must apply to the strategy (for ``auto``: to some strategy), as the table says."""
    if config.strategy == AUTO:
        return
    strategy = config.strategy_entry
    for name in _set_options(config):
        if name not in strategy.options:
            computed = strategy.computed and name in STEP_OPTIONS
            why = " (its head is computed in closed form: no steps to set)" if computed else ""
            raise ConfigError(f"{flag(name)} applies to {', '.join(applying_to(name)) or 'no strategy'}, "
                              f"not to --strategy {strategy.name}{why}.")  # fmt: skip
    if not strategy.takes_cut and config.cut not in (None, FINAL_CUT):
        others = [s.name for s in STRATEGIES.values() if s.takes_cut]
        raise ConfigError(f"--strategy {strategy.name} keeps the whole body (cut 'final'); use --strategy "
                          f"{' or '.join(others)} for --cut {config.cut}.")  # fmt: skip
    if config.lora_rank != _DEFAULTS["lora_rank"] and config.tune != "lora":
        raise ConfigError(f"--lora-rank applies to --tune lora, not to --tune {config.tune}.")
    if config.regularizer_strength is not None and config.regularizer == "none":
        raise ConfigError("--regularizer-strength applies with --regularizer l2-sp or bss, not without a regularizer.")


def for_strategy(config: TrainConfig, strategy: str, **changes) -> TrainConfig:
    """``config`` turned into a run of ``strategy`` (with ``changes``): the options that do not apply
    to it go back to their defaults, each said in a warning; ``auto``'s time budget is spent."""
    entry = get_strategy(strategy)
    dropped = {name: _DEFAULTS[name] for name in _set_options(config) if name not in entry.options and name not in changes}
    for name in dropped:
        log.warning("%s does not apply to %s: left out", flag(name), strategy)
    return dataclasses.replace(config, strategy=strategy, time_budget=None, **{**dropped, **changes})


def _check(ok: bool, name: str, expected: str, got) -> None:
    """A ConfigError in the command line's words: "--val-fraction must be between 0 and 1, got 1.0"."""
    if not ok:
        raise ConfigError(f"{flag(name)} must be {expected}, got {got}.")


def flag(name: str) -> str:
    """The command-line flag of the TrainConfig field ``name``."""
    return field_help(name).get("flag", "--" + name.replace("_", "-"))


def field_help(name: str) -> dict:
    """The metadata of a ``TrainConfig`` field, read from the strategy table as it is now: its help
    text (an option specific to some strategies starts with their names) and CLI hints."""
    metadata = next(f for f in dataclasses.fields(TrainConfig) if f.name == name).metadata
    meta = {key: value() if callable(value) else value for key, value in metadata.items()}
    if name in SPECIFIC_OPTIONS:
        meta["help"] = f"{', '.join(applying_to(name))}: {meta['help']}"
    return meta


def with_plan(config: TrainConfig, plan: Plan) -> TrainConfig:
    """The config that carries out ``plan``.

    Precedence: the user's explicit ``cut``, ``epochs``, ``lr``, ``resolution``, ``fit``,
    ``freeze_bn``, ``augment`` and ``holdout`` win (each where the planned strategy takes it); the plan sets the
    strategy, the backbone and everything left unset (for an ensemble the members keep their own
    epochs, rate, BatchNorm setting and augmentation). A
    user's cut on a plan for ``head`` makes it ``truncate`` at that cut (the body stays frozen);
    a user's cut cannot go with ``scratch``, which trains the whole body. Options that do not
    apply to the planned strategy are left out, each with a warning (:func:`for_strategy`).
    """
    strategy = get_strategy(plan.strategy)
    cut = config.cut if config.cut is not None else plan.cut
    whole = (FINAL_CUT, ALL_CUTS)  # where a strategy that does not take a cut reads the body
    if cut not in whole and not strategy.takes_cut:
        if strategy.with_cut is None:
            raise ConfigError(f"The plan is {strategy.name!r} ({strategy.trains} trains, the whole body); it cannot go "
                              f"with --cut {cut}. Leave --cut out, or choose another --strategy.")  # fmt: skip
        strategy = get_strategy(strategy.with_cut)
    planned = {"epochs": (config.epochs, plan.epochs), "lr": (config.lr, plan.lr),
               "freeze_bn": (config.freeze_bn, plan.freeze_bn), "augment": (config.augment, plan.augment or None),
               "holdout": (config.holdout or None, plan.holdout or None)}  # fmt: skip
    settings = {} if strategy.members else {  # an ensemble's members each keep their own
        name: typed if typed is not None else from_plan
        for name, (typed, from_plan) in planned.items() if name in strategy.options
        and (typed, from_plan) != (None, None)}  # fmt: skip
    return for_strategy(config, strategy.name, plan=None, cut=None if cut in whole else cut,
                        resolution=config.resolution or plan.resolution, fit=config.fit or plan.fit, backbone=plan.backbone,
                        **settings)  # fmt: skip
