"""Markdown reports with figures from run, comparison and sweep directories.

:func:`report` reads each input (a run directory, a ``mmib compare`` directory,
a ``mmib sweep`` directory, or any folder holding run directories) and writes
``OUT/report.md`` with PNG figures under ``OUT/figures/``:

* tables: the comparison (mean +- std, p-values, efficiency), the sweep's
  trials, or the runs' metrics;
* training curves of every logged loss term and validation metric
  (``metrics.jsonl``), one panel each, one line per seed;
* KL per modality over training for runs that log KL terms named
  ``kl_<modality>`` (and ``kl`` for the joint bottleneck; a stage prefix
  ``<stage>/`` is allowed), as the MIB family does (the MIB paper's Figure 5);
* for sweeps, the objective (and test value) against every swept parameter,
  with the paper's curve where one exists (MIB Table IX for C-MIB's beta on MOSI);
* t-SNE (scikit-learn) of the learned test representations
  (``ModelOutput.representation`` via :func:`mmib.api.predict`) coloured by label
  (the MIB paper's Figure 4);
* the papers' own numbers (``paper_results.yaml``) beside ours when the dataset
  matches one the papers report on.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmib.config import RunConfig, dump_config
from mmib.errors import ConfigError, RunError
from mmib.eval.tables import format_value, markdown_table
from mmib.experiments import papers, plots
from mmib.experiments._util import slug
from mmib.train import rundir

REPORT_MD = "report.md"
FIGURES = "figures"
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- inputs
@dataclass
class RunRecord:
    """What a report reads from one run directory."""

    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    history: list[dict[str, Any]]
    label: str

    @property
    def model(self) -> str:
        return str(self.results.get("model") or self.config.get("model", {}).get("name", "?"))

    @property
    def dataset(self) -> str:
        return str(self.results.get("dataset") or self.config.get("data", {}).get("name", "?"))

    @property
    def seed(self) -> int | None:
        return self.config.get("train", {}).get("seed")

    @property
    def finished(self) -> bool:
        return bool(self.results)


def read_run(path: str | Path, label: str | None = None) -> RunRecord:
    """Config, results (if finished) and metrics.jsonl of a run directory."""
    import yaml

    p = Path(path)
    cfg_path = p / rundir.CONFIG
    if not cfg_path.is_file():
        raise RunError(f"{p}: not a run directory (no {rundir.CONFIG})")
    config = yaml.safe_load(cfg_path.read_text()) or {}
    results = rundir.read_json(p / rundir.RESULTS) if (p / rundir.RESULTS).is_file() else {}
    return RunRecord(p, config, results, rundir.read_jsonl(p / rundir.METRICS), label or p.name)


@dataclass
class Source:
    """One report input: a comparison, a sweep, or plain runs."""

    kind: str
    path: Path
    runs: list[RunRecord]
    comparison: Any = None
    sweep: dict[str, Any] | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: RunRecord | None = None

    @property
    def name(self) -> str:
        return self.path.resolve().name


def discover(path: str | Path) -> Source:
    """Classify ``path`` and read its runs."""
    from mmib.experiments.compare import COMPARE_JSON, load_comparison
    from mmib.experiments.sweep import SWEEP_JSON, TRIALS_DIR, TRIALS_JSON, load_sweep

    p = Path(path)
    if not p.exists():
        raise RunError(f"{p}: no such directory")
    if (p / COMPARE_JSON).is_file():
        c = load_comparison(p)
        runs = []
        for r in c.runs:
            rp = Path(r["path"])
            if not rp.is_dir():
                rp = p / slug(r["model"]) / f"seed{r['seed']}"
            if rp.is_dir():
                runs.append(read_run(rp, f"{r['model']} seed {r['seed']}"))
        return Source("compare", p, runs, comparison=c)
    if (p / TRIALS_JSON).is_file() or (p / SWEEP_JSON).is_file():
        settings, trials = load_sweep(p)
        runs, best = [], None
        done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
        pick = min if settings.get("direction") == "minimize" else max
        best_trial = pick(done, key=lambda t: t["value"]) if done else None
        for t in done:
            rp = Path(t["user_attrs"].get("run_dir", ""))
            if not rp.is_dir():
                rp = p / TRIALS_DIR / f"{t['number']:04d}"
            if rp.is_dir():
                rec = read_run(rp, f"trial {t['number']}")
                runs.append(rec)
                if best_trial is not None and t["number"] == best_trial["number"]:
                    best = rec
        return Source("sweep", p, runs, sweep=settings, trials=trials, best=best)
    if (p / rundir.CONFIG).is_file():
        return Source("runs", p, [read_run(p)])
    found = sorted({q.parent for q in p.rglob(rundir.CONFIG) if (q.parent / rundir.METRICS).is_file()})
    if not found:
        raise RunError(f"{p}: holds no run, comparison or sweep (no config.yaml, compare.json or trials.json)")
    return Source("runs", p, [read_run(q, str(q.relative_to(p))) for q in found])


def by_model(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(r.model, []).append(r)
    return groups


# ----------------------------------------------------------------------------- sections
class _Writer:
    """Collects Markdown lines and figure files for one report."""

    def __init__(self, out: Path, log: Log | None) -> None:
        self.out = out
        self.lines: list[str] = []
        self.figures: list[Path] = []
        self.log = log
        self._datasets: dict[str, Any] = {}

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, path: Path, caption: str) -> None:
        rel = path.relative_to(self.out).as_posix()
        self.figures.append(path)
        self.add(f"![{path.stem}]({rel})", "", f"*{caption}*", "")

    def fig_path(self, name: str) -> Path:
        return self.out / FIGURES / f"{slug(name)}.png"

    def dataset(self, run: Any) -> Any:
        """A run's dataset, prepared with the run's statistics (cached per data config)."""
        key = dump_config(RunConfig(data=run.config.data)) + repr(run.standardizer.state_dict() if run.standardizer else None)
        if key not in self._datasets:
            self._datasets[key] = run.dataset()
        return self._datasets[key]


def _metric_cell(v: Any, percent: bool) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, float)) and float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    return f"{100 * v:.2f}" if percent else format_value(float(v), 3)


def paper_section(w: _Writer, runs: Sequence[RunRecord], heading: str = "###") -> None:
    """Tables of the papers' numbers on this dataset beside our models' mean test metrics."""
    keys = {papers.dataset_key(r.config.get("data", {})) for r in runs if r.finished}
    keys.discard(None)
    names = sorted({r.dataset for r in runs})
    w.add(f"{heading} Papers' numbers", "")
    if not keys:
        known = ", ".join(papers.PAPER_DATASETS)
        w.add(f"No paper reports numbers on {', '.join(names)} (the papers' tables cover {known}); "
              "nothing to set beside ours.", "")
        return
    source = papers.paper_results().get("source", "paper_results.yaml")
    for key in sorted(keys):  # type: ignore[type-var]
        ours_runs = [r for r in runs if r.finished and papers.dataset_key(r.config.get("data", {})) == key]
        groups = by_model(ours_runs)
        for t in papers.tables_for(key):
            metrics: list[str] = []
            for row in t["rows"]:
                metrics.extend(k for k in row if k not in ("name", "model", "options") and k not in metrics)
            percent = t["scale"] == "percent"
            rows = []
            for row in t["rows"]:
                rows.append([f"{row['name']} (paper)", *(_metric_cell(row.get(m), False) for m in metrics)])
            for model, rs in groups.items():
                cells = []
                for m in metrics:
                    vals = [float(v) for v in (r.results.get("test", {}).get(m, r.results.get(m)) for r in rs)
                            if isinstance(v, (int, float)) and math.isfinite(v)]
                    cells.append(_metric_cell(float(np.mean(vals)) if vals else None,
                                              percent and papers.is_percent_metric(m)))
                rows.append([f"{model} (ours, {len(rs)} run{'s' if len(rs) > 1 else ''})", *cells])
            header = [f"{m} (protocol not stated)" if m in ("acc2", "f1") else m for m in metrics]
            scale = "accuracies/F1 in percent" if percent else "as fractions"
            w.add(f"{t['paper']}, {t['table']} on {key} ({scale}{'; ' + t['note'] if t.get('note') else ''}); "
                  "ours: mean test metrics.", "", markdown_table(["model", *header], rows), "")
    w.add(f"Paper numbers from `src/mmib/experiments/paper_results.yaml` (transcribed from {source}).", "")


def curves_section(w: _Writer, groups: dict[str, list[RunRecord]], prefix: str, heading: str = "###") -> None:
    """Training curves per model (seeds overlaid) and one KL-per-modality figure."""
    w.add(f"{heading} Training curves", "")
    for model, runs in groups.items():
        series = [(r.label, r.history, r.results.get("best_epoch")) for r in runs[:6] if r.history]
        if not series:
            w.add(f"{model}: no metrics.jsonl to plot.", "")
            continue
        path = plots.training_curves(series, w.fig_path(f"{prefix}-curves-{model}"),
                                     f"{model} on {runs[0].dataset}: loss terms and validation metrics")
        w.figure(path, f"{model}: every logged loss term (train) and validation metric per epoch; dotted: best epoch")
    kl_groups = [(model, [r.history for r in runs]) for model, runs in groups.items()
                 if any(plots.kl_terms(r.history) for r in runs)]
    if kl_groups:
        w.add(f"{heading} KL per modality", "")
        path = plots.kl_per_modality(kl_groups, w.fig_path(f"{prefix}-kl"), "KL divergence per modality over training")
        w.figure(path, "KL terms per modality (kl_<modality>; dashed: the joint kl), mean over runs, per epoch")


def tsne_panel(run: Any, dataset: Any, label: str, samples: int, seed: int = 0) -> tuple | str:
    """One t-SNE panel ``(label, points, colours, task kind, class names)`` of a run's test representations,
    or a note saying why there is none (the model returns no joint representation)."""
    from mmib.api import predict

    pred = predict(run, dataset, "test", representations=True)
    if pred.representation is None:
        return "the model returns no joint representation"
    x = pred.representation.reshape(pred.representation.shape[0], -1).numpy().astype(np.float64)
    y = pred.y.numpy() if pred.y is not None else np.zeros(len(x))
    rng = np.random.default_rng(seed)
    if len(x) > samples:
        keep = np.sort(rng.choice(len(x), samples, replace=False))
        x, y = x[keep], y[keep]
    pts = tsne(x, seed)
    task = run.spec.task
    if task.kind == "regression":
        colour, names = y.astype(np.float64), None
    elif task.kind == "multilabel":
        colour = np.where(y.sum(1) > 0, y.argmax(1), -1)
        names = list(task.label_names)
    else:
        colour, names = y.astype(np.int64), list(getattr(task, "label_names", ()) or ()) or None
    return (label, pts, colour, task.kind, names)


def tsne_section(w: _Writer, groups: dict[str, list[RunRecord]], prefix: str, samples: int, heading: str = "###") -> None:
    """One t-SNE panel per model (its first finished run) of the test representations."""
    from mmib.api import load_run

    panels, notes = [], []
    for model, runs in groups.items():
        rec = next((r for r in runs if r.finished and (r.path / rundir.MODEL).is_file()), None)
        if rec is None:
            continue
        run = load_run(rec.path)
        panel = tsne_panel(run, w.dataset(run), rec.label if rec.label.startswith(model) else f"{model}, {rec.label}",
                           samples)
        if isinstance(panel, str):
            notes.append(f"{model}: {panel}")
        else:
            panels.append(panel)
    if not panels and not notes:
        return
    w.add(f"{heading} t-SNE of learned representations", "")
    if panels:
        path = plots.tsne_panels(panels, w.fig_path(f"{prefix}-tsne"), "t-SNE of test representations")
        w.figure(path, f"t-SNE (scikit-learn, perplexity <= 30, PCA init) of the test-set joint representation, "
                       f"up to {samples} samples, coloured by label")
    w.add(*(f"- {n}" for n in notes), "")


def tsne(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-d t-SNE embedding of the rows of ``x`` (perplexity adapted to small sets)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if len(x) < 5:
        raise RunError(f"t-SNE needs at least 5 samples, got {len(x)}")
    perplexity = float(min(30.0, (len(x) - 1) / 3))
    # one OpenMP thread: Barnes-Hut t-SNE slows down several-fold when its threads compete for busy cores
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def runs_table(runs: Sequence[RunRecord]) -> str:
    rows = []
    for r in runs:
        res = r.results
        mon = res.get("monitor")
        rows.append([r.label, r.model, r.dataset, r.seed, res.get("epochs_run", len(r.history)), res.get("best_epoch"),
                     mon, (res.get("valid") or {}).get(mon), (res.get("test") or {}).get(mon), res.get("params"),
                     res.get("seconds_per_epoch")])
    return markdown_table(["run", "model", "data", "seed", "epochs", "best", "monitor", "valid", "test", "params",
                           "s/epoch"], rows)


def _demote(md: str) -> list[str]:
    """Drop a Markdown document's title line (the report gives its own headings)."""
    lines = md.rstrip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return lines + [""]


