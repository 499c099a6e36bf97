"""``mmib models``: list the registered models, or count their parameters (``--params``).

``mmib models --params --dims text=768,audio=74,vision=47 --seq-len 50`` builds
every model for those inputs (on the meta device: no memory) and prints its
parameter count and the difference to ``concat`` (the IB overhead of the MIB
variants; MIB Table XI's analogue).
"""

from __future__ import annotations

import argparse

COMMAND = "models"
HELP = "list registered models"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also list each model's options and defaults")
    p.add_argument("--params", action="store_true", help="print parameter counts for the inputs given by --dims")
    p.add_argument("--dims", default="text=768,audio=74,vision=47",
                   help="modality widths NAME=WIDTH,... (default: CMU-MOSI's text=768,audio=74,vision=47)")
    p.add_argument("--seq-len", type=int, help="modalities are sequences of this length (default: vectors)")
    p.add_argument("--task", default="regression", help="regression (default), binary or multiclass:K")
    p.add_argument("--models", help="comma-separated models to count (default: all)")
    p.add_argument("--text-model", help="local Hugging Face model directory for a 'bert' text encoder "
                   "(token length = --seq-len or 50); add --set text_encoder.random_init=true for a config-only folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model option for every model that has it, e.g. fusion=tensor (repeatable)")


def run(args: argparse.Namespace) -> int:
    if args.params:
        return _params(args)
    import dataclasses

    from mmib.models.registry import list_models

    entries = list_models()
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name.ljust(width)}  {e.description}")
        if args.verbose:
            for f in dataclasses.fields(e.cls.Options):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                note = f.metadata.get("help")  # an option's units or meaning, where its model states them
                print(f"{'':{width}}    {f.name} = {default!r}" + (f"  # {note}" if note else ""))
            for key, value in e.cls.training_defaults.items():
                print(f"{'':{width}}    train.{key} = {value!r}  # training default (a run's own value wins)")
    return 0


def _params(args: argparse.Namespace) -> int:
    from mmib.eval.tables import markdown_table
    from mmib.models.complexity import count_parameters, overhead, parse_dims, parse_task, spec_from_dims
    from mmib.models.registry import list_models

    dims = parse_dims(args.dims)
    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else [e.name for e in list_models()]
    sets = list(args.overrides)
    tokens = None
    if args.text_model:
        tokens = args.seq_len or 50
        sets.append(f"text_model={args.text_model}")
    spec = spec_from_dims(dims, args.seq_len, parse_task(args.task), tokens)
    rows = count_parameters(names, spec, sets)
    extra = overhead(rows, "concat")
    shape = ", ".join(f"{n} {'%dx' % args.seq_len if args.seq_len else ''}{d}" for n, d in dims.items())
    print(f"Parameters for {shape} ({spec.task.kind}{', text: ' + args.text_model if args.text_model else ''})")
    table = []
    for r in rows:
        if r.params is None:
            table.append([r.model, "-", "-", "-", "-", f"n/a: {r.error}"])
            continue
        d, frac = extra.get(r.model, (None, None))
        table.append([r.model, f"{r.params:,}", f"{r.trainable:,}", "-" if d is None else f"{d:+,}",
                      "-" if frac is None else f"{100 * frac:+.2f} %", ""])
    print(markdown_table(["model", "params", "trainable", "vs concat", "vs concat %", "note"], table))
    return 0
