"""``mmib study``: run a study file (datasets x rows x seeds, tuning, tables, claims, figures) or a built-in one."""

from __future__ import annotations

import argparse

COMMAND = "study"
HELP = "run a study: a YAML file of datasets, models, seeds, tuning budget, tables, claims and figures"
DESCRIPTION = (
    "Run the study in FILE.yaml (or the built-in study NAME; `mmib study --list`): every run it needs is "
    "trained once (runs are cached by the hash of their full configuration, so a rerun skips finished runs "
    "and resumes interrupted ones), models with a tuning budget are tuned first (the same number of Optuna "
    "trials each, on the validation split), and OUT gets study.md (tables, claims with verdicts, figures), "
    "study.json (every number with its run directories), tables/*.csv|tex and figures/*.png. With --storage "
    "URL (any SQLAlchemy URL, e.g. postgresql+psycopg2://user:pw@host/db) several machines share one study's "
    "work queue. Exit status 1 when a run failed."
)
ORDER = 32


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", nargs="?", help="a built-in study name or a study FILE.yaml")
    p.add_argument("--list", action="store_true", help="list the built-in studies")
    p.add_argument("--dry-run", action="store_true", help="check the study and print its run plan; train nothing")
    p.add_argument("-j", "--jobs", type=int, default=1, help="runs trained at once, each in its own process (default 1)")
    p.add_argument("--storage", help="SQLAlchemy URL of the work queue (default sqlite:///OUT/study.db)")
    p.add_argument("--out", help="study directory: outputs, runs, tuning sweeps (default runs/studies/NAME)")
    p.add_argument("--doc", nargs="?", const=True, default=False, metavar="PATH",
                   help="also write the document: the study's doc: path, or PATH")
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    p.add_argument("--seeds", help="a quick check: N training seeds (or a list 0,3) instead of the study's")
    p.add_argument("--data-seeds", help="a quick check: N data seeds, a list, or 'same'")
    p.add_argument("--trials", type=int, help="a quick check: this many tuning trials per model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a quick check: override a value in every run (e.g. epochs=2; repeatable)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmib.errors import ConfigError

    if args.list:
        from mmib.experiments.study import builtin_studies, summary

        found = builtin_studies()
        width = max((len(n) for n in found), default=4)
        for name, path in found.items():
            s = summary(path)
            print(f"{name.ljust(width)}  {s['title']}" + (f"  (document: {s['doc']})" if s["doc"] else ""))
        return 0
    if not args.study:
        raise ConfigError("name a study (see `mmib study --list`) or give a FILE.yaml")
    from mmib.experiments.study import run_study

    result = run_study(args.study, out=args.out, jobs=args.jobs, storage=args.storage, dry_run=args.dry_run,
                       doc=args.doc, retry_failed=args.retry_failed, seeds=args.seeds, data_seeds=args.data_seeds,
                       trials=args.trials, overrides=args.overrides)
    if isinstance(result, list):
        print("\n".join(result))
        return 0
    print(f"{result.done} of {result.runs} runs finished, {result.failed} failed, {result.pending} elsewhere or "
          f"unfinished; see {Path(result.out) / 'study.md'}")
    return 1 if result.failed else 0
