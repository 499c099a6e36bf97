"""Robustness of a trained run to corrupted and missing modalities.

For every modality in turn, :func:`robustness` evaluates the run on its test
split (by default) with

* Gaussian noise of increasing strength added to that modality: ``x + sigma *
  eps``, ``eps ~ N(0, 1)``, on valid (unpadded) steps only. Features are
  standardised with the run's own training statistics, so ``sigma`` is in units
  of each feature's training standard deviation; ``sigma = 0`` is the clean data;
* the modality removed, two ways: ``zeroed`` (every feature set to 0, the
  training mean) and ``masked`` (length 0: a missing sequence, or presence flag
  0 for a vector modality, which the shared encoders turn into a zero code).

Noise draws are seeded (``seed``), and averaged over ``repeats`` draws. A
modality that a model reads from ``text_bert`` token ids (a ``bert`` encoder)
ignores feature noise; such rows are flagged.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmib.errors import ConfigError, DataError
from mmib.eval.metrics import metric_mode
from mmib.eval.tables import format_value, markdown_table
from mmib.train import rundir

DEFAULT_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
ROBUST_MD = "robust.md"
ROBUST_CSV = "robust.csv"
ROBUST_PNG = "robust.png"


@dataclass
class RobustnessResult:
    """Rows of (condition, modality, level, metrics) and the clean metrics."""

    run: str
    model: str
    dataset: str
    split: str
    metric: str
    clean: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        return list(self.clean)


def perturbed(dataset: Any, modality: str, split: str, *, sigma: float = 0.0, zero: bool = False,
              mask: bool = False, generator: torch.Generator | None = None) -> Any:
    """A shallow copy of ``dataset`` whose ``modality`` is corrupted on the rows of ``split`` only."""
    if modality not in dataset.features:
        raise DataError(f"modality {modality!r} not in the data (have {', '.join(dataset.features)})")
    ds = copy.copy(dataset)
    ds.features = dict(dataset.features)
    ds.lengths = dict(dataset.lengths)
    rows = dataset.splits[split]
    x = dataset.features[modality].clone()
    part = x.index_select(0, rows)
    valid = None
    if part.dim() == 3 and modality in dataset.lengths:
        steps = torch.arange(part.shape[1])
        valid = (steps.unsqueeze(0) < dataset.lengths[modality].index_select(0, rows).unsqueeze(1)).unsqueeze(-1)
    if sigma:
        noise = torch.randn(part.shape, generator=generator, dtype=part.dtype) * sigma
        part = part + (noise * valid if valid is not None else noise)
    if zero:
        part = torch.zeros_like(part)
    x.index_copy_(0, rows, part)
    ds.features[modality] = x
    if mask:
        n = x.shape[0]
        lengths = dataset.lengths.get(modality, torch.ones(n, dtype=torch.long))
        ds.lengths[modality] = lengths.clone().index_fill_(0, rows, 0)
    return ds


def _token_modalities(model: Any) -> set[str]:
    """Modalities a model reads from text_bert token ids rather than from features."""
    out: set[str] = set()
    for module in model.modules():
        kinds = getattr(module, "kinds", None)
        if isinstance(kinds, dict):
            out |= {name for name, kind in kinds.items() if kind == "bert"}
    return out


def robustness(
    run: Any,
    levels: Sequence[float] = DEFAULT_LEVELS,
    split: str = "test",
    repeats: int = 1,
    seed: int = 0,
    metric: str | None = None,
    modalities: Sequence[str] | None = None,
    batch_size: int = 512,
    dataset: Any = None,
) -> RobustnessResult:
    """Evaluate ``run`` (a path or :class:`mmib.api.Run`) under noise and removal of each modality."""
    from mmib.api import evaluate, load_run

    if isinstance(run, (str, Path)):
        run = load_run(run)
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    levels = sorted({float(v) for v in levels})
    if not levels or any(v < 0 or not math.isfinite(v) for v in levels):
        raise ConfigError(f"--levels {levels}: noise levels must be finite numbers >= 0")
    ds = dataset if dataset is not None else run.dataset()
    if ds.split_size(split) == 0:
        raise DataError(f"{ds.name}: the {split!r} split is empty")
    mods = list(modalities) if modalities else list(run.spec.names)
    unknown = [m for m in mods if m not in run.spec.names]
    if unknown:
        raise ConfigError(f"--modalities: {', '.join(unknown)} not in the run's modalities ({', '.join(run.spec.names)})")
    clean = evaluate(run, ds, split, batch_size)
    metric = metric or run.results.get("monitor") or next(iter(clean))
    if metric not in clean:
        raise ConfigError(f"--metric {metric!r}: not a metric of this task ({', '.join(clean)})")
    metric_mode(metric)
    result = RobustnessResult(str(run.path), run.config.model.name, ds.name, split, metric, clean)
    tokens = _token_modalities(run.model)
    for name in sorted(tokens & set(mods)):
        result.notes.append(f"{name}: the model reads token ids (bert encoder), so feature noise/removal cannot reach it")
    for mi, m in enumerate(mods):
        for li, sigma in enumerate(levels):
            if sigma == 0:
                metrics = dict(clean)
            else:
                draws = []
                for r in range(repeats):
                    g = torch.Generator().manual_seed(seed * 1_000_003 + mi * 10_007 + li * 101 + r)
                    draws.append(evaluate(run, perturbed(ds, m, split, sigma=sigma, generator=g), split, batch_size))
                metrics = {k: float(sum(d[k] for d in draws) / len(draws)) for k in clean}
            result.rows.append({"condition": "noise", "modality": m, "level": sigma, **metrics})
        for cond in ("zeroed", "masked"):
            metrics = evaluate(run, perturbed(ds, m, split, zero=cond == "zeroed", mask=cond == "masked"), split,
                               batch_size)
            result.rows.append({"condition": cond, "modality": m, "level": None, **metrics})
    return result


def render_markdown(r: RobustnessResult, figure: str | None = None) -> str:
    """Table of every condition with the chosen metric's change from clean."""
    names = r.metric_names
    delta = f"Δ{r.metric}"
    rows = [[row["condition"], row["modality"], "-" if row["level"] is None else f"{row['level']:g}",
             *(row[k] for k in names), row[r.metric] - r.clean[r.metric]]
            for row in r.rows]
    lines = [f"# Robustness of {r.model} on {r.dataset} ({r.split} split)", "",
             f"Run `{r.run}`. Noise: x + sigma * N(0, 1) on one modality (standardised features, so sigma is in "
             "training standard deviations). zeroed: the modality set to 0; masked: the modality marked missing "
             f"(length 0). Clean {r.metric}: {format_value(r.clean[r.metric])} "
             f"({'lower' if metric_mode(r.metric) == 'min' else 'higher'} is better).", ""]
    lines += [f"Note: {n}" for n in r.notes] + ([""] if r.notes else [])
    lines.append(markdown_table(["condition", "modality", "sigma", *names, delta], rows))
    if figure:
        lines += ["", f"![{r.metric} under noise and removal]({figure})"]
    return "\n".join(lines) + "\n"


