"""Multi-seed comparison of registered models with paired significance tests.

:func:`compare` trains every model for every seed (``J`` worker processes at
once, torch threads divided among them) into one directory,
``<out>/<model>/seed<S>/`` (ordinary run directories), skips runs whose
``results.json`` already exists (and resumes interrupted ones), then
:func:`aggregate` summarises the chosen split's metrics as mean +- sample std
over seeds, marks the best model per metric (respecting
:func:`mmib.eval.metrics.metric_mode`) and runs a paired t-test
(:func:`scipy.stats.ttest_rel`, paired by seed) of every model against the best.
Tables are written as Markdown, CSV and LaTeX, with each model's efficiency
(parameters, seconds per epoch, inference latency, peak memory) from
``results.json``.

Per-model options: ``MODEL:key=value`` in ``overrides`` applies to that model
only (``c-mib:beta=1e-3``); plain ``key=value`` applies to every model that has
that option (training and data keys to all). The reference model ``linear`` is
added as a row unless ``reference=False`` (``--no-reference``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmib.config import RunConfig, apply_overrides, dump_config
from mmib.errors import ConfigError, RunError
from mmib.eval.metrics import metric_mode
from mmib.eval.tables import format_value, markdown_table
from mmib.experiments._util import comparable_config, process_context, same_config, slug, threads_per_worker
from mmib.train import rundir

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_CSV = "compare.csv"
COMPARE_TEX = "compare.tex"
RUNS_CSV = "runs.csv"
EFFICIENCY_CSV = "efficiency.csv"

#: ``results.json`` fields shown in the efficiency table, with their column titles.
EFFICIENCY_FIELDS: tuple[tuple[str, str], ...] = (
    ("params", "params"),
    ("trainable_params", "trainable"),
    ("seconds_per_epoch", "s/epoch"),
    ("epochs_run", "epochs"),
    ("inference_ms_per_sample", "infer ms/sample"),
    ("peak_rss_mb", "peak RSS MB"),
    ("peak_gpu_mb", "peak GPU MB"),
)

Log = Callable[[str], None]


#: The yardstick every comparison carries unless told not to (``--no-reference``).
REFERENCE_MODEL = "linear"


# ----------------------------------------------------------------------------- planning
def with_reference(models: Sequence[str]) -> list[str]:
    """``models`` with the reference model last, unless it is among them already."""
    models = list(models)
    return models if REFERENCE_MODEL in models else [*models, REFERENCE_MODEL]


@dataclass
class PlannedRun:
    """One model x seed of a comparison: where it lives and how it is configured."""

    model: str
    seed: int
    path: Path
    config: RunConfig


def parse_seeds(value: int | str | Sequence[int]) -> list[int]:
    """``3`` or ``"3"`` -> ``[0, 1, 2]``; ``"0,5,9"`` or a list -> those seeds."""
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"--seeds {value!r}: expected a count N or a list like 0,1,2") from None
        else:
            try:
                value = [int(t) for t in text.split(",")]
            except ValueError:
                raise ConfigError(f"--seeds {value!r}: expected integers like 0,1,2") from None
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"--seeds must be >= 1, got {value}")
        return list(range(value))
    seeds = [int(s) for s in value]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {seeds}: need at least one seed and no duplicates")
    return seeds


def split_overrides(overrides: Sequence[str], models: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Common ``key=value`` overrides and per-model ones written ``MODEL:key=value``."""
    common: list[str] = []
    per: dict[str, list[str]] = {m: [] for m in models}
    for item in overrides:
        key = item.split("=", 1)[0]
        if ":" in key:
            name, rest = item.split(":", 1)
            if name not in per:
                raise ConfigError(f"--set {item!r}: {name!r} is not one of the compared models ({', '.join(models)})")
            per[name].append(rest)
        else:
            common.append(item)
    return common, per


def _model_option_name(item: str) -> str | None:
    """The top-level model option a ``key=value`` override sets, or None for training/data keys."""
    from dataclasses import fields as dc_fields

    from mmib.config import DataConfig, TrainConfig

    key = item.split("=", 1)[0].strip()
    section, _, rest = key.partition(".")
    if section in ("train", "data") and rest:
        return None
    if section == "model" and rest:
        return rest.split(".")[0]
    if key in {f.name for f in dc_fields(TrainConfig)} or key in {f.name for f in dc_fields(DataConfig)}:
        return None
    return key.split(".")[0]


