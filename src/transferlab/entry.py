"""The ``transferlab`` command's entry point: choose the allocator before torch loads, then run the CLI."""

from __future__ import annotations

import sys

from .allocator import preload_tcmalloc


def main() -> int:
    preload_tcmalloc(sys.argv[1:])
    from .cli import main as cli_main

    return cli_main()
