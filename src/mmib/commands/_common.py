"""Arguments and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmib.config import RunConfig
from mmib.errors import ConfigError


def add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("-d", "--data", required=required, help="dataset name (see `mmib datasets`) or a file path")
    p.add_argument("--data-path", help="file (or folder) the dataset is read from")


def add_run_args(p: argparse.ArgumentParser, quiet: bool = True) -> None:
    """Options every training command shares (train, compare, sweep); ``quiet`` adds ``-q``."""
    p.add_argument("--seed", type=int, help="training seed (data seed: --set data.seed=S)")
    p.add_argument("--epochs", type=int, help="epochs of the main phase")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value: train.X, data.X, model.X or a bare key (repeatable)")
    p.add_argument("--config", help="YAML run config to start from")
    p.add_argument("--device", help="cpu or cuda")
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run_config_from_args(args: argparse.Namespace, model: str | None) -> RunConfig:
    """Build the RunConfig that the shared arguments describe."""
    from mmib.api import make_config

    train: dict = {}
    if args.seed is not None:
        train["seed"] = args.seed
    if args.epochs is not None:
        if args.epochs < 0:
            raise ConfigError(f"--epochs must be >= 0, got {args.epochs}")
        train["epochs"] = args.epochs
    if args.device:
        train["device"] = args.device
    if args.quiet:
        train["progress"] = False
    return make_config(model, getattr(args, "data", None), args.config, data_path=getattr(args, "data_path", None),
                       overrides=args.overrides, **train)


def next_free_dir(base: Path) -> Path:
    """``base`` if unused, else ``base-2``, ``base-3``, ..."""
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    """``--trust-pickle``: open the run's pickled data file the old way (runs the file's code)."""
    p.add_argument("--trust-pickle", action="store_true",
                   help="open an MMSA/MulT pickle with plain pickle.load, which runs any code in the file "
                        "(only for files you trust; same as --set data.trust_pickle=true)")