def shared_overrides_for(model: str, common: Sequence[str], models: Sequence[str]) -> list[str]:
    """The common overrides that apply to ``model``: all training and data keys, and the model options
    it has. An option no compared model has is kept, so that it fails with the usual error (a typo)."""
    from dataclasses import fields as dc_fields

    from mmib.models.registry import get_model

    def has(name: str, option: str) -> bool:
        return option in {f.name for f in dc_fields(get_model(name).cls.Options)}

    kept = []
    for item in common:
        option = _model_option_name(item)
        if option is None or option == "name" or has(model, option) or not any(has(m, option) for m in models):
            kept.append(item)
    return kept


def plan_runs(
    models: Sequence[str],
    data: str | None,
    seeds: int | str | Sequence[int],
    out: str | Path,
    *,
    config: RunConfig | str | Path | None = None,
    data_path: str | None = None,
    data_options: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    jobs: int = 1,
    **train_options: Any,
) -> list[PlannedRun]:
    """The runs of a comparison, with validated configs (unknown models/options fail here)."""
    from mmib.api import make_config
    from mmib.models.registry import get_model, model_options

    models = list(models)
    if not models:
        raise ConfigError("compare needs at least one model (-m A,B,...)")
    if len(set(models)) != len(models):
        raise ConfigError(f"-m {','.join(models)}: a model is listed twice")
    for m in models:
        get_model(m)
    seed_list = parse_seeds(seeds)
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    common, per = split_overrides(overrides, models)
    out = Path(out)
    planned = []
    for model in models:
        base = make_config(model, data, config, data_path=data_path, data_options=data_options,
                           overrides=shared_overrides_for(model, common, models) + per[model], progress=False,
                           **train_options)
        model_options(model, base.model.options)  # unknown or ill-typed options fail before any training
        if jobs > 1 and base.train.threads is None:
            base.train.threads = threads_per_worker(jobs)
        for seed in seed_list:
            cfg = apply_overrides(base, [f"train.seed={seed}"])
            planned.append(PlannedRun(model, seed, out / slug(model) / f"seed{seed}", cfg))
    return planned


def run_state(run: PlannedRun) -> str:
    """``"done"``, ``"resume"`` or ``"new"``; a finished run with another config is an error."""
    p = run.path
    if (p / rundir.RESULTS).is_file():
        if not same_config(p, run.config):
            raise RunError(f"{p}: holds a finished run with a different configuration; "
                           "use another --out (or delete that run) to compare these settings")
        return "done"
    if (p / rundir.CHECKPOINT).is_file() and same_config(p, run.config):
        return "resume"
    return "new"


