"""``mmib datasets``: list the built-in datasets and file loaders."""

from __future__ import annotations

import argparse

COMMAND = "datasets"
HELP = "list datasets and file loaders"
ORDER = 11


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also list each loader's options")


def run(args: argparse.Namespace) -> int:
    from mmib.data.registry import list_datasets, loader_options

    entries = list_datasets()
    width = max(len(e.name) for e in entries)
    for e in entries:
        path = " (needs --data-path)" if e.needs_path else ""
        print(f"{e.name.ljust(width)}  {e.description}{path}")
        if args.verbose:
            for name, prm in loader_options(e.loader).items():
                default = "" if prm.default is prm.empty else f" = {prm.default!r}"
                print(f"{'':{width}}    {name}{default}")
    return 0
