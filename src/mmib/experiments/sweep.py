"""Hyper-parameter sweeps: an Optuna study over any registered model's options.

Each trial is an ordinary training run (``<out>/trials/<number>/``) whose
validation monitor (the metric that selects the best epoch) is the objective.
Every epoch reports that metric to Optuna through the engine's
``epoch_callback``; the pruner (median by default) stops unpromising trials.

Storage is any SQLAlchemy URL Optuna accepts: SQLite by default
(``sqlite:///<out>/study.db``), PostgreSQL (``postgresql+psycopg2://user:pw@host/db``)
to let several machines join one study: every ``mmib sweep`` with the same
``--storage`` and ``--study`` adds its workers to that study. A sweep is
resumable: rerunning the same command (or ``mmib sweep --out DIR``) continues
until ``trials`` trials have finished (complete or pruned); finished trials are
never repeated, and a trial whose process died (killed, Ctrl-C) is queued
again with the same parameters. A heartbeat lets other machines retry trials of
a machine that vanished.

Parameter specs (``--param NAME=SPEC``; NAME is a ``--set`` key, so ``beta``,
``lr``, ``model.encoders.audio``, ``data.n_samples`` all work):
``loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``int:LOW:HIGH[:STEP|:log]``,
``choice:A,B,C``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmib.config import RunConfig, apply_overrides, dump_config, parse_value
from mmib.errors import ConfigError, MMIBError, RunError
from mmib.eval.metrics import default_monitor, metric_mode
from mmib.eval.tables import format_value, markdown_table
from mmib.experiments._util import comparable_config, process_context, require, threads_per_worker
from mmib.train import rundir

SWEEP_JSON = "sweep.json"
TRIALS_JSON = "trials.json"
TRIALS_CSV = "trials.csv"
SWEEP_MD = "sweep.md"
TRIALS_DIR = "trials"
KINDS = ("loguniform", "uniform", "int", "choice")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_S = 60
GRACE_S = 180
#: default trials per ensemble (``--together``)
TOGETHER = 4

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: a ``--set`` key and its distribution."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "ParamSpec":
        """``beta=loguniform:1e-6:1``, ``fusion=choice:concat,tensor``, ``hidden=int:16:128:16``."""
        if "=" not in text:
            raise ConfigError(f"--param {text!r}: expected NAME=KIND:ARGS (e.g. beta=loguniform:1e-6:1)")
        name, spec = (t.strip() for t in text.split("=", 1))
        kind, _, rest = spec.partition(":")
        where = f"--param {text!r}"
        if not name:
            raise ConfigError(f"{where}: empty parameter name")
        if kind not in KINDS:
            raise ConfigError(f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        if kind == "choice":
            values = tuple(parse_value(v.strip()) for v in rest.split(",")) if rest else ()
            if not values or any(v == "" or v is None for v in values):
                raise ConfigError(f"{where}: choice needs a comma-separated list of values")
            if len(set(map(repr, values))) != len(values):
                raise ConfigError(f"{where}: a choice is listed twice")
            for v in values:
                if not isinstance(v, (str, int, float, bool)):
                    raise ConfigError(f"{where}: choice {v!r} must be a number, string or boolean")
            return cls(name, kind, choices=values, text=text)
        parts = rest.split(":")
        extra = parts[2:] if len(parts) > 2 else []
        if len(parts) < 2 or len(extra) > 1:
            raise ConfigError(f"{where}: expected {kind}:LOW:HIGH" + ("[:STEP|:log]" if kind == "int" else ""))
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ConfigError(f"{where}: bounds must be numbers") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ConfigError(f"{where}: need finite LOW < HIGH")
        if kind == "loguniform":
            if extra:
                raise ConfigError(f"{where}: loguniform takes LOW:HIGH only")
            if low <= 0:
                raise ConfigError(f"{where}: loguniform needs LOW > 0 (a log scale cannot reach 0)")
            return cls(name, kind, low, high, log=True, text=text)
        if kind == "uniform":
            if extra:
                raise ConfigError(f"{where}: uniform takes LOW:HIGH only")
            return cls(name, kind, low, high, text=text)
        if not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"{where}: int bounds must be whole numbers")
        step, log = 1, False
        if extra:
            if extra[0] == "log":
                log = True
                if low <= 0:
                    raise ConfigError(f"{where}: int:...:log needs LOW >= 1")
            else:
                try:
                    step = int(extra[0])
                except ValueError:
                    raise ConfigError(f"{where}: STEP must be a whole number or 'log'") from None
                if step < 1:
                    raise ConfigError(f"{where}: STEP must be >= 1")
        return cls(name, kind, low, high, step, log, text=text)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def grid(self) -> list[Any]:
        """Every value of a discrete parameter (for the grid sampler)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        raise ConfigError(f"--sampler grid: parameter {self.name!r} is {self.kind}; grids need choice or int values")

    def representative(self) -> list[Any]:
        """Values used to validate the parameter before any training."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


def _as_override(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{name}={'true' if value else 'false'}"
    if isinstance(value, float):
        return f"{name}={value!r}"
    return f"{name}={value}"


def apply_params(base: RunConfig, params: dict[str, Any]) -> RunConfig:
    """``base`` with each parameter applied as a ``--set`` override."""
    return apply_overrides(base, [_as_override(k, v) for k, v in params.items()])


# ----------------------------------------------------------------------------- set-up
@dataclass
class SweepSetup:
    """Everything a worker needs; also what ``sweep.json`` records."""

    model: str
    base: dict[str, Any]
    params: list[str]
    trials: int
    monitor: str
    direction: str
    storage: str
    study: str
    out: str
    sampler: str = "tpe"
    pruner: str = "median"
    prune_warmup: int = 2
    seed: int = 0
    workers: int = 1
    #: trials a worker asks for at once and trains together as one ensemble, when every searched
    #: parameter is one an ensemble's members may differ in (see :func:`together_reason`)
    together: int = TOGETHER
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    @property
    def specs(self) -> list[ParamSpec]:
        return [ParamSpec.parse(p) for p in self.params]

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.base, where="sweep base config")

    def fingerprint(self) -> dict[str, Any]:
        """What must agree for two sweeps to share one study."""
        return {"model": self.model, "params": sorted(self.params), "monitor": self.monitor,
                "direction": self.direction, "config": comparable_config(self.base)}

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["storage"] = redact(self.storage)
        return d


#: Query parameters of a storage URL whose values are secrets (``?password=...`` and friends).
SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "pass", "sslpassword", "secret", "token", "api_key", "apikey",
                     "access_key", "secret_key", "auth")
#: Environment variable that may hold the storage URL (so that ``ps`` does not show its password).
STORAGE_ENV = "MMIB_STORAGE"
MASK = "***"
_QUERY_SECRET = re.compile(r"((?:^|[?&;\s])(?:" + "|".join(SECRET_QUERY_KEYS) + r")=)([^&;#\s'\"]*)", re.IGNORECASE)
_USERINFO = re.compile(r"(://[^/?#@\s:]*:)([^/?#\s]*)(@)")


def storage_secrets(url: str) -> list[str]:
    """The secret values a storage URL carries (its password, in the user part or the query), raw and decoded."""
    from urllib.parse import unquote

    found: list[str] = []
    m = _USERINFO.search(url)
    if m and m.group(2):
        found.append(m.group(2))
    found += [v.group(2) for v in _QUERY_SECRET.finditer(url) if v.group(2)]
    out: list[str] = []
    for value in found:
        for form in (value, unquote(value), unquote(value.replace("+", " "))):
            if form and form not in out:
                out.append(form)
    return sorted(out, key=len, reverse=True)


def redact(url: str) -> str:
    """The storage URL with every password masked (``user:***@host``, ``?password=***``), for files and logs."""
    return scrub(url, url)


def scrub(text: str, url: str) -> str:
    """``text`` (a URL, a message) with passwords masked: in every URL-shaped part (``user:***@``,
    ``?password=***``), and every secret of ``url`` of 3 or more characters wherever it appears."""
    text = _USERINFO.sub(lambda m: m.group(1) + (MASK if m.group(2) else "") + m.group(3), text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    for secret in storage_secrets(url):
        if len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text


def _scrub_exception(exc: BaseException, url: str) -> None:
    """Mask the storage URL's secrets in an exception's message (and those it was raised from), in place."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.args = tuple(scrub(a, url) if isinstance(a, str) else a for a in exc.args)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def resolve_storage(storage: str | None = None, storage_file: str | Path | None = None) -> str | None:
    """The storage URL from ``--storage``, else the first line of ``--storage-file``, else ``$MMIB_STORAGE``,
    else None (the sweep's own or the default). The file and the variable keep the password out of ``ps``;
    a password given with ``--storage`` gets a warning that says so."""
    if storage is not None and storage_file is not None:
        raise ConfigError("give either --storage or --storage-file, not both")
    if storage is not None:
        if storage_secrets(storage):
            warnings.warn(f"--storage {redact(storage)}: a password on the command line is visible to other users "
                          f"(ps); put the URL in ${STORAGE_ENV} or a file given with --storage-file", stacklevel=2)
        return storage
    if storage_file is not None:
        f = Path(storage_file)
        try:
            lines = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--storage-file {f}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
        if not lines:
            raise ConfigError(f"--storage-file {f}: empty (expected the storage URL on its first line)")
        return lines[0]
    value = os.environ.get(STORAGE_ENV, "").strip()
    return value or None


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def make_storage(url: str) -> Any:
    """An Optuna RDB storage with a heartbeat (stale trials of dead workers are retried)."""
    optuna = require("optuna")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    retry: dict[str, Any] = {}
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        retry["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
    else:  # optuna < 4.9
        retry["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=2)
    try:
        for attempt in range(6):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S, **retry)
            except Exception as exc:  # noqa: BLE001 - two processes creating one SQLite schema at once
                racing = "alembic_version" in str(exc) or "already exists" in str(exc) or "is locked" in str(exc)
                if not racing or attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")
    except ImportError as exc:
        raise ConfigError(f"--storage {redact(url)}: missing database driver ({scrub(str(exc), url)}); "
                          "for PostgreSQL pip install psycopg2-binary") from None
    except Exception as exc:  # noqa: BLE001 - connection/URL errors from SQLAlchemy
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {redact(url)}: cannot open ({scrub(first, url)})") from None


def _sampler(setup: SweepSetup, worker: int, existing: int = 0) -> Any:
    """The sampler of one worker. Its seed mixes the sweep seed, the worker index and the number of
    trials the study already has, so a resumed sweep does not propose its first points again."""
    optuna = require("optuna")
    seed = (setup.seed * 1_000_003 + existing * 1009 + worker) % 2**32
    if setup.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if setup.sampler == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid() for p in setup.specs}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, setup.trials // 3)))