# ----------------------------------------------------------------------------- training
def _train_one(config: dict[str, Any], path: str, resume: bool, dataset: Any = None) -> dict[str, Any]:
    """Train (or resume) one run; returns ``{"results": ...}`` or ``{"error": ...}``.

    Module-level so that worker processes can run it.
    """
    from mmib.api import train

    start = time.perf_counter()
    try:
        if resume:
            result = train(out=path, resume=True, dataset=dataset)
        else:
            result = train(config=RunConfig.from_dict(config), out=path, dataset=dataset)
        return {"results": result.results, "seconds": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the comparison
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return {"error": last, "seconds": time.perf_counter() - start}


def _describe(run: PlannedRun, outcome: dict[str, Any], monitor_hint: str | None = None) -> str:
    if "error" in outcome:
        return f"{run.model} seed {run.seed}: FAILED ({outcome['error']})"
    res = outcome["results"]
    mon = res.get("monitor", monitor_hint)
    value = res.get("test", {}).get(mon)
    together = f" (its share: {outcome['together']} runs trained together)" if outcome.get("together", 1) > 1 else ""
    return (f"{run.model} seed {run.seed}: {res.get('epochs_run')} epochs in {outcome['seconds']:.1f} s{together}"
            + (f", test {mon}={format_value(value)}" if value is not None else ""))


#: Most runs one ensemble trains at once (more are split into several ensembles).
MAX_TOGETHER = 32

Task = list[tuple[PlannedRun, str]]


def _group_key(cfg: RunConfig) -> str:
    """What the runs of one ensemble share: the whole config except the training and data seeds."""
    d = comparable_config(cfg)
    d["train"].pop("seed", None)
    d["data"].pop("seed", None)
    return json.dumps(d, sort_keys=True, default=str)


def _class_reason(cfg: RunConfig) -> str | None:
    from mmib.models.registry import get_model
    from mmib.train.ensemble import class_unsupported

    return class_unsupported(get_model(cfg.model.name).cls, cfg.train)


def group_runs(pending: Sequence[tuple[PlannedRun, str]], jobs: int = 1, together: bool = True,
               max_together: int = MAX_TOGETHER, log: Log | None = None) -> list[Task]:
    """Split the runs to train into tasks: runs whose configs differ only in their training and
    data seeds form one task (trained together as one ensemble where the model supports it, see
    :func:`mmib.api.train_together`), at most ``max_together`` runs each; runs of a model that
    says it cannot train together are tasks of one run. While there are fewer tasks than
    ``jobs``, the largest task is halved, so that every process has work. Largest tasks first."""
    groups: dict[str, Task] = {}
    for i, item in enumerate(pending):
        groups.setdefault(_group_key(item[0].config) if together else str(i), []).append(item)
    tasks: list[Task] = []
    for group in groups.values():
        reason = _class_reason(group[0][0].config) if len(group) > 1 else None
        if reason:
            if log:
                log(f"{group[0][0].model}: {len(group)} runs one at a time ({reason})")
            tasks.extend([item] for item in group)
            continue
        tasks.extend(group[i:i + max_together] for i in range(0, len(group), max_together))
    while len(tasks) < jobs:
        largest = max(tasks, key=len, default=[])
        if len(largest) < 2:
            break
        tasks.remove(largest)
        half = (len(largest) + 1) // 2
        tasks += [largest[:half], largest[half:]]
    return sorted(tasks, key=len, reverse=True)


def _seeds_text(task: Task) -> str:
    data = sorted({r.config.data.seed for r, _ in task})
    return ("seeds " + ",".join(str(r.seed) for r, _ in task)
            + (f" (data seeds {','.join(map(str, data))})" if len(data) > 1 else ""))


def _train_task(configs: list[dict[str, Any]], paths: list[str], states: list[str], split_unsupported: bool,
                datasets: list[Any] | None = None) -> dict[str, Any]:
    """Train one task's runs (together where they can); module-level so that worker processes can run it.

    Returns ``{"outcomes": [...], "notes": [...]}`` (per run ``{"results", "seconds", "together"}``
    or ``{"error", "seconds"}``; ``notes``: how they were trained), or ``{"unsupported": reason}``
    when ``split_unsupported`` and the runs cannot train together (then nothing was trained: the
    caller gives each run a task of its own, so that every process gets some).
    """
    from mmib.api import train_together
    from mmib.train.ensemble import EnsembleUnsupported

    if datasets is None:
        datasets = [_worker_dataset(c) for c in configs]
    if len(configs) == 1:
        return {"outcomes": [_train_one(configs[0], paths[0], states[0] == "resume", datasets[0])], "notes": []}
    notes: list[str] = []
    start = time.perf_counter()
    resume = [s == "resume" for s in states]
    try:
        results = train_together([None if r else RunConfig.from_dict(c) for c, r in zip(configs, resume)], paths,
                                 resume=resume, datasets=datasets, log=notes.append, fallback=not split_unsupported)
    except EnsembleUnsupported as exc:
        return {"unsupported": str(exc)}
    except Exception as exc:  # noqa: BLE001 - e.g. the data failed to load: every run of the task fails
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return {"outcomes": [{"error": last, "seconds": 0.0} for _ in configs], "notes": notes}
    seconds = time.perf_counter() - start
    together = len(configs) if notes and "together" in notes[0] else 1
    outcomes: list[dict[str, Any]] = []
    for r in results:
        if isinstance(r, Exception):
            outcomes.append({"error": traceback.format_exception_only(type(r), r)[-1].strip(), "seconds": 0.0})
        else:
            share = seconds / len(configs) if together > 1 else float(r.results.get("train_seconds") or 0.0)
            outcomes.append({"results": r.results, "seconds": share, "together": together})
    return {"outcomes": outcomes, "notes": notes}


@functools.lru_cache(maxsize=4)
def _dataset_for(data_json: str) -> Any:
    from mmib.api import dataset_from_config

    return dataset_from_config(RunConfig.from_dict({"data": json.loads(data_json)}).data)


def _worker_dataset(config: dict[str, Any]) -> Any:
    """A run's dataset, loaded once per worker process for each data config (runs of a comparison
    share a few; loading or generating them again for every run was a per-run cost). Data read
    from a file are loaded afresh for every task (the file may change between runs)."""
    data = config.get("data") or {}
    if data.get("path"):
        return None
    return _dataset_for(json.dumps(data, sort_keys=True, default=str))


def execute(runs: Sequence[PlannedRun], jobs: int = 1, log: Log | None = print, together: bool = True
            ) -> list[dict[str, Any]]:
    """Train the runs that are not finished (``jobs`` processes at once); returns failures.

    Runs whose configs differ only in their seeds are trained together, one vectorised ensemble
    per process, where the model supports it (:func:`group_runs`; ``together=False``: one run at
    a time as before); the log says which. Worker processes are reused for every task and start
    with the library already imported (:func:`mmib.experiments._util.process_context`).
    """
    todo = [(r, run_state(r)) for r in runs]
    pending = [(r, s) for r, s in todo if s != "done"]
    if log:
        done = len(todo) - len(pending)
        log(f"{len(todo)} runs: {done} already finished, {len(pending)} to train"
            + (f" with {jobs} processes" if jobs > 1 and pending else ""))
    tasks = group_runs(pending, jobs, together, log=log)
    failures: list[dict[str, Any]] = []
    count = 0

    def record(run: PlannedRun, outcome: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if "error" in outcome:
            failures.append({"model": run.model, "seed": run.seed, "path": str(run.path), "error": outcome["error"]})
        if log:
            log(f"[{count}/{len(pending)}] {_describe(run, outcome)}")

    def finish(task: Task, answer: dict[str, Any]) -> None:
        if log and len(task) > 1:
            for note in answer.get("notes", []):
                log(f"{task[0][0].model} {_seeds_text(task)}: {note}")
        for (run, _state), outcome in zip(task, answer["outcomes"]):
            record(run, outcome)

    def payload(task: Task) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        return [r.config.to_dict() for r, _ in task], [str(r.path) for r, _ in task], [s for _, s in task]

    if jobs == 1 or len(tasks) <= 1:
        cache: dict[str, Any] = {}
        for task in tasks:
            datasets = [_cached_dataset(r.config, cache) for r, _ in task]
            finish(task, _train_task(*payload(task), split_unsupported=False, datasets=datasets))
        return failures
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=process_context()) as pool:
        futures: dict[Future, Task] = {pool.submit(_train_task, *payload(t), len(t) > 1): t for t in tasks}
        remaining = set(futures)
        try:
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = futures.pop(fut)
                    try:
                        answer = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a crashed worker process
                        error = {"error": f"worker process failed: {type(exc).__name__}: {exc}", "seconds": 0.0}
                        answer = {"outcomes": [dict(error) for _ in task]}
                    if "unsupported" in answer:  # one task per run instead, spread over the processes
                        if log:
                            log(f"{task[0][0].model} {_seeds_text(task)}: one at a time ({answer['unsupported']})")
                        for item in task:
                            single = pool.submit(_train_task, *payload([item]), False)
                            futures[single] = [item]
                            remaining.add(single)
                        continue
                    finish(task, answer)
        except KeyboardInterrupt:
            for fut in remaining:
                fut.cancel()
            raise
    return failures


def _cached_dataset(cfg: RunConfig, cache: dict[str, Any]) -> Any:
    """Load each distinct data config once when runs share a process."""
    from mmib.api import dataset_from_config

    key = dump_config(RunConfig(data=cfg.data))
    if key not in cache:
        cache[key] = dataset_from_config(cfg.data)
    return cache[key]


# ----------------------------------------------------------------------------- aggregation
@dataclass
class Comparison:
    """Per-model statistics over seeds of one split's metrics."""

    data: str
    split: str
    models: list[str]
    metrics: list[str]
    seeds: list[int]
    values: dict[str, dict[str, dict[int, float]]]
    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    n: dict[str, dict[str, int]]
    best: dict[str, str | None]
    pvalue: dict[str, dict[str, float]]
    efficiency: dict[str, dict[str, float | None]]
    runs: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = {m: {k: {str(s): v for s, v in sv.items()} for k, sv in mv.items()} for m, mv in self.values.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Comparison":
        d = dict(d)
        d["values"] = {m: {k: {int(s): _num(v) for s, v in sv.items()} for k, sv in mv.items()} for m, mv in d["values"].items()}
        for key in ("mean", "std", "pvalue"):
            d[key] = {m: {k: _num(v) for k, v in mv.items()} for m, mv in d[key].items()}
        return cls(**d)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def paired_pvalue(a: dict[int, float], b: dict[int, float]) -> float:
    """Two-sided paired t-test p-value of ``a`` vs ``b`` over the seeds both have finite values for.

    NaN with fewer than two pairs; 1.0 when every pair is identical (no
    evidence of a difference; scipy would return NaN); 0.0 for a constant
    non-zero difference.
    """
    from scipy.stats import ttest_rel

    seeds = sorted(s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s]))
    if len(seeds) < 2:
        return float("nan")
    x = np.array([a[s] for s in seeds], dtype=np.float64)
    y = np.array([b[s] for s in seeds], dtype=np.float64)
    if np.array_equal(x, y):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_rel(x, y).pvalue)


