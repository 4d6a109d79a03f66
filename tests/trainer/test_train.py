"""Training through the public API on small data: outputs agree with the saved model run on images."""

import json

import pytest
import torch

import transferlab as tl
from transferlab.bundle import load_bundle
from transferlab.data import split_dataset
from transferlab.datasets import load_dataset
from transferlab.features import compute_outputs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import write_folder

    root = tmp_path_factory.mktemp("api")
    data = write_folder(root / "colours", per_class=10)
    config = tl.TrainConfig(data=str(data), strategy="head", out=str(root / "run"), resolution=48, val_fraction=0.3,
                            cache_dir=str(root / "cache"))  # fmt: skip
    return root, config, tl.train(config).metrics


def test_saved_model_on_images_agrees_with_cached_feature_metrics(run):
    root, config, metrics = run
    model, info = load_bundle(root / "run" / "model")
    splits = split_dataset(load_dataset(config.data), config.val_fraction, seed=config.seed)
    logits = compute_outputs(model, splits.val, info.preprocessing.resolution).values
    accuracy = float((logits.argmax(1) == splits.val.labels).mean())
    assert accuracy == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    loss = torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(splits.val.labels)).item()
    assert loss == pytest.approx(metrics["val_loss"], rel=1e-4)


def test_second_run_hits_the_cache_with_identical_results(run):
    root, config, first = run
    again = tl.train(config).metrics
    assert first["feature_cache"] == "miss" and again["feature_cache"] == "hit"
    assert again["val_accuracy"] == first["val_accuracy"] and again["history"] == first["history"]
    assert json.loads((root / "run" / "metrics.json").read_text())["feature_cache"] == "hit"


def test_the_head_is_computed_with_the_validation_images_unless_held_out(run, tmp_path):
    root, config, metrics = run
    assert len(metrics["history"]) == 1 and metrics["history"][0]["penalty"] > 0  # closed form: no epochs
    assert metrics["validation"] == "fitted too, scored leave-one-out" and metrics["resolved_config"]["class_weight"] == "balanced"
    held = tl.train(config, holdout=True, out=str(tmp_path / "held")).metrics
    assert "validation" not in held and held["val_accuracy"] == 1.0
    fitted, held_out = (load_bundle(folder / "model")[0].head.fc.weight for folder in (root / "run", tmp_path / "held"))
    assert fitted.shape == held_out.shape and not torch.allclose(fitted, held_out)  # fitted on more images


@pytest.mark.parametrize(("cut", "frozen"), [("final", "head"), ("all", "multicut")])
@pytest.mark.parametrize("holdout", [False, True])
def test_lp_fts_probe_is_the_frozen_head_computed_on_the_images_the_network_trains_on(run, tmp_path, cut, frozen, holdout):
    """The probe that starts ``finetune`` is the frozen head's closed form on the images the network
    then trains on: here (3 validation images a class, nothing chosen on them) the training and
    validation images, as ``head`` fits them; with ``--holdout`` the training split alone, as ``head
    --holdout``. Over every cut it is ``multicut``'s, each tap standardized and weighed alike; on a
    balanced folder, where the frozen heads' balanced class weights are all 1."""
    _, config, _ = run
    head = tl.train(config, strategy=frozen, holdout=holdout, out=str(tmp_path / "head")).metrics["history"][0]
    probe = tl.train(config, strategy="finetune", cut=cut, epochs=1, holdout=holdout,
                     out=str(tmp_path / "ft")).metrics["probe_history"]  # fmt: skip
    assert len(probe) == 1
    for key in ("penalty", "loo_accuracy", "temperature", "train_loss", "val_loss", "val_accuracy"):
        assert probe[0][key] == pytest.approx(head[key], rel=1e-5), key


@pytest.mark.parametrize(("options", "trains_on_validation"), [
    ({}, True), ({"holdout": True}, False), ({"patience": 2}, False), ({"val_fraction": 0.5}, True),
])  # fmt: skip
def test_a_pretrained_network_trains_on_the_validation_images_where_nothing_is_chosen_on_them(
        run, tmp_path, monkeypatch, options, trains_on_validation):  # fmt: skip
    """With fewer than 10 validation images in the smallest class no epoch and no alpha are chosen on
    them, so the network trains on them too (and says so), unless ``--holdout`` keeps them out or
    ``--patience`` chooses an epoch on them."""
    from transferlab.trainer import network

    fitted = []
    real = network.fit_network
    monkeypatch.setattr(network, "fit_network", lambda model, groups, x, y, *rest, **kw: fitted.append(len(y)) or
                        real(model, groups, x, y, *rest, **kw))  # fmt: skip
    _, config, _ = run
    metrics = tl.train(config, strategy="finetune", epochs=1, out=str(tmp_path / "ft"), **options).metrics
    assert fitted == [metrics["num_train"] + metrics["num_val"] if trains_on_validation else metrics["num_train"]]
    assert (metrics.get("validation") == network.TRAINED_ON_VALIDATION) == trains_on_validation