def _pruner(setup: SweepSetup) -> Any:
    optuna = require("optuna")
    if setup.pruner == "none":
        return optuna.pruners.NopPruner()
    if setup.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, setup.prune_warmup))
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=setup.prune_warmup)


def validate(setup: SweepSetup, dataset: Any) -> None:
    """Fail before any training if a parameter key or value is not accepted by the model."""
    from mmib.models.registry import build_model, model_options

    base = setup.config
    for spec in setup.specs:
        for value in spec.representative():
            cfg = apply_params(base, {spec.name: value})
            model_options(cfg.model.name, cfg.model.options)
    build_model(base.model.name, dataset.spec, **apply_params(base, {s.name: s.representative()[0] for s in setup.specs}).model.options)
    if setup.sampler == "grid":
        for spec in setup.specs:
            spec.grid()


# ----------------------------------------------------------------------------- worker identity
def _start_time(pid: int) -> str:
    """Process start time (Linux /proc), so a reused pid is not mistaken for the old process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _alive(tag: str) -> bool:
    """Whether the worker process ``host:pid:start`` still runs (only decidable on its own host)."""
    host, _, rest = tag.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return _start_time(pid) == start


def recover_interrupted(study: Any, storage: Any, log: Log | None = None) -> list[int]:
    """Queue again the trials this host's dead workers left running or that Ctrl-C stopped.

    Running trials of a dead local process are marked failed first. Returns the
    numbers of the trials queued again (each once: a retry carries ``retry_of``).
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for t in trials:
        dead = t.state == TrialState.RUNNING and "worker" in t.user_attrs and not _alive(t.user_attrs["worker"])
        if dead:
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        interrupted = t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
        if (dead or interrupted) and t.number not in retried and t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            queued.append(t.number)
    if queued and log:
        log(f"queued again the interrupted trial(s) {', '.join(map(str, queued))}")
    return queued


