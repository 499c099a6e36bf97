"""The one engine that runs a study: plan, tune, train through the shared queue, analyse, collect.

* **Plan**: every (row, dataset) cell that a table, claim, figure or log section
  uses becomes one run per (training seed, data seed) pair; a run is an ordinary
  :class:`~mmib.experiments.compare.PlannedRun` whose directory is named by the
  hash of its full configuration (``RUNS/runs/<model>-<hash>``), so identical runs
  are shared between rows and studies, a finished run is never trained twice, an
  interrupted one resumes from its checkpoint, and a changed option makes a new run.
* **Tune** (``tuning: {trials: N}``): before its runs, every tuned cell gets the same
  number of Optuna trials on the validation split through :func:`mmib.experiments.sweep.sweep`
  (its parameter specs, samplers, pruning and storage), over the model's search space
  (``search_spaces.yaml``); the best configuration then runs over the seeds.
* **Train**: runs are claimed from the :class:`~mmib.experiments.study.queue.RunStore`
  (SQLite by default, any SQLAlchemy URL with ``--storage``) a group at a time and
  trained by :func:`mmib.experiments.compare.execute` with ``jobs`` processes.
* **Analyse**: the post-run analyses the study asks for (probes, MMIM fusion
  scores, t-SNE points, robustness, log rows) are computed from each run directory
  right after training, and stored with the run.
* **Collect**: the values of every cell per (seed, data seed) pair, with the run
  directories they came from, for :mod:`mmib.experiments.study.render`.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmib.config import DataConfig, RunConfig, apply_overrides, dump_config
from mmib.errors import ConfigError, MMIBError
from mmib.experiments._util import comparable_config, slug, threads_per_worker
from mmib.experiments.study import spec as S
from mmib.experiments.study.queue import DONE, FAILED, RunRow, RunStore
from mmib.train import rundir

Log = Callable[[str], None]
Pair = tuple[int, int]
RUNS_DIR, TUNING_DIR = "runs", "tuning"


def config_hash(cfg: RunConfig | dict[str, Any]) -> str:
    """The hash of a run's configuration, without the options that do not change results (threads, ...)."""
    text = json.dumps(comparable_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def group_hash(cfg: RunConfig) -> str:
    """Runs with the same group hash differ only in their training seed."""
    d = comparable_config(cfg)
    d["train"].pop("seed", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def default_storage(runs_dir: Path) -> str:
    return f"sqlite:///{(runs_dir / 'study.db').resolve()}"


# ----------------------------------------------------------------------------- planning
@dataclass
class StudyRun:
    key: str
    group: str
    cell: tuple[str, str]
    pair: Pair
    config: RunConfig
    path: Path

    def planned(self) -> Any:
        from mmib.experiments.compare import PlannedRun

        return PlannedRun(self.config.model.name, self.pair[0], self.path, self.config)


@dataclass
class Tuning:
    """The outcome of one cell's tuning budget."""

    cell: tuple[str, str]
    model: str
    params: list[str]
    trials: int
    out: str
    best: dict[str, Any] | None = None
    value: float | None = None
    monitor: str | None = None
    note: str = ""


@dataclass
class Plan:
    study: S.Study
    runs_dir: Path
    cells: dict[tuple[str, str], dict[Pair, str]] = field(default_factory=dict)
    runs: dict[str, StudyRun] = field(default_factory=dict)
    analyses: dict[str, set[str]] = field(default_factory=dict)
    tuning: dict[tuple[str, str], Tuning] = field(default_factory=dict)
    untuned: list[tuple[str, str]] = field(default_factory=list)
    measures: set[tuple[str, str]] = field(default_factory=set)
    overrides: list[str] = field(default_factory=list)


def used_cells(st: S.Study) -> tuple[dict[tuple[str, str], set[str]], set[tuple[str, str]]]:
    """(row, data) cells of model rows with the analyses they need; and (data, measure) pairs."""
    cells: dict[tuple[str, str], set[str]] = {}
    measures: set[tuple[str, str]] = set()

    def need(row: str | None, data: str, metric: str | None = None, analysis: str | None = None) -> None:
        if metric and metric.startswith("bounds."):
            measures.add((data, "bounds"))
        if row is None:
            return
        r = st.rows[row]
        if not r.applies_to(data):  # a row limited to some datasets is neither trained nor measured elsewhere
            return
        if r.kind == "oracle":
            measures.add((data, r.measure))
            return
        if r.kind == "mean":
            for m in r.members:
                need(m, data, metric, analysis)
            return
        extra = cells.setdefault((row, data), set())
        if metric:
            a = metric_analysis(metric)
            if a:
                extra.add(a)
        if analysis:
            extra.add(analysis)

    for t in st.tables:
        for line in t.lines:
            for c in line.cells:
                if c is None or c.paper:
                    continue
                need(c.row, c.data, c.metric)
                if c.vs:
                    need(c.vs, c.data, c.metric)
    for c in st.claims:
        for r in [c.better, *c.than]:
            need(r, c.data, None if c.kind == "fails" else c.metric)
        for m in c.than_metrics:
            need(c.better, c.data, m)
        if c.kind == "compare" and not c.than_metrics:  # the yardsticks beside every claim
            for r in st.references:
                if r in st.rows:
                    need(r, c.data, c.metric)
    for f in st.figures:
        for r in f.rows:
            for d in f.data:
                if f.kind == "tsne":
                    need(r, d, analysis=f"tsne:{f.samples}")
                elif f.kind == "robust":
                    need(r, d, analysis="robust:" + ",".join(f"{v:g}" for v in f.levels))
                elif f.kind == "probes":
                    for rep in f.representations:
                        need(r, d, analysis=f"probe:{rep}")
                else:
                    need(r, d, f.metric)
        for d in f.data:
            for s in f.span:
                measures.add((d, "bounds"))
            if f.points:
                need(f.points["row"], d, f.points["x"])
                need(f.points["row"], d, f.metric)
    for sec in st.sections:
        if sec.log_rows is not None:
            lr = sec.log_rows
            need(lr.row, lr.data, analysis=f"log:{lr.file}:{lr.epoch}:{lr.limit}")
        if sec.ranking is not None:
            for r in sec.ranking.rows:
                for d in sec.ranking.data:
                    need(r, d, sec.ranking.metric)
    return cells, measures


def metric_analysis(metric: str) -> str | None:
    """The post-run analysis a metric address reads (``probe.z.a0.r2`` -> ``probe:z``), if any."""
    head, _, rest = metric.partition(".")
    if head == "probe":
        return f"probe:{rest.split('.')[0]}"
    if head == "fusion":
        return "fusion"
    return None


def cell_config(st: S.Study, row: S.RowDef, data: S.DataDef, overrides: Sequence[str] = ()) -> RunConfig:
    """The configuration of a model row on a dataset, before seeds and tuning."""
    from mmib.api import make_config

    pd = row.per_data.get(data.key, {})
    data_options = {**data.options, **row.data_options, **pd.get("data", {})}
    if row.select:
        data_options["select"] = list(row.select)
    train = {**st.train, **row.train, **pd.get("train", {}), "progress": False, "checkpoint": True}
    assert row.model is not None
    try:
        return make_config(row.model, data.name, data_path=data.path, data_options=data_options,
                           model_options={**row.options, **pd.get("options", {})},
                           overrides=[*row.sets, *pd.get("set", []), *overrides], **train)
    except MMIBError as exc:
        raise ConfigError(f"{Path(st.source).name}: rows.{row.key} on {data.key}: {exc}") from None


def seeded(cfg: RunConfig, pair: Pair) -> RunConfig:
    return apply_overrides(cfg, [f"train.seed={pair[0]}", f"data.seed={pair[1]}"])


def plan_study(st: S.Study, runs_dir: Path, *, jobs: int = 1, overrides: Sequence[str] = (),
               tuned: dict[tuple[str, str], dict[str, Any]] | None = None) -> Plan:
    """Every run of the study (cells that still wait for their tuning are listed in ``plan.untuned``)."""
    cells, measures = used_cells(st)
    plan = Plan(st, runs_dir, measures=measures, overrides=list(overrides))
    tuned = tuned or {}
    for (row_key, data_key), analyses in cells.items():
        row, data = st.rows[row_key], st.datasets[data_key]
        base = cell_config(st, row, data, overrides)
        if jobs > 1 and base.train.threads is None:
            base.train.threads = threads_per_worker(jobs)
        if needs_tuning(st, row_key, data_key):
            if (row_key, data_key) not in tuned:
                plan.untuned.append((row_key, data_key))
                continue
            from mmib.experiments.sweep import apply_params

            base = apply_params(base, tuned[(row_key, data_key)])
        plan.cells[(row_key, data_key)] = {}
        for pair in st.pairs:
            cfg = seeded(base, pair)
            key = config_hash(cfg)
            plan.cells[(row_key, data_key)][pair] = key
            if key not in plan.runs:
                path = runs_dir / RUNS_DIR / f"{slug(cfg.model.name)}-{key[:12]}"
                plan.runs[key] = StudyRun(key, group_hash(cfg), (row_key, data_key), pair, cfg, path)
            plan.analyses.setdefault(key, set()).update(analyses)
    return plan


def needs_tuning(st: S.Study, row_key: str, data_key: str | None = None) -> bool:
    row = st.rows[row_key]
    return (st.tuning is not None and row.kind == "model" and row.tune
            and bool(row_space(st, row_key, data_key)))


def fixed_keys(row: S.RowDef, data_key: str | None = None) -> set[str]:
    """The ``--set`` keys a row fixes itself (its options, training options and ``set:`` entries, also per
    dataset): what it is about (``beta=0``, ``ba=false``), so the tuning budget leaves them alone."""
    pd = row.per_data.get(data_key, {}) if data_key else {}
    keys = {*row.options, *row.train, *pd.get("options", {}), *pd.get("train", {})}
    for s in [*row.sets, *pd.get("set", [])]:
        key = s.split("=", 1)[0].strip()
        keys.add(key.split(".", 1)[1] if key.startswith(("model.", "train.")) else key)
    return keys


def row_space(st: S.Study, row_key: str, data_key: str | None = None) -> dict[str, str]:
    """The search space of a row: its model's (:func:`space_for`) without the options the row fixes."""
    row = st.rows[row_key]
    fixed = fixed_keys(row, data_key)
    return {k: v for k, v in space_for(st, row.model or "").items()
            if (k.split(".", 1)[1] if k.startswith(("model.", "train.")) else k) not in fixed}


def space_for(st: S.Study, model: str) -> dict[str, str]:
    """The search space of ``model``: the study's own, else the package's (``search_spaces.yaml``)."""
    if st.tuning is not None and model in st.tuning.spaces:
        return st.tuning.spaces[model]
    spaces = S.search_spaces()
    if model not in spaces:
        raise ConfigError(f"{Path(st.source).name}: tuning: no search space for model {model!r} "
                          "(add one under tuning.spaces, or to mmib/experiments/search_spaces.yaml)")
    return spaces[model]


# ----------------------------------------------------------------------------- tuning
def tune_cells(plan: Plan, storage: str, jobs: int, overrides: Sequence[str], log: Log | None,
               dry_run: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """Spend the equal tuning budget on every cell that needs it; returns the best parameters per cell."""
    from mmib.experiments.sweep import sweep

    st = plan.study
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for cell in plan.untuned:  # only cells of a study with a tuning budget are untuned
        row, data = st.rows[cell[0]], st.datasets[cell[1]]
        assert st.tuning is not None and row.model is not None
        space = row_space(st, cell[0], cell[1])
        params = [f"{k}={v}" for k, v in space.items()]
        base = seeded(cell_config(st, row, data, overrides), st.pairs[0])
        t = st.tuning
        key = hashlib.sha256(json.dumps([comparable_config(base), params, t.trials, t.sampler, t.pruner,
                                         t.prune_warmup], sort_keys=True, default=str).encode()).hexdigest()
        out = plan.runs_dir / TUNING_DIR / f"{slug(row.model)}-{key[:12]}"
        tuning = Tuning(cell, row.model, params, t.trials, str(out))
        plan.tuning[cell] = tuning
        if dry_run:
            continue
        if log:
            log(f"tuning {cell[0]} on {cell[1]}: {t.trials} trials of {', '.join(params)}")
        result = sweep(row.model, data.name, params, out, trials=t.trials, storage=storage,
                       study=f"mmib-tune-{key[:16]}", workers=jobs, sampler=t.sampler, pruner=t.pruner,
                       prune_warmup=t.prune_warmup, config=base, log=None)
        tuning.monitor = result.setup.monitor
        if result.best is None:
            tuning.note = "no trial finished; the row runs at its defaults"
            best[cell] = {}
        else:
            best[cell] = dict(result.best["params"])
            tuning.best, tuning.value = best[cell], result.best["value"]
        if log:
            log(f"tuned {cell[0]} on {cell[1]}: " + (f"valid {tuning.monitor} {tuning.value:.4g} with "
                f"{', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in best[cell].items())}"
                if tuning.best is not None else tuning.note))
    return best


# ----------------------------------------------------------------------------- training
def worker_identity() -> tuple[str, str]:
    from mmib.experiments.sweep import worker_tag

    return worker_tag(), socket.gethostname()


def train_plan(plan: Plan, store: RunStore, jobs: int, log: Log | None, *, retry_failed: bool = False) -> list[str]:
    """Claim and train every pending run of the plan (with other machines on the same store); returns the keys
    this process trained."""
    from mmib.experiments.compare import execute
    from mmib.experiments.sweep import _alive

    worker, host = worker_identity()
    entries = [(r.key, r.group, i, dump_config(r.config), str(r.path)) for i, r in enumerate(plan.runs.values())]
    store.register(entries)
    back = store.recover(_alive, host, retry_failed)
    if back and log:
        log(f"put back {len(back)} run(s) whose process died")
    trained: list[str] = []
    keys = list(plan.runs)
    while True:
        claimed = store.claim(keys, max(1, jobs), worker, host)
        if not claimed:
            break
        batch = [plan.runs[k] for k in claimed]
        try:
            with store.heartbeats(claimed, worker):
                failures = execute([r.planned() for r in batch], jobs, log)
                errors = {f["path"]: f["error"] for f in failures}
                for r in batch:
                    results_file = r.path / rundir.RESULTS
                    if results_file.is_file():
                        store.finish(r.key, worker, results=rundir.read_json(results_file),
                                     history=rundir.read_jsonl(r.path / rundir.METRICS), error=None)
                    else:
                        store.finish(r.key, worker, results=None, history=None,
                                     error=errors.get(str(r.path), "the run wrote no results.json"))
                analyse(plan, store, claimed, log)
        except BaseException:
            store.release(claimed, worker)
            raise
        trained.extend(claimed)
    return trained


# ----------------------------------------------------------------------------- analyses
class _Datasets:
    """Each run's dataset, prepared with the run's own statistics, loaded once per configuration."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}

    def of(self, run: Any) -> Any:
        key = dump_config(RunConfig(data=run.config.data)) + repr(run.standardizer.state_dict() if run.standardizer else None)
        if key not in self.cache:
            self.cache.clear()
            self.cache[key] = run.dataset()
        return self.cache[key]


def run_analysis(name: str, path: Path, datasets: _Datasets) -> Any:
    """One post-run analysis of the run directory ``path`` (see the module docstring)."""
    from mmib.api import load_run

    kind, _, arg = name.partition(":")
    if kind == "log":
        file, epoch, limit = arg.split(":")
        results = rundir.read_json(path / rundir.RESULTS)
        rows = rundir.read_jsonl(path / file)
        if epoch == "best":
            rows = [r for r in rows if r.get("epoch") == results.get("best_epoch")]
        return rows[: int(limit)]
    run = load_run(path)
    ds = datasets.of(run)
    if kind == "probe":
        from mmib.eval.probe import probe_model

        res = probe_model(run.model, ds, "train", "test", None if arg == "representation" else arg,
                          seed=int(run.config.train.seed))
        return {p.part: {"r2": p.r2, "r2_label": p.r2_label, "dim": p.dim, "relevant": p.relevant} for p in res}
    if kind == "fusion":
        from mmib.models.mmim import fusion_scores

        fs = fusion_scores(run, ds, "test")
        return {m: float(v.float().mean()) for m, v in fs.scores.items()}
    if kind == "tsne":
        from mmib.experiments.report import tsne_panel

        panel = tsne_panel(run, ds, "", int(arg))
        if isinstance(panel, str):
            return {"note": panel}
        _, pts, colour, task_kind, names = panel
        return {"points": pts.tolist(), "colour": colour.tolist(), "kind": task_kind, "names": names}
    if kind == "robust":
        from dataclasses import asdict

        from mmib.experiments.robust import robustness

        return asdict(robustness(run, [float(v) for v in arg.split(",")], dataset=ds))
    raise ConfigError(f"unknown analysis {name!r}")


def analyse(plan: Plan, store: RunStore, keys: Sequence[str], log: Log | None) -> None:
    """Compute the analyses ``keys`` still lack, where their run directories are on this machine."""
    rows = store.rows(keys)
    datasets = _Datasets()
    for key in keys:
        row = rows.get(key)
        wanted = plan.analyses.get(key, set())
        if row is None or row.state != DONE or not wanted:
            continue
        missing = [a for a in sorted(wanted) if a not in row.analyses]
        path = Path(row.path)
        if not missing or not (path / rundir.RESULTS).is_file():
            continue
        done = dict(row.analyses)
        for name in missing:
            try:
                done[name] = run_analysis(name, path, datasets)
            except MMIBError as exc:
                done[name] = {"error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - one failed analysis must not stop the study
                done[name] = {"error": f"{type(exc).__name__}: {exc}"}
            if log and isinstance(done[name], dict) and "error" in done[name]:
                log(f"analysis {name} of {path}: {done[name]['error']}")
        store.set_analyses(key, done)


# ----------------------------------------------------------------------------- measures
def data_config(st: S.Study, data_key: str, data_seed: int, overrides: Sequence[str] = ()) -> DataConfig:
    """The dataset of a measure, with the ``data.*`` overrides the runs get too."""
    d = st.datasets[data_key]
    cfg = DataConfig(name=d.name, path=d.path, seed=data_seed, options=dict(d.options))
    data_sets = [o for o in overrides if o.startswith("data.")]
    return apply_overrides(RunConfig(data=cfg), data_sets).data if data_sets else cfg


def measure(st: S.Study, store: RunStore, data_key: str, data_seed: int, kind: str,
            overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A dataset-level value, cached in the store: ``oracle`` (metrics of ``meta["oracle"]`` per split,
    ``{}`` if the dataset has no oracle) or ``bounds`` (MINE estimates and OMIB's beta bounds)."""
    cfg = data_config(st, data_key, data_seed, overrides)
    key = f"{kind}:{hashlib.sha256(dump_config(RunConfig(data=cfg)).encode()).hexdigest()}"
    cached = store.value(key)
    if cached is not None:
        return cached
    from mmib.api import dataset_from_config

    ds = dataset_from_config(cfg)
    if kind == "oracle" or kind.startswith("oracle:"):
        value = oracle_metrics(ds, kind.partition(":")[2] or "oracle")
    else:
        from mmib.eval.bounds import MineSettings, beta_bounds

        value = beta_bounds(ds, "train", MineSettings(seed=data_seed)).as_dict()
    store.set_value(key, value)
    return value


def oracle_metrics(ds: Any, key: str = "oracle") -> dict[str, dict[str, float]]:
    """``{split: metrics}`` of the dataset's ``meta[key]`` predictions (``{}`` without them)."""
    import numpy as np
    import torch

    from mmib.errors import DataError
    from mmib.eval.metrics import compute_metrics

    oracle = ds.meta.get(key)
    if oracle is None:
        return {}
    if not isinstance(oracle, (torch.Tensor, np.ndarray)):
        raise DataError(f"{ds.name}: meta[{key!r}] is not an array of per-sample predictions")
    oracle = torch.as_tensor(oracle)
    if oracle.shape[0] != len(ds):
        raise DataError(f"{ds.name}: meta[{key!r}] has {oracle.shape[0]} rows, the dataset {len(ds)}")
    out = {}
    for split in ("valid", "test"):
        idx = ds.splits.get(split)
        if idx is not None and idx.numel():
            out[split] = compute_metrics(ds.task, oracle.index_select(0, idx), ds.y.index_select(0, idx))
    return out


# ----------------------------------------------------------------------------- collection
def metric_value(metric: str, rec: RunRow, split: str) -> float | None:
    """The value of a metric address (see :func:`mmib.experiments.study.spec.check_metric`) for one run."""
    res = rec.results or {}
    head, _, rest = metric.partition(".")
    value: Any = None
    if not rest:
        value = (res.get(split) or {}).get(metric)
    elif head in ("valid", "test"):
        value = (res.get(head) or {}).get(rest)
    elif head == "results":
        value = res.get(rest)
    elif head in ("best", "last"):
        section, _, name = rest.partition(".")
        rows = rec.history or []
        if head == "best":
            rows = [r for r in rows if r.get("epoch") == res.get("best_epoch")]
        for r in reversed(rows):
            if name in (r.get(section) or {}):
                value = r[section][name]
                break
    elif head == "probe":
        rep, part, fld = rest.split(".")
        value = ((rec.analyses.get(f"probe:{rep}") or {}).get(part) or {}).get(fld)
    elif head == "fusion":
        value = (rec.analyses.get("fusion") or {}).get(rest)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def metric_direction(metric: str, explicit: str | None = None) -> str | None:
    """``min``, ``max`` or None (no known direction) for a metric address."""
    from mmib.eval.metrics import metric_mode

    if explicit:
        return explicit
    head, _, rest = metric.partition(".")
    name = rest if head in ("valid", "test") else metric if not rest else None
    if name is not None:
        try:
            return metric_mode(name)
        except ConfigError:
            return None
    if head == "results" and rest in ("params", "trainable_params", "seconds_per_epoch", "train_seconds",
                                      "inference_ms_per_sample", "peak_rss_mb", "peak_gpu_mb"):
        return "min"
    if head == "probe" and rest.endswith(("r2", "r2_label")):
        return "max"
    if head == "fusion":
        return "max"
    return None


@dataclass
class Collected:
    """Everything the renderer needs: stored runs and measures, by cell."""

    plan: Plan
    records: dict[str, RunRow]
    measures: dict[tuple[str, int, str], dict[str, Any]]

    @property
    def study(self) -> S.Study:
        return self.plan.study

    def values(self, row: str | None, data: str, metric: str) -> dict[Pair, float]:
        """The cell's value per (seed, data seed) pair (missing pairs absent)."""
        st = self.study
        if metric.startswith("bounds."):
            out = {}
            for pair in st.pairs:
                v = self.measures.get((data, pair[1], "bounds"), {}).get(metric.split(".", 1)[1])
                if isinstance(v, (int, float)) and math.isfinite(v):
                    out[pair] = float(v)
            return out
        assert row is not None
        r = st.rows[row]
        if r.kind == "oracle":
            head, _, rest = metric.partition(".")
            split, name = (head, rest) if head in ("valid", "test") and rest else (st.split, metric)
            out = {}
            for pair in st.pairs:
                v = self.measures.get((data, pair[1], r.measure), {}).get(split, {}).get(name)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    out[pair] = float(v)
            return out
        if r.kind == "mean":
            parts = [self.values(m, data, metric) for m in r.members]
            common = set(st.pairs)
            for p in parts:
                common &= set(p)
            return {pair: sum(p[pair] for p in parts) / len(parts) for pair in sorted(common)}
        keys = self.plan.cells.get((row, data), {})
        out = {}
        for pair, key in keys.items():
            rec = self.records.get(key)
            if rec is None or rec.state != DONE:
                continue
            v = metric_value(metric, rec, st.split)
            if v is not None and math.isfinite(v):
                out[pair] = v
        return out

    def sources(self, row: str | None, data: str) -> dict[Pair, list[str]]:
        """The run directories a cell's value per pair comes from."""
        if row is None:
            return {}
        r = self.study.rows[row]
        if r.kind == "oracle":
            return {}
        members = r.members if r.kind == "mean" else [row]
        out: dict[Pair, list[str]] = {}
        for m in members:
            for pair, key in self.plan.cells.get((m, data), {}).items():
                rec = self.records.get(key)
                where = rec.path if rec is not None else str(self.plan.runs[key].path)
                if rec is not None and rec.host and rec.host != socket.gethostname():
                    where = f"{rec.host}:{where}"
                out.setdefault(pair, []).append(where)
        return out

    def failures(self, row: str, data: str, metric: str | None) -> tuple[int, int]:
        """(failed or non-finite runs, finished or failed runs) of a model row's cell."""
        failed = total = 0
        for m in self.study.rows[row].members or [row]:
            for key in self.plan.cells.get((m, data), {}).values():
                rec = self.records.get(key)
                if rec is None or rec.state not in (DONE, FAILED):
                    continue
                total += 1
                if rec.state == FAILED:
                    failed += 1
                elif metric and metric != "failed":
                    v = metric_value(metric, rec, self.study.split)
                    failed += int(v is None or not math.isfinite(v))
        return failed, total

    def run_of(self, row: str, data: str, index: int = 0) -> RunRow | None:
        """The stored run of a cell's ``index``-th pair (None when not finished)."""
        keys = self.plan.cells.get((row, data), {})
        pairs = list(keys)
        if index >= len(pairs):
            return None
        rec = self.records.get(keys[pairs[index]])
        return rec if rec is not None and rec.state == DONE else None


def collect(plan: Plan, store: RunStore) -> Collected:
    st = plan.study
    measures: dict[tuple[str, int, str], dict[str, Any]] = {}
    data_seeds = sorted({p[1] for p in st.pairs})
    for data, kind in sorted(plan.measures):
        for ds in data_seeds:
            try:
                measures[(data, ds, kind)] = measure(st, store, data, ds, kind, plan.overrides)
            except MMIBError as exc:
                measures[(data, ds, kind)] = {"error": str(exc)}
    return Collected(plan, store.rows(plan.runs), measures)