def aggregate(
    rows: Sequence[dict[str, Any]],
    split: str = "test",
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
    models: Sequence[str] | None = None,
) -> Comparison:
    """Summarise finished runs. ``rows``: dicts with ``model``, ``seed`` and ``results``
    (a ``results.json``). Metrics default to every metric the split has, in order."""
    if not rows:
        raise RunError("no finished runs to compare")
    models = list(models) if models is not None else list(dict.fromkeys(r["model"] for r in rows))
    names: list[str] = []
    for r in rows:
        split_metrics = r["results"].get(split)
        if split_metrics is None:
            raise RunError(f"{r.get('path', r['model'])}: results.json has no {split!r} metrics")
        names.extend(k for k in split_metrics if k not in names)
    if metrics:
        missing = [m for m in metrics if m not in names]
        if missing:
            raise ConfigError(f"--metrics: {', '.join(missing)} not among this task's metrics ({', '.join(names)})")
        names = list(metrics)
    for m in names:
        metric_mode(m)
    values = {m: {k: {} for k in names} for m in models}
    eff_raw: dict[str, dict[str, list[float]]] = {m: {f: [] for f, _ in EFFICIENCY_FIELDS} for m in models}
    seeds: list[int] = []
    for r in rows:
        if r["model"] not in values:
            continue
        seed = int(r["seed"])
        seeds.append(seed)
        for k in names:
            v = r["results"][split].get(k)
            values[r["model"]][k][seed] = float("nan") if v is None else float(v)
        for f, _ in EFFICIENCY_FIELDS:
            v = r["results"].get(f)
            if v is not None:
                eff_raw[r["model"]][f].append(float(v))
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    n: dict[str, dict[str, int]] = {}
    for m in models:
        mean[m], std[m], n[m] = {}, {}, {}
        for k in names:
            a = np.array([v for v in values[m][k].values() if math.isfinite(v)], dtype=np.float64)
            n[m][k] = int(a.size)
            mean[m][k] = float(a.mean()) if a.size else float("nan")
            std[m][k] = float(a.std(ddof=1)) if a.size > 1 else float("nan")
    best: dict[str, str | None] = {}
    for k in names:
        candidates = [m for m in models if math.isfinite(mean[m][k])]
        if not candidates:
            best[k] = None
            continue
        pick = min if metric_mode(k) == "min" else max
        best[k] = pick(candidates, key=lambda m: mean[m][k])
    pvalue = {m: {k: (float("nan") if best[k] in (None, m) else paired_pvalue(values[m][k], values[best[k]][k]))
                  for k in names} for m in models}
    efficiency = {m: {f: (float(np.mean(v)) if v else None) for f, v in eff_raw[m].items()} for m in models}
    data = next((r["results"].get("dataset") for r in rows if r["results"].get("dataset")), "?")
    return Comparison(str(data), split, models, names, sorted(set(seeds)), values, mean, std, n, best, pvalue,
                      efficiency, alpha=alpha)