# ----------------------------------------------------------------------------- trials
def _start_trial(trial: Any, setup: SweepSetup) -> tuple[RunConfig, Path]:
    """The trial's config (its suggested parameters on the base) and run directory, recorded on the trial."""
    params = {p.name: p.suggest(trial) for p in setup.specs}
    run_dir = Path(setup.out) / TRIALS_DIR / f"{trial.number:04d}"
    trial.set_user_attr("worker", worker_tag())
    trial.set_user_attr("run_dir", str(run_dir))
    return apply_params(setup.config, params), run_dir


def _reporter(trial: Any, setup: SweepSetup, last: dict[str, int]) -> Callable[[int, dict[str, Any]], None]:
    """The epoch callback of a trial: report the validation monitor, prune when the pruner says so."""
    optuna = require("optuna")

    def report(epoch: int, row: dict[str, Any]) -> None:
        last["epoch"] = epoch
        value = (row.get("valid") or {}).get(setup.monitor)
        if value is None or not math.isfinite(value):
            return
        trial.report(float(value), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} ({setup.monitor}={value:.4g})")

    return report


def _pruned(trial: Any, run_dir: Path, last: dict[str, int]) -> None:
    trial.set_user_attr("epochs_run", last["epoch"])
    (run_dir / rundir.CHECKPOINT).unlink(missing_ok=True)  # a pruned trial is never resumed


