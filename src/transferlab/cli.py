"""Command line: a thin layer over the public API. Errors print one line and exit with code 2.

The options of ``train``, ``pretrain`` and ``advise`` are built from ``TrainConfig``'s fields:
their defaults and help texts are written once, in :mod:`transferlab.config`. Parsing imports
nothing heavy: each command imports what it runs, so ``--help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import transferlab as tl

from . import __version__
from .cachedir import KEPT_UNLESS_NAMED, KINDS, cache_usage, clear_cache, default_cache_root
from .config import EXPORT_FORMATS, TrainConfig, field_help
from .errors import ConfigError, TransferlabError
from .initlab.config import DEFAULT_INITS, LAB_MODELS, OPTIMIZERS, LabConfig
from .inits import initializer_names
from .offline import OFFLINE_BACKBONES
from .selection import SELECTION, SELECTIONS
from .strategies import AUTO, AUTO_SUMMARY, FROM_SCRATCH, STRATEGIES, describe

log = logging.getLogger("transferlab")

_TYPES = {"int": int, "float": float, "str": str}
PRETRAIN_OPTIONS = ("out", "classes", "epochs", "lr", "batch_size", "resolution", "samples_per_class", "augment",
                    "resume", "seed", "data_dir", "cache_dir", "device")  # fmt: skip
ADVISE_OPTIONS = ("out", "backbone", "backbones", "companions", "weights", "classes", "measure_per_class",
                  "samples_per_class", "resolution", "fit", "engine", "device", "cache_dir", "seed", "data_dir", "unlabeled",
                  "time_budget")  # fmt: skip
LR_FIND_OPTIONS = ("out", "backbone", "weights", "classes", "samples_per_class", "resolution", "batch_size", "engine", "device",
                   "freeze_bn", "layer_decay", "tune", "regularizer", "regularizer_strength", "cache_dir", "seed",
                   "data_dir")  # fmt: skip
RANK_OPTIONS = ("out", "backbones", "classes", "measure_per_class", "samples_per_class", "resolution", "fit", "engine", "device",
                "cache_dir", "seed", "data_dir")  # fmt: skip


def _words(text: str) -> list[str]:
    """A list option typed either way: ``a b c`` or ``a,b,c``."""
    return [word for word in text.split(",") if word]


def _integers(text: str) -> tuple[int, ...]:
    """``5,10`` as (5, 10); argparse says which word is not a whole number."""
    try:
        return tuple(int(word) for word in _words(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"whole numbers separated by commas, got {text!r}") from None


def _add_config_options(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                        helps: dict[str, str] | None = None, **overrides) -> None:  # fmt: skip
    """One option per TrainConfig field (or per field in ``names``), with its type, default and help
    (``helps`` and ``overrides``: another help text or default for some)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == "data" or (names is not None and f.name not in names):
            continue
        meta, default = field_help(f.name), overrides.get(f.name, f.default)
        if helps and f.name in helps:
            meta["help"] = helps[f.name]
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        options = {"dest": f.name, "default": default, "help": meta["help"]}
        if f.type == "bool":
            options["action"] = "store_false" if default else "store_true"
        elif f.type.startswith("tuple[str, ...]"):  # one argument 'a,b': a list option never swallows the data path after it
            options.update(type=_words, default=None, metavar="A,B")
        elif f.type == "bool | None":
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _TYPES[f.type.removesuffix(" | None")]
            options["choices"] = meta.get("choices")
            if default is not None:
                options["help"] += f" (default: {default})"
        parser.add_argument(flag, **options)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (with where to look) instead of the usage first."""

    def error(self, message: str):
        self.exit(2, f"transferlab: error: {message} (see '{self.prog} --help')\n")


def _add_engine_and_device_options(parser: argparse.ArgumentParser) -> None:
    for name in ("engine", "device"):
        meta = field_help(name)
        parser.add_argument(f"--{name}", default="auto", choices=meta.get("choices"), help=meta["help"] + " (default: auto)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transferlab", description="Transfer learning on images.")
    parser.add_argument("--version", action="version", version=f"transferlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True)
    data_help = field_help("data")["help"]

    t = commands.add_parser("train", help="train a new head (and more) on your classes")
    t.add_argument("data", help=data_help)
    _add_config_options(t)

    pre = commands.add_parser("pretrain", help="train a source network from scratch; transfer from it later")
    pre.add_argument("data", help=data_help)
    pre.add_argument("--arch", required=True, help="architecture, e.g. cnn-small or timm:resnet18")
    scratch = STRATEGIES[FROM_SCRATCH]  # what pretrain runs
    _add_config_options(pre, PRETRAIN_OPTIONS, {"epochs": f"default: {scratch.epochs}", "lr": f"default: {scratch.lr:g}"},
                        batch_size=128, out="runs/pretrain")  # fmt: skip

    a = commands.add_parser("advise", help="measure the data against a backbone and print the plan")
    a.add_argument("data", help=data_help)
    _add_config_options(a, ADVISE_OPTIONS, out="runs/advise")
    a.add_argument("--sample-per-class", dest="measure_per_class", type=int, help=argparse.SUPPRESS)  # old name

    r = commands.add_parser("rank", help="rank pretrained backbones for your data: which one to start from")
    r.add_argument("data", help=data_help)
    r.add_argument("candidates", nargs="*", type=_words, default=[],
                   help=f"candidates, as --backbones takes them (default: {','.join(OFFLINE_BACKBONES)})")  # fmt: skip
    _add_config_options(r, RANK_OPTIONS, out="runs/rank")

    lf = commands.add_parser("lr-find", help="learning-rate range test for fine-tuning: loss against rate, a suggestion")
    lf.add_argument("data", help=data_help)
    _add_config_options(lf, LR_FIND_OPTIONS, out="runs/lr-find")

    p = commands.add_parser("predict", help="top-k classes for image files")
    p.add_argument("model", help="a model folder written by 'train' (OUT/model)")
    p.add_argument("images", nargs="+", help="image files (any format PIL reads), or folders of them (read with "
                   "their sub-folders)")
    p.add_argument("--top-k", type=int, default=3, help="how many classes per image (default: 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_engine_and_device_options(p)

    e = commands.add_parser("evaluate", help="accuracy, balanced accuracy and confusion matrix on labelled data")
    e.add_argument("model", help="a model folder written by 'train' (OUT/model)")
    e.add_argument("data", help=data_help + " (its test split, when it has one)")
    e.add_argument("--out", default="runs/evaluate", help="folder for metrics.json, confusion.png, report.html "
                                                          "(default: runs/evaluate)")  # fmt: skip
    e.add_argument("--test-per-class", type=int, help="evaluate on a per-class subsample of the images")
    e.add_argument("--samples-per-class", dest="test_per_class", type=int, help=argparse.SUPPRESS)  # old name
    _add_engine_and_device_options(e)
    e.add_argument("--data-dir", help=field_help("data_dir")["help"])

    sg = commands.add_parser("suggest", help="the unlabelled images worth labelling next, best first, and what "
                                             "labelling them should buy")  # fmt: skip
    sg.add_argument("model", help="a model folder written by 'train' (OUT/model)")
    sg.add_argument("unlabeled", help="a folder of images without labels")
    sg.add_argument("-n", type=int, default=50, help="how many images to suggest (default: 50)")
    sg.add_argument("--method", default=SELECTION, choices=SELECTIONS, help="badge: uncertain and diverse gradients "
                    "(Ash et al. 2020); kcenter: spread over the most uncertain; margin: the most uncertain; random "
                    f"(default: {SELECTION}, measured best, docs/unlabeled.md)")  # fmt: skip
    sg.add_argument("--out", default="runs/suggest", help="folder for suggestions.csv, contact_sheet.png, report.html "
                                                          "(default: runs/suggest)")  # fmt: skip
    sg.add_argument("--seed", type=int, default=0, help="seed of the selections that draw (badge, random)")
    sg.add_argument("--device", default="auto", help=field_help("device")["help"] + " (default: auto)")

    st = commands.add_parser("study", help="every option on the data-set pool against the advisor's pick, "
                                           "leave one data set out")  # fmt: skip
    st.add_argument("--quick", action="store_true", help="the CI-sized study (two generated sets, under two minutes)")
    st.add_argument("--pool", default="greyscale", choices=("greyscale", "colour"), help="greyscale: the nine small "
                    "sets at 64 px (the shipped forecaster's); colour: the colour sets at 112 px, sizes 5, 10, 30 (make "
                    "pool-data first) (default: greyscale)")  # fmt: skip
    st.add_argument("--out", default="runs/study", help="folder of the study's runs and results, reused when "
                                                        "resumed (default: runs/study)")  # fmt: skip
    st.add_argument("--sizes", type=_integers, metavar="N,N", help="only these images-per-class sizes of the pool")
    st.add_argument("--seeds", type=_integers, metavar="N,N", help="only these seeds of the pool")
    st.add_argument("--data", type=_words, metavar="A,B", help="only these data sets of the pool")
    st.add_argument("--finished", action="store_true", help="score the seeds already finished, train nothing")
    st.add_argument("--resolution", type=int, help="instead of the pool's (give the study its own --out)")
    st.add_argument("--cache-dir", help=field_help("cache_dir")["help"])
    st.add_argument("--device", default="auto", help=field_help("device")["help"] + " (default: auto)")

    x = commands.add_parser("export", help="export a model to ONNX or TorchScript (checked for parity)")
    x.add_argument("model", help="a model folder written by 'train' (OUT/model)")
    x.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the file format")
    x.add_argument("--out", help="output file (default: inside the model folder)")
    x.add_argument("--int8", action="store_true", help="onnx: quantize to int8 (static, biases corrected, the first 0-3 "
                   "convolutions float32 as held-out images choose), calibrated on --calibration")
    x.add_argument("--calibration", metavar="DATA", help="--int8: your images (folder, CSV or built-in name), 200 used")
    x.add_argument("--verbose", action="store_true", help="--int8: each quantized layer's error against float32, "
                                                          "logged and written to <file>.layers.json")  # fmt: skip

    lab = commands.add_parser("init-lab", help="train one network under many weight initializations and compare")
    lab.add_argument("--dataset", default="fashion-mnist", help="28x28 grayscale data (default fashion-mnist)")
    lab.add_argument("--inits", nargs="+", type=_words, default=[list(DEFAULT_INITS)],
                     help=f"'a b' or 'a,b', from: {', '.join(initializer_names())}")  # fmt: skip
    lab.add_argument("--model", default="mlp", choices=LAB_MODELS, help="the network (default: mlp, the seed's)")
    lab.add_argument("--epochs", type=int, default=2, help="epochs per run (default: 2)")
    lab.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="default: adam")
    lab.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 0.001)")
    lab.add_argument("--batch-size", type=int, default=100, help="images per step (default: 100)")
    lab.add_argument("--seeds", type=int, default=3, help="how many seeds each init runs with: 0, 1, ..., N-1 "
                                                          "(default: 3)")  # fmt: skip
    lab.add_argument("--train-samples", type=int, help="use only this many training images in all (not per class)")
    lab.add_argument("--out", default="runs/init-lab", help="output folder (default: runs/init-lab)")
    lab.add_argument("--data-dir", help=field_help("data_dir")["help"])
    lab.add_argument("--device", default="auto", help=field_help("device")["help"] + " (default: auto)")

    commands.add_parser("strategies", help="what each strategy trains, its defaults and the options that apply")

    b = commands.add_parser("backbones", help="list what can be loaded, and from where")
    b.add_argument("--cuts", metavar="NAME", help="show the cut points of one backbone")

    c = commands.add_parser("cache", help="what the cache folder holds and its size; --clear empties it")
    c.add_argument("kinds", nargs="*", metavar="KIND", help=f"with --clear, the kinds to remove ({', '.join(KINDS)}; "
                   f"default: all but {', '.join(KEPT_UNLESS_NAMED)})")  # fmt: skip
    c.add_argument("--clear", action="store_true", help="remove the kinds named, or all that are recomputed on demand")
    c.add_argument("--cache-dir", help=field_help("cache_dir")["help"])
    return parser


def commands() -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name, as the command line builds them now."""
    found = next(a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(found.choices)


def _config_options(args) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in vars(args).items() if k in names and k != "data" and v is not None}
    for name in ("backbones", "companions"):  # typed as 'a,b'
        if name in options:
            options[name] = tuple(options[name])
    return options


