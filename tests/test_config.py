"""One definition per parameter: validation with "must be X, got Y", and a plan merged by one rule."""

import dataclasses

import pytest

from transferlab.config import TrainConfig, field_help, for_strategy, with_plan
from transferlab.errors import ConfigError
from transferlab.forecast import Forecaster, OptionModel
from transferlab.plan import CutEvidence, make_plan
from transferlab.strategies import AUGMENT_MEMBERS_FROM, STRATEGIES


def _plan(favoured="truncate"):
    """A plan whose forecaster favours one option by the whole accuracy scale."""
    evidence = [CutEvidence(n, 8, p, 0.3, 0.0, None) for n, p in zip(("blocks.0", "blocks.2", "final"), (0.5, 0.9, 0.6))]
    models = {o: OptionModel((1.0 if o == favoured else 0.0,) + (0.0,) * 6, 0.01)
              for o in ("head", "truncate", "finetune", "scratch")}  # fmt: skip
    return make_plan(10, 1.0, 64, "efficientnet_lite0", evidence, forecaster=Forecaster((0.0,) * 6, (1.0,) * 6, models, 1))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"strategy": "fine-tune"}, "--strategy must be one of head, truncate, finetune, multicut, ensemble, scratch, auto, got 'fine-tune'"),
        ({"strategy": "head", "cut": "blocks.2"}, "use --strategy truncate"),
        ({"resolution": 4}, "--resolution must be between 16 and 1024 pixels, got 4"),
        ({"head_init": "nope"}, "--head-init must be one of .*got 'nope'"),
        ({"head_init": "lsuv"}, "--head-init lsuv needs a batch of data"),
        ({"epochs": 0}, "--epochs must be at least 1, got 0"),
        ({"lr": 0.0}, "--lr must be positive, got 0.0"),
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"layer_decay": 1.5}, r"--layer-decay must be in \(0, 1\], got 1.5"),
        ({"val_fraction": 1.0}, "--val-fraction must be between 0 and 1, got 1.0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"strategy": "head", "plan": "p.json"}, "--plan goes with --strategy auto, got --strategy head"),
        ({"data": None}, "DATA must name"),
        ({"strategy": "ensemble", "companions": ("none", "mobilenet_v2")}, "--companions none goes alone, got none,mobilenet_v2"),
    ],
)
def test_bad_values_fail_with_what_was_expected(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"data": "x", **changes})


def test_every_field_has_help_for_the_command_line():
    assert all(field_help(f.name)["help"] for f in dataclasses.fields(TrainConfig))


def test_plan_fills_what_the_user_left_unset():
    plan = _plan()
    assert plan.strategy == "truncate" and plan.cut == "blocks.2"
    merged = with_plan(TrainConfig(data="x", strategy="auto"), plan)
    assert (merged.strategy, merged.cut, merged.resolution) == ("truncate", "blocks.2", 64)
    assert merged.epochs is None and merged.lr is None  # a computed head takes neither
    assert merged.resolved_freeze_bn is False and merged.plan is None
    finetune = with_plan(TrainConfig(data="x", strategy="auto"), _plan("finetune"))
    assert (finetune.strategy, finetune.epochs, finetune.lr, finetune.freeze_bn) == ("finetune", 8, 3e-4, True)


def test_a_plan_for_the_ensemble_leaves_each_member_its_own_epochs_rate_and_batchnorm(caplog):
    plan = dataclasses.replace(_plan(), strategy="ensemble", cut="final", epochs=8, lr=3e-4, freeze_bn=True)
    merged = with_plan(TrainConfig(data="x", strategy="auto"), plan)
    assert (merged.strategy, merged.cut, merged.epochs, merged.lr, merged.freeze_bn) == ("ensemble", None, None, None, None)
    assert for_strategy(merged, "multicut").resolved_epochs == 1 and for_strategy(merged, "finetune").resolved_epochs == 8
    assert "does not apply" not in caplog.text  # nothing the members do not take was set


def test_user_cut_epochs_lr_and_resolution_win_over_the_plan(caplog):
    user = TrainConfig(data="x", strategy="auto", cut="blocks.0", epochs=3, lr=0.5, resolution=32, freeze_bn=False)
    merged = with_plan(user, _plan("finetune"))
    assert (merged.strategy, merged.cut, merged.epochs, merged.lr, merged.resolution) == ("finetune", "blocks.0", 3, 0.5, 32)
    assert merged.freeze_bn is False and "does not apply" not in caplog.text
    computed = with_plan(user, _plan())
    assert (computed.strategy, computed.cut, computed.resolution) == ("truncate", "blocks.0", 32)
    assert computed.epochs is None and computed.lr is None and computed.freeze_bn is None  # said, and left out:
    assert all(f"{flag} does not apply to truncate" in caplog.text for flag in ("--epochs", "--lr", "--freeze-bn"))



def test_no_freeze_bn_wins_over_a_finetune_plan():
    plan = _plan("finetune")
    assert plan.strategy == "finetune" and plan.freeze_bn
    assert with_plan(TrainConfig(data="x", strategy="auto", freeze_bn=False), plan).freeze_bn is False
    assert with_plan(TrainConfig(data="x", strategy="auto"), plan).freeze_bn is True


def test_a_plan_that_augments_its_network_carries_it_and_a_typed_no_augment_wins(caplog):
    plan = dataclasses.replace(_plan("finetune"), augment=True)
    assert with_plan(TrainConfig(data="x", strategy="auto"), plan).resolved_augment is True
    assert with_plan(TrainConfig(data="x", strategy="auto", augment=False), plan).resolved_augment is False
    plain = with_plan(TrainConfig(data="x", strategy="auto"), _plan("finetune"))
    assert plain.augment is None and plain.resolved_augment is False  # not written in as if typed
    assert for_strategy(plain, "multicut") and "--augment does not apply" not in caplog.text