def _finished(trial: Any, setup: SweepSetup, result: Any) -> float:
    """Record a trained trial's results on it; its objective value."""
    res = result.results
    for k in ("valid", "test", "epochs_run", "best_epoch", "seconds_per_epoch", "params"):
        trial.set_user_attr(k, res.get(k))
    value = result.valid.get(setup.monitor)
    if value is None:
        raise RunError(f"trial {trial.number}: no validation {setup.monitor!r} (the dataset needs a valid split)")
    return float(value)


def _dataset(cfg: RunConfig, cache: dict[str, Any]) -> Any:
    from mmib.api import dataset_from_config

    key = dump_config(RunConfig(data=cfg.data))
    if key not in cache:
        cache.clear()
        cache[key] = dataset_from_config(cfg.data)
    return cache[key]


def _train_trial(trial: Any, setup: SweepSetup, cache: dict[str, Any]) -> float:
    """The objective: train one configuration, report the monitor every epoch, return its best value."""
    optuna = require("optuna")
    from mmib.api import train

    cfg, run_dir = _start_trial(trial, setup)
    dataset = _dataset(cfg, cache)
    last = {"epoch": 0}
    try:
        result = train(config=cfg, out=run_dir, dataset=dataset, epoch_callback=_reporter(trial, setup, last))
    except optuna.TrialPruned:
        _pruned(trial, run_dir, last)
        raise
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        raise
    except MMIBError as exc:
        trial.set_user_attr("error", str(exc))
        raise
    return _finished(trial, setup, result)


def together_reason(setup: SweepSetup) -> str | None:
    """Why the sweep's trials cannot be trained together (one line), or None when they can: the
    model class allows ensembles and every searched parameter is one the members of an ensemble
    may differ in (a per-member training option such as ``lr``, ``weight_decay`` or ``seed``, the
    data seed, or an option the model declares per-member, such as MIB's ``beta``)."""
    from mmib.models.registry import get_model
    from mmib.train.ensemble import PER_MEMBER_TRAIN_OPTIONS, class_unsupported

    base = setup.config
    cls = get_model(base.model.name).cls
    reason = class_unsupported(cls, base.train)
    if reason:
        return reason
    per_member = {f"train.{k}" for k in PER_MEMBER_TRAIN_OPTIONS} | {"data.seed"}
    per_member |= {f"model.{k}" for k in cls.ensemble_options}
    before = _flat(base.to_dict())
    for spec in setup.specs:
        for value in spec.representative():
            after = _flat(apply_params(base, {spec.name: value}).to_dict())
            changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} - per_member
            if changed:
                return (f"parameter {spec.name!r} changes {', '.join(sorted(changed))}, which the members of one "
                        "ensemble share")
    return None


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """``{"train": {"lr": 1}, "model": {"options": {"beta": 2}}}`` -> ``{"train.lr": 1, "model.beta": 2}``."""
    out: dict[str, Any] = {}
    for section, values in d.items():
        for k, v in values.items():
            if k == "options":
                out.update({f"{section}.{ok}": json.dumps(ov, sort_keys=True, default=str) for ok, ov in v.items()})
            else:
                out[f"{section}.{k}"] = json.dumps(v, sort_keys=True, default=str)
    return out


def _heartbeat(trial: Any, study: Any) -> Any:
    """Optuna's heartbeat thread for a trial asked outside ``study.optimize`` (which starts one itself),
    so that other machines see the trial alive; a no-op where this Optuna has no such helper."""
    try:
        from optuna.storages._heartbeat import get_heartbeat_thread
    except ImportError:  # pragma: no cover - other Optuna versions
        return contextlib.nullcontext()
    return get_heartbeat_thread(trial._trial_id, study._storage)