def _is_main() -> bool:
    """Under torchrun, whether this is the process that prints."""
    from . import distributed

    return distributed.is_main()


def _print_summary(args, metrics: dict) -> None:
    if not _is_main():
        return
    print(f"strategy {metrics['strategy']} on {args.data}: {metrics['num_train']} training images, "
          f"{metrics['skipped_files']} skipped, feature cache {metrics['feature_cache']}")  # fmt: skip
    from .trainer.network import TRAINED_ON_VALIDATION

    in_sample = metrics.get("validation") == TRAINED_ON_VALIDATION
    print(f"validation accuracy: {metrics['val_accuracy']:.4f}" + (" (in-sample: a network trained on these images too, "
                                                                    "too few to choose anything by)" if in_sample else ""))
    if "interpolation" in metrics:
        print(f"interpolation: alpha {metrics['interpolation']['alpha']:g} ({metrics['interpolation']['rule']}; 0: the "
              "linear probe, 1: the fine-tuned network)")  # fmt: skip
    if "mirror" in metrics:
        from .trainer.outputs import augmentation_summary

        print(f"augmentation: {augmentation_summary(metrics['mirror'])}")
    if "unlabeled" in metrics:
        from .trainer.outputs import unlabeled_summary

        print(f"unlabelled images: {unlabeled_summary(metrics['unlabeled'])}")
    if "members" in metrics:
        from .trainer.outputs import ensemble_summary

        print(f"ensemble members: {ensemble_summary(metrics['members'], metrics['evaluated_on'])}")
    if "test_accuracy" in metrics:
        print(f"test accuracy: {metrics['test_accuracy']:.4f} ({metrics['num_test']} images); balanced accuracy "
              f"{metrics['balanced_accuracy']:.4f}, always the largest class {metrics['majority_baseline']:.4f}")  # fmt: skip
    else:
        print("no test split: the figures above are on the validation split; put a test/ folder beside train/ "
              "(root/train/<class>/..., root/test/<class>/...) to measure on images the run never chose by")
    if metrics["near_chance"]:
        print("near chance: the model has learnt next to nothing; see 'When the result is poor' in docs/guide.md")
    print(f"time: {metrics['train_seconds']:.1f} s; model, metrics.json and report.html in {metrics['config']['out']}")