# ----------------------------------------------------------------------------- rendering
def _arrow(metric: str) -> str:
    return "↓" if metric_mode(metric) == "min" else "↑"


def _mean_std(c: Comparison, model: str, metric: str, digits: int) -> str:
    mu, sd = c.mean[model][metric], c.std[model][metric]
    if not math.isfinite(mu):
        return "-"
    return format_value(mu, digits) + (f" ± {format_value(sd, digits)}" if math.isfinite(sd) else "")


def is_best(c: Comparison, model: str, metric: str) -> bool:
    """Whether ``model`` is the best of ``metric`` or ties with it."""
    b = c.best[metric]
    return b is not None and (b == model or c.mean[model][metric] == c.mean[b][metric])


def _significant(c: Comparison, model: str, metric: str) -> bool:
    p = c.pvalue[model][metric]
    return math.isfinite(p) and p < c.alpha


def _eff_value(field_name: str, v: float | None) -> Any:
    if v is None:
        return None
    return int(round(v)) if field_name in ("params", "trainable_params") or float(v).is_integer() else v


def render_markdown(c: Comparison, title: str | None = None, digits: int = 4) -> str:
    """The comparison as Markdown: results, p-values, efficiency."""
    seeds = ", ".join(map(str, c.seeds))
    lines = [f"# {title or f'Comparison on {c.data}'}", "",
             f"{c.split} split; mean ± sample std over seeds {seeds}. **Bold**: best model per metric "
             f"(↓ lower is better, ↑ higher). †: different from the best with p < {c.alpha:g} "
             "(two-sided paired t-test over seeds, scipy.stats.ttest_rel).", ""]
    rows = []
    for m in c.models:
        cells: list[Any] = [m]
        for k in c.metrics:
            text = _mean_std(c, m, k, digits)
            if is_best(c, m, k):
                text = f"**{text}**"
            elif _significant(c, m, k):
                text += " †"
            cells.append(text)
        rows.append(cells)
    lines.append(markdown_table(["model", *(f"{k} {_arrow(k)}" for k in c.metrics)], rows))
    lines += ["", "Paired t-test p-values against the best model of each metric:", ""]
    prow = [[m, *("best" if c.best[k] == m else c.pvalue[m][k] for k in c.metrics)] for m in c.models]
    lines.append(markdown_table(["model", *c.metrics], prow, digits))
    lines += ["", "Efficiency (mean over seeds; from results.json):", ""]
    erow = [[m, *(_eff_value(f, c.efficiency[m][f]) for f, _ in EFFICIENCY_FIELDS)] for m in c.models]
    lines.append(markdown_table(["model", *(t for _, t in EFFICIENCY_FIELDS)], erow, 3))
    if c.failed:
        lines += ["", "Failed runs (not in the statistics):", ""]
        lines += [f"- {f['model']} seed {f['seed']}: {f['error']}" for f in c.failed]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def render_latex(c: Comparison, caption: str | None = None, digits: int = 3) -> str:
    """A booktabs table (``\\usepackage{booktabs}``) of mean $\\pm$ std, best in bold, $^\\dagger$ if p < alpha."""
    cols = "l" + "c" * len(c.metrics)
    arrows = {k: r"$\downarrow$" if metric_mode(k) == "min" else r"$\uparrow$" for k in c.metrics}
    head = " & ".join(["Model", *(f"{_latex_escape(k)} {arrows[k]}" for k in c.metrics)])
    body = []
    for m in c.models:
        cells = [_latex_escape(m)]
        for k in c.metrics:
            mu, sd = c.mean[m][k], c.std[m][k]
            if not math.isfinite(mu):
                cells.append("--")
                continue
            text = f"{mu:.{digits}f}" + (f" $\\pm$ {sd:.{digits}f}" if math.isfinite(sd) else "")
            if is_best(c, m, k):
                text = f"\\textbf{{{text}}}"
            elif _significant(c, m, k):
                text += "$^\\dagger$"
            cells.append(text)
        body.append(" & ".join(cells) + r" \\")
    cap = caption or (f"{c.data}, {c.split} split: mean $\\pm$ std over {len(c.seeds)} seeds; bold: best; "
                      f"$^\\dagger$: paired t-test p $<$ {c.alpha:g} against the best.")
    return "\n".join([
        "% generated by mmib compare; needs \\usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", f"\\caption{{{_latex_escape(cap) if caption else cap}}}",
        f"\\begin{{tabular}}{{{cols}}}", r"\toprule", head + r" \\", r"\midrule", *body, r"\bottomrule",
        r"\end{tabular}", r"\end{table}", "",
    ])


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in r])
    return buf.getvalue()


