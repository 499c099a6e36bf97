"""``mmib sweep``: an Optuna study over a model's options, with pruning, in SQLite or PostgreSQL."""

from __future__ import annotations

import argparse

from mmib.commands._common import add_data_args, add_run_args

COMMAND = "sweep"
HELP = "search hyper-parameters with Optuna (pruning, SQLite/PostgreSQL storage, several workers)"
DESCRIPTION = (
    "Search a model's options with an Optuna study; each trial is a run directory under OUT/trials/, "
    "its objective the validation monitor, and unpromising trials are pruned after each epoch. "
    "Parameters: NAME=loguniform:LOW:HIGH, NAME=uniform:LOW:HIGH, NAME=int:LOW:HIGH[:STEP|:log], "
    "NAME=choice:A,B,C (NAME is any --set key). The study lives in --storage (default sqlite:///OUT/study.db; "
    "any SQLAlchemy URL, e.g. postgresql+psycopg2://user:pw@host/db, lets several machines join one study "
    "with the same --study; give a URL with a password in $MMIB_STORAGE or --storage-file: it is masked in "
    "every message and file). Rerun the command, or `mmib sweep --out OUT`, to continue: finished trials "
    "are kept, interrupted ones run again."
)
ORDER = 31


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="model name (see `mmib models`); omit to continue the sweep in --out")
    add_data_args(p)
    p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=SPEC",
                   help="a searched parameter, e.g. beta=loguniform:1e-6:1 or fusion=choice:concat,tensor (repeatable)")
    p.add_argument("--trials", type=int, help="finished trials wanted in the study (default 20; grid: its size)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study (default sqlite:///OUT/study.db, or $MMIB_STORAGE); "
                   "a password here is visible to other users in `ps`: prefer $MMIB_STORAGE or --storage-file")
    p.add_argument("--storage-file", help="file whose first line is the storage URL (keeps its password out of `ps`)")
    p.add_argument("--study", help="study name (default: the name of --out); machines sharing a study use the same")
    p.add_argument("-w", "--workers", type=int, default=1, help="local worker processes joining the study (default 1)")
    p.add_argument("--out", help="sweep directory (default runs/sweep-MODEL-DATA)")
    p.add_argument("--sampler", default="tpe", choices=("tpe", "random", "grid"), help="Optuna sampler (default tpe)")
    p.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"),
                   help="Optuna pruner (default median)")
    p.add_argument("--prune-warmup", type=int, default=2, help="epochs before a trial may be pruned (default 2)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--together", type=int,
                   help="trials each worker asks for at once and trains together as one vectorised ensemble, when "
                        "every searched parameter is one the members may differ in (lr, weight_decay, seed, "
                        "data.seed, MIB's beta); default 4, 1 = one trial at a time")
    add_run_args(p, quiet=False)  # the same for every trial; trials run without progress bars


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmib.errors import ConfigError
    from mmib.experiments._util import slug
    from mmib.experiments.sweep import resolve_storage, sweep

    if args.model and not args.data and not args.config:
        raise ConfigError("choose a dataset with -d DATA (see `mmib datasets`) or give --config")
    if not args.model and not args.out:
        raise ConfigError("choose a model with -m MODEL, or give --out DIR to continue a sweep")
    if args.model is None and (args.params or args.data or args.overrides):
        raise ConfigError("continuing a sweep (--out without -m) takes its settings from OUT/sweep.json; "
                          "drop --param/--data/--set or give -m to start a new sweep")
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{slug(args.model)}-{slug(Path(args.data or 'config').stem)}"
    train = {k: v for k, v in (("epochs", args.epochs), ("device", args.device), ("seed", args.seed)) if v is not None}
    options = dict(trials=args.trials, storage=resolve_storage(args.storage, args.storage_file), study=args.study,
                   workers=args.workers,
                   sampler=args.sampler, pruner=args.pruner, prune_warmup=args.prune_warmup,
                   sampler_seed=args.sampler_seed, together=args.together)
    if args.model:
        options.update(config=args.config, data_path=args.data_path, overrides=args.overrides, **train)
    result = sweep(args.model, args.data, args.params, out, **options)
    print(f"written: {result.setup.out}/sweep.md, trials.csv, trials.json; trial runs under {result.setup.out}/trials/")
    return 0