def _run_train(args) -> None:
    result = tl.train(args.data, **_config_options(args))
    if result.plan is not None and _is_main():
        print("\n\n".join(t for t in (result.plan.evidence_table(), result.plan.forecast_table(),
                                        result.plan.crossfit_table()) if t))  # fmt: skip
        print(f"plan: {result.plan.strategy} (cut {result.plan.cut}): {result.plan.explanation}")
    _print_summary(args, result.metrics)


def _run_pretrain(args) -> None:
    options = _config_options(args)
    result = tl.pretrain(args.data, args.arch, options.pop("out"), **options)
    _print_summary(args, result.metrics)
    if _is_main():
        print(f"transfer from it with: transferlab train DATA --backbone {result.out}/model")


def _run_predict(args) -> None:
    predictions = tl.load(args.model, args.engine, args.device).predict(args.images, args.top_k)
    if args.json:
        print(json.dumps([p.to_json() for p in predictions], indent=2))
        return
    for prediction in predictions:
        print(prediction.image + ": " + ", ".join(f"{label} {p:.3f}" for label, p in prediction.top))


def _run_evaluate(args) -> None:
    metrics = tl.load(args.model, args.engine, args.device).evaluate(args.data, args.out, args.data_dir, args.test_per_class)
    print(f"accuracy: {metrics['accuracy']:.4f}, balanced accuracy {metrics['balanced_accuracy']:.4f} "
          f"(always the largest class: {metrics['majority_baseline']:.4f}) on {metrics['num_images']} images "
          f"({metrics['skipped_files']} skipped); confusion matrix in {args.out}")  # fmt: skip


