"""The strategies, one table: each entry says what a strategy trains and how, and everything else
reads it (the configuration and its checks, the trainer's stages, the forecast, the study).

Torch-free on purpose: the configuration, the CLI and the forecast read it without loading a
network. The seed's four cases:

| data | similar to the source | different from it |
|---|---|---|
| small | ``head``: frozen body, new head | ``truncate``: early stages frozen, new head |
| large | ``finetune``: train everything from the pretrained weights | ``scratch``: random init, train everything |

Beyond them, ``multicut`` reads every cut point at once, and ``ensemble`` averages two trained
strategies (its ``members``) and its ``companion`` trained again on other pretrained backbones.
Adding a strategy is one :func:`register_strategy` call, plus a training stage of its own
(``trainer.stages.register_stage``) when the existing ones do not do what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

FINAL_CUT = "final"
ALL_CUTS = "all"  # a body read at every cut point at once
AUTO = "auto"
AUTO_SUMMARY = ("measure the data and forecast each option, check the candidates on your own images out of fold, "
                "train what they chose (one, or several weighted; docs/advisor.md)")
# The entries other modules name by their role (only this module spells a strategy's name):
FROZEN_HEAD = "head"  # a new head on the frozen body's final features (its ``with_cut``: at an earlier cut)
FINETUNING = "finetune"  # the whole network from pretrained weights: what the advisor's pilot and lr-find run
FROM_SCRATCH = "scratch"  # random weights, everything trains: what ``pretrain`` runs
EVERY_CUT = "multicut"  # the frozen body read at every cut point at once
PROBE_LR = 1e-3  # the rate the closed-form heads record (they take no optimizer step)
# Labelled images per class (the median class's) from which an ensemble's fine-tuned member trains on
# augmented images by default: measured to cost 0.9 points at 12 a class and to gain 0.7 at 40 to 100
# (docs/advisor.md, "The ensemble's fine-tuned member augmented"); set between the two sizes measured.
AUGMENT_MEMBERS_FROM = 30

TUNE_MODES = ("all", "bias", "norm", "lora")  # which body parameters fine-tuning trains
SCHEDULES = ("cosine", "one-cycle")  # the learning-rate schedules of whole-network training
REGULARIZER_STRENGTHS = {"none": 0.0, "l2-sp": 0.01, "bss": 0.001}  # fine-tuning regularizers, their papers' strengths

# Where a strategy's body ends: only at the final features; before them (default: the middle
# stage); anywhere (default: the final features); or the head reads every cut point at once.
CUT_RULES = ("final", "earlier", "any", "all")

# The options (TrainConfig fields) that apply to some strategies only; each entry lists its own.
# Those of training by steps (epochs, rate, batch, decay, dropout, the head's init) apply to the
# strategies that take steps: the frozen heads are computed in closed form, and a typed --epochs
# there would change nothing.
STEP_OPTIONS = ("epochs", "lr", "batch_size", "weight_decay", "dropout", "head_init")
SPECIFIC_OPTIONS = (*STEP_OPTIONS, "layer_decay", "warmup_epochs", "patience", "augment", "freeze_bn",
                    "gradual_unfreeze", "tune", "lora_rank", "regularizer", "regularizer_strength", "schedule", "init",
                    "max_memory", "interpolate", "unlabeled", "holdout", "companions")  # fmt: skip
_NETWORK_OPTIONS = frozenset(STEP_OPTIONS) - {"head_init"} | {"warmup_epochs", "patience", "augment", "freeze_bn",
                                                              "gradual_unfreeze", "schedule", "max_memory"}  # fmt: skip


@dataclass(frozen=True)
class Strategy:
    """One way to transfer: its defaults, what trains, its stages, where it cuts, what the
    advisor's forecast and the study do with it, and which specific options apply to it."""

    name: str
    summary: str
    epochs: int  # default epochs of its last stage
    lr: float  # default learning rate of its last stage
    stages: tuple[str, ...]  # the training stages in order (``trainer.stages.STAGES``); the last makes the model
    trains: str  # in words: what moves ("the head", "the whole network", ...)
    cuts: str = "final"  # one of CUT_RULES
    pretrained: bool = True  # False: the body starts from random weights
    freeze_bn: bool = False  # the default of --freeze-bn: BatchNorm statistics fixed while the body trains
    class_weight: str = "none"  # the default of --class-weight (``config.CLASS_WEIGHTS``), as measured on imbalanced folders
    layer_decay: bool = False  # layer-wise learning rates decaying downwards (else one rate for the body)
    options: frozenset[str] = frozenset()  # the SPECIFIC_OPTIONS that apply
    anchor: str | None = None  # the forecast's starting point (a ``forecast.Signals`` attribute); None: not forecast
    with_cut: str | None = None  # the strategy a plan for this one becomes when the user sets --cut
    members: tuple[str, ...] = ()  # an ensemble's strategies, each trained with its own defaults (then no stages)
    companion: str | None = None  # an ensemble's: a frozen-head strategy trained again on each other backbone of
    #                               ``--companions`` (the same images and resolution), joining the members
    augment_members_from: int | None = None  # an ensemble's: from this many labelled images per class (median),
    #                                          its members that take --augment train on augmented images by default
    advised: bool = False  # whether ``auto`` plans it; the others are forecast as evidence only (the study decides)
    candidate: bool = False  # whether ``auto`` scores it out of fold on the user's own images and may combine it
    baseline: bool = False  # whether the study reports "always <name>" beside the advisor
    recipe: int = 1  # the version of its training recipe: raising it redoes this strategy's runs in a resumed study

    def __post_init__(self):
        if bool(self.members) == bool(self.stages):
            raise ValueError(f"strategy {self.name!r} must have stages or members, not both or neither.")
        if self.cuts not in CUT_RULES:
            raise ValueError(f"cuts must be one of {', '.join(CUT_RULES)}, got {self.cuts!r}.")
        if self.companion is not None and not self.members:
            raise ValueError(f"strategy {self.name!r}: only an ensemble takes a companion.")
        unknown = self.options - set(SPECIFIC_OPTIONS)
        if unknown:
            raise ValueError(f"unknown options for strategy {self.name!r}: {', '.join(sorted(unknown))}.")

    @property
    def trains_body(self) -> bool:
        """Whether the body's weights move (a ``network`` stage, its own or a member's), so images and
        not features feed it."""
        return "network" in self.stages or any(STRATEGIES[member].trains_body for member in self.members)

    @property
    def computed(self) -> bool:
        """Whether its head is computed in closed form, no step taken (its ``epochs`` and ``lr`` are
        placeholders the plan records)."""
        return not self.trains_body and not self.members

    def augments_members(self, labelled_per_class: float) -> bool:
        """Whether its members that take ``--augment`` train on augmented images by default where the
        median class has ``labelled_per_class`` labelled images."""
        return self.augment_members_from is not None and labelled_per_class >= self.augment_members_from

    @property
    def takes_cut(self) -> bool:
        """Whether the user may choose the cut (``--cut``)."""
        return self.cuts in ("earlier", "any")

    def default_cut(self, cut_names: list[str]) -> str:
        """The middle stage for a strategy that cuts earlier, every cut for one that reads them all,
        else the final features."""
        if self.cuts == "all":
            return ALL_CUTS
        return cut_names[(len(cut_names) - 1) // 2] if self.cuts == "earlier" else FINAL_CUT


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to the table (a name already taken, a member not in it, or members that share
    a stage name, whose results would be reported under one name, are refused)."""
    if strategy.name in STRATEGIES or strategy.name == AUTO:
        raise ValueError(f"a strategy named {strategy.name!r} is registered already.")
    companions = [strategy.companion] if strategy.companion else []
    unknown = [member for member in (*strategy.members, *companions) if member not in STRATEGIES]
    if unknown:
        raise ValueError(f"strategy {strategy.name!r}: members {', '.join(unknown)} are not registered.")
    if any(not STRATEGIES[companion].computed for companion in companions):
        raise ValueError(f"strategy {strategy.name!r}: its companion must be a head computed on a frozen body.")
    stages = [stage for member in strategy.members for stage in STRATEGIES[member].stages]
    shared = sorted({stage for stage in stages if stages.count(stage) > 1})
    if shared:
        raise ValueError(f"strategy {strategy.name!r}: its members share the stage {', '.join(shared)}; an ensemble's "
                         "members need stages of their own names.")  # fmt: skip
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The table's entry for ``name``; a ConfigError naming the choices otherwise."""
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join((*STRATEGIES, AUTO))}, got {name!r}.")
    return STRATEGIES[name]


