"""The strategy table: its entries' contract, the options checked against it, and no strategy name
compared anywhere else in the code."""

import ast
import dataclasses
from pathlib import Path

import pytest

from transferlab.config import TrainConfig, for_strategy
from transferlab.errors import ConfigError
from transferlab.forecast import Signals
from transferlab.strategies import SPECIFIC_OPTIONS, STRATEGIES, Strategy, applying_to, describe, register_strategy
from transferlab.trainer.stages import STAGES

SRC = Path(__file__).resolve().parents[1] / "src" / "transferlab"

# A value other than the default for every strategy-specific option.
SET_VALUES = {
    "epochs": 3, "lr": 0.01, "batch_size": 8, "weight_decay": 0.1, "dropout": 0.5, "head_init": "zeros", "layer_decay": 0.5, "warmup_epochs": 0.0, "patience": 1, "augment": True, "freeze_bn": True,
    "gradual_unfreeze": True, "tune": "bias", "lora_rank": 8, "regularizer": "bss", "regularizer_strength": 0.5,
    "schedule": "one-cycle", "init": "xavier-uniform", "max_memory": 2.0, "interpolate": "0.5",
    "unlabeled": "more-images", "holdout": True, "companions": ("mobilenet_v2",),
}  # fmt: skip


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_entry_names_stages_anchors_and_options_that_exist(name):
    strategy = STRATEGIES[name]
    assert bool(strategy.stages) != bool(strategy.members)  # its own stages, or an ensemble of other entries
    assert all(stage in STAGES for stage in strategy.stages)
    assert all(member in STRATEGIES and not STRATEGIES[member].members for member in strategy.members)
    assert strategy.options <= set(SPECIFIC_OPTIONS)
    if strategy.anchor is not None:
        assert isinstance(getattr(Signals(10, 0.8, 0.7, 0.9, 0.2, 0.05, 0.01, 0.95), strategy.anchor), float)
    if strategy.with_cut is not None:
        assert STRATEGIES[strategy.with_cut].takes_cut
    assert strategy.epochs >= 1 and strategy.lr > 0


def test_every_specific_option_applies_somewhere_and_has_a_test_value():
    assert set(SET_VALUES) == set(SPECIFIC_OPTIONS)
    assert all(applying_to(name) for name in SPECIFIC_OPTIONS)


PAIRS = [(s, o) for s in STRATEGIES for o in SPECIFIC_OPTIONS]


@pytest.mark.parametrize("strategy, option", PAIRS)
def test_an_option_is_accepted_exactly_where_the_table_says_it_applies(strategy, option):
    options = {"strategy": strategy, option: SET_VALUES[option]}
    if option in STRATEGIES[strategy].options:
        needs = {"lora_rank": {"tune": "lora"}, "regularizer_strength": {"regularizer": "l2-sp"}}.get(option, {})
        TrainConfig(data="x", **options, **needs)
    else:
        flag = "--freeze-bn" if option == "freeze_bn" else "--" + option.replace("_", "-")
        with pytest.raises(ConfigError, match=f"^{flag} applies to .*, not to --strategy {strategy}( \\(.*\\))?.$"):
            TrainConfig(data="x", **options)


def test_only_an_ensemble_takes_a_companion_and_it_must_be_a_head_computed_on_a_frozen_body():
    with pytest.raises(ValueError, match="only an ensemble takes a companion"):
        Strategy("alone", "x", 1, 1.0, ("head",), "the head", companion="multicut")
    with pytest.raises(ValueError, match="its companion must be a head computed on a frozen body"):
        register_strategy(Strategy("tuned", "x", 1, 1.0, (), "the heads", members=("head", "multicut"),
                                   companion="finetune"))  # fmt: skip
    assert "tuned" not in STRATEGIES
    assert "multicut on each --companions backbone" in describe(STRATEGIES["ensemble"])


def test_options_that_depend_on_another_option_say_so():
    with pytest.raises(ConfigError, match="--lora-rank applies to --tune lora, not to --tune all"):
        TrainConfig(data="x", strategy="finetune", lora_rank=8)
    with pytest.raises(ConfigError, match="--regularizer-strength applies with --regularizer"):
        TrainConfig(data="x", strategy="finetune", regularizer_strength=0.1)