def render_csv(c: Comparison) -> str:
    """One row per model x metric: mean, std, n, best, p-value against the best."""
    rows = [[m, k, metric_mode(k), c.n[m][k], c.mean[m][k], c.std[m][k], int(is_best(c, m, k)), c.pvalue[m][k]]
            for m in c.models for k in c.metrics]
    return _csv(["model", "metric", "mode", "n", "mean", "std", "best", "p_vs_best"], rows)


def write_outputs(c: Comparison, out: Path, title: str | None = None) -> dict[str, Path]:
    """Write compare.{md,csv,tex,json}, runs.csv and efficiency.csv into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / COMPARE_MD, "csv": out / COMPARE_CSV, "latex": out / COMPARE_TEX, "json": out / COMPARE_JSON,
        "runs": out / RUNS_CSV, "efficiency": out / EFFICIENCY_CSV,
    }
    rundir.atomic_write_text(files["markdown"], render_markdown(c, title))
    rundir.atomic_write_text(files["csv"], render_csv(c))
    rundir.atomic_write_text(files["latex"], render_latex(c))
    rundir.atomic_write_json(files["json"], c.to_dict())
    run_rows = [[r["model"], r["seed"], r["path"], *(r["metrics"].get(k) for k in c.metrics),
                 *(r["results"].get(f) for f, _ in EFFICIENCY_FIELDS)] for r in c.runs]
    rundir.atomic_write_text(files["runs"], _csv(["model", "seed", "path", *c.metrics, *(f for f, _ in EFFICIENCY_FIELDS)],
                                                 run_rows))
    rundir.atomic_write_text(files["efficiency"], _csv(["model", *(f for f, _ in EFFICIENCY_FIELDS)],
                                                       [[m, *(c.efficiency[m][f] for f, _ in EFFICIENCY_FIELDS)]
                                                        for m in c.models]))
    return files


# ----------------------------------------------------------------------------- entry point
def collect(runs: Sequence[PlannedRun], split: str) -> list[dict[str, Any]]:
    """The finished runs among ``runs`` as aggregate() rows."""
    rows = []
    for r in runs:
        path = r.path / rundir.RESULTS
        if path.is_file():
            res = rundir.read_json(path)
            rows.append({"model": r.model, "seed": r.seed, "path": str(r.path), "results": res,
                         "metrics": dict(res.get(split) or {})})
    return rows


def compare(
    models: Sequence[str],
    data: str | None,
    seeds: int | str | Sequence[int] = 3,
    out: str | Path = "runs/compare",
    *,
    jobs: int = 1,
    split: str = "test",
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
    title: str | None = None,
    log: Log | None = print,
    together: bool = True,
    reference: bool = True,
    **plan_options: Any,
) -> Comparison:
    """Train every model for every seed (skipping finished runs), then aggregate and write tables.

    ``reference`` adds the :data:`REFERENCE_MODEL` (``linear``: ridge / logistic regression on the
    pooled features) as a row unless it is listed already. A model's seeds are trained together as
    one vectorised ensemble where the model supports it (``together=False``: every run on its own;
    see :func:`execute`). ``plan_options`` are those of :func:`plan_runs` (``config``,
    ``data_path``, ``data_options``, ``overrides``, any :class:`~mmib.config.TrainConfig` field).
    """
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"--split {split!r}: choose train, valid or test")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must lie in (0, 1), got {alpha}")
    models = with_reference(models) if reference else list(models)
    out = Path(out)
    runs = plan_runs(models, data, seeds, out, jobs=jobs, **plan_options)
    failures = execute(runs, jobs, log, together)
    rows = collect(runs, split)
    if not rows:
        raise RunError(f"{out}: no run finished" + (f" ({failures[0]['error']})" if failures else ""))
    c = aggregate(rows, split, metrics, alpha, models=list(models))
    c.runs = rows
    c.failed = failures
    write_outputs(c, out, title)
    return c


def load_comparison(path: str | Path) -> Comparison:
    """Read ``compare.json`` from a comparison directory (or the file itself)."""
    p = Path(path)
    p = p / COMPARE_JSON if p.is_dir() else p
    try:
        return Comparison.from_dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise RunError(f"{p}: no such file (run `mmib compare` first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunError(f"{p}: not a comparison written by mmib compare ({exc})") from None
