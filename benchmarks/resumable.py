"""What the resumable benchmarks share (interpolation.py, unlabeled.py, suggest.py): their command
line, and one JSON file per finished run in --out, reused when the benchmark is started again."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path


def arguments(doc: str, out: str, data: tuple[str, ...], seeds: tuple[int, ...],
              sizes: tuple[int, ...] | None = None, study: str | None = None,
              extend: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:  # fmt: skip
    """The benchmark's options (``--sizes`` only when it has ``sizes``, ``--study`` a study's folder
    to judge against only when it has ``study``, and whatever ``extend`` adds); ``--out`` made."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=out)
    parser.add_argument("--cache-dir")
    parser.add_argument("--data", nargs="+", default=list(data))
    if sizes is not None:
        parser.add_argument("--sizes", nargs="+", type=int, default=list(sizes))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(seeds))
    if study is not None:
        parser.add_argument("--study", default=study)
    parser.add_argument("--report", action="store_true", help="only print the tables of the finished runs")
    if extend is not None:
        extend(parser)
    args = parser.parse_args()
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.ERROR)
    return args


def record(path: Path, run: Callable[[], dict]) -> None:
    """``run()``'s result as ``path``, unless a finished run left it there already."""
    if not path.exists():
        path.write_text(json.dumps(run()))
        print(f"{path.stem}: done", flush=True)