def sweep_section(w: _Writer, src: Source, prefix: str) -> None:
    from mmib.experiments.sweep import SweepSetup, render_markdown

    setup = SweepSetup(**src.sweep)  # type: ignore[arg-type]
    done = [t for t in src.trials if t["state"] == "COMPLETE" and t["value"] is not None]
    pick = min if setup.direction == "minimize" else max
    best = pick(done, key=lambda t: t["value"]) if done else None
    w.add(*_demote(render_markdown(setup, src.trials, best)))
    specs = setup.specs
    if done and specs:
        key = papers.dataset_key(setup.base.get("data", {}))
        paper: dict[str, list[tuple[float, float, str]]] = {}
        for s in specs:
            for c in papers.curves_for(key, s.name, setup.monitor):
                if c.get("model") in (None, setup.model):
                    paper[s.name] = [(x, y, f"{c['paper']} {c['table']}") for x, y in c["xy"] if not (s.log and x <= 0)]
        params = [(s.name, s.log, s.kind == "choice") for s in specs]
        path = plots.metric_vs_params(params, src.trials, setup.monitor, w.fig_path(f"{prefix}-params"),
                                      f"{setup.model}: {setup.monitor} against swept parameters")
        w.figure(path, f"validation {setup.monitor} (objective) and test {setup.monitor} of every complete trial "
                       "against each swept parameter" + ("; stars: the paper's numbers" if paper else ""))


