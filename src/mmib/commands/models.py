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
    p.add_argument("-d", "--data", help="with -v: the defaults a model gets on this dataset (its presets applied)")
    p.add_argument("--params", action="store_true", help="print parameter counts for the inputs given by --dims")
    p.add_argument("--dims", default="text=768,audio=74,vision=47",
                   help="modality widths NAME=WIDTH,... (default: CMU-MOSI's text=768,audio=74,vision=47)")
    p.add_argument("--seq-len", type=int, help="modalities are sequences of this length (default: vectors)")
    p.add_argument("--task", default="regression", help="regression (default), binary or multiclass:K")
    p.add_argument("--models", help="comma-separated models to list or count (default: all)")
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
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        from mmib.models.registry import get_model

        entries = [get_model(m) for m in wanted]
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name.ljust(width)}  {e.description}")
        if args.verbose:
            _print_defaults(e, width, args.data)
    return 0


def _params(args: argparse.Namespace) -> int:
    from mmib.models.complexity import count_parameters, params_table, parse_dims, parse_task, spec_from_dims
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
    shape = ", ".join(f"{n} {'%dx' % args.seq_len if args.seq_len else ''}{d}" for n, d in dims.items())
    print(f"Parameters for {shape} ({spec.task.kind}{', text: ' + args.text_model if args.text_model else ''})")
    print(params_table(rows, "concat"))
    return 0


def _print_defaults(entry: object, width: int, data: str | None) -> None:
    """Each option's default (with its units where the model states them); the values presets fill,
    for every dataset or, with ``data``, on that dataset, and the training options they set."""
    import dataclasses

    from mmib import presets
    from mmib.models.registry import model_options

    name = entry.name  # type: ignore[attr-defined]
    if data:
        from mmib.api import make_config

        cfg = make_config(name, data)
        applied, sources = cfg.preset.applied, cfg.preset.sources
    else:  # the entries for every dataset ("*")
        found = presets.lookup(name, presets.ANY_DATASET)
        applied, sources = found.values, found.sources
    own = {f.name for f in dataclasses.fields(entry.cls.Options)}  # type: ignore[attr-defined]
    model_values = {k[len("model."):]: v for k, v in applied.items()
                    if k.startswith("model.") and k.split(".")[1] in own}
    options = model_options(name, presets.unflatten(model_values))
    builtin = model_options(name, {})
    pad = " " * width
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        note = f.metadata.get("help")  # an option's units or meaning, where its model states them
        line = f"{pad}    {f.name} = {value!r}"
        if any(k == f.name or k.startswith(f"{f.name}.") for k in model_values):
            line += f"    (preset; built-in default {getattr(builtin, f.name)!r})"
        print(line + (f"  # {note}" if note else ""))
    train = ", ".join(f"{k[len('train.'):]}={v!r}" for k, v in applied.items() if k.startswith("train."))
    where = f"on {data}" if data else "on every dataset"
    print(f"{pad}    training options from presets {where}: {train or 'none'}"
          f"  [presets: {'; '.join(sources) if sources else 'none match'}]")
