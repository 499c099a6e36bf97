"""matplotlib figures for reports (object API only: no pyplot state, no display needed).

Every function draws into a new :class:`matplotlib.figure.Figure` and writes a
PNG with :func:`save`; sizes and resolution are kept small so that reports can
be committed.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmib.experiments._util import require

DPI = 72
#: Loss terms named ``kl_<modality>`` (optionally ``<stage>/kl_<modality>``) are per-modality KL terms;
#: ``kl`` alone is the joint/fused one. The MIB family logs exactly these names.
KL_TERM = re.compile(r"^(?:(?P<stage>[^/]+)/)?kl(?:_(?P<modality>.+))?$")


def new_figure(rows: int, cols: int, width: float = 2.8, height: float = 2.1) -> tuple[Any, list[Any]]:
    """A figure of ``rows x cols`` panels of ``width x height`` inches; returns (figure, flat list of axes)."""
    require("matplotlib")
    from matplotlib.figure import Figure

    w, h = cols * width, rows * height + 0.35
    fig = Figure(figsize=(w, h), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False)
    # fixed margins in inches (constrained layout is several times slower on many panels)
    fig.subplots_adjust(left=0.55 / w, right=1 - 0.15 / w, bottom=0.6 / h, top=1 - 0.7 / h,
                        wspace=0.45, hspace=0.7 / max(height - 0.7, 0.5))
    return fig, [ax for row in axes for ax in row]


def save(fig: Any, path: str | Path, colors: int = 128) -> Path:
    """Write ``fig`` as a palette PNG of at most ``colors`` colours (about 3x smaller than full
    colour, and indistinguishable for line and scatter plots); parents are created."""
    import io

    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=colors).save(p, format="PNG", optimize=True)
    return p


def finish_panels(fig: Any, axes: Sequence[Any], used: int, title: str, path: str | Path) -> Path:
    """Hide the grid's unused panels (those after the first ``used``), title the figure and save it."""
    for ax in axes[used:]:
        ax.axis("off")
    width, height = fig.get_size_inches()
    lines = fit_text(title, width, 9)
    if lines.count("\n"):  # room for the extra lines above the panels
        fig.subplots_adjust(top=1 - (0.55 + 0.15 * (lines.count("\n") + 1)) / height)
    fig.suptitle(lines, fontsize=9)
    return save(fig, path)


