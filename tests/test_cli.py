"""End to end through the installed ``transferlab`` command, on small generated image folders."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI, COLOURS, assert_one_line_error, make_image, run, run_here, write_folder

from transferlab.allocator import TCMALLOC_PATHS
from transferlab.threads import SPIN_COUNT


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One head run on 3 colour classes, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("e2e")
    data = write_folder(root / "colours", per_class=12)
    (data / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run("train", str(data), "--strategy", "head", "--resolution", "64", "--val-fraction", "0.25",
                 "--out", str(root / "run"), cache=root / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, data, result


def test_train_writes_model_metrics_and_report(trained):
    root, _, result = trained
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert metrics["strategy"] == "head" and metrics["classes"] == ["blue", "green", "red"]
    assert metrics["num_train"] == 27 and metrics["num_val"] == 9
    assert metrics["val_accuracy"] == 1.0  # colours are trivially separable with ImageNet features
    assert metrics["skipped_files"] == 1 and metrics["skipped"][0].endswith("corrupt.jpg")
    assert metrics["train_seconds"] > 0 and len(metrics["history"]) == 1  # the head computed in closed form: no epochs
    assert metrics["history"][0]["penalty"] > 0 and metrics["history"][0]["temperature"] > 0
    tcmalloc_installed = any(Path(p).exists() for p in TCMALLOC_PATHS)
    assert metrics["allocator"] == ("tcmalloc" if tcmalloc_installed else "glibc")
    assert metrics["openmp_spin_count"] == os.environ["GOMP_SPINCOUNT"] == SPIN_COUNT  # set on importing transferlab
    assert "corrupt.jpg" in result.stderr  # the warning names the file
    assert "validation accuracy: 1.0000" in result.stdout
    html = (root / "run" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Confusion matrix" in html
    assert {p.name for p in (root / "run" / "model").iterdir()} == {"bundle.json", "model.safetensors"}


def test_predict_prints_top_k(trained):
    root, data, _ = trained
    images = [str(data / "red" / "red_000.png"), str(data / "blue" / "blue_001.png")]
    result = run("predict", str(root / "run" / "model"), *images, "--top-k", "2", cache=root / "cache")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(images[0] + ": red ") and lines[1].startswith(images[1] + ": blue ")
    assert len(lines[0].split(", ")) == 2
    as_json = json.loads(run("predict", str(root / "run" / "model"), images[0], "--json", cache=root / "cache").stdout)
    assert as_json[0]["top"][0][0] == "red" and sum(p for _, p in as_json[0]["top"]) <= 1.0 + 1e-6
    folder = run("predict", str(root / "run" / "model"), str(data / "blue"), "--top-k", "1", cache=root / "cache")
    assert folder.returncode == 0, folder.stderr
    assert [line.split(": ")[0] for line in folder.stdout.strip().splitlines()] == sorted(
        str(p) for p in (data / "blue").iterdir())  # fmt: skip


def test_evaluate_prints_accuracy_and_writes_confusion(trained, tmp_path):
    root, _, _ = trained
    fresh = write_folder(tmp_path / "more", per_class=5, seed=7)
    result = run("evaluate", str(root / "run" / "model"), str(fresh), "--out", str(tmp_path / "ev"), cache=root / "cache")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert f"accuracy: {metrics['accuracy']:.4f}, balanced accuracy {metrics['balanced_accuracy']:.4f}" in result.stdout
    assert "(always the largest class: 0.3333) on 15 images" in result.stdout
    confusion = metrics["confusion_matrix"]
    assert [sum(row) for row in confusion] == [5, 5, 5]
    assert sum(confusion[i][i] for i in range(3)) / 15 == pytest.approx(metrics["accuracy"]) and metrics["accuracy"] >= 0.8
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000


def test_evaluate_refuses_other_classes(trained, tmp_path):
    root, _, _ = trained
    other = write_folder(tmp_path / "other", per_class=2, classes=("red", "green"))
    result = run_here("evaluate", str(root / "run" / "model"), str(other), cache=root / "cache")
    assert_one_line_error(result, "only in the model ['blue']")


def test_predict_on_non_image(trained, tmp_path):
    root, _, _ = trained
    (tmp_path / "notes.jpg").write_text("hello")
    result = run_here("predict", str(root / "run" / "model"), str(tmp_path / "notes.jpg"), cache=root / "cache")
    assert_one_line_error(result, "notes.jpg")


def test_strict_fails_on_corrupt_image(trained, tmp_path):
    root, data, _ = trained
    result = run_here("train", str(data), "--strategy", "head", "--strict", "--resolution", "64", "--out", str(tmp_path / "o"), cache=root / "cache")
    assert_one_line_error(result, "corrupt.jpg")


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "holds nothing"),
        (lambda root: write_folder(root, per_class=2, classes=("red",)), "at least two"),
        (lambda root: (write_folder(root, per_class=2), (root / "empty").mkdir()), "holds no images"),
    ],
    ids=["missing-path", "empty-folder", "one-class", "empty-class-folder"],
)
def test_bad_data_gives_one_line_and_exit_2(tmp_path, setup, expected):
    setup(tmp_path / "data")
    result = run_here("train", str(tmp_path / "data"), "--strategy", "head", cache=tmp_path / "cache")
    assert_one_line_error(result, expected)


def test_unknown_backbone_lists_close_matches(image_folder, tmp_path):
    result = run_here("train", str(image_folder), "--strategy", "head", "--backbone", "efficientnet_lite", cache=tmp_path / "cache")
    assert_one_line_error(result, "Did you mean: efficientnet_lite")
    assert "efficientnet_lite0" in result.stderr


def test_debug_shows_traceback(tmp_path):
    result = run("--debug", "train", str(tmp_path / "nope"), cache=tmp_path / "cache")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_backbones_listing():
    result = run("backbones", cache=Path("/tmp"))
    assert result.returncode == 0 and "efficientnet_lite0" in result.stdout and "offline" in result.stdout
    cuts = run("backbones", "--cuts", "efficientnet_lite0", cache=Path("/tmp"))
    assert "blocks.2" in cuts.stdout and "1280" in cuts.stdout


@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("torchscript", "model.torchscript.pt")])
def test_export_checks_parity(trained, tmp_path, fmt, name):
    root, _, _ = trained
    result = run("export", str(root / "run" / "model"), "--format", fmt, "--out", str(tmp_path / name), cache=root / "cache")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / name).stat().st_size > 100_000 and "largest logit difference" in result.stdout
    difference = float(result.stdout.split("PyTorch ")[1])
    assert difference <= 1e-4


def test_pretrain_then_transfer_from_the_bundle(tmp_path):
    data = write_folder(tmp_path / "d", per_class=8)
    cache = tmp_path / "cache"
    result = run("pretrain", str(data), "--arch", "cnn-small", "--classes", "0-1", "--epochs", "1", "--resolution", "28",
                 "--out", str(tmp_path / "src"), cache=cache)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "src" / "metrics.json").read_text())["classes"] == ["blue", "green"]
    result = run("train", str(data), "--strategy", "head", "--backbone", str(tmp_path / "src" / "model"),
                 "--out", str(tmp_path / "t"), cache=cache)  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["classes"] == ["blue", "green", "red"] and "transferlab bundle" in metrics["weights_source"]


def test_allocator_preload_can_be_declined(image_folder, tmp_path):
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system", "TRANSFERLAB_CACHE": str(tmp_path / "c"), "TQDM_DISABLE": "1"}
    result = subprocess.run([CLI, "train", str(image_folder), "--strategy", "head", "--resolution", "32", "--out",
                             str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["allocator"] == "glibc"


def test_int8_export_without_calibration_images_is_one_line(trained):
    root, _, _ = trained
    result = run_here("export", str(root / "run" / "model"), "--format", "onnx", "--int8", cache=root / "cache")
    assert_one_line_error(result, "--int8 goes with --format onnx and --calibration DATA")


def test_int8_export_with_verbose_reports_each_quantized_layers_error(trained, tmp_path):
    root, data, _ = trained
    out = tmp_path / "model.int8.onnx"
    result = run("export", str(root / "run" / "model"), "--format", "onnx", "--int8", "--calibration", str(data),
                 "--out", str(out), "--verbose", cache=root / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    layers = json.loads(out.with_suffix(".layers.json").read_text())
    assert len(layers) >= 30  # every convolution's input and output of EfficientNet-Lite0, the head's, the logits
    own = [layer["own_db"] for layer in layers if layer["own_db"] is not None]
    accumulated = [layer["accumulated_db"] for layer in layers if layer["accumulated_db"] is not None]
    assert len(own) >= 30 and all(db > 0 for db in own) and len(accumulated) >= 30
    assert min(accumulated) < max(accumulated) - 5  # the error grows through the network: not one figure for all
    assert "int8: the 8 tensors furthest from float32" in result.stderr


def test_a_memory_budget_too_small_for_one_image_is_one_line(image_folder, tmp_path):
    result = run_here("train", str(image_folder), "--strategy", "finetune", "--resolution", "32", "--max-memory", "0.01",
                 "--out", str(tmp_path / "o"), cache=tmp_path / "cache")  # fmt: skip
    assert_one_line_error(result, "max_memory must leave room for at least one image")


def test_help_and_version_answer_fast_without_loading_torch(tmp_path):
    probe = "import sys; from transferlab.cli import _build_parser; _build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
    for args in (("--help",), ("--version",), ("train", "--help")):
        seconds = []
        for _ in range(3):  # the best of three: a loaded machine slows some starts, not all
            started = time.perf_counter()
            result = run(*args, cache=tmp_path)
            seconds.append(time.perf_counter() - started)
            assert result.returncode == 0 and "transferlab" in result.stdout
        assert min(seconds) < 1.0, (args, seconds)


def test_a_mistyped_option_is_one_line_not_the_usage(tmp_path):
    result = run_here("train", str(tmp_path), "--strategy", "fine-tune", cache=tmp_path)
    assert result.stderr.count("\n") == 1 and "usage:" not in result.stderr
    assert_one_line_error(result, "invalid choice: 'fine-tune'")
    assert "see 'transferlab train --help'" in result.stderr


@pytest.mark.parametrize(
    "options, expected",
    [
        (("--strategy", "head", "--tune", "lora"), "--tune applies to finetune, ensemble, not to --strategy head."),
        (("--strategy", "scratch", "--tune", "bias"), "--tune applies to finetune, ensemble, not to --strategy scratch."),
        (("--strategy", "head", "--regularizer", "bss"), "--regularizer applies to finetune, ensemble, not to --strategy head."),
        (("--strategy", "truncate", "--augment"), "--augment applies to finetune, ensemble, scratch, not to --strategy truncate."),
        (("--strategy", "scratch", "--holdout"), "--holdout applies to head, truncate, finetune, multicut, ensemble, not to --strategy scratch."),
        (("--strategy", "head", "--cut", "blocks.2"), "use --strategy truncate or finetune for --cut blocks.2"),
        (("--strategy", "finetune", "--lora-rank", "8"), "--lora-rank applies to --tune lora, not to --tune all."),
    ],
)
def test_an_option_that_does_not_apply_to_the_strategy_is_one_line(tmp_path, options, expected):
    assert_one_line_error(run_here("train", str(tmp_path), *options, cache=tmp_path), expected)


def test_a_class_whose_every_image_is_unreadable_is_named_and_no_empty_output_is_left(tmp_path):
    data = write_folder(tmp_path / "d", per_class=6)
    for path in (data / "green").iterdir():
        path.write_bytes(b"not an image")
    result = run_here("train", str(data), "--strategy", "head", "--resolution", "32", "--out", str(tmp_path / "out"), cache=tmp_path / "cache")
    assert_one_line_error(result, "no training image is left of class 'green' (5 unreadable)")
    assert not (tmp_path / "out").exists()


def test_train_and_val_folders_are_the_training_and_validation_splits(tmp_path):
    write_folder(tmp_path / "d" / "train", per_class=8)
    write_folder(tmp_path / "d" / "val", per_class=3, seed=3)
    result = run("train", str(tmp_path / "d"), "--strategy", "head", "--resolution", "32", "--out", str(tmp_path / "out"),
                 cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["classes"] == ["blue", "green", "red"] and (metrics["num_train"], metrics["num_val"]) == (24, 9)
    assert "no test split" in result.stdout


def test_a_run_with_a_test_split_reports_it_with_its_engine_and_device(tmp_path):
    write_folder(tmp_path / "d" / "train", per_class=8)
    write_folder(tmp_path / "d" / "test", per_class=3, seed=3)
    result = run("train", str(tmp_path / "d"), "--strategy", "head", "--resolution", "32", "--out",
                 str(tmp_path / "out"), cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test accuracy:" in result.stdout and "no test split" not in result.stdout and "near chance" not in result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_test"] == 9 and metrics["device"] == "cpu" and not metrics["near_chance"]
    assert metrics["engine"]["engine"] == "pytorch" and metrics["engine"]["reason"]  # too few images, on any CPU


def test_a_model_that_learnt_nothing_says_so(tmp_path):
    image = make_image((120, 120, 120), np.random.default_rng(0))  # every image the same: nothing to learn
    for split, count in (("train", 6), ("test", 3)):
        for name in ("a", "b", "c"):
            (tmp_path / "d" / split / name).mkdir(parents=True)
            for i in range(count):
                image.save(tmp_path / "d" / split / name / f"{i}.png")
    result = run("train", str(tmp_path / "d"), "--strategy", "head", "--resolution", "32",
                 "--out", str(tmp_path / "out"), cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "near chance" in result.stdout and "When the result is poor" in result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["near_chance"] and metrics["balanced_accuracy"] == pytest.approx(1 / 3)  # one answer for all
    assert "poor result" in (tmp_path / "out" / "report.html").read_text()


def test_an_imbalanced_folder_is_weighed_as_the_table_says_and_the_plan_says_so(tmp_path):
    """20, 5 and 4 images a class: the plan names the sizes and what weighs each class alike;
    ``multicut`` runs balanced by default (its resolved configuration says so) and ``none`` when typed."""
    rng = np.random.default_rng(0)
    for name, count in (("red", 20), ("green", 5), ("blue", 4)):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(count):
            make_image(COLOURS[name], rng).save(tmp_path / "d" / name / f"{i}.png")
    advised = run("advise", str(tmp_path / "d"), "--resolution", "32", "--time-budget", "0", cache=tmp_path / "cache")
    assert advised.returncode == 0, advised.stderr
    assert "training images: head, truncate, multicut and ensemble (so the combination of candidates) weigh each class alike" in advised.stdout
    for typed, expected in (((), "balanced"), (("--class-weight", "none"), "none")):
        out = tmp_path / f"multicut-{expected}"
        result = run("train", str(tmp_path / "d"), "--strategy", "multicut", "--resolution", "32", *typed, "--out", str(out),
                     cache=tmp_path / "cache")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads((out / "metrics.json").read_text())["resolved_config"]["class_weight"] == expected


@pytest.mark.parametrize("validation", [None, "fitted too, scored leave-one-out", "in-sample"])
def test_the_summary_says_when_the_validation_figures_are_in_sample(capsys, validation):
    from transferlab import cli
    from transferlab.trainer.network import TRAINED_ON_VALIDATION

    metrics = {"strategy": "finetune", "num_train": 30, "skipped_files": 0, "feature_cache": "miss", "val_accuracy": 1.0,
               "near_chance": False, "train_seconds": 1.0, "config": {"out": "runs/x"}}  # fmt: skip
    if validation is not None:
        metrics["validation"] = TRAINED_ON_VALIDATION if validation == "in-sample" else validation
    cli._print_summary(argparse.Namespace(data="d"), metrics)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("validation accuracy"))
    assert ("in-sample" in line) == (validation == "in-sample")


def test_a_line_logged_while_a_progress_bar_runs_starts_a_line_of_its_own(tmp_path):
    """Library code logs as its bars run (a fold's engine, a stage's epochs): each line must begin
    where a line begins, not after the bar's text on the bar's line."""
    script = ("import logging, sys\nfrom tqdm import tqdm\nfrom transferlab import cli\n"
              "def command(args):\n    for i in tqdm(range(3), desc='folds'):\n"
              "        logging.getLogger('transferlab.test').info('fold %d scored', i)\n"
              "cli.HANDLERS['backbones'] = command\nsys.exit(cli.main(['backbones']))\n")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "folds:" in result.stderr  # the bar ran
    starts = [i for i in range(len(result.stderr)) if result.stderr.startswith("INFO: fold", i)]
    assert len(starts) == 3
    for start in starts:
        line_begins = max(result.stderr.rfind("\n", 0, start), result.stderr.rfind("\r", 0, start)) + 1
        assert result.stderr[line_begins:start] == "", repr(result.stderr[line_begins - 40:start + 20])
