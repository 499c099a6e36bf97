"""``mmib eval``: evaluate a trained run on a split of its data (or another dataset)."""

from __future__ import annotations

import argparse

from mmib.commands._common import add_data_args, add_trust_arg

COMMAND = "eval"
HELP = "evaluate a trained run"
ORDER = 21


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory written by `mmib train`")
    add_data_args(p)
    p.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split to evaluate")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_trust_arg(p)


def run(args: argparse.Namespace) -> int:
    from mmib.api import evaluate, load_run
    from mmib.eval.tables import metrics_table

    run_ = load_run(args.run_dir)
    trust = args.trust_pickle
    ds = (run_.dataset(args.data or "file", args.data_path, trust_pickle=trust) if args.data or args.data_path
          else run_.dataset(trust_pickle=trust))
    metrics = evaluate(run_, ds, args.split, device=args.device)
    print(f"{run_.config.model.name} on {ds.name}, split {args.split} ({ds.split_size(args.split)} samples)")
    print(metrics_table({args.split: metrics}))
    return 0