def _heartbeat_enabled(study: Any) -> bool:
    try:
        from optuna.storages._heartbeat import is_heartbeat_enabled
    except ImportError:  # pragma: no cover - other Optuna versions
        return False
    return bool(is_heartbeat_enabled(study._storage))


def _datasets(cfgs: Sequence[RunConfig], cache: dict[str, Any]) -> list[Any]:
    """The trials' datasets: the worker's cached one where the data config is the same, else
    loaded once per distinct data config (a searched data seed)."""
    from mmib.api import dataset_from_config

    loaded = dict(cache)
    out = []
    for cfg in cfgs:
        key = dump_config(RunConfig(data=cfg.data))
        if key not in loaded:
            loaded[key] = dataset_from_config(cfg.data)
        out.append(loaded[key])
    return out


def optimize_together(study: Any, setup: SweepSetup, cache: dict[str, Any], quota: int) -> None:
    """Run up to ``quota`` trials, asking Optuna for ``setup.together`` at a time and training each
    batch together (:func:`mmib.api.train_together`: one vectorised ensemble, or one at a time
    where the model's trial step under vmap fails). Never asks for more trials than the study
    still needs counting the trials other workers are running; pruning, failures and Ctrl-C are
    recorded per trial as ``study.optimize`` would."""
    optuna = require("optuna")
    from optuna.trial import TrialState

    from mmib.api import train_together

    done = 0
    while done < quota:
        if _heartbeat_enabled(study):
            optuna.storages.fail_stale_trials(study)
        k = min(setup.together, quota - done, setup.trials - claimed_trials(study))
        if k < 1:
            return
        with warnings.catch_warnings():  # we run the heartbeat ourselves (_heartbeat)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            asked = [study.ask() for _ in range(k)]
        done += k
        # the exact budget as _budgeted_trial keeps it: a trial asked once `trials` trials numbered
        # below it were finished or running (other workers ask too) is surplus and not run
        trials, surplus = [], False
        for t in asked:
            if claimed_trials(study, before=t.number) >= setup.trials:
                t.set_user_attr(SURPLUS, True)
                study.tell(t, state=TrialState.FAIL)
                surplus = True
            else:
                trials.append(t)
        if not trials:
            return
        started = [_start_trial(t, setup) for t in trials]
        lasts = [{"epoch": 0} for _ in trials]
        try:
            datasets = _datasets([cfg for cfg, _ in started], cache)
            with contextlib.ExitStack() as beats:
                for t in trials:
                    beats.enter_context(_heartbeat(t, study))
                results: list[Any] = train_together(
                    [cfg for cfg, _ in started], [run_dir for _, run_dir in started], datasets=datasets,
                    epoch_callbacks=[_reporter(t, setup, last) for t, last in zip(trials, lasts)])
        except KeyboardInterrupt:
            for t in trials:
                t.set_user_attr("interrupted", True)
                study.tell(t, state=TrialState.FAIL)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the data failed to load: every trial fails alike
            results = [exc] * len(trials)
        fatal = None
        for t, (_cfg, run_dir), last, r in zip(trials, started, lasts, results):
            if isinstance(r, optuna.TrialPruned):
                _pruned(t, run_dir, last)
                study.tell(t, state=TrialState.PRUNED)
            elif isinstance(r, Exception):
                if isinstance(r, MMIBError):
                    t.set_user_attr("error", str(r))
                else:
                    fatal = fatal or r
                study.tell(t, state=TrialState.FAIL)
            else:
                try:
                    study.tell(t, _finished(t, setup, r))
                except MMIBError as exc:
                    t.set_user_attr("error", str(exc))
                    study.tell(t, state=TrialState.FAIL)
        _snapshot(setup, study)
        if fatal is not None:
            raise fatal
        if surplus:
            return


