"""``mmib compare``: every model x seed, mean +- std tables with paired t-tests (Markdown, CSV, LaTeX)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmib.commands._common import add_data_args

COMMAND = "compare"
HELP = "train several models over several seeds and compare them with significance tests"
DESCRIPTION = (
    "Train every model for every seed (J processes at once; a model's seeds together as one vectorised "
    "ensemble where it supports that), write all runs under one directory "
    "(OUT/MODEL/seedS), and print mean +- std of every metric with the best marked and a paired t-test "
    "of each model against the best, with the reference model `linear` (ridge / logistic regression on the "
    "pooled features) as a yardstick row unless --no-reference. Rerunning skips finished runs and resumes interrupted ones. "
    "Writes compare.md, compare.csv, compare.tex, runs.csv and efficiency.csv into OUT. "
    "Exit status 1 when a run failed (the tables then cover the runs that finished)."
)
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--models", required=True, help="comma-separated model names (see `mmib models`)")
    add_data_args(p)
    p.add_argument("--seeds", default="3", help="number of seeds N (0..N-1) or a list like 0,1,2 (default 3)")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process with cores/J torch threads (default 1)")
    p.add_argument("--out", help="directory of the comparison (default runs/compare-DATA)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split to compare (default test)")
    p.add_argument("--metrics", help="comma-separated subset of the task's metrics (default: all)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the t-test marks (default 0.05)")
    p.add_argument("--epochs", type=int, help="epochs of the main phase")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="[MODEL:]KEY=VALUE",
                   help="override a config value for every model, or for one model with MODEL:KEY=VALUE (repeatable)")
    p.add_argument("--config", help="YAML run config to start from")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--title", help="title of the Markdown table")
    p.add_argument("--separately", action="store_true",
                   help="train every run on its own (default: a model's seeds train together as one vectorised "
                        "ensemble per process where the model supports it)")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="do not add the reference row `linear` (ridge / logistic regression on pooled features)")


def run(args: argparse.Namespace) -> int:
    from mmib.errors import ConfigError
    from mmib.experiments._util import parse_list, slug
    from mmib.experiments.compare import compare

    models = parse_list(args.models, "--models")
    if not args.data and not args.config:
        raise ConfigError("choose a dataset with -d DATA (see `mmib datasets`) or give --config")
    if args.epochs is not None and args.epochs < 0:
        raise ConfigError(f"--epochs must be >= 0, got {args.epochs}")
    train = {k: v for k, v in (("epochs", args.epochs), ("device", args.device)) if v is not None}
    out = Path(args.out) if args.out else Path("runs") / f"compare-{slug(Path(args.data or 'config').stem)}"
    c = compare(models, args.data, args.seeds, out, jobs=args.jobs, split=args.split,
                metrics=parse_list(args.metrics, "--metrics") if args.metrics else None, alpha=args.alpha,
                title=args.title, together=not args.separately, reference=args.reference, config=args.config,
                data_path=args.data_path, overrides=args.overrides, **train)
    print()
    print((out / "compare.md").read_text())
    print(f"written: {out}/compare.md, compare.csv, compare.tex, runs.csv, efficiency.csv")
    return 1 if c.failed else 0