def applying_to(option: str) -> list[str]:
    """The strategies a specific option applies to."""
    return [s.name for s in STRATEGIES.values() if option in s.options]


def describe(strategy: Strategy) -> str:
    """One strategy in words: what it is, what trains, its defaults, where it cuts, the options that apply."""
    cuts = {"final": "at the final features", "earlier": "before the final features (--cut; default: the middle stage)",
            "any": "anywhere (--cut; default: the final features)", "all": "at every cut point at once"}[strategy.cuts]
    steps = ("computed in closed form, no epochs" if strategy.computed else
             f"{strategy.epochs} epoch{'s' * (strategy.epochs != 1)} at lr {strategy.lr:g}")
    companion = f", and {strategy.companion} on each --companions backbone" if strategy.companion else ""
    training = (f"members {', '.join(strategy.members)}, each with its own defaults{companion}" if strategy.members else
                f"stages {', '.join(strategy.stages)}; {steps}; cuts {cuts}")
    options = ", ".join(sorted(strategy.options)) or "none"
    start = "pretrained" if strategy.pretrained else "random weights"
    return (f"{strategy.name}: {strategy.summary}\n  trains {strategy.trains} ({start}); {training}\n"
            f"  options: {options}")


def forecast_options() -> list[str]:
    """The strategies the advisor forecasts and the study scores."""
    return [s.name for s in STRATEGIES.values() if s.anchor is not None]