def test_auto_takes_any_option_and_turning_into_a_strategy_drops_what_does_not_apply(caplog):
    config = TrainConfig(data="x", strategy="auto", tune="lora", init="xavier-uniform", layer_decay=0.5)
    finetune = for_strategy(config, "finetune")
    assert (finetune.tune, finetune.init, finetune.layer_decay) == ("lora", "kaiming-normal", 0.5)
    assert "--init does not apply to finetune" in caplog.text
    head = for_strategy(config, "head")
    assert (head.tune, head.layer_decay) == ("all", 0.85)


def test_finetune_defaults_to_the_measured_recipe_with_frozen_batchnorm_statistics():
    assert TrainConfig(data="x", strategy="finetune").resolved_freeze_bn is True
    assert TrainConfig(data="x", strategy="finetune", freeze_bn=False).resolved_freeze_bn is False
    assert TrainConfig(data="x", strategy="scratch").resolved_freeze_bn is False


def test_a_name_already_in_the_table_is_refused():
    with pytest.raises(ValueError, match="registered already"):
        register_strategy(dataclasses.replace(STRATEGIES["head"]))
    with pytest.raises(ValueError, match="registered already"):
        register_strategy(Strategy("auto", "x", 1, 1.0, ("head",), "the head"))


def test_an_ensemble_whose_members_share_a_stage_name_is_refused_at_registration():
    with pytest.raises(ValueError, match=r"^strategy 'heads': its members share the stage head; "):
        register_strategy(Strategy("heads", "two frozen heads", 1, 1.0, (), "two heads", members=("head", "truncate")))
    assert "heads" not in STRATEGIES


def names_spelled_outside_their_table(source: str, allowed: frozenset[str]) -> list[tuple[int, str]]:
    """Every string constant in ``source`` (f-strings' parts included) equal to a strategy or stage
    name not in ``allowed``: (line, name)."""
    names = set(STRATEGIES) | set(STAGES)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names - allowed
    )


def allowed_names(path: Path) -> frozenset[str]:
    """The strategy table spells every name; the stage table (``trainer/stages.py``) the stages'."""
    relative = path.relative_to(SRC).as_posix()
    return frozenset(STRATEGIES) | frozenset(STAGES) if relative == "strategies.py" else (
        frozenset(STAGES) if relative == "trainer/stages.py" else frozenset())  # fmt: skip


def test_no_strategy_or_stage_name_is_spelled_outside_the_tables():
    found = [
        f"{path.relative_to(SRC)}:{line}: {name!r}"
        for path in sorted(SRC.rglob("*.py"))
        for line, name in names_spelled_outside_their_table(path.read_text(), allowed_names(path))
    ]
    assert not found, "strategy or stage names outside their tables:\n" + "\n".join(found)


def test_the_check_reads_the_syntax_not_a_pattern():
    source = """
stage = getattr(stages, "probe")
rows = {"finetune": 1}
header = f"{'multicut':>8}"
print("finetune is fine inside a sentence")
"""
    assert names_spelled_outside_their_table(source, frozenset()) == [(2, "probe"), (3, "finetune"), (4, "multicut")]
    assert names_spelled_outside_their_table(source, frozenset(STAGES)) == [(3, "finetune")]


def test_a_stage_name_unknown_or_registered_twice_is_refused_in_one_line():
    from transferlab.errors import ConfigError
    from transferlab.trainer.stages import register_stage, stage_function

    with pytest.raises(ConfigError, match=r"no training stage is named 'heda'; the known ones: head, probe"):
        stage_function("heda")
    with pytest.raises(ValueError, match="a training stage named 'head' is registered already"):
        register_stage("head", stage_function("probe"))
    assert stage_function("head") is STAGES["head"]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_the_description_says_epochs_only_where_the_strategy_takes_steps(name):
    """A computed head has no epochs or rate to show; a network does, and an ensemble defers to its members."""
    strategy = STRATEGIES[name]
    text = describe(strategy)
    assert ("computed in closed form, no epochs" in text) == strategy.computed
    assert (f"at lr {strategy.lr:g}" in text) == (not strategy.computed and not strategy.members)
    assert strategy.computed == ("epochs" not in strategy.options)  # and the options say so too


def test_a_computed_head_says_why_it_refuses_epochs():
    with pytest.raises(ConfigError, match=r"^--epochs applies to finetune, ensemble, scratch, not to --strategy multicut "
                                          r"\(its head is computed in closed form: no steps to set\)\.$"):  # fmt: skip
        TrainConfig(data="x", strategy="multicut", epochs=40)
    with pytest.raises(ConfigError, match=r"^--augment applies to .*, not to --strategy head\.$"):  # not a step option
        TrainConfig(data="x", strategy="head", augment=True)