def test_an_ensembles_network_members_augment_from_the_tables_size_unless_typed():
    threshold = STRATEGIES["ensemble"].augment_members_from
    assert threshold == AUGMENT_MEMBERS_FROM
    default = TrainConfig(data="x", strategy="ensemble")
    assert default.members_augment(threshold) and not default.members_augment(threshold - 0.5)
    assert TrainConfig(data="x", strategy="ensemble", augment=False).members_augment(10 * threshold) is False
    assert TrainConfig(data="x", strategy="ensemble", augment=True).members_augment(1) is True
    assert default.resolved_augment is False  # a strategy alone: off unless typed
    assert not any(s.augments_members(10 * threshold) for s in STRATEGIES.values() if not s.members)


def test_the_companions_are_the_other_offline_backbones_unless_typed_and_none_for_a_backbone_of_ones_own():
    from transferlab.offline import OFFLINE_BACKBONES

    default = TrainConfig(data="x", strategy="ensemble")
    assert default.resolved_companions() == tuple(b for b in OFFLINE_BACKBONES if b != "efficientnet_lite0")
    assert default.resolved_companions("mobilenet_v2") == OFFLINE_BACKBONES[:3]  # beside the source a plan chose
    assert TrainConfig(data="x", strategy="ensemble", backbone="resnet18").resolved_companions() == ()
    assert TrainConfig(data="x", strategy="ensemble", weights="mine.pt").resolved_companions() == ()
    assert TrainConfig(data="x", strategy="ensemble", pretrained=False).resolved_companions() == ()
    typed = TrainConfig(data="x", strategy="ensemble", backbone="resnet18", companions=("mobilenet_v2", "resnet18"))
    assert typed.resolved_companions() == ("mobilenet_v2",)  # never the run's own backbone twice
    assert TrainConfig(data="x", strategy="ensemble", companions=("none",)).resolved_companions() == ()
    assert for_strategy(typed, "multicut", companions=None).companions is None


def test_a_backbone_whose_weights_package_is_missing_is_no_default_companion_and_says_so(monkeypatch, caplog):
    from transferlab import offline

    missing = {**offline.OFFLINE_WEIGHTS, "mobilenet_v2": "no_such_weights_package"}
    monkeypatch.setattr(offline, "OFFLINE_WEIGHTS", missing)
    offline.installed_offline_backbones.cache_clear()
    try:
        default = TrainConfig(data="x", strategy="ensemble")
        assert default.resolved_companions() == ("efficientnet_lite1", "efficientnet_lite2")
        assert "No weights installed for mobilenet_v2" in caplog.text
        typed = TrainConfig(data="x", strategy="ensemble", companions=("mobilenet_v2",))
        assert typed.resolved_companions() == ("mobilenet_v2",)  # typed: kept, and its loader says how to install it
    finally:
        monkeypatch.undo()
        offline.installed_offline_backbones.cache_clear()
    assert TrainConfig(data="x", strategy="ensemble").resolved_companions()[-1] == "mobilenet_v2"


def test_user_cut_turns_a_head_plan_into_truncate_and_cannot_go_with_scratch():
    head = _plan("head")
    assert head.strategy == "head"
    merged = with_plan(TrainConfig(data="x", strategy="auto", cut="blocks.0"), head)
    assert (merged.strategy, merged.cut) == ("truncate", "blocks.0")
    scratch = _plan("scratch")
    assert scratch.strategy == "scratch"
    with pytest.raises(ConfigError, match="cannot go with --cut blocks.0"):
        with_plan(TrainConfig(data="x", strategy="auto", cut="blocks.0"), scratch)


def test_the_resolved_configuration_says_what_ran_every_default_filled_in():
    finetune = TrainConfig(data="x", strategy="finetune").resolved("final", 112)
    assert (finetune["freeze_bn"], finetune["epochs"], finetune["lr"], finetune["cut"], finetune["resolution"]) == (
        True, 8, 3e-4, "final", 112)  # typed: freeze_bn None, epochs None, lr None
    assert TrainConfig(data="x", strategy="finetune", regularizer="l2-sp").resolved("final", 64)["regularizer_strength"] == 0.01
    head = TrainConfig(data="x", strategy="head").resolved("final", 64)
    assert not {"epochs", "lr", "freeze_bn", "interpolate"} & set(head)  # options that do not apply


def test_class_weight_defaults_come_from_the_strategy_table_and_a_typed_one_wins():
    """Measured on imbalanced folders (benchmarks/imbalanced.py): weighting helped the closed-form
    heads (multicut's, head's) and the combination, hurt the networks trained by epochs (their best
    epoch is picked on a handful of weighted validation images); so each entry carries its own default."""
    from transferlab.strategies import STRATEGIES

    defaults = {name: TrainConfig(data="d", strategy=name).resolved_class_weight for name in STRATEGIES}
    assert defaults == {name: s.class_weight for name, s in STRATEGIES.items()}
    assert defaults["multicut"] == defaults["ensemble"] == defaults["head"] == defaults["truncate"] == "balanced"
    assert defaults["finetune"] == defaults["scratch"] == "none"
    assert TrainConfig(data="d", strategy="multicut", class_weight="none").resolved_class_weight == "none"
    assert TrainConfig(data="d", strategy="finetune", class_weight="balanced").resolved("final", 112)["class_weight"] == "balanced"