def _run_suggest(args) -> None:
    result = tl.suggest(args.model, args.unlabeled, args.n, args.out, args.method, args.device, args.seed)
    for s in result["suggestions"][:10]:
        print(f"{s['rank']:>3}. {s['image']} (the model's guess: {s['predicted']}, margin {s['margin']:.2f})")
    more = len(result["suggestions"]) - 10
    print((f"... and {more} more; " if more > 0 else "") + f"all in {args.out}/suggestions.csv, to look at in "
          f"{args.out}/report.html ({result['images']} images read, {result['unreadable']} unreadable)")  # fmt: skip
    forecast = result["forecast"]
    print("forecast: " + (forecast["text"] if forecast else "none (the run's metrics.json is not beside the model folder)"))


def _run_advise(args) -> None:
    options = _config_options(args)
    out = options.pop("out")
    plan = tl.advise(args.data, **options)
    path = plan.save(Path(out) / "plan.json")
    from .report import plan_figures  # here: matplotlib loads only where a command draws

    plan_figures(path.parent, plan.to_json())
    print("\n\n".join(t for t in (plan.evidence_table(), plan.forecast_table(), plan.crossfit_table()) if t))
    entry = tl.STRATEGIES[plan.strategy]
    settings = (f"{', '.join(entry.members)}: each its own epochs and rate" if entry.members else
                "its head computed in closed form" if entry.computed else f"lr {plan.lr}, {plan.epochs} epochs")
    print(f"\nplan: {plan.strategy} (cut {plan.cut}), {settings}, {plan.resolution} px, {plan.fit}")
    print(plan.explanation)
    print(f"saved {path}, its evidence drawn beside it (depth.png; checked.png where the check ran); run it with: "
          f"transferlab train {args.data} --strategy auto --plan {path}")  # fmt: skip