def trial_records(study: Any) -> list[dict[str, Any]]:
    """Every trial of the study as plain data (what trials.json holds)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        out.append({
            "number": t.number,
            "state": "SURPLUS" if t.user_attrs.get(SURPLUS) else t.state.name,
            "params": dict(t.params),
            "value": t.value,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "user_attrs": dict(t.user_attrs),
            "start": t.datetime_start.isoformat() if t.datetime_start else None,
            "seconds": t.duration.total_seconds() if t.duration else None,
        })
    return out


def _snapshot(setup: SweepSetup, study: Any) -> None:
    rundir.atomic_write_json(Path(setup.out) / TRIALS_JSON, {"sweep": setup.public(), "trials": trial_records(study)})


def run_worker(setup_dict: dict[str, Any], worker: int, quota: int, dataset: Any = None) -> dict[str, Any]:
    """One sweep process: join the study and run up to ``quota`` trials. Module-level for worker processes.

    ``dataset``: the base config's dataset, already loaded (in-process runs reuse it).
    """
    optuna = require("optuna")
    import torch

    from optuna.trial import TrialState

    setup = SweepSetup(**setup_dict)
    threads = setup.config.train.threads
    if threads:
        torch.set_num_threads(int(threads))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(setup.storage)
    existing = len(optuna.load_study(study_name=setup.study, storage=storage).get_trials(deepcopy=False))
    study = optuna.load_study(study_name=setup.study, storage=storage, sampler=_sampler(setup, worker, existing),
                              pruner=_pruner(setup))
    cache: dict[str, Any] = {}
    if dataset is not None:
        cache[dump_config(RunConfig(data=setup.config.data))] = dataset
    if setup.together > 1 and together_reason(setup) is None:
        optimize_together(study, setup, cache, quota)
        return {"worker": worker, "pid": os.getpid()}
    stop = lambda s, _t: s.stop() if claimed_trials(s) >= setup.trials else None  # noqa: E731
    snapshot = lambda s, _t: _snapshot(setup, s)  # noqa: E731
    _quiet_surplus_failures()
    study.optimize(lambda trial: _budgeted_trial(trial, setup, cache), n_trials=quota, catch=(MMIBError,),
                   callbacks=[stop, snapshot])
    return {"worker": worker, "pid": os.getpid()}


# ----------------------------------------------------------------------------- the trial budget
#: user attribute of a trial that was asked for after the study's budget was used up (it never runs)
SURPLUS = "surplus"


class SurplusTrial(MMIBError):
    """A trial asked for once ``trials`` trials were already finished or running: it is not run."""


def _counts(t: Any) -> bool:
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) and not t.user_attrs.get(SURPLUS)


def claimed_trials(study: Any, before: int | None = None) -> int:
    """Trials that use the budget: finished (complete, pruned) or running, numbered below ``before`` if given."""
    return sum(1 for t in study.get_trials(deepcopy=False) if _counts(t) and (before is None or t.number < before))


def _budgeted_trial(trial: Any, setup: SweepSetup, cache: dict[str, Any]) -> float:
    """Train ``trial`` if it is within the budget, else mark it surplus and stop this worker.

    Several processes (or machines) ask the shared study for trials at once, so counting before
    asking can overshoot; instead every trial, once asked, counts the trials that use the budget
    and were asked before it (trial numbers are given out in order by the storage). Exactly
    ``setup.trials`` trials then run, however the workers interleave."""
    if claimed_trials(trial.study, before=trial.number) >= setup.trials:
        trial.set_user_attr(SURPLUS, True)  # the worker's callback then stops it: the budget is used up
        raise SurplusTrial(f"trial {trial.number}: the study already has {setup.trials} trials")
    return _train_trial(trial, setup, cache)


class _SurplusFilter(logging.Filter):
    """Drops Optuna's two "Trial N failed ..." lines for a surplus trial N."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        number = text.split()[1] if text.startswith("Trial ") and len(text.split()) > 1 else None
        if SurplusTrial.__name__ in text and number is not None:
            self.numbers.add(number)
            return False
        return not (number in self.numbers and "failed with value" in text)


