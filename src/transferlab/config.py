"""The configuration of a run: one definition of every parameter, its default, its help and its check.

The CLI builds its options from these fields (``field_help``), so a default or a help text is
written once, here. Every check lives in :meth:`TrainConfig.__post_init__` and fails with a
``ConfigError`` that says "X must be ..., got Y".

A plan from the advisor is merged into a config in one place, :func:`with_plan`, with this
precedence: what the user set explicitly (``cut``, ``epochs``, ``lr``, ``resolution``,
``freeze_bn``) wins; the plan fills everything left unset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .datasets import CATALOG
from .engines import ENGINES
from .errors import ConfigError, check_choice
from .heads import DEFAULT_HEAD_INIT
from .inits import initializer_names, resolve_initializer
from .strategy import (
    AUTO,
    FINAL_CUT,
    NETWORK_STRATEGIES,
    REGULARIZER_STRENGTHS,
    SCHEDULES,
    STRATEGIES,
    STRATEGY_DEFAULTS,
    TUNE_MODES,
    Plan,
    keeps_whole_body,
)

CLASS_WEIGHTS = ("none", "balanced", "balanced-sampling")


def option(default, help: str, **cli):  # noqa: A002 - the argparse word
    """A config field with its help text (and CLI hints: ``flag``, ``choices``) as metadata."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def _strategy_defaults_text(what: str) -> str:
    return ", ".join(f"{getattr(d, what):g} ({name})" for name, d in STRATEGY_DEFAULTS.items())


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved into ``metrics.json``."""

    data: str = option(None, f"a folder root/<class>/<image> (or root/train/..., root/test/...), a CSV of path,label, "
                             f"or a built-in data set: {', '.join(CATALOG)}")  # fmt: skip
    out: str = option("runs/latest", "output folder")
    strategy: str = option("head", "auto: measure the data, then choose", choices=(*STRATEGIES, AUTO))
    backbone: str = option("efficientnet_lite0", "registered, timm or torchvision name, or a model folder")
    backbones: tuple[str, ...] = option((), "auto, advise, rank: candidate backbones ('a b' or 'a,b'); the advisor "
                                            "ranks them and chooses the source with the strategy")  # fmt: skip
    weights: str | None = option(None, "state-dict file to load into the backbone instead of its pretrained weights")
    pretrained: bool = option(True, "random backbone weights", flag="--no-pretrained")
    cut: str | None = option(None, "cut point (stage name); default: final, or the middle stage for truncate "
                                   "('transferlab backbones --cuts NAME' lists them)")  # fmt: skip
    resolution: int | None = option(None, "input size in pixels (default: the backbone's)")
    classes: str | None = option(None, "train on some classes only: indices/ranges '0-4' or names 'Bag,Sandal'")
    samples_per_class: int | None = option(None, "keep this many training (and at most this many validation) images per class")
    test_per_class: int | None = option(None, "subsample the test split per class")
    val_fraction: float = option(0.1, "share of each class held out for validation")
    epochs: int | None = option(None, f"default: {_strategy_defaults_text('epochs')}")
    lr: float | None = option(None, f"default: {_strategy_defaults_text('lr')}")
    batch_size: int = option(64, "images per optimizer step")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    head_init: str = option(DEFAULT_HEAD_INIT, f"initializer of the new head, one of: {', '.join(initializer_names())}")
    dropout: float = option(0.0, "dropout before the head")
    class_weight: str = option("none", "imbalanced data: balanced weighs each class's loss by n / (classes x its "
                                       "count); balanced-sampling draws every class equally often", choices=CLASS_WEIGHTS)
    probe_epochs: int = option(40, "finetune: epochs of the linear probe before unfreezing")
    layer_decay: float = option(0.85, "finetune: lr factor per layer group downwards (1: one rate)")
    warmup_epochs: float = option(1.0, "epochs of linear warm-up before the cosine decay")
    patience: int = option(3, "early stopping: epochs without a validation-loss gain")
    augment: bool = option(False, "random resized crop and flip (finetune, scratch)")
    freeze_bn: bool | None = option(None, "keep BatchNorm statistics fixed while fine-tuning (default: off; "
                                          "auto: the plan's choice)")  # fmt: skip
    gradual_unfreeze: bool = option(False, "unfreeze the body top-down over the first half of the epochs")
    tune: str = option("all", "finetune: which body parameters train: all, bias (BitFit), norm (normalization layers), "
                              "lora (low-rank adapters, merged on save)", choices=TUNE_MODES)  # fmt: skip
    lora_rank: int = option(4, "finetune --tune lora: the adapters' rank")
    regularizer: str = option("none", "finetune: l2-sp pulls the body towards its pretrained weights (Li et al. 2018); "
                                      "bss shrinks the batch features' smallest singular value (Chen et al. 2019)",
                              choices=tuple(REGULARIZER_STRENGTHS))  # fmt: skip
    regularizer_strength: float | None = option(None, "finetune: the regularizer's strength (default: its paper's, "
                                                      "0.01 for l2-sp, 0.001 for bss)")  # fmt: skip
    schedule: str = option("cosine", "finetune, scratch: warm-up + cosine, or one-cycle (Smith 2018)", choices=SCHEDULES)
    init: str = option("kaiming-normal", "scratch: initializer of the body's layers")
    resume: bool = option(False, "continue an interrupted run from OUT/checkpoint.pt")
    plan: str | None = option(None, "with --strategy auto: carry out this saved plan.json")
    measure_per_class: int = option(200, "auto, advise, rank: labelled images per class the advisor measures on")
    seed: int = option(0, "seed of splits, data order, augmentation and initialization")
    data_dir: str | None = option(None, "folder holding Fashion-MNIST's *-ubyte.gz files (default: Debian's path)")
    cache_dir: str | None = option(None, "feature cache folder (default ~/.cache/transferlab/features)")
    use_cache: bool = option(True, "recompute features, write none", flag="--no-cache")
    strict: bool = option(False, "fail on an unreadable image instead of skipping it")
    max_memory: float | None = option(4.0, "finetune, scratch: keep training inside about this many GB of resident "
                                           "memory by passes of fewer images per step (the same effective batch)")
    tensorboard: str | None = option(None, "write losses, accuracies, learning rates and the confusion matrix per "
                                           "epoch to this folder for TensorBoard")  # fmt: skip
    engine: str = option("pytorch", "engine of the frozen body's forward passes", choices=ENGINES)

    def __post_init__(self):
        if not self.data:
            raise ConfigError("data must name a data set, a folder or a CSV file, got nothing.")
        check_choice("strategy", self.strategy, (*STRATEGIES, AUTO), "train()")
        check_choice("engine", self.engine, ENGINES, "train()")
        check_choice("class_weight", self.class_weight, CLASS_WEIGHTS, "train()")
        check_choice("tune", self.tune, TUNE_MODES, "train()")
        check_choice("regularizer", self.regularizer, tuple(REGULARIZER_STRENGTHS), "train()")
        check_choice("schedule", self.schedule, SCHEDULES, "train()")
        resolve_initializer(self.head_init)
        resolve_initializer(self.init)
        _check(self.resolution is None or 16 <= self.resolution <= 1024, "resolution", "between 16 and 1024 pixels",
               self.resolution)  # fmt: skip
        _check(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
        _check(0 < self.val_fraction < 1, "val_fraction", "between 0 and 1", self.val_fraction)
        for name in ("batch_size", "probe_epochs", "patience", "measure_per_class", "lora_rank"):
            _check(getattr(self, name) >= 1, name, "at least 1", getattr(self, name))
        for name in ("epochs", "samples_per_class", "test_per_class"):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, "at least 1", value)
        _check(self.lr is None or self.lr > 0, "lr", "positive", self.lr)
        _check(self.regularizer_strength is None or self.regularizer_strength >= 0, "regularizer_strength", "at least 0",
               self.regularizer_strength)  # fmt: skip
        _check(self.max_memory is None or self.max_memory > 0, "max_memory", "positive (GB)", self.max_memory)
        _check(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)
        _check(self.warmup_epochs >= 0 and self.weight_decay >= 0, "warmup_epochs and weight_decay", "at least 0",
               (self.warmup_epochs, self.weight_decay))  # fmt: skip
        if self.plan and self.strategy != AUTO:
            raise ConfigError(f"--plan goes with --strategy auto, got --strategy {self.strategy}.")
        if keeps_whole_body(self.strategy) and self.cut not in (None, FINAL_CUT):
            raise ConfigError(
                f"strategy {self.strategy!r} keeps the whole body (cut 'final'); use --strategy truncate "
                f"(or finetune) for --cut {self.cut}."
            )

    @property
    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else STRATEGY_DEFAULTS[self.strategy].epochs

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else STRATEGY_DEFAULTS[self.strategy].lr

    def resolved_cut(self, cut_names: list[str]) -> str:
        """The cut to use: the one set, else the middle stage for truncate, else the final cut."""
        if self.cut:
            return self.cut
        return cut_names[(len(cut_names) - 1) // 2] if self.strategy == "truncate" else FINAL_CUT

    @property
    def resolved_regularizer_strength(self) -> float:
        if self.regularizer_strength is not None:
            return self.regularizer_strength
        return REGULARIZER_STRENGTHS[self.regularizer]

    @property
    def trains_network(self) -> bool:
        return self.strategy in NETWORK_STRATEGIES


def _check(ok: bool, name: str, expected: str, got) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {expected}, got {got}.")


def field_help(name: str) -> dict:
    """The metadata of a ``TrainConfig`` field: its help text and CLI hints."""
    return dict(next(f for f in dataclasses.fields(TrainConfig) if f.name == name).metadata)


def with_plan(config: TrainConfig, plan: Plan) -> TrainConfig:
    """The config that carries out ``plan``.

    Precedence: the user's explicit ``cut``, ``epochs``, ``lr``, ``resolution`` and
    ``freeze_bn`` win; the plan sets the strategy, the backbone and everything left unset. A
    user's cut on a plan for ``head`` makes it ``truncate`` at that cut (the body stays frozen);
    a user's cut cannot go with ``scratch``, which trains the whole body.
    """
    strategy = plan.strategy
    cut = config.cut if config.cut is not None else plan.cut
    if cut != FINAL_CUT and keeps_whole_body(strategy):
        if strategy == "scratch":
            raise ConfigError(f"The plan is 'scratch' (the whole body trained from zero); it cannot go with --cut {cut}. "
                              "Leave --cut out, or choose --strategy truncate or finetune.")  # fmt: skip
        strategy = "truncate"
    return dataclasses.replace(
        config, strategy=strategy, plan=None, cut=None if cut == FINAL_CUT else cut,
        epochs=config.epochs if config.epochs is not None else plan.epochs,
        lr=config.lr if config.lr is not None else plan.lr,
        resolution=config.resolution or plan.resolution, backbone=plan.backbone,
        freeze_bn=config.freeze_bn if config.freeze_bn is not None else plan.freeze_bn,
    )  # fmt: skip
