"""``mmib train``: train one model on one dataset and write a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmib.commands._common import add_data_args, add_run_args, add_trust_arg, next_free_dir, run_config_from_args
from mmib.errors import ConfigError, RunError

COMMAND = "train"
HELP = "train a model and print its metrics"
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="model name (see `mmib models`)")
    add_data_args(p)
    add_run_args(p)
    p.add_argument("--out", help="run directory (default: runs/DATA-MODEL-seedS, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    add_trust_arg(p)


def default_run_name(cfg) -> str:  # type: ignore[no-untyped-def]
    """``DATA-MODEL-seedS`` under ./runs, DATA being the dataset's name or its file's stem (never a path)."""
    from mmib.experiments._util import slug

    stem = Path(str(cfg.data.name)).name
    stem = Path(stem).stem if Path(stem).suffix else stem
    return slug(f"{stem}-{cfg.model.name}-seed{cfg.train.seed}")


def run(args: argparse.Namespace) -> int:
    from mmib.api import dataset_from_config, train
    from mmib.eval.tables import metrics_table
    from mmib.train import rundir

    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR (the interrupted run)")
        result = train(out=args.out, resume=True, trust_pickle=args.trust_pickle)
    else:
        cfg = run_config_from_args(args, args.model)
        if args.trust_pickle:
            cfg.data.trust_pickle = True
        if not args.model and not args.config:
            raise ConfigError("choose a model with -m MODEL (see `mmib models`) or give --config")
        if not args.data and not args.config:
            raise ConfigError("choose a dataset with -d DATA (see `mmib datasets`) or give --config")
        if args.out:
            out = Path(args.out)
            if (out / rundir.RESULTS).exists() and not args.overwrite:
                raise RunError(f"{out}: holds a finished run; pass --overwrite to replace it or choose another --out")
            if rundir.is_unfinished(out) and not args.overwrite:
                raise RunError(f"{out}: holds an unfinished run; pass --resume to continue it or --overwrite")
        else:
            out = next_free_dir(Path("runs") / default_run_name(cfg))
        rundir.prepare_dir(out, create=False)  # a read-only or full output folder fails before the data load
        dataset = dataset_from_config(cfg.data)
        print(dataset.summary())
        result = train(config=cfg, out=out, dataset=dataset, overwrite=args.overwrite)
    print(f"{result.results['model']} on {result.results['dataset']}: best epoch {result.best_epoch} "
          f"of {result.results['epochs_run']} (monitor {result.monitor}), {result.train_seconds:.1f} s training")
    print(metrics_table({"valid": result.valid, "test": result.test}))
    print(f"run directory: {result.run_dir}")
    return 0