def _quiet_surplus_failures() -> None:
    """Keep Optuna from logging a surplus trial as a failed one (it was never run)."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _SurplusFilter) for f in logger.filters):
        logger.addFilter(_SurplusFilter())


# ----------------------------------------------------------------------------- entry point
@dataclass
class SweepResult:
    setup: SweepSetup
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    markdown: str


def prepare(
    model: str | None,
    data: str | None,
    params: Sequence[str],
    out: str | Path,
    *,
    trials: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    sampler: str = "tpe",
    pruner: str = "median",
    prune_warmup: int = 2,
    sampler_seed: int = 0,
    together: int | None = None,
    config: RunConfig | str | Path | None = None,
    data_path: str | None = None,
    data_options: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    **train_options: Any,
) -> tuple[SweepSetup, Any]:
    """Build (or reload from ``out/sweep.json``) the sweep set-up; returns it with the loaded dataset."""
    from mmib.api import dataset_from_config, make_config

    out = Path(out)
    saved = out / SWEEP_JSON
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if together is not None and together < 1:
        raise ConfigError(f"--together must be >= 1, got {together}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r}: choose one of {', '.join(PRUNERS)}")
    if model is None:
        if not saved.is_file():
            raise ConfigError(f"choose a model with -m MODEL (or continue a sweep: {saved} does not exist)")
        d = json.loads(saved.read_text())
        if storage is None and MASK in d["storage"]:
            raise ConfigError(f"{saved}: the study's storage URL has a password, which is never written to a file; "
                              f"give it again (${STORAGE_ENV}, --storage-file or --storage)")
        d.update(storage=storage or d["storage"], study=study or d["study"], workers=workers,
                 trials=trials if trials is not None else d["trials"])
        if together is not None:
            d["together"] = together
        if isinstance(d.get("base", {}).get("data"), dict):
            d["base"]["data"]["trust_pickle"] = False  # a stored file never grants it: give the full command
        setup = SweepSetup(**d)
        dataset = dataset_from_config(setup.config.data)
        return setup, dataset
    if not params:
        raise ConfigError("give at least one --param NAME=SPEC (e.g. --param beta=loguniform:1e-6:1)")
    specs = [ParamSpec.parse(p) for p in params]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--param: {', '.join(sorted({n for n in names if names.count(n) > 1}))} given twice")
    base = make_config(model, data, config, data_path=data_path, data_options=data_options, overrides=list(overrides),
                       progress=False, **train_options)
    if workers > 1 and base.train.threads is None:
        base.train.threads = threads_per_worker(workers)
    dataset = dataset_from_config(base.data)
    if dataset.split_size("valid") == 0:
        raise ConfigError(f"{dataset.name}: has no validation split; a sweep tunes on validation metrics, never on test")
    monitor = base.train.monitor or default_monitor(dataset.task)
    direction = "minimize" if metric_mode(monitor) == "min" else "maximize"
    if trials is None:
        trials = 1
        for s in specs:
            trials *= len(s.grid()) if sampler == "grid" else 1
        trials = trials if sampler == "grid" else 20
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    setup = SweepSetup(model=model, base=base.to_dict(), params=[s.text for s in specs], trials=trials, monitor=monitor,
                       direction=direction, storage=storage or default_storage(out), study=study or out.resolve().name,
                       out=str(out.resolve()), sampler=sampler, pruner=pruner, prune_warmup=prune_warmup,
                       seed=sampler_seed, workers=workers, together=TOGETHER if together is None else together)
    validate(setup, dataset)
    out.mkdir(parents=True, exist_ok=True)
    return setup, dataset


def sweep(
    model: str | None,
    data: str | None,
    params: Sequence[str],
    out: str | Path,
    *,
    log: Log | None = print,
    **options: Any,
) -> SweepResult:
    """Run (or continue) a sweep until ``trials`` trials have finished; write trials.json/csv and sweep.md.

    ``options`` are those of :func:`prepare`. Exactly ``trials`` trials finish even when several
    processes or machines share the study (:func:`_budgeted_trial`); no message, file or log line
    carries the storage URL's password (:func:`redact`).
    """
    url = str(options.get("storage") or "")
    try:
        return _sweep(model, data, params, out, log, **options)
    except BaseException as exc:
        _scrub_exception(exc, url)  # no password in a message, whatever raised it
        raise


def _sweep(model: str | None, data: str | None, params: Sequence[str], out: str | Path, log: Log | None,
           **options: Any) -> SweepResult:
    optuna = require("optuna")
    from optuna.trial import TrialState

    setup, _dataset = prepare(model, data, params, out, **options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(setup.storage)
    study = optuna.create_study(storage=storage, study_name=setup.study, direction=setup.direction,
                                load_if_exists=True)
    stored = study.user_attrs.get("mmib_sweep")
    if stored is None:
        study.set_user_attr("mmib_sweep", setup.fingerprint())
    elif stored != json.loads(json.dumps(setup.fingerprint())):
        diff = [k for k in setup.fingerprint() if stored.get(k) != json.loads(json.dumps(setup.fingerprint()[k]))]
        raise ConfigError(f"study {setup.study!r} in {redact(setup.storage)} was created with other settings "
                          f"(differs in: {', '.join(diff)}); use another --study or --out")
    rundir.atomic_write_json(Path(setup.out) / SWEEP_JSON, setup.public())
    recover_interrupted(study, storage, log)
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    remaining = max(0, setup.trials - finished)
    workers = min(setup.workers, remaining)
    if log:
        log(f"study {setup.study!r} in {redact(setup.storage)}: {finished} of {setup.trials} trials finished"
            + (f"; running {remaining} more with {workers} worker(s)" if remaining else "; nothing to run"))
        if remaining and setup.together > 1:
            reason = together_reason(setup)
            log(f"trials are trained {setup.together} at a time as one vectorised ensemble per worker "
                "(where the model runs under vmap)" if reason is None else f"trials are trained one at a time: {reason}")
    if remaining:
        quotas = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
        payload = asdict(setup)
        if workers == 1:
            run_worker(payload, 0, quotas[0], _dataset)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=process_context()) as pool:
                futures = [pool.submit(run_worker, payload, i, q) for i, q in enumerate(quotas)]
                for f in futures:
                    f.result()
    return finish(setup, study, log)


def finish(setup: SweepSetup, study: Any, log: Log | None = print) -> SweepResult:
    """Write trials.json, trials.csv and sweep.md from the study's current trials."""
    _snapshot(setup, study)
    records = trial_records(study)
    done = [t for t in records if t["state"] == "COMPLETE" and t["value"] is not None]
    best = None
    if done:
        pick = min if setup.direction == "minimize" else max
        best = pick(done, key=lambda t: t["value"])
    md = render_markdown(setup, records, best)
    out = Path(setup.out)
    rundir.atomic_write_text(out / SWEEP_MD, md)
    rundir.atomic_write_text(out / TRIALS_CSV, render_csv(setup, records))
    if log:
        log(md)
    return SweepResult(setup, records, best, md)


