"""Small helpers shared by the experiment modules: CPU counts, process pools,
optional imports, run-directory reading and config comparison."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import re
from pathlib import Path
from typing import Any

from mmib.config import RunConfig, load_config
from mmib.errors import ConfigError
from mmib.train import rundir

#: Training options that do not change what a run computes (ignored when deciding
#: whether an existing run directory matches the requested configuration).
VOLATILE_TRAIN_KEYS = ("progress", "threads", "eval_batch_size")


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware on Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes sharing ``cores`` cores."""
    return max(1, (cores or available_cores()) // max(1, workers))


#: Modules the fork server imports once, so that every worker process forked from it starts
#: with them loaded: PyTorch and the library (about 3 CPU s per process here) and TorchDynamo,
#: which torch.optim imports when the first optimizer is made (another 1.6 s).
WORKER_PRELOAD = ("mmib.api", "mmib.experiments.compare", "torch._dynamo")


def process_context() -> mp.context.BaseContext:
    """``forkserver`` where available (safe with torch, cheap starts), else ``spawn``.

    The fork server preloads :data:`WORKER_PRELOAD`: a worker's start-up then costs a fork, not
    an import of PyTorch, and a pool's workers are reused for every task it runs."""
    methods = mp.get_all_start_methods()
    if "forkserver" not in methods:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    return ctx


def require(module: str, extra: str = "experiments") -> Any:
    """Import an optional dependency or raise ConfigError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this command needs the Python package {module.split('.')[0]!r}: "
                          f"pip install 'mmib[{extra}]'") from None


def comparable_config(cfg: RunConfig | dict) -> dict:
    """A config as a dict without the training options that do not change results."""
    d = cfg.to_dict() if isinstance(cfg, RunConfig) else dict(cfg)
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for key in VOLATILE_TRAIN_KEYS:
        d.get("train", {}).pop(key, None)
    d.get("data", {}).pop("trust_pickle", None)  # how a file is opened, not what the run computes
    return d


def same_config(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir/config.yaml`` describes the same run as ``cfg``."""
    path = run_dir / rundir.CONFIG
    if not path.is_file():
        return False
    return comparable_config(load_config(path)) == comparable_config(cfg)


def slug(text: str) -> str:
    """A file-name-safe version of ``text``: one path component, never ``.``, ``..`` or a hidden name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def parse_list(text: str, what: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; empty items are an error naming ``what``."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise ConfigError(f"{what} {text!r}: expected a comma-separated list without empty items")
    return items


def parse_floats(text: str, what: str) -> list[float]:
    out = []
    for t in parse_list(text, what):
        try:
            out.append(float(t))
        except ValueError:
            raise ConfigError(f"{what}: {t!r} is not a number") from None
    return out