def _run_rank(args) -> None:
    options = _config_options(args)
    out = Path(options.pop("out"))
    backbones = (*options.pop("backbones", ()), *(name for group in args.candidates for name in group))
    from .advisor.rank import write_ranking

    ranking = tl.rank(args.data, backbones or OFFLINE_BACKBONES, **options)
    write_ranking(out, ranking, args.data)
    print(ranking.table())
    print(f"\nbest start: {ranking.best.backbone} (probe {ranking.best.probe_accuracy:.3f} at {ranking.best.best_cut}); "
          f"ranking.json, rank.png and report.html in {out}")  # fmt: skip
    print(f"train it with: transferlab train {args.data} --backbone {ranking.best.backbone} --strategy auto")


def _run_lr_find(args) -> None:
    options = _config_options(args)
    finding = tl.lr_find(args.data, **options)
    print(f"tried {len(finding.rates)} rates from {finding.rates[0]:.1e} to {finding.rates[-1]:.1e}; lowest smoothed loss "
          f"{min(finding.smoothed):.3f}; suggested --lr {finding.suggestion:.1e} (a tenth of its rate); "
          f"lr-find.png and lr-find.json in {options['out']}")  # fmt: skip


def _run_study(args) -> None:
    from .advisor.study import PICK_NOISE, SEEDED_SIZES, points, table

    subset = {name: tuple(getattr(args, name)) for name in ("sizes", "seeds", "data") if getattr(args, name)}
    summary = tl.run_study(args.quick, args.out, args.cache_dir, device=args.device, pool=args.pool, subset=subset,
                           finished_only=args.finished, resolution=args.resolution)  # fmt: skip
    print(table(summary["cells"]))
    s = summary["summary"]
    print(f"leave one data set out: advisor mean regret {s['advisor']['mean']:.2f} points, worst "
          f"{s['advisor']['worst']:.2f} (always finetune {s['always finetune']['mean']:.2f} / "
          f"{s['always finetune']['worst']:.2f}; one-seed pick regret {points(s[PICK_NOISE]['mean'])}); advisor cost median "
          f"{s['cost']['median']:.1%}, max {s['cost']['max']:.1%} of brute force; {summary['seconds']:.0f} s; "
          f"report.html, table.md and forecaster.json in {args.out}")  # fmt: skip
    paired, multicut = summary["advisor against always finetune"], summary["multicut against the best frozen head"]
    by_set = summary["advisor against always finetune, by data set"]
    print(f"advisor against always finetune: {paired['mean_difference']:+.2f} points of regret on average over the cells "
          f"(sign-flip test p = {paired['p_value']:.1g}; by data set p = {by_set['p_value']:.2g} over {by_set['sets']}); "
          f"multicut within 1 point of the best frozen head in "
          f"{multicut['within_one_point']:.0%} of the cells up to {SEEDED_SIZES} images per class")  # fmt: skip