def _test_value(t: dict[str, Any], monitor: str) -> Any:
    return (t["user_attrs"].get("test") or {}).get(monitor)


def render_markdown(setup: SweepSetup, records: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    names = [ParamSpec.parse(p).name for p in setup.params]
    counts: dict[str, int] = {}
    for t in records:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    lines = [f"# Sweep of {setup.model} on {setup.config.data.name}", "",
             f"Study `{setup.study}` in `{redact(setup.storage)}`; objective: validation {setup.monitor} "
             f"({setup.direction}); sampler {setup.sampler}, pruner {setup.pruner}. Trials: "
             + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) + ".", "",
             "Parameters: " + "; ".join(f"`{p}`" for p in setup.params), ""]
    if best is not None:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in best["params"].items())
        lines += [f"Best: trial {best['number']} ({params}): valid {setup.monitor} {format_value(best['value'])}, "
                  f"test {setup.monitor} {format_value(_test_value(best, setup.monitor))}.", ""]
    reverse = setup.direction == "maximize"
    ordered = sorted(records, key=lambda t: (t["value"] is None, (-t["value"] if reverse else t["value"])
                                             if t["value"] is not None else 0, t["number"]))
    rows = [[t["number"], t["state"].lower(), *(t["params"].get(n) for n in names), t["value"],
             _test_value(t, setup.monitor), t["user_attrs"].get("epochs_run")] for t in ordered]
    lines.append(markdown_table(["trial", "state", *names, f"valid {setup.monitor}", f"test {setup.monitor}", "epochs"],
                                rows))
    return "\n".join(lines) + "\n"


def render_csv(setup: SweepSetup, records: list[dict[str, Any]]) -> str:
    import csv
    import io

    names = [ParamSpec.parse(p).name for p in setup.params]
    test_keys: list[str] = []
    for t in records:
        test_keys.extend(k for k in (t["user_attrs"].get("test") or {}) if k not in test_keys)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "state", *names, "value", "epochs_run", "run_dir", *(f"test_{k}" for k in test_keys)])
    for t in records:
        test = t["user_attrs"].get("test") or {}
        w.writerow([t["number"], t["state"], *("" if t["params"].get(n) is None else t["params"][n] for n in names),
                    "" if t["value"] is None else t["value"], t["user_attrs"].get("epochs_run", ""),
                    t["user_attrs"].get("run_dir", ""), *("" if test.get(k) is None else test[k] for k in test_keys)])
    return buf.getvalue()


def load_sweep(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(sweep settings, trial records)`` from a sweep directory's trials.json."""
    p = Path(path)
    f = p / TRIALS_JSON if p.is_dir() else p
    try:
        d = json.loads(f.read_text())
        return d["sweep"], d["trials"]
    except FileNotFoundError:
        raise RunError(f"{f}: no such file (not a sweep directory, or no trial has finished yet)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunError(f"{f}: not a trials.json written by mmib sweep ({exc})") from None
