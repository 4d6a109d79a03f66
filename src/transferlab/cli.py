"""Command line: a thin layer over the public API. Errors print one line and exit with code 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from . import __version__, distributed
from .backbones import list_backbones
from .errors import TransferlabError
from .export import FORMATS, export_bundle
from .heads import DEFAULT_HEAD_INIT
from .inits import initializer_names
from .lab import DEFAULT_INITS, LAB_MODELS, OPTIMIZERS, LabConfig, run_lab
from .lab_report import markdown_table
from .workflow import ENGINES, STRATEGIES, TrainConfig, evaluate, predict, train

log = logging.getLogger("transferlab")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding Fashion-MNIST's *-ubyte.gz files (default: Debian's path)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferlab", description="Transfer learning on images.")
    parser.add_argument("--version", action="version", version=f"transferlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True)

    t = commands.add_parser("train", help="train a new head (and more) on your classes")
    t.add_argument("data", help="'fashion-mnist', a folder root/<class>/<image>, or a CSV of path,label")
    t.add_argument("--strategy", default="head", choices=[*STRATEGIES, "auto"], help="auto: measure, then choose")
    t.add_argument("--plan", help="with --strategy auto: carry out this saved plan.json")
    t.add_argument("--backbone", default="efficientnet_lite0", help="registered, timm or torchvision name")
    t.add_argument("--weights", help="state-dict file to load into the backbone instead of its pretrained weights")
    t.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random backbone weights")
    t.add_argument("--cut", help="cut point (stage name) for truncate; see 'transferlab backbones --cuts NAME'")
    t.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    t.add_argument("--resolution", type=int, help="input size in pixels (default: the backbone's)")
    t.add_argument("--classes", help="train on some classes only: indices/ranges '0-4' or names 'Bag,Sandal'")
    t.add_argument("--samples-per-class", type=_positive_int, help="subsample training (and validation) per class")
    t.add_argument("--test-per-class", type=_positive_int, help="subsample the test split per class")
    t.add_argument("--val-fraction", type=float, default=0.1, help="share of each class held out (default 0.1)")
    t.add_argument("--epochs", type=_positive_int, help="default: 40 (head, truncate), 8 (finetune), 15 (scratch)")
    t.add_argument("--lr", type=float, help="default: 1e-3 (head, truncate), 3e-4 (finetune), 2e-3 (scratch)")
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--head-init", default=DEFAULT_HEAD_INIT, help=f"one of: {', '.join(initializer_names())}")
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--probe-epochs", type=_positive_int, default=40, help="finetune: linear-probe epochs first")
    t.add_argument("--layer-decay", type=float, default=0.85, help="finetune: lr factor per layer group downwards")
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--patience", type=_positive_int, default=3, help="early stopping: epochs without val-loss gain")
    t.add_argument("--augment", action="store_true", help="random resized crop and flip (finetune, scratch)")
    t.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics fixed while fine-tuning")
    t.add_argument("--gradual-unfreeze", action="store_true", help="unfreeze the body top-down over half the epochs")
    t.add_argument("--init", default="kaiming-normal", help="scratch: initializer of the body's layers")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/checkpoint.pt")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/transferlab/features)")
    t.add_argument("--no-cache", dest="use_cache", action="store_false", help="recompute features, write none")
    t.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    t.add_argument("--engine", default="pytorch", choices=ENGINES, help="feature extraction engine")
    _add_data_options(t)

    pre = commands.add_parser("pretrain", help="train a source network from scratch; transfer from it later")
    pre.add_argument("data")
    pre.add_argument("--arch", required=True, help="architecture, e.g. cnn-small or timm:resnet18")
    pre.add_argument("--out", required=True, help="output folder; its model/ is a --backbone for later runs")
    pre.add_argument("--classes", help="train on some classes only, e.g. 0-4")
    pre.add_argument("--epochs", type=_positive_int)
    pre.add_argument("--lr", type=float)
    pre.add_argument("--batch-size", type=_positive_int, default=128)
    pre.add_argument("--resolution", type=int)
    pre.add_argument("--samples-per-class", type=_positive_int)
    pre.add_argument("--augment", action="store_true")
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--seed", type=int, default=0)
    _add_data_options(pre)

    p = commands.add_parser("predict", help="top-k classes for image files")
    p.add_argument("model", help="a model folder written by 'train' (OUT/model)")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--engine", default="pytorch", choices=ENGINES)

    e = commands.add_parser("evaluate", help="accuracy and confusion matrix of a model on labelled data")
    e.add_argument("model")
    e.add_argument("data")
    e.add_argument("--out", default="evaluation", help="folder for metrics.json, confusion.png, report.html")
    e.add_argument("--samples-per-class", type=_positive_int, help="evaluate on a per-class subsample")
    _add_data_options(e)

    a = commands.add_parser("advise", help="measure the data against a backbone and print the plan")
    a.add_argument("data")
    a.add_argument("--backbone", default="efficientnet_lite0")
    a.add_argument("--weights")
    a.add_argument("--classes")
    a.add_argument("--sample-per-class", type=_positive_int, default=50, help="images per class to measure on")
    a.add_argument("--samples-per-class", type=_positive_int, help="the training will use this many per class")
    a.add_argument("--resolution", type=int)
    a.add_argument("--out", default="runs/advise", help="folder for plan.json")
    a.add_argument("--cache-dir")
    a.add_argument("--seed", type=int, default=0)
    _add_data_options(a)

    st = commands.add_parser("study", help="every strategy on controlled cells against the advisor's pick")
    st.add_argument("--quick", action="store_true", help="the CI-sized study (about a minute instead of half an hour)")
    st.add_argument("--out", default="runs/study")
    st.add_argument("--cache-dir")

    x = commands.add_parser("export", help="export a model to ONNX or TorchScript (checked for parity)")
    x.add_argument("model")
    x.add_argument("--format", required=True, choices=FORMATS)
    x.add_argument("--out", help="output file (default: inside the model folder)")

    lab = commands.add_parser("init-lab", help="train one network under many weight initializations and compare")
    lab.add_argument("--dataset", default="fashion-mnist", help="28x28 grayscale data (default fashion-mnist)")
    lab.add_argument("--inits", nargs="+", default=list(DEFAULT_INITS), help=f"from: {', '.join(initializer_names())}")
    lab.add_argument("--model", default="mlp", choices=LAB_MODELS)
    lab.add_argument("--epochs", type=_positive_int, default=2)
    lab.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    lab.add_argument("--lr", type=float, default=1e-3)
    lab.add_argument("--batch-size", type=_positive_int, default=100)
    lab.add_argument("--seeds", type=_positive_int, default=3)
    lab.add_argument("--train-samples", type=_positive_int, help="use only this many images of the training pool")
    lab.add_argument("--out", default="runs/init-lab")
    _add_data_options(lab)

    b = commands.add_parser("backbones", help="list what can be loaded, and from where")
    b.add_argument("--cuts", metavar="NAME", help="show the cut points of one backbone")
    return parser


def _run_train(args) -> None:
    options = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}
    _print_summary(args, train(TrainConfig(**options)))


def _print_summary(args, metrics: dict) -> None:
    if not distributed.is_main():
        return
    print(f"strategy {metrics['strategy']} on {args.data}: {metrics['num_train']} training images, "
          f"{metrics['skipped_files']} skipped, feature cache {metrics['feature_cache']}")  # fmt: skip
    print(f"validation accuracy: {metrics['val_accuracy']:.4f}")
    if "test_accuracy" in metrics:
        print(f"test accuracy: {metrics['test_accuracy']:.4f} ({metrics['num_test']} images)")
    print(f"time: {metrics['train_seconds']:.1f} s; model, metrics.json and report.html in {args.out}")


def _run_pretrain(args) -> None:
    options = {k: v for k, v in vars(args).items() if k not in ("command", "debug", "arch")}
    metrics = train(TrainConfig(strategy="scratch", backbone=args.arch, **options))
    _print_summary(args, metrics)
    if distributed.is_main():
        print(f"transfer from it with: transferlab train DATA --backbone {args.out}/model")


def _run_predict(args) -> None:
    results = predict(args.model, args.images, args.top_k, args.engine)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(result["image"] + ": " + ", ".join(f"{label} {p:.3f}" for label, p in result["top"]))


def _run_evaluate(args) -> None:
    metrics = evaluate(args.model, args.data, args.out, args.data_dir, args.samples_per_class)
    print(f"accuracy: {metrics['accuracy']:.4f} on {metrics['num_images']} images "
          f"({metrics['skipped_files']} skipped); confusion matrix in {args.out}")  # fmt: skip


def _run_advise(args) -> None:
    from .advisor import advise, evidence_table

    plan = advise(args.data, args.backbone, args.weights, args.classes, args.sample_per_class, args.resolution,
                  args.data_dir, args.cache_dir, args.seed, args.samples_per_class)  # fmt: skip
    path = plan.save(Path(args.out) / "plan.json")
    print(evidence_table(plan))
    print(f"\nplan: {plan.strategy} (cut {plan.cut}), lr {plan.lr}, {plan.epochs} epochs, {plan.resolution} px")
    print(plan.explanation)
    print(f"saved {path}; run it with: transferlab train {args.data} --strategy auto --plan {path}")


def _run_study(args) -> None:
    from .study import cells_table, run_study

    summary = run_study(args.quick, args.out, args.cache_dir)
    print(cells_table(summary["cells"]))
    print(f"mean regret {summary['mean_regret_points']:.2f} points, worst {summary['worst_regret_points']:.2f}; "
          f"advisor cost at most {summary['worst_advise_cost_fraction']:.1%} of brute force; "
          f"{summary['seconds']:.0f} s; report in {args.out}")  # fmt: skip
    held_out = summary["held_out_regret_points"]
    print(f"thresholds calibrated on these cells: {summary['calibrated_thresholds']} (mean regret "
          f"{summary['calibrated_mean_regret_points']:.2f}); calibrated leaving each cell out, the cells' regrets "
          f"average {summary['held_out_mean_regret_points']:.2f}, worst {max(held_out):.2f}")  # fmt: skip


def _run_export(args) -> None:
    path, difference = export_bundle(args.model, args.format, args.out)
    print(f"wrote {path}; largest logit difference from PyTorch {difference:.2e}")


def _run_init_lab(args) -> None:
    config = LabConfig(inits=tuple(args.inits), model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                       optimizer=args.optimizer, lr=args.lr, seeds=args.seeds, train_samples=args.train_samples,
                       data=args.dataset, data_dir=args.data_dir, out=args.out)  # fmt: skip
    metrics = run_lab(config)
    print(markdown_table(metrics["results"]))
    print(f"{len(config.inits)} inits x {config.seeds} seeds in {metrics['seconds']:.0f} s of training; "
          f"plots, metrics.json and report.html in {args.out}")  # fmt: skip


def _run_backbones(args) -> None:
    if args.cuts:
        from .backbones import build_backbone

        backbone = build_backbone(args.cuts, pretrained=False)
        for cut in backbone.cut_points:
            print(f"{cut.name:<12} {cut.channels:>6} channels  /{cut.reduction}")
        return
    for row in list_backbones():
        print(f"{row['name']:<24} {row['description']}\n{'':<24} weights: {row['weights']}")


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("PIL").setLevel(logging.INFO)
    handler = {
        "train": _run_train, "pretrain": _run_pretrain, "predict": _run_predict, "evaluate": _run_evaluate,
        "advise": _run_advise, "study": _run_study, "export": _run_export, "init-lab": _run_init_lab,
        "backbones": _run_backbones,
    }  # fmt: skip
    try:
        if args.command in ("train", "pretrain"):
            distributed.init_from_env()
        handler[args.command](args)
    except TransferlabError as error:
        if args.debug:
            raise
        print(f"transferlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