def fit_text(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` wrapped into lines that fit ``width_inches`` at ``fontsize`` points (a title that
    runs past the figure's edge is cut off in the PNG)."""
    chars = max(10, int(width_inches * 72 / (0.55 * fontsize)))
    return textwrap.fill(str(text), chars)


def _grid(n: int, cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _series(history: Sequence[dict[str, Any]], section: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in history:
        v = (row.get(section) or {}).get(key)
        if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(int(row["epoch"]))
            ys.append(float(v))
    return xs, ys


def curve_keys(histories: Sequence[Sequence[dict[str, Any]]]) -> list[tuple[str, str]]:
    """(section, key) of every logged train term, model hook value and validation metric."""
    keys: list[tuple[str, str]] = []
    for section in ("train", "model", "valid"):
        for h in histories:
            for row in h:
                for k in row.get(section) or {}:
                    if (section, k) not in keys:
                        keys.append((section, k))
    return keys


def training_curves(runs: Sequence[tuple[str, Sequence[dict[str, Any]], int | None]], path: Path, title: str) -> Path:
    """One panel per logged loss term and validation metric; one line per run (label, history, best epoch).

    Phase changes (e.g. warm-up -> main) are marked with a grey vertical line,
    the best epoch of each run with a dotted line.
    """
    keys = curve_keys([h for _, h, _ in runs])
    rows, cols = _grid(len(keys))
    fig, axes = new_figure(rows, cols)
    for ax, (section, key) in zip(axes, keys):
        for label, history, best in runs:
            xs, ys = _series(history, section, key)
            if xs:
                line = ax.plot(xs, ys, lw=1.2, label=label)[0]
                if best and section == "valid":
                    ax.axvline(best, color=line.get_color(), ls=":", lw=0.8)
        h0 = runs[0][1]
        for a, b in zip(h0, h0[1:]):
            if a.get("phase") != b.get("phase"):
                ax.axvline(a["epoch"] + 0.5, color="grey", lw=0.6)
        ax.set_title(f"{section}: {key}", fontsize=8)
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=7)
    if len(runs) > 1 and keys:
        axes[0].legend(fontsize=6)
    return finish_panels(fig, axes, len(keys), title, path)


def kl_terms(history: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{display name: train key}`` of the KL terms a run logged (see :data:`KL_TERM`)."""
    out: dict[str, str] = {}
    for row in history:
        for k in row.get("train") or {}:
            m = KL_TERM.match(k)
            if m:
                name = m.group("modality") or "joint"
                if m.group("stage"):
                    name = f"{m.group('stage')}/{name}"
                out.setdefault(name, k)
    return out


def kl_per_modality(groups: Sequence[tuple[str, Sequence[Sequence[dict[str, Any]]]]], path: Path, title: str) -> Path:
    """One panel per model: mean KL term per modality over epochs (mean over the group's runs)."""
    rows, cols = _grid(len(groups), 3)
    fig, axes = new_figure(rows, cols, 3.2, 2.4)
    for ax, (label, histories) in zip(axes, groups):
        names: dict[str, str] = {}
        for h in histories:
            names.update(kl_terms(h))
        for name, key in names.items():
            per_epoch: dict[int, list[float]] = {}
            for h in histories:
                for x, y in zip(*_series(h, "train", key)):
                    per_epoch.setdefault(x, []).append(y)
            xs = sorted(per_epoch)
            ax.plot(xs, [float(np.mean(per_epoch[x])) for x in xs], lw=1.3, label=name,
                    ls="--" if name.endswith("joint") else "-")
        ax.set_title(fit_text(label, ax.get_position().width * fig.get_figwidth(), 8), fontsize=8)
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel("KL (nats)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return finish_panels(fig, axes, len(groups), title, path)


def metric_vs_params(
    params: Sequence[tuple[str, bool, bool]],
    trials: Sequence[dict[str, Any]],
    metric: str,
    path: Path,
    title: str,
    paper: dict[str, list[tuple[float, float, str]]] | None = None,
) -> Path:
    """One panel per swept parameter ``(name, log scale, categorical)``: validation value (and test value)
    of every complete trial against the parameter; ``paper[name]`` adds a paper's (x, y, label) points."""
    rows, cols = _grid(len(params), 3)
    fig, axes = new_figure(rows, cols, 3.2, 2.5)
    for ax, (name, log, categorical) in zip(axes, params):
        done = [t for t in trials if t["state"] == "COMPLETE" and name in t["params"] and t["value"] is not None]
        xs_raw = [t["params"][name] for t in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs_raw)
        if categorical:
            cats = list(dict.fromkeys(map(str, xs_raw)))
            if numeric:
                cats.sort(key=float)  # numeric choices (e.g. beta decades) in order
            xs = [cats.index(str(v)) for v in xs_raw]
            ax.set_xticks(range(len(cats)), cats, fontsize=7)
        else:
            xs = [float(v) for v in xs_raw]
            if log:
                ax.set_xscale("log")
                ax.tick_params(axis="x", which="both", labelsize=6, labelrotation=40)
        order = np.argsort(xs, kind="stable") if xs else []
        vy = [done[i]["value"] for i in order]
        ordered = not categorical or numeric
        ax.plot([xs[i] for i in order], vy, "o-" if ordered else "o", ms=4, lw=0.8, label=f"valid {metric}")
        ty = [(done[i]["user_attrs"].get("test") or {}).get(metric) for i in order]
        pts = [(xs[i], y) for i, y in zip(order, ty) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--" if ordered else "s", ms=3, lw=0.6,
                    label=f"test {metric}")
        if (paper or {}).get(name):
            pp = sorted((paper or {})[name])
            ax.plot([p[0] for p in pp], [p[1] for p in pp], "*:", color="black", ms=6, lw=0.6, label=pp[0][2])
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return finish_panels(fig, axes, len(params), title, path)


def tsne_panels(panels: Sequence[tuple[str, np.ndarray, np.ndarray, str, list[str] | None]], path: Path, title: str) -> Path:
    """t-SNE scatter plots: (label, 2-d points, colour values, task kind, class names) per panel."""
    rows, cols = _grid(len(panels), 3)
    fig, axes = new_figure(rows, cols, 3.2, 3.0)
    for ax, (label, pts, colour, kind, names) in zip(axes, panels):
        if kind == "regression":
            sc = ax.scatter(pts[:, 0], pts[:, 1], c=colour, cmap="coolwarm", s=5, alpha=0.8)
            fig.colorbar(sc, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
        else:
            classes = sorted(set(int(c) for c in colour))
            for c in classes:
                sel = colour == c
                name = names[c] if names and 0 <= c < len(names) else ("none" if c < 0 else str(c))
                ax.scatter(pts[sel, 0], pts[sel, 1], s=5, alpha=0.8, label=name)
            ax.legend(fontsize=6, markerscale=2)
        ax.set_title(fit_text(label, ax.get_position().width * fig.get_figwidth(), 8), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return finish_panels(fig, axes, len(panels), title, path)


def sweep_panels(
    panels: Sequence[dict[str, Any]], path: Path, title: str, xlabel: str, ylabel: str, log: bool = True,
) -> Path:
    """A metric against a swept option, one panel per dataset.

    Each panel: ``title``, ``series`` [(label, xs, means, stds)], optional ``span``
    (low, high) shaded with its ``span_label``, and ``points`` [(x, y)] with ``points_label``
    (e.g. a drawn beta and the accuracy it gave). ``x = 0`` is left out on a log axis.
    """
    rows, cols = _grid(len(panels), 3)
    fig, axes = new_figure(rows, cols, 3.4 if cols > 1 else 5.0, 2.6)  # one panel: room for the title
    for ax, panel in zip(axes, panels):
        for label, xs, ms, ss in panel["series"]:
            keep = [i for i, x in enumerate(xs) if not (log and x <= 0)]
            ax.errorbar([xs[i] for i in keep], [ms[i] for i in keep],
                        yerr=[0.0 if not math.isfinite(ss[i]) else ss[i] for i in keep],
                        marker="o", ms=3, capsize=3, lw=1.0, label=label)
        if panel.get("span"):
            lo, hi = panel["span"]
            ax.axvspan(lo, hi, color="tab:green", alpha=0.15, label=panel.get("span_label"))
        if panel.get("points"):
            pts = panel["points"]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="*", s=60, color="tab:red", zorder=3,
                       label=panel.get("points_label"))
        if log:
            ax.set_xscale("log")
        ax.set_title(fit_text(panel["title"], ax.get_position().width * fig.get_figwidth(), 8), fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return finish_panels(fig, axes, len(panels), title, path)


def probe_bars(groups: Sequence[tuple[str, dict[str, float]]], path: Path, title: str, ylabel: str) -> Path:
    """Grouped bars: one group per ground-truth part, one bar per representation ``(label, {part: value})``."""
    parts: list[str] = []
    for _, values in groups:
        parts.extend(p for p in values if p not in parts)
    fig, axes = new_figure(1, 1, max(4.8, 0.35 * len(parts) * max(1, len(groups)) + 1.5), 2.8)
    ax = axes[0]
    width = 0.8 / max(1, len(groups))
    for i, (label, values) in enumerate(groups):
        xs = [j + i * width for j in range(len(parts))]
        ax.bar(xs, [values.get(p, float("nan")) for p in parts], width=width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(parts))], parts, fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
    return finish_panels(fig, axes, 1, title, path)