def render_csv(r: RobustnessResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["condition", "modality", "sigma", *r.metric_names])
    for row in r.rows:
        w.writerow([row["condition"], row["modality"], "" if row["level"] is None else row["level"],
                    *(row[k] for k in r.metric_names)])
    return buf.getvalue()


def plot(r: RobustnessResult, path: Path) -> Path:
    """Metric against noise strength (one line per modality) and a bar chart of removals."""
    from mmib.experiments.plots import new_figure, save

    fig, (ax1, ax2) = new_figure(1, 2, width=4.2, height=3.0)
    mods = list(dict.fromkeys(row["modality"] for row in r.rows))
    for m in mods:
        pts = [(row["level"], row[r.metric]) for row in r.rows if row["modality"] == m and row["condition"] == "noise"]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax1.axhline(r.clean[r.metric], color="grey", ls="--", lw=0.8, label="clean")
    ax1.set_xlabel("noise sigma (training std units)")
    ax1.set_ylabel(r.metric)
    ax1.set_title("Gaussian noise on one modality")
    ax1.legend(fontsize=7)
    width = 0.38
    for j, cond in enumerate(("zeroed", "masked")):
        vals = [next(row[r.metric] for row in r.rows if row["modality"] == m and row["condition"] == cond) for m in mods]
        ax2.bar([i + (j - 0.5) * width for i in range(len(mods))], vals, width, label=cond)
    ax2.axhline(r.clean[r.metric], color="grey", ls="--", lw=0.8, label="clean")
    ax2.set_xticks(range(len(mods)), mods)
    ax2.set_ylabel(r.metric)
    ax2.set_title("modality removed")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{r.model} on {r.dataset}: {r.metric} ({r.split})", fontsize=9)
    return save(fig, path)


def write_outputs(r: RobustnessResult, out: Path) -> dict[str, Path]:
    """robust.md, robust.csv and robust.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    png = plot(r, out / ROBUST_PNG)
    rundir.atomic_write_text(out / ROBUST_MD, render_markdown(r, png.name))
    rundir.atomic_write_text(out / ROBUST_CSV, render_csv(r))
    return {"markdown": out / ROBUST_MD, "csv": out / ROBUST_CSV, "figure": png}