# ----------------------------------------------------------------------------- entry point
def report(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    title: str | None = None,
    tsne_plot: bool = True,
    tsne_samples: int = 1000,
    command: str | None = None,
    log: Log | None = print,
) -> Path:
    """Write ``out/report.md`` (and ``out/figures/*.png``) for the given inputs; returns the Markdown path."""
    from mmib.experiments.compare import render_markdown as compare_markdown

    if not inputs:
        raise ConfigError("give at least one run, comparison or sweep directory")
    if tsne_samples < 5:
        raise ConfigError(f"--tsne-samples must be >= 5, got {tsne_samples}")
    out = Path(out)
    sources = [discover(p) for p in inputs]
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    w = _Writer(out, log)
    w.add(f"# {title or 'mmib report'}", "")
    w.add(f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `{command or 'mmib report ' + ' '.join(map(str, inputs))}`.", "")
    plain_runs: list[RunRecord] = []
    for i, src in enumerate(sources, 1):
        prefix = f"{i}-{src.name}"
        if log:
            log(f"report: {src.kind} {src.path} ({len(src.runs)} runs)")
        if src.kind == "compare":
            w.add(f"## Comparison: `{src.path}`", "")
            w.add(*_demote(compare_markdown(src.comparison)))
            paper_section(w, src.runs)
            groups = by_model(src.runs)
        elif src.kind == "sweep":
            w.add(f"## Sweep: `{src.path}`", "")
            sweep_section(w, src, prefix)
            groups = {src.best.model: [src.best]} if src.best is not None else {}
            if src.best is not None:
                paper_section(w, [src.best])
        else:
            plain_runs.extend(src.runs)
            continue
        if groups:
            curves_section(w, groups, prefix)
            if tsne_plot:
                tsne_section(w, groups, prefix, tsne_samples)
    if plain_runs:
        w.add("## Runs", "", runs_table(plain_runs), "")
        paper_section(w, plain_runs)
        groups = by_model(plain_runs)
        curves_section(w, groups, "runs")
        if tsne_plot:
            tsne_section(w, groups, "runs", tsne_samples)
    path = out / REPORT_MD
    rundir.atomic_write_text(path, "\n".join(w.lines).rstrip("\n") + "\n")
    if log:
        log(f"written: {path} with {len(w.figures)} figures in {out / FIGURES}")
    return path


def command_line() -> str:
    """The command line that invoked this process, for the report's header."""
    import shlex

    args = sys.argv[1:]
    return "mmib " + shlex.join(args) if args else "mmib report"
