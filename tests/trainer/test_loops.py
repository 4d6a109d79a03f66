"""The training loops: the head on features; the whole network (layer-wise rates, BatchNorm policy,
checkpoints, divergence)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError, TrainingDiverged
from transferlab.heads import make_head
from transferlab.sources import build_backbone
from transferlab.surgery import TransferModel, body_at
from transferlab.trainer.loops import (
    CHECKPOINT_FILE,
    NetworkTraining,
    _set_unfrozen,
    fit_network,
    layer_groups,
)


def _cnn_model():
    backbone = build_backbone("cnn-small", pretrained=False)
    return TransferModel(body_at(backbone), make_head(backbone.num_features, 3), backbone.preprocessing)


def _data(n=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    pixels = (torch.rand(n, 3, 16, 16, generator=generator) * 60).to(torch.uint8)
    pixels[y == 0, 0] += 150  # a red, a green and a blue class
    pixels[y == 1, 1] += 150
    pixels[y == 2, 2] += 150
    return pixels, y


def test_layer_decay_gives_earlier_blocks_smaller_rates():
    backbone = build_backbone("efficientnet_lite0")
    model = TransferModel(body_at(backbone), make_head(1280, 3), backbone.preprocessing)
    groups = layer_groups(model, NetworkTraining(epochs=10, lr=1e-3, layer_decay=0.8))
    rates = [g["lr"] for g in groups]
    assert rates[-1] == pytest.approx(1e-3)  # the head
    assert rates == sorted(rates) and rates[0] < 1e-3 * 0.8**10
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_gradual_unfreezing_opens_the_body_top_down():
    model = _cnn_model()
    groups = [{"params": [p]} for p in model.body.parameters()] + [{"params": list(model.head.parameters())}]
    _set_unfrozen(groups, 0, NetworkTraining(epochs=4, lr=1e-3, gradual_unfreeze=True))
    trainable = [p.requires_grad for g in groups[:-1] for p in g["params"]]
    assert not trainable[0] and trainable[-1] and sum(trainable) == len(trainable) // 2
    _set_unfrozen(groups, 1, NetworkTraining(epochs=4, lr=1e-3, gradual_unfreeze=True))
    assert all(p.requires_grad for g in groups for p in g["params"])


def test_gradual_unfreezing_through_a_real_run_keeps_the_stem_still_at_first(monkeypatch):
    from transferlab.trainer import loops

    model = _cnn_model()
    stem, top = model.body.stages[0][0].weight, model.body.stages[2][0].weight
    start = {"stem": stem.detach().clone(), "top": top.detach().clone()}
    seen = []
    original = loops._set_unfrozen

    def recording(groups, epoch, settings):
        seen.append((epoch, stem.detach().clone(), top.detach().clone()))
        original(groups, epoch, settings)

    monkeypatch.setattr(loops, "_set_unfrozen", recording)
    pixels, y = _data()
    settings = NetworkTraining(epochs=4, lr=3e-3, batch_size=16, patience=10, gradual_unfreeze=True, weight_decay=0.0)
    fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings)
    (_, stem_after_first, top_after_first) = next(row for row in seen if row[0] == 1)[:3]
    assert torch.equal(stem_after_first, start["stem"])  # frozen in the first epoch
    assert not torch.equal(top_after_first, start["top"])  # the top trained from the start
    assert not torch.equal(stem.detach(), start["stem"])  # and the stem once it was opened


def test_a_scratch_body_is_drawn_from_the_seed_whatever_the_run_drew_before():
    """Decoding images draws random numbers where the cache misses and none where it hits: the
    re-initialized body must not depend on it (it did: a resumed scratch run, its images cached,
    trained another network than the uninterrupted one)."""
    from transferlab.config import TrainConfig
    from transferlab.trainer.network import setup_network

    bodies = []
    for draws in (1, 1000):
        model = _cnn_model()
        torch.rand(draws)
        setup_network(model, TrainConfig(data="x", strategy="scratch"))
        bodies.append({k: v.clone() for k, v in model.body.state_dict().items()})
    assert all(torch.equal(bodies[0][k], bodies[1][k]) for k in bodies[0])


def test_augment_batch_crops_and_flips_a_real_batch():
    from transferlab.trainer.loops import augment_batch

    pixels, _ = _data(8)
    torch.manual_seed(0)
    augmented = augment_batch(pixels)
    assert augmented.shape == pixels.shape and augmented.dtype == torch.uint8
    assert any(not torch.equal(a, p) for a, p in zip(augmented, pixels))
    torch.manual_seed(0)
    assert torch.equal(augment_batch(pixels), augmented)  # seeded: resume reproduces it
    # a crop of the image, resized: the colour that makes the class survives
    assert (augmented.float().mean((2, 3)).argmax(1) == pixels.float().mean((2, 3)).argmax(1)).all()


def test_freeze_bn_keeps_statistics_while_weights_train():
    model = _cnn_model()
    model.freeze_bn = True
    before = model.body.stages[0][1].running_mean.clone()
    model.train()
    model(torch.rand(8, 3, 16, 16)).sum().backward()
    assert torch.equal(before, model.body.stages[0][1].running_mean)
    assert model.body.stages[0][1].weight.grad is not None


def test_training_learns_and_resume_reproduces_an_uninterrupted_run(tmp_path):
    pixels, y = _data()
    settings = NetworkTraining(epochs=4, lr=3e-3, batch_size=16, patience=10)

    def run(directory, resume=False):
        torch.manual_seed(0)
        model = _cnn_model()
        history = fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings,
                              directory, resume)  # fmt: skip
        return model, history

    _, full = run(tmp_path / "a")
    assert full[-1]["train_loss"] < full[0]["train_loss"] and full[-1]["val_accuracy"] == 1.0
    # An interrupted run: stopped inside epoch 2, then resumed from the epoch-1 checkpoint.
    torch.manual_seed(0)
    part_model = _cnn_model()
    groups = layer_groups(part_model, settings)
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after(part_model, groups, pixels, y, settings, tmp_path / "b", batches=5)
    _, resumed = run(tmp_path / "b", resume=True)
    assert resumed == full
    other = NetworkTraining(epochs=5, lr=3e-3, batch_size=16, patience=10)
    model = _cnn_model()
    with pytest.raises(ConfigError, match="other settings"):
        fit_network(model, layer_groups(model, other), pixels, y, pixels[:12], y[:12], other, tmp_path / "b", True)


def test_a_finished_run_keeps_only_its_weights_and_resumes_to_them_without_training(tmp_path):
    pixels, y = _data()
    settings = NetworkTraining(epochs=3, lr=3e-3, batch_size=16, patience=10)
    torch.manual_seed(0)
    model = _cnn_model()
    groups = layer_groups(model, settings)
    full = fit_network(model, groups, pixels, y, pixels[:12], y[:12], settings, tmp_path)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["finished"] and "optimizer" not in state and "best_state" not in state
    assert state["history"] == full and state["epoch"] == len(full) - 1
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert (tmp_path / CHECKPOINT_FILE).stat().st_size < 1.5 * weights  # one copy of the weights, no moments
    for key, tensor in model.state_dict().items():
        assert torch.equal(state["model"][key], tensor)

    torch.manual_seed(1)
    again = _cnn_model()  # other starting weights: the checkpoint alone gives the result
    passes = {"n": 0}
    original = again.forward
    again.forward = lambda x: passes.__setitem__("n", passes["n"] + 1) or original(x)
    resumed = fit_network(again, layer_groups(again, settings), pixels, y, pixels[:12], y[:12], settings, tmp_path, True)
    assert resumed == full and passes["n"] == 0
    for key, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor)


def test_early_stopping_is_off_where_validation_is_too_small_to_choose_an_epoch():
    """Fewer than ten validation images in the smallest class choose no epoch: the whole schedule
    runs and its last epoch's weights are kept; a patience given, or a larger validation split,
    keeps the best validation epoch's (here the first: validation's labels are the wrong ones, so
    its loss rises as the network learns)."""
    from transferlab.features import predict_pixels
    from transferlab.metrics import evaluate_logits
    from transferlab.trainer.loops import CHOOSING_IMAGES, PATIENCE, resolved_patience

    assert resolved_patience(None, np.repeat(np.arange(3), CHOOSING_IMAGES - 1))[0] == 0
    assert resolved_patience(None, np.repeat(np.arange(3), CHOOSING_IMAGES))[0] == PATIENCE
    assert resolved_patience(None, np.array([0] * 40 + [1] * 3))[0] == 0  # the smallest class decides
    assert resolved_patience(5, np.zeros(2, dtype=int)) == (5, "as given")
    assert resolved_patience(None, np.repeat(np.arange(3), 2), pretrained=False)[0] == PATIENCE  # scratch: not measured
    pixels, y = _data()
    wrong = (y[:12] + 1) % int(y.max() + 1)
    kept = {}
    for patience in (None, 10):
        torch.manual_seed(0)
        model = _cnn_model()
        settings = NetworkTraining(epochs=4, lr=3e-3, batch_size=16, patience=patience)
        history = fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], wrong, settings)
        kept[patience] = evaluate_logits(predict_pixels(model, pixels[:12], 16), wrong)[0]
        assert len(history) == 4
    losses = [row["val_loss"] for row in history]
    assert losses[-1] > min(losses) + 0.01  # the last epoch is not the best: the two rules keep different weights
    assert kept[None] == pytest.approx(losses[-1], abs=1e-4) and kept[10] == pytest.approx(min(losses), abs=1e-4)


def _interrupt_after(model, groups, pixels, y, settings, directory, batches):
    """Run fit_network but raise KeyboardInterrupt inside epoch 2 (after ``batches`` forward passes)."""
    calls = {"n": 0}
    original = model.forward

    def forward(x):
        calls["n"] += 1
        if calls["n"] > batches:
            raise KeyboardInterrupt
        return original(x)

    model.forward = forward
    fit_network(model, groups, pixels, y, pixels[:12], y[:12], settings, directory)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    pixels, y = _data()
    model = _cnn_model()
    calls = {"n": 0}
    original = model.head.forward

    def head(features):  # becomes NaN in the second epoch (3 train batches + 1 val pass per epoch)
        calls["n"] += 1
        out = original(features)
        return out * float("nan") if calls["n"] > 5 else out

    model.head.forward = head
    settings = NetworkTraining(epochs=3, lr=1e-3, batch_size=16)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2.*last good checkpoint"):
        fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings, tmp_path)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 0


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    pixels, y = _data()
    model = _cnn_model()
    settings = NetworkTraining(epochs=2, lr=1e-3, batch_size=16)
    real_save = torch.save
    saves = {"n": 0}

    def failing_save(obj, path, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            real_save(obj, path, *args, **kwargs)  # a partial file exists when the disk fills up
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="previous checkpoint is intact"):
        fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings, tmp_path)
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["epoch"] == 0
    assert not (tmp_path / "checkpoint.tmp").exists()


def test_the_closed_form_head_tempers_on_leave_one_out_scores_where_validation_is_too_small_to_choose_by():
    """Two validation images a class, labelled against the training, would set the temperature as
    six perfect ones once did; under :data:`CHOOSING_IMAGES` a class the head's leave-one-out scores
    temper it instead, so the validation labels change nothing; from there on they do."""
    from transferlab.ensemble import fit_temperature
    from transferlab.trainer.loops import CHOOSING_IMAGES, fit_ridge_head
    from transferlab.transferability import ridge_classifier

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 50)
    x = rng.normal(0, 1, (2, 16))[y] + rng.normal(0, 1, (100, 16))

    def temperature(val_positions, val_y):
        return fit_ridge_head(make_head(16, 2), x, y, x[val_positions], val_y)[0][0]["temperature"]

    few = [0, 1, 50, 51]
    assert temperature(few, np.array([1, 1, 0, 0])) == temperature(few, np.array([0, 0, 1, 1]))
    loo = ridge_classifier(x, y, 2).loo_scores
    assert temperature(few, np.array([0, 0, 1, 1])) == pytest.approx(
        fit_temperature(torch.from_numpy(loo).float(), torch.from_numpy(y), None), rel=1e-6)  # fmt: skip
    enough = list(range(CHOOSING_IMAGES)) + list(range(50, 50 + CHOOSING_IMAGES))
    right, wrong = np.repeat([0, 1], CHOOSING_IMAGES), np.repeat([1, 0], CHOOSING_IMAGES)
    assert temperature(enough, right) != temperature(enough, wrong)


def test_the_closed_form_head_learns_features_of_tiny_scale_and_takes_raw_features():
    from transferlab.trainer.frozen import head_fitter

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = (rng.normal(0, 3, (4, 64))[y] + rng.normal(0, 1, (40, 64))).astype(np.float32) * 1e-3 + 5  # tiny spread, offset
    head = make_head(64, 4)
    history = head_fitter(x, y, "none", None, [64])[0](head, x, y)
    assert len(history) == 1 and history[0]["kept"] == 1
    with torch.no_grad():
        assert (head(torch.as_tensor(x)).argmax(1).numpy() == y).mean() == 1.0  # raw features in, folded scale


def test_balanced_class_weights_by_hand():
    from transferlab.trainer.loops import loss_weights

    weights = loss_weights(torch.tensor([0, 0, 0, 1]), 2, "balanced")
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    assert loss_weights(torch.tensor([0, 1]), 2, "none") is None


def test_the_closed_form_head_honours_either_balanced_class_weight():
    """``multicut``'s ridge head draws no batches: under either balanced kind its images' squared
    errors are weighted by class, and the minority recall rises."""
    from transferlab.trainer.loops import fit_ridge_head

    rng = np.random.default_rng(0)
    y = np.array([0] * 300 + [1] * 15)
    x = (rng.normal(0, 1, (len(y), 8)) + y[:, None] * 1.2).astype(np.float32)
    vy = np.array([0] * 200 + [1] * 200)
    vx = (rng.normal(0, 1, (len(vy), 8)) + vy[:, None] * 1.2).astype(np.float32)
    recalls = {}
    for class_weight in ("none", "balanced", "balanced-sampling"):
        head = make_head(8, 2)
        fit_ridge_head(head, x, y, vx, vy, class_weight=class_weight)
        with torch.no_grad():
            predicted = head(torch.from_numpy(vx)).argmax(1).numpy()
        recalls[class_weight] = (predicted[vy == 1] == 1).mean()
    assert recalls["balanced"] > recalls["none"] + 0.2, recalls
    assert recalls["balanced-sampling"] == recalls["balanced"]


def test_the_closed_form_head_fitting_validation_images_still_scores_them_out_of_sample():
    """With ``fit_val`` the validation images join the fit, yet the validation logits it returns
    are their leave-one-out ones: on pure noise (more features than images) the head has learned
    every validation image by heart, and the logits it reports stay at chance."""
    from transferlab.trainer.loops import fit_ridge_head

    rng = np.random.default_rng(1)
    y, vy = np.arange(60) % 3, np.arange(30) % 3
    x, vx = rng.normal(size=(60, 200)).astype(np.float32), rng.normal(size=(30, 200)).astype(np.float32)
    head = make_head(200, 3)
    history, val_logits = fit_ridge_head(head, x, y, vx, vy, fit_val=True)
    with torch.no_grad():
        in_sample = head(torch.from_numpy(vx)).argmax(1).numpy()
    assert (in_sample == vy).mean() > 0.9  # 0.97 measured
    assert (val_logits.argmax(1).numpy() == vy).mean() < 0.5 and history[0]["val_accuracy"] < 0.5  # 0.30 measured


def test_fitting_the_validation_images_too_scores_unseen_images_better_where_training_ones_are_few():
    """Two training images a class and eighty validation ones: the head fitted on both classifies
    unseen images far better than the one fitted on the two (0.72 against 0.42 measured), and its
    validation accuracy (leave-one-out) tells about as much as its test accuracy."""
    from transferlab.trainer.loops import fit_ridge_head

    rng = np.random.default_rng(1)

    def sample(n):
        labels = np.arange(n) % 4
        return (rng.normal(size=(n, 30)) + 2 * np.eye(4, 30)[labels]).astype(np.float32), labels

    (x, y), (vx, vy), (tx, ty) = sample(8), sample(80), sample(2000)
    accuracies = {}
    for fit_val in (False, True):
        head = make_head(30, 4)
        history, _ = fit_ridge_head(head, x, y, vx, vy, fit_val=fit_val)
        with torch.no_grad():
            accuracies[fit_val] = (head(torch.from_numpy(tx)).argmax(1).numpy() == ty).mean()
    assert accuracies[True] > accuracies[False] + 0.15, accuracies
    assert abs(history[0]["val_accuracy"] - accuracies[True]) < 0.15


def test_balanced_sampling_draws_every_class_about_equally():
    from transferlab.trainer.loops import epoch_order

    labels = torch.tensor([0] * 900 + [1] * 100)
    drawn = labels[epoch_order(labels, "balanced-sampling", torch.Generator().manual_seed(0))]
    assert len(drawn) == 1000 and abs(int((drawn == 1).sum()) - 500) < 60
    assert sorted(epoch_order(labels, "none").tolist()) == list(range(1000))


def test_bias_only_tuning_leaves_every_other_weight_bit_identical():
    model = _cnn_model()
    before = {name: p.detach().clone() for name, p in model.body.named_parameters()}
    pixels, y = _data()
    settings = NetworkTraining(epochs=2, lr=1e-2, batch_size=16, patience=10, tune="bias")
    groups = layer_groups(model, settings)
    trainable = sum(p.numel() for g in groups[:-1] for p in g["params"])
    assert trainable / sum(p.numel() for p in model.body.parameters()) < 0.05
    fit_network(model, groups, pixels, y, pixels[:12], y[:12], settings)
    for name, p in model.body.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == name.endswith("bias"), name


def test_norm_tuning_trains_only_the_normalization_layers():
    from transferlab.trainer.loops import tunable

    body = _cnn_model().body
    chosen = tunable(body, "norm")
    names = {name for name, p in body.named_parameters() if id(p) in chosen}
    assert names == {n for n, _ in body.named_parameters() if n.split(".")[-2] in ("1", "4") and n.startswith("stages")}


def test_l2_sp_pulls_towards_the_starting_weights():
    from transferlab.trainer.loops import l2_sp_penalty

    weight = nn.Parameter(torch.tensor([1.0, -2.0]))
    start = torch.tensor([0.5, 0.0])
    l2_sp_penalty({weight: start}, 0.1).backward()
    assert torch.allclose(weight.grad, 0.1 * (weight.detach() - start))  # descent moves towards the start
    distances = {}
    for regularizer in ("none", "l2-sp"):
        model = _cnn_model()
        start = torch.cat([p.detach().flatten().clone() for p in model.body.parameters()])
        pixels, y = _data()
        settings = NetworkTraining(epochs=3, lr=1e-2, batch_size=16, patience=10, regularizer=regularizer,
                                   regularizer_strength=5.0)  # fmt: skip
        fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings)
        distances[regularizer] = float((torch.cat([p.detach().flatten() for p in model.body.parameters()]) - start).norm())
    assert distances["l2-sp"] < distances["none"]


def test_one_cycle_rises_to_the_rate_then_falls_far_below_it():
    from transferlab.trainer.loops import _schedule

    factor = _schedule(NetworkTraining(epochs=10, lr=1e-3, schedule="one-cycle"), 10)
    values = [factor(step) for step in range(100)]
    assert values[0] == pytest.approx(1 / 25) and max(values) == pytest.approx(1.0, abs=1e-3)
    assert values.index(max(values)) == 30 and values[-1] < 1e-3


def test_bss_penalizes_the_smallest_singular_value_and_trains():
    from transferlab.trainer.loops import bss_penalty

    features = torch.diag(torch.tensor([3.0, 2.0, 0.5])).requires_grad_(True)
    assert bss_penalty(features, 1.0).item() == pytest.approx(0.25)
    bss_penalty(features, 1.0).backward()
    assert features.grad[2, 2].item() == pytest.approx(1.0) and features.grad[0, 0].item() == pytest.approx(0.0)
    model = _cnn_model()
    pixels, y = _data()
    settings = NetworkTraining(epochs=3, lr=3e-3, batch_size=16, patience=10, regularizer="bss", regularizer_strength=1e-3)
    history = fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_lora_trains_few_parameters_and_merges_into_the_same_logits():
    from transferlab.trainer.loops import tunable
    from transferlab.trainer.lora import add_lora, merge_lora

    lite0 = build_backbone("efficientnet_lite0").model
    add_lora(lite0, rank=4)
    share = len(tunable(lite0, "lora")) and sum(p.numel() for p in lite0.parameters() if id(p) in tunable(lite0, "lora"))
    assert share / sum(p.numel() for p in lite0.parameters()) < 0.05
    model = _cnn_model()
    before = {name: p.detach().clone() for name, p in model.body.named_parameters()}
    add_lora(model.body, rank=2)
    pixels, y = _data()
    settings = NetworkTraining(epochs=2, lr=1e-2, batch_size=16, patience=10, tune="lora")
    fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings)
    model.eval()
    with torch.no_grad():
        adapted = model(pixels[:8].float() / 255)
        merge_lora(model.body)
        merged = model(pixels[:8].float() / 255)
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert {name for name, _ in model.body.named_parameters()} == set(before)  # the plain architecture again
    assert any(not torch.equal(p, before[name]) for name, p in model.body.named_parameters() if name.endswith("0.weight"))


def test_lora_update_is_peft_conv2d_lora():
    peft = pytest.importorskip("peft")
    from transferlab.trainer.lora import add_lora

    torch.manual_seed(0)
    ours, x = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1)), torch.rand(2, 6, 9, 9)
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0"]), copy.deepcopy(ours))
    add_lora(ours, rank=2)
    update = ours[0].parametrizations.weight[0]
    assert update.lora_A.shape == theirs[0].lora_A["default"].weight.flatten(1).shape
    with torch.no_grad():
        update.lora_B.normal_()
        theirs[0].lora_A["default"].weight.copy_(update.lora_A.view(2, 6, 3, 3))
        theirs[0].lora_B["default"].weight.copy_(update.lora_B.view(8, 2, 1, 1))
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_augment_batch_without_flips_crops_as_with_them_and_never_mirrors():
    from transferlab.trainer.loops import augment_batch

    pixels, _ = _data(16)
    torch.manual_seed(0)
    flipped = augment_batch(pixels)
    torch.manual_seed(0)
    cropped = augment_batch(pixels, flips=False)  # the same draws: the same crops
    mirrored = [not torch.equal(c, f) for c, f in zip(cropped, flipped)]
    assert any(mirrored) and not all(mirrored)
    assert all(torch.equal(c, f.flip(-1)) for c, f, m in zip(cropped, flipped, mirrored) if m)