def test_a_val_folder_is_never_trained_on(tmp_path, monkeypatch):
    """The user's own ``val/`` folder is held out however few images it has."""
    from conftest import write_folder

    from transferlab.trainer import network

    write_folder(tmp_path / "d" / "train", per_class=6)
    write_folder(tmp_path / "d" / "val", per_class=2, seed=1)
    fitted = []
    real = network.fit_network
    monkeypatch.setattr(network, "fit_network", lambda model, groups, x, y, *rest, **kw: fitted.append(len(y)) or
                        real(model, groups, x, y, *rest, **kw))  # fmt: skip
    metrics = tl.train(str(tmp_path / "d"), strategy="finetune", epochs=1, resolution=48, out=str(tmp_path / "ft"),
                       cache_dir=str(tmp_path / "cache")).metrics  # fmt: skip
    assert fitted == [metrics["num_train"]] and "validation" not in metrics


def test_truncate_trains_a_head_on_an_early_stage(run, tmp_path):
    _, config, _ = run

    metrics = tl.train(config, strategy="truncate", cut="blocks.2", out=str(tmp_path / "t")).metrics
    model, info = load_bundle(tmp_path / "t" / "model")
    assert metrics["cut"] == "blocks.2" and info.num_features == 40
    assert sum(p.numel() for p in model.parameters()) < 100_000


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from conftest import split_folders

    return split_folders(tmp_path_factory.mktemp("strategies"), 16, 5)


def _config(root, **changes):
    steps = {} if tl.STRATEGIES[changes.get("strategy", "head")].computed else {"batch_size": 16}
    return tl.TrainConfig(**{"data": str(root / "d"), "strategy": "head", "out": str(root / "run"), "resolution": 32,
                             "val_fraction": 0.25, "cache_dir": str(root / "cache"), **steps, **changes})  # fmt: skip


def test_finetune_probes_then_trains_everything(small_data):
    metrics = tl.train(_config(small_data, strategy="finetune", epochs=2, lr=1e-3,
                               freeze_bn=True, out=str(small_data / "ft"))).metrics  # fmt: skip
    assert metrics["probe_history"][-1]["train_accuracy"] == 1.0  # the probe converged before the body moved
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert metrics["test_accuracy"] >= 0.9 and metrics["num_test"] == 12
    assert (small_data / "ft" / "checkpoint.pt").exists() and (small_data / "ft" / "history.csv").exists()
    model, info = load_bundle(small_data / "ft" / "model")
    assert info.strategy == "finetune"
    backbone = tl.build_backbone("efficientnet_lite0")
    changed = any(not torch.equal(a, b) for a, b in zip(model.body.state_dict().values(), backbone.model.state_dict().values()))
    assert changed, "fine-tuning must move the body's weights"


def test_scratch_reinitializes_the_body(small_data):
    metrics = tl.train(_config(small_data, strategy="scratch", backbone="cnn-small", epochs=3, lr=3e-3,
                               out=str(small_data / "sc"))).metrics  # fmt: skip
    assert metrics["weights_source"] == "kaiming-normal init" and len(metrics["history"]) <= 3
    assert "features_seconds" not in metrics and metrics["network_seconds"] > 0


def test_pretrained_bundle_is_a_backbone_with_its_cut_points(small_data):
    source = small_data / "source"
    tl.train(_config(small_data, strategy="scratch", backbone="cnn-small", epochs=2, classes="blue,red", out=str(source)))
    backbone = tl.build_backbone(str(source / "model"))
    assert backbone.arch == "transferlab:cnn-small" and "bundle" in backbone.weights_source
    assert [c.name for c in backbone.cut_points] == ["stages.0", "stages.1", "stages.2", "final"]
    metrics = tl.train(_config(small_data, backbone=str(source / "model"), strategy="truncate", cut="stages.1",
                               out=str(small_data / "tr"))).metrics  # fmt: skip
    assert metrics["cut"] == "stages.1" and metrics["classes"] == ["blue", "green", "red"]
    _, info = load_bundle(small_data / "tr" / "model")
    assert info.num_features == 64


def test_class_selection():
    from transferlab.data import parse_classes

    classes = ("a", "b", "c", "d", "e")
    assert parse_classes("0-2", classes) == [0, 1, 2] and parse_classes("e,a", classes) == [4, 0]
    with pytest.raises(tl.DataError, match="outside"):
        parse_classes("3-7", classes)
    with pytest.raises(tl.DataError, match="at least two"):
        parse_classes("b", classes)


