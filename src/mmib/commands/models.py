"""``mmib models``: list the registered models."""

from __future__ import annotations

import argparse

COMMAND = "models"
HELP = "list registered models"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also list each model's options and defaults")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from mmib.models.registry import list_models

    entries = list_models()
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name.ljust(width)}  {e.description}")
        if args.verbose:
            for f in dataclasses.fields(e.cls.Options):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                print(f"{'':{width}}    {f.name} = {default!r}")
    return 0