def _run_export(args) -> None:
    from .export import export_bundle, export_int8

    if args.int8:
        if args.format != "onnx" or not args.calibration:
            raise ConfigError("--int8 goes with --format onnx and --calibration DATA (images like those it will see).")
        calibration = tl.load(args.model).calibration_images(args.calibration)
        exported = export_int8(args.model, calibration, args.out, verbose=args.verbose)
        print(f"wrote {exported.path}; top class as PyTorch's on {exported.agreement:.1%} of the calibration images (the "
              f"first {exported.float_convs} convolutions float32; PyTorch itself: {exported.float_under_noise:.1%} when "
              f"the pixels move by half a grey level); predict with it: --engine onnxruntime-int8")  # fmt: skip
        return
    path, difference = export_bundle(args.model, args.format, args.out)
    print(f"wrote {path}; largest logit difference from PyTorch {difference:.2e}")


def _run_init_lab(args) -> None:
    inits = tuple(name for group in args.inits for name in group)
    config = LabConfig(inits=inits, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                       optimizer=args.optimizer, lr=args.lr, seeds=args.seeds, train_samples=args.train_samples,
                       data=args.dataset, data_dir=args.data_dir, out=args.out, device=args.device)  # fmt: skip
    from .initlab.report import markdown_table

    metrics = tl.run_lab(config)
    print(markdown_table(metrics["results"]))
    print(f"{len(config.inits)} inits x {config.seeds} seeds in {metrics['seconds']:.0f} s of training; "
          f"plots, metrics.json and report.html in {args.out}")  # fmt: skip


def _run_strategies(_args) -> None:
    print("\n".join(describe(strategy) for strategy in STRATEGIES.values()))
    print(f"{AUTO}: {AUTO_SUMMARY}")


def _run_backbones(args) -> None:
    if args.cuts:
        for cut in tl.build_backbone(args.cuts, pretrained=False).cut_points:
            print(f"{cut.name:<12} {cut.channels:>6} channels  /{cut.reduction}")
        return
    for row in tl.list_backbones():
        print(f"{row['name']:<24} {row['description']}\n{'':<24} weights: {row['weights']}")


def _run_cache(args) -> None:
    root = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    if args.clear:
        freed = clear_cache(root, args.kinds)
        print(f"removed {freed / 1e6:.1f} MB from {root}")
    elif args.kinds:
        raise ConfigError("naming kinds needs --clear; 'transferlab cache' alone shows every kind")
    usage = cache_usage(root)
    for kind in usage:
        entries = f"{kind.entries} {'entry' if kind.entries == 1 else 'entries'}"
        print(f"{kind.name:<10} {kind.bytes / 1e6:>10.1f} MB {entries:>12}  {kind.description}")
    print(f"{'total':<10} {sum(k.bytes for k in usage) / 1e6:>10.1f} MB in {root}")


HANDLERS = {
    "train": _run_train, "pretrain": _run_pretrain, "predict": _run_predict, "evaluate": _run_evaluate,
    "suggest": _run_suggest, "advise": _run_advise, "rank": _run_rank, "lr-find": _run_lr_find, "study": _run_study,
    "export": _run_export, "init-lab": _run_init_lab, "strategies": _run_strategies,
    "backbones": _run_backbones, "cache": _run_cache,
}  # fmt: skip


def _close_progress_bars() -> None:
    """End any progress bar a failure left open, so the error starts a line of its own."""
    if "tqdm" in sys.modules:
        for bar in list(sys.modules["tqdm"].tqdm._instances):
            bar.close()


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("PIL").setLevel(logging.INFO)
    from tqdm.contrib.logging import logging_redirect_tqdm  # here: --help and --version need no tqdm

    try:
        with logging_redirect_tqdm():  # a line logged while a progress bar runs goes above the bar, not onto its line
            HANDLERS[args.command](args)
    except TransferlabError as error:
        if args.debug:
            raise
        _close_progress_bars()
        print(f"transferlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules and sys.modules["torch"].distributed.is_initialized():
            sys.modules["torch"].distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