def baseline_options() -> list[str]:
    """The strategies the study reports as an "always <name>" rule beside the advisor."""
    return [s.name for s in STRATEGIES.values() if s.baseline]


def class_weighted() -> list[str]:
    """The strategies whose default --class-weight weighs the classes (as measured on imbalanced folders)."""
    return [s.name for s in STRATEGIES.values() if s.class_weight != "none"]


def ensemble_entry() -> Strategy:
    """The table's combining strategy: the one with members, which ``auto`` plans a combination as."""
    return next(s for s in STRATEGIES.values() if s.members)


def advised_options() -> list[str]:
    """The strategies ``auto`` chooses among: those the study did not find dominated."""
    return [s.name for s in STRATEGIES.values() if s.advised]


_CLOSED_FORM = ("computed in closed form: ridge at the strength of least leave-one-out squared error, fitted on the "
                "validation images too")  # fmt: skip
register_strategy(Strategy(
    FROZEN_HEAD, f"frozen body, new head on its final features, {_CLOSED_FORM}", epochs=1, lr=PROBE_LR,
    stages=("head",), trains="the head", anchor="probe_final", with_cut="truncate", class_weight="balanced",
    options=frozenset({"unlabeled", "holdout"}), candidate=True, baseline=True, recipe=2,
))
register_strategy(Strategy(
    "truncate", f"early stages frozen, new head on them, {_CLOSED_FORM}", epochs=1, lr=PROBE_LR, stages=("head",),
    trains="the head", cuts="earlier", anchor="probe_stage", options=frozenset({"unlabeled", "holdout"}), recipe=2,
    class_weight="balanced",
))
register_strategy(Strategy(
    FINETUNING, "a linear probe first (computed in closed form), then everything trains from the pretrained weights (LP-FT)",
    epochs=8, lr=3e-4, stages=("probe", "network"), trains="the head, then the whole network", cuts="any", freeze_bn=True,
    recipe=5, layer_decay=True, anchor="probe_final", candidate=True, baseline=True,
    options=_NETWORK_OPTIONS | {"layer_decay", "tune", "lora_rank", "regularizer", "regularizer_strength",
                                "interpolate", "holdout"},
))
register_strategy(Strategy(
    EVERY_CUT, "frozen body, one linear head over the pooled features of every cut (Head2Toe, Evci et al. 2022), "
    + _CLOSED_FORM, recipe=4, epochs=1, lr=PROBE_LR, stages=("multicut",), advised=True, class_weight="balanced",
    trains="the head", cuts="all", options=frozenset({"unlabeled", "holdout"}), anchor="probe_all", with_cut="truncate",
    candidate=True, baseline=True,
))
register_strategy(Strategy(
    "ensemble", "multicut and finetune both trained (finetune on augmented images from "
    f"{AUGMENT_MEMBERS_FROM} labelled images a class) and multicut again on each --companions backbone, each "
    "calibrated by a temperature fitted on validation, their probabilities averaged (a network per member at "
    "prediction)", epochs=STRATEGIES["finetune"].epochs, lr=STRATEGIES["finetune"].lr, stages=(),
    members=("multicut", "finetune"), companion="multicut", freeze_bn=True, layer_decay=True,
    trains="the multicut head, then the whole fine-tuned network", anchor="probe_final", advised=True, class_weight="balanced",
    baseline=True, options=STRATEGIES["multicut"].options | STRATEGIES["finetune"].options | {"companions"},
    augment_members_from=AUGMENT_MEMBERS_FROM, recipe=3,
))
register_strategy(Strategy(
    FROM_SCRATCH, "random init, everything trains", epochs=15, lr=2e-3, stages=("network",),
    trains="the whole network", pretrained=False, anchor="probe_random", options=_NETWORK_OPTIONS | {"init", "head_init"},
    recipe=2,
))  # fmt: skip