def test_onnxruntime_engine_gives_the_same_features_and_predictions(run, tmp_path):
    root, config, metrics = run
    ort = tl.train(config, engine="onnxruntime", out=str(tmp_path / "ort")).metrics
    assert ort["feature_cache"] == "miss"  # its own cache entries: the engines differ in the last digits
    assert abs(ort["val_loss"] - metrics["val_loss"]) < 1e-3 and ort["val_accuracy"] == metrics["val_accuracy"]
    image = next((root / "colours" / "red").iterdir())
    by_torch = tl.load(root / "run" / "model").predict([image], top_k=3)[0].top
    by_ort = tl.load(root / "run" / "model", engine="onnxruntime").predict([image], top_k=3)[0].top
    assert [c for c, _ in by_torch] == [c for c, _ in by_ort]
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(by_torch, by_ort))
    assert (root / "run" / "model" / "model.onnx").exists()


def test_tensorboard_event_file_holds_every_epoch_of_every_stage_and_the_confusion_matrix(small_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = tl.train(_config(small_data, strategy="finetune", epochs=2, freeze_bn=True,
                               tensorboard=str(tmp_path / "tb"), out=str(tmp_path / "o"))).metrics  # fmt: skip
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    for stage, history in (("probe", metrics["probe_history"]), ("finetune", metrics["history"])):
        accuracies = [e.value for e in events.Scalars(f"{stage}/val_accuracy")]
        assert accuracies == pytest.approx([row["val_accuracy"] for row in history]) and len(accuracies) >= 1
        assert len(events.Images(f"{stage}/confusion_matrix")) == len(history)
    assert len(metrics["probe_history"]) == 1 and len(metrics["history"]) == 2  # the probe computed, the network trained


@pytest.mark.parametrize("options", [{"tune": "lora"}, {"tune": "bias", "regularizer": "l2-sp", "schedule": "one-cycle"}])
def test_fine_tuning_options_save_bundles_that_load_predict_and_export(small_data, tmp_path, options):
    result = tl.train(_config(small_data, strategy="finetune", epochs=1, freeze_bn=True,
                              out=str(tmp_path / "run"), **options))  # fmt: skip
    model = result.model
    assert result.metrics["config"]["tune"] == options["tune"]
    predictions = model.predict(sorted((small_data / "d" / "test").rglob("*.png"))[:4])
    assert all(p.top[0][0] in model.classes for p in predictions)
    assert model.export("torchscript", tmp_path / "m.pt").exists()  # parity with PyTorch checked inside


def _pointing(root, per_class: int = 12):
    """``root/left`` and ``root/right``: noisy ramps bright on the left, and the same mirrored."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("left", "right"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            ramp = np.linspace(230, 20, 40)[None, :, None] + rng.normal(0, 20, (40, 40, 3))
            pixels = np.clip(ramp if name == "left" else ramp[:, ::-1], 0, 255).astype(np.uint8)
            Image.fromarray(np.ascontiguousarray(pixels)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("data", ["pointing", "colours"])
def test_augmentation_mirrors_no_image_where_the_mirror_shows_another_class(data, tmp_path, monkeypatch):
    from conftest import run_here, write_folder

    from transferlab.trainer import loops

    folder = _pointing(tmp_path / data) if data == "pointing" else write_folder(tmp_path / data)
    flips = []
    real = loops.augment_batch
    monkeypatch.setattr(loops, "augment_batch", lambda pixels, mirror: flips.append(mirror) or real(pixels, mirror))
    result = run_here("train", str(folder), "--strategy", "finetune", "--augment", "--resolution", "32", "--epochs", "1",
                      "--batch-size", "8", "--out", str(tmp_path / "run"), cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    mirror = json.loads((tmp_path / "run" / "metrics.json").read_text())["mirror"]
    assert mirror["changes_labels"] is (data == "pointing") and flips and set(flips) == {data != "pointing"}
    if data == "pointing":  # the probe tells the two apart as they are, and takes their mirrors for each other
        assert mirror["accuracy"] > 0.8 and mirror["mirrored_accuracy"] < 0.4
    said = "crops, no mirror (mirrored, the images look like other classes)" if data == "pointing" else "crops and mirrors"
    assert f"augmentation: {said}" in result.stdout and said in (tmp_path / "run" / "report.html").read_text()
    assert "mirror" not in tl.train(str(folder), strategy="finetune", resolution=32, epochs=1, batch_size=8,
                                    out=str(tmp_path / "plain"), cache_dir=str(tmp_path / "cache")).metrics  # fmt: skip
