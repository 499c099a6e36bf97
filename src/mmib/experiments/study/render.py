"""Writing a study: ``study.md`` (tables, verdicts, figures), CSV and LaTeX tables, PNG figures, ``study.json``.

``study.json`` holds every reported number with its per-pair values and the run
directories they came from, so a table cell can be traced to its ``config.yaml``.
A document (``doc:``) is ``study.md`` with its figures copied beside it
(``<doc stem>_files/``); its first line says which command regenerates it.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmib.eval.tables import markdown_table
from mmib.experiments import papers, plots
from mmib.experiments.study import spec as S
from mmib.experiments.study import stats
from mmib.experiments.study.engine import Collected, Pair, metric_direction
from mmib.experiments.study.queue import DONE, FAILED
from mmib.train import rundir

Log = Callable[[str], None]
STUDY_MD, STUDY_JSON, TABLES, FIGURES = "study.md", "study.json", "tables", "figures"


def _pair_key(p: Pair) -> str:
    return f"{p[0]},{p[1]}"


def _percent(metric: str, table: S.TableDef | None) -> bool:
    head, _, rest = metric.partition(".")
    base = rest if head in ("valid", "test") and rest else metric
    return bool(table and table.percent) and "." not in base and papers.is_percent_metric(base)


def fmt(v: float, digits: int) -> str:
    """A number for a table: fixed ``digits`` decimals; large integers with thousands separators."""
    if not math.isfinite(v):
        return "-"
    if float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


# ----------------------------------------------------------------------------- cells
@dataclass
class CellResult:
    ref: S.CellRef | None
    text: str
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    values: dict[str, float] | None = None
    runs: dict[str, list[str]] | None = None
    bold: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {"text": self.text, "mean": self.mean, "std": self.std, "n": self.n, "values": self.values,
             "runs": self.runs}
        if self.ref is not None:
            d.update(asdict(self.ref))
        return d


def paper_value(row: S.RowDef, table_id: str, metric: str) -> float | None:
    """The paper's number for ``row`` (its ``paper: {table: row name}`` entry), on our scale."""
    name = row.paper.get(table_id)
    if name is None:
        return None
    for t in papers.paper_results().get("tables", []):
        if t["id"] == table_id:
            for r in t["rows"]:
                if r["name"] == name and isinstance(r.get(metric), (int, float)):
                    return papers.value_in_fraction(t, metric, float(r[metric]))
    return None


def cell_result(col: Collected, ref: S.CellRef | None, table: S.TableDef | None = None) -> CellResult:
    st = col.study
    if ref is None:
        return CellResult(None, "n/a")
    digits = table.digits if table else 3
    pct = _percent(ref.metric, table)
    scale = 100.0 if pct else 1.0
    shown = max(0, digits - 2) if pct else digits
    if ref.paper:
        v = paper_value(st.rows[ref.row], ref.paper, ref.metric) if ref.row else None
        return CellResult(ref, "-" if v is None else fmt(v * scale, shown), v if v is not None else math.nan,
                          n=0 if v is None else 1)
    values = col.values(ref.row, ref.data, ref.metric)
    runs = {_pair_key(p): v for p, v in col.sources(ref.row, ref.data).items()}
    expected = len(st.pairs)
    if ref.stat in ("delta", "p"):
        if ref.vs == ref.row:
            return CellResult(ref, "")  # a row against itself
        other = col.values(ref.vs, ref.data, ref.metric)
        pairs = sorted(p for p in values if p in other)
        diffs = [values[p] - other[p] for p in pairs]
        if ref.stat == "delta":
            m, s, n = stats.summarise(diffs)
            text = "-" if n == 0 else fmt(m * scale, shown) + (f" ± {fmt(s * scale, shown)}" if n > 1 else "")
            return CellResult(ref, text, m, s, n, {_pair_key(p): d for p, d in zip(pairs, diffs)}, runs)
        p = stats.p_value(np.array(diffs)) if len(diffs) >= 2 else math.nan
        return CellResult(ref, "-" if not math.isfinite(p) else f"{p:.2g}" if p < 0.01 else f"{p:.2f}", p,
                          n=len(diffs), runs=runs)
    dataset_level = ref.metric.startswith("bounds.") or (ref.row is not None and st.rows[ref.row].kind == "oracle")
    if dataset_level:  # one value per data seed, repeated over training seeds: summarise the distinct ones
        per_data = {p[1]: v for p, v in values.items()}
        m, s, n = stats.summarise(list(per_data.values()))
        expected = len({p[1] for p in st.pairs})
    else:
        m, s, n = stats.summarise(list(values.values()))
    if ref.stat == "n":
        return CellResult(ref, str(n), float(n), n=n, runs=runs)
    if ref.stat == "values":
        shown_values = [str(int(values[p])) if float(values[p]).is_integer() else fmt(values[p] * scale, shown)
                        for p in sorted(values)]
        return CellResult(ref, ", ".join(shown_values) or "-", m, s, n, {_pair_key(p): v for p, v in values.items()},
                          runs)
    if n == 0:
        text = "-"
        if ref.row and st.rows[ref.row].kind == "model":
            failed, total = col.failures(ref.row, ref.data, None)
            if failed:
                text = f"failed ({failed} of {total})"
    else:
        counts = ref.metric.startswith("results.") and all(float(v).is_integer() for v in values.values())
        if counts and float(m).is_integer() and (n == 1 or s == 0):
            text = fmt(m, 0)
        elif counts:
            text = f"{m:.1f}" + (f" ± {s:.1f}" if n > 1 else "")
        else:
            text = fmt(m * scale, shown) + (f" ± {fmt(s * scale, shown)}" if n > 1 else "")
        if n < expected:
            text += f" ({n} of {expected})"
    return CellResult(ref, text, m, s, n, {_pair_key(p): v for p, v in values.items()}, runs)


# ----------------------------------------------------------------------------- tables
@dataclass
class TableResult:
    table: S.TableDef
    lines: list[tuple[list[str], list[CellResult], bool]]

    def markdown(self) -> str:
        t = self.table
        rows = [[*labels, *(f"**{c.text}**" if c.bold else c.text for c in cells)] for labels, cells, _ in self.lines]
        return markdown_table([*t.label_headers, *t.headers], rows)

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([*self.table.label_headers, *(f"{h} {k}" for h in self.table.headers for k in ("mean", "std", "n"))])
        for labels, cells, _ in self.lines:
            w.writerow([*labels, *(x for c in cells for x in (_csv_num(c.mean), _csv_num(c.std), c.n))])
        return buf.getvalue()

    def latex(self) -> str:
        from mmib.experiments.compare import _latex_escape

        t = self.table
        cols = "l" * len(t.label_headers) + "c" * len(t.headers)
        head = " & ".join(_latex_escape(h) for h in [*t.label_headers, *t.headers]) + r" \\"
        body = []
        for labels, cells, _ in self.lines:
            parts = [_latex_escape(x) for x in labels]
            for c in cells:
                text = _latex_escape(c.text).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
                parts.append(rf"\textbf{{{text}}}" if c.bold else text)
            body.append(" & ".join(parts) + r" \\")
        caption = _latex_escape(t.title or t.name)
        return "\n".join(["% generated by mmib study; needs \\usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
                          f"\\caption{{{caption}}}", f"\\begin{{tabular}}{{{cols}}}", r"\toprule", head, r"\midrule",
                          *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def _csv_num(v: float) -> str:
    return "" if not math.isfinite(v) else repr(float(v))


def table_result(col: Collected, t: S.TableDef) -> TableResult:
    st = col.study
    lines = []
    for line in t.lines:
        cells = [cell_result(col, ref, t) for ref in line.cells]
        if line.reference and all(c.n == 0 for c in cells if c.ref is not None):
            continue  # a reference the data cannot give (no oracle): left out, not a row of dashes
        lines.append((list(line.labels), cells, line.reference))
    if t.best:
        for j in range(len(t.headers)):
            candidates = []
            for labels, cells, reference in lines:
                c = cells[j]
                if reference or c.ref is None or c.ref.stat != "mean" or c.ref.paper or c.n == 0 or c.ref.row is None:
                    continue
                if st.rows[c.ref.row].kind != "model" and st.rows[c.ref.row].kind != "mean":
                    continue
                mode = metric_direction(c.ref.metric)
                if mode is None:
                    candidates = []
                    break
                candidates.append((c, mode))
            if len(candidates) > 1:
                mode = candidates[0][1]
                pick = min if mode == "min" else max
                best = pick(c.mean for c, _ in candidates)
                for c, _ in candidates:
                    c.bold = c.mean == best
    return TableResult(t, lines)


# ----------------------------------------------------------------------------- claims
@dataclass
class ClaimResult:
    claim: S.ClaimDef
    verdict: str
    effects: list[Any]
    mode: str | None
    note: str = ""

    runs: dict[str, dict[str, list[str]]] | None = None
    means: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.claim), "verdict": self.verdict, "mode": self.mode, "note": self.note,
                "effects": [e.to_dict() for e in self.effects], "runs": self.runs, "means": self.means}


def claim_result(col: Collected, c: S.ClaimDef) -> ClaimResult:
    """The claim's effects and verdict, with the run directories of every row it compares and the means of
    those rows and of the study's reference rows (its yardsticks)."""
    result = _claim_result(col, c)
    result.runs = {r: {_pair_key(p): v for p, v in col.sources(r, c.data).items()} for r in dict.fromkeys([c.better, *c.than])}
    result.means = claim_means(col, c)
    return result


def claim_means(col: Collected, c: S.ClaimDef) -> list[dict[str, Any]]:
    """Each compared row (and each reference row of the study on the claim's data) with its mean on the claim's
    metric; for a failure claim, its failed and total runs."""
    st = col.study
    if c.kind == "fails":
        out = []
        for r in dict.fromkeys([c.better, *c.than]):
            failed, total = col.failures(r, c.data, None)
            out.append({"row": r, "label": st.rows[r].display, "failed": failed, "total": total, "reference": False})
        return out
    entries = [(c.better, c.metric)] + ([(c.better, m) for m in c.than_metrics] if c.than_metrics
                                        else [(t, c.metric) for t in c.than])
    compared = {r for r, _ in entries}
    refs = [r for r in claim_references(st, c) if r not in compared]
    out = []
    for r, m in entries + [(r, c.metric) for r in refs]:
        cell = cell_result(col, S.CellRef(r, c.data, m))
        out.append({"row": r, "label": st.rows[r].display + (f" ({m})" if c.than_metrics else ""), "metric": m,
                    "mean": cell.mean, "std": cell.std, "n": cell.n, "text": cell.text, "reference": r in refs})
    return out


def claim_references(st: S.Study, c: S.ClaimDef) -> list[str]:
    """The study's reference rows (``linear``, the oracle) that apply to a claim's data: shown beside its verdict."""
    if c.kind == "fails" or c.than_metrics:
        return []
    return [r for r in st.references if r in st.rows and st.rows[r].applies_to(c.data)]


def _claim_result(col: Collected, c: S.ClaimDef) -> ClaimResult:
    if c.kind == "fails":
        monitor = None
        effects = []
        for other in c.than:
            f1, n1 = col.failures(c.better, c.data, c.metric if c.metric != "failed" else monitor)
            f2, n2 = col.failures(other, c.data, c.metric if c.metric != "failed" else monitor)
            effects.append(stats.failure_effect(c.better, other, f1, n1, f2, n2))
        return ClaimResult(c, stats.decide_failures(effects, c.alpha, c.min_effect), effects, None)
    mode = metric_direction(c.metric, c.mode)
    if mode is None:
        return ClaimResult(c, stats.INCONCLUSIVE, [], None,
                           f"{c.metric} has no known direction: give the claim mode: min or max")
    a = col.values(c.better, c.data, c.metric)
    if c.than_metrics:  # the row's metric against its other metrics, paired by run
        effects = [stats.compare(c.metric, m, a, col.values(c.better, c.data, m), mode, test=c.test)
                   for m in c.than_metrics]
    elif c.worse:  # every other row beats this one
        effects = [stats.compare(other, c.better, col.values(other, c.data, c.metric), a, mode, test=c.test)
                   for other in c.than]
    else:
        effects = [stats.compare(c.better, other, a, col.values(other, c.data, c.metric), mode, test=c.test)
                   for other in c.than]
    verdict = stats.decide(effects, c.alpha, min_effect=c.min_effect, margin=c.margin, test=c.test)
    return ClaimResult(c, verdict, effects, mode)


def _num(v: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(v) else f"{v:+.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:+.{digits}f}"


def claims_markdown(results: Sequence[ClaimResult], st: S.Study) -> str:
    rows = []
    for r in results:
        c = r.claim
        head = f"{c.text} [{st.datasets[c.data].label}]: **{r.verdict}**"
        if r.note:
            rows.append([head, "-", "-", "-", "-", "-", r.note])
            continue
        for i, e in enumerate(r.effects):
            first = head if i == 0 else ""
            if c.kind == "fails":
                rows.append([first, f"vs {e.than}", f"{e.failed}/{e.total} vs {e.other_failed}/{e.other_total} failed",
                             "-", "-", _p(e.p_adjusted), f"{e.verdict}: {e.reason}"])
                continue
            arrow = "lower" if r.mode == "min" else "higher"
            what = (f"{e.better} vs {e.than}" if c.worse else f"vs {e.than}") + \
                (f", margin {c.margin:g}" if c.margin is not None else "") + \
                (f", min effect {c.min_effect:g}" if c.min_effect is not None else "")
            effect = "-" if e.n == 0 else f"{_num(e.mean)} [{_num(e.ci[0])}, {_num(e.ci[1])}]"
            dz = "-" if math.isnan(e.dz) else f"{e.dz:+.2f} [{_dz(e.dz_ci[0])}, {_dz(e.dz_ci[1])}]"
            rows.append([first, f"{what} ({c.metric}, {arrow} is better)", str(e.n), effect, dz, _p(e.p_adjusted),
                         f"{e.verdict}: {e.reason}"])
    table = markdown_table(["claim: verdict", "comparison", "pairs", "effect (95 % CI)", "d_z (95 % CI)", "p (Holm)",
                            "this comparison"], rows)
    why = list(dict.fromkeys(f"- {st.datasets[r.claim.data].label}: {r.claim.why}" for r in results if r.claim.why))
    if why:
        table += "\n\nWhy these data:\n\n" + "\n".join(why)
    note = (f"Effect: the mean paired improvement in the claimed direction (metric units; pairs = training seed x "
            f"data seed), with its 95 % t interval; d_z: the mean over the standard deviation of the paired "
            f"differences, with its exact 95 % interval. Tests: {'paired t-test' if all(x.claim.test == 't' for x in results) else 'paired t-test or Wilcoxon signed-rank (per claim)'}"
            f", Holm-adjusted within a claim; alpha {results[0].claim.alpha:g}." if results else "")
    if st.protocol == "fixed":
        tuning = "an equal tuning budget" if st.tuning else "no tuning"
        data = "the data seed = the training seed" if st.data_seeds == "same" else f"{len(st.data_seeds)} data seed(s)"
        note += (f" Protocol: fixed ({tuning}, {len(st.seeds)} training seeds, {data}), not the fair protocol "
                 f"(equal tuning budget, >= {S.FAIR_SEEDS} seeds x {S.FAIR_DATA_SEEDS} data seeds): "
                 "the verdicts hold for these settings only.")
    return table + "\n\n" + note


def _dz(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:+.2f}"


def _p(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


# ----------------------------------------------------------------------------- figures
def figure(col: Collected, f: S.FigureDef, out: Path) -> tuple[list[Path], str]:
    """Draw one figure (or one per row, for training curves); returns the files and a caption."""
    st = col.study
    fig_dir = out / FIGURES
    title = f.title or f"{f.kind}"
    if f.kind == "curves":
        files = []
        for r in f.rows:
            series = []
            for d in f.data:
                for i in range(min(6, len(st.pairs))):
                    rec = col.run_of(r, d, i)
                    if rec is not None and rec.history:
                        pair = list(col.plan.cells[(r, d)])[i]
                        series.append((f"{d} seed {pair[0]}/{pair[1]}", rec.history, (rec.results or {}).get("best_epoch")))
            if series:
                files.append(plots.training_curves(series, fig_dir / f"{f.name}-{S.show(r)}.png".replace(" ", "_"),
                                                   f"{st.rows[r].display}: loss terms and validation metrics"))
        return files, (f.title or "Every logged loss term (train) and validation metric per epoch; dotted: best epoch")
    if f.kind == "kl":
        groups = []
        for r in f.rows:
            hist = [rec.history for d in f.data for i in range(len(st.pairs))
                    if (rec := col.run_of(r, d, i)) is not None and rec.history]
            if any(plots.kl_terms(h) for h in hist):
                groups.append((st.rows[r].display, hist))
        if not groups:
            return [], "no run logged KL terms (kl_<modality>)"
        return [plots.kl_per_modality(groups, fig_dir / f"{f.name}.png", title)], \
            (f.title or "KL terms per modality (kl_<modality>; dashed: the joint kl), mean over runs, per epoch")
    if f.kind == "tsne":
        panels, notes = [], []
        for r in f.rows:
            rec = col.run_of(r, f.data[0])
            a = (rec.analyses.get(f"tsne:{f.samples}") if rec else None) or {}
            if "points" in a:
                panels.append((st.rows[r].display, np.array(a["points"]), np.array(a["colour"]), a["kind"], a["names"]))
            else:
                notes.append(f"{st.rows[r].display}: {a.get('note') or a.get('error') or 'not computed'}")
        files = [plots.tsne_panels(panels, fig_dir / f"{f.name}.png", title)] if panels else []
        cap = f.title or (f"t-SNE of the test-set joint representation (first seed pair), up to {f.samples} samples, "
                          "coloured by label")
        return files, cap + ("; " + "; ".join(notes) if notes else "")
    if f.kind == "sweep":
        panels = []
        for d in f.data:
            xs, ms, ss = [], [], []
            for r in f.rows:
                m, s, n = stats.summarise(list(col.values(r, d, str(f.metric)).values()))
                if n:
                    xs.append(float(st.rows[r].options[str(f.x)]))
                    ms.append(m)
                    ss.append(s)
            panel: dict[str, Any] = {"title": st.datasets[d].label, "series": [(st.rows[f.rows[0]].model or "", xs, ms, ss)]}
            if f.span:
                lo = stats.summarise(list(col.values(None, d, f.span[0]).values()))[0]
                hi = stats.summarise(list(col.values(None, d, f.span[1]).values()))[0]
                if math.isfinite(lo) and math.isfinite(hi):
                    panel.update(span=(lo, hi), span_label=f"[{f.span[0][7:]}, {f.span[1][7:]}]")
            if f.points:
                px = col.values(f.points["row"], d, f.points["x"])
                py = col.values(f.points["row"], d, str(f.metric))
                panel.update(points=[(px[p], py[p]) for p in px if p in py],
                             points_label=f.points.get("label") or f"{f.points['row']} ({f.points['x']})")
            panels.append(panel)
        path = plots.sweep_panels(panels, fig_dir / f"{f.name}.png", title, str(f.x), str(f.metric), f.log)
        return [path], f.title or f"{f.metric} (mean ± std over seed pairs) against {f.x}"
    if f.kind == "probes":
        groups = []
        for r in f.rows:
            for rep in f.representations:
                per_part: dict[str, list[float]] = {}
                for d in f.data:
                    for i in range(len(st.pairs)):
                        rec = col.run_of(r, d, i)
                        for part, v in ((rec.analyses.get(f"probe:{rep}") if rec else None) or {}).items():
                            if isinstance(v, dict) and isinstance(v.get(f.metric), (int, float)):
                                per_part.setdefault(part, []).append(float(v[f.metric]))
                if per_part:
                    label = st.rows[r].display + ("" if rep == "representation" else f" {rep}")
                    groups.append((label, {p: float(np.mean(v)) for p, v in per_part.items()}))
        if not groups:
            return [], "no probe results"
        return [plots.probe_bars(groups, fig_dir / f"{f.name}.png", title, f"held-out {f.metric}")], \
            f.title or f"held-out {f.metric} of a ridge probe from each representation to each ground-truth part"
    if f.kind == "robust":
        from mmib.experiments.report import _demote
        from mmib.experiments.robust import RobustnessResult, plot, render_markdown

        rec = col.run_of(f.rows[0], f.data[0])
        a = (rec.analyses.get("robust:" + ",".join(f"{v:g}" for v in f.levels)) if rec else None) or {}
        if "rows" not in a:
            return [], f"robustness not computed ({a.get('error', 'no finished run')})"
        r = RobustnessResult(**a)
        path = plot(r, fig_dir / f"{f.name}.png")
        return [path], (f.title or f"{st.rows[f.rows[0]].display} (first seed pair) under noise on each modality "
                        "and with each removed") + "\n\n" + "\n".join(_demote(render_markdown(r))).strip()
    raise AssertionError(f.kind)


# ----------------------------------------------------------------------------- extra sections
def params_markdown(p: S.ParamsDef) -> str:
    from mmib.models.complexity import count_parameters, params_table, spec_from_dims

    out = []
    spec = spec_from_dims(p.dims, p.seq_len)
    shape = ", ".join(f"{n} {f'{p.seq_len}x' if p.seq_len else ''}{d}" for n, d in p.dims.items())
    out += [f"Inputs {shape}; `mmib models --params --dims {','.join(f'{n}={d}' for n, d in p.dims.items())}"
            + (f" --seq-len {p.seq_len}" if p.seq_len else "") + f" --models {','.join(p.models)}`", "",
            params_table(count_parameters(p.models, spec, p.sets), p.baseline), ""]
    if p.bert:
        try:
            import tempfile

            import transformers
        except ImportError:
            out.append("(transformers is not installed: the BERT-base-size count is left out)")
            return "\n".join(out)
        with tempfile.TemporaryDirectory() as tmp:
            transformers.BertConfig().save_pretrained(tmp)  # bert-base-uncased's architecture, config only
            spec_b = spec_from_dims(p.dims, p.seq_len, text_tokens=p.seq_len or 50)
            rows = count_parameters(p.models, spec_b, [*p.sets, f"text_model={tmp}", "text_encoder.random_init=true"])
        out += ["With a BERT-base-size text encoder (12 layers, hidden 768; built on the meta device from "
                "`transformers.BertConfig()`, no weights needed): `mmib models --params ... --text-model BERT_CONFIG_DIR "
                "--set text_encoder.random_init=true`", "", params_table(rows, p.baseline), ""]
    return "\n".join(out)


def ranking_markdown(col: Collected, r: S.RankingDef) -> tuple[str, list[dict[str, Any]]]:
    """One line per dataset with the rows in order of their means; and those means (for study.json)."""
    st = col.study
    mode = metric_direction(r.metric, r.mode)
    lines, data = [], []
    for d in r.data:
        means = {row: stats.summarise(list(col.values(row, d, r.metric).values()))[0] for row in r.rows}
        means = {k: v for k, v in means.items() if math.isfinite(v)}
        data.append({"data": d, "metric": r.metric, "mode": mode, "means": means,
                     "runs": {row: {_pair_key(p): v for p, v in col.sources(row, d).items()} for row in r.rows}})
        if mode is None:
            lines.append(f"- {st.datasets[d].label}: {r.metric} has no known direction (give the ranking a mode)")
            continue
        order = sorted(means, key=lambda k: means[k], reverse=mode == "max")
        sign = " < " if mode == "min" else " > "
        lines.append(f"- {st.datasets[d].label}: {r.metric} ranking "
                     + sign.join(f"`{st.rows[k].display}` {fmt(means[k], 3)}" for k in order)
                     + (f" (best first; {len(r.rows) - len(order)} row(s) without values)" if len(order) < len(r.rows)
                        else " (best first)"))
    return "\n".join(lines), data


def log_rows_markdown(col: Collected, lr: S.LogRowsDef) -> str:
    rec = col.run_of(lr.row, lr.data)
    rows = (rec.analyses.get(f"log:{lr.file}:{lr.epoch}:{lr.limit}") if rec else None) or []
    if not isinstance(rows, list) or not rows:
        why = rows.get("error") if isinstance(rows, dict) else "no finished run"
        return f"({lr.file}: {why})"
    cells = [[(f"{r.get(k):.3f}" if isinstance(r.get(k), float) else r.get(k, "-")) for k in lr.columns] for r in rows]
    pair = list(col.plan.cells[(lr.row, lr.data)])[0]
    return (f"`{lr.file}` of {col.study.rows[lr.row].display} on {col.study.datasets[lr.data].label} (seed pair "
            f"{pair[0]}/{pair[1]}, {lr.epoch} epoch; run `{rec.path if rec else '-'}`):\n\n"
            + markdown_table(lr.columns, cells))


# ----------------------------------------------------------------------------- the study
def _read_text_file(name: str, st: S.Study, doc: Path | None) -> str:
    bases = ([doc.parent] if doc else []) + [Path(st.source).parent]
    for b in bases:
        p = b / name
        if p.is_file():
            return p.read_text().strip()
    return f"(notes file {name} not found beside the document or the study file)"


def render(col: Collected, out: Path, *, command: str, doc: Path | None = None, log: Log | None = print,
           reduced: str | None = None) -> dict[str, Path]:
    """Write study.md, study.json, tables/*.csv|tex and figures/*.png into ``out`` (and the document ``doc``)."""
    st = col.study
    out.mkdir(parents=True, exist_ok=True)
    (out / TABLES).mkdir(exist_ok=True)
    records = col.records
    done = sum(r.state == DONE for r in records.values())
    failed = [r for r in records.values() if r.state == FAILED]
    pending = len(col.plan.runs) - done - len(failed)
    lines = [f"# {st.title}", ""]
    if st.description:
        lines += [st.description, ""]
    seeds = ", ".join(map(str, st.seeds))
    pairs = (f"training seeds {seeds}, each with the data seed equal to it" if st.data_seeds == "same"
             else f"training seeds {seeds} x data seeds {', '.join(map(str, st.data_seeds))}")
    tuning = (f"an equal budget of {st.tuning.trials} Optuna trials per tuned model on the validation split "
              f"(sampler {st.tuning.sampler}, pruner {st.tuning.pruner}), then the best configuration over the seeds"
              if st.tuning else "no tuning (every row at its stated options)")
    lines += [f"Study `{st.name}` ({Path(st.source).name}), regenerated by `{command}`. {len(col.plan.runs)} runs: "
              f"{pairs}; {tuning}; reported split: {st.split}; "
              f"mean ± sample std over the (seed, data seed) pairs. Every number, its per-pair values and the run "
              f"directories it comes from are in `study.json`.", ""]
    if reduced:
        lines += [f"**Reduced setting** ({reduced}): not the study's protocol; do not quote these numbers.", ""]
    if pending or failed:
        lines += [f"Incomplete: {done} of {len(col.plan.runs)} runs finished, {len(failed)} failed, {pending} not "
                  "finished yet (rerun the command to continue).", ""]
    if col.plan.tuning:
        tl = []
        for (r, d), t in col.plan.tuning.items():
            best = ", ".join(f"{k}={S.show(v) if not isinstance(v, float) else f'{v:.3g}'}" for k, v in (t.best or {}).items())
            tl.append([st.rows[r].display, st.datasets[d].label, t.trials, t.monitor or "-",
                       "-" if t.value is None else f"{t.value:.4g}", best or t.note or "-"])
        lines += ["Tuning (valid split; the same number of trials for every model):", "",
                  markdown_table(["row", "data", "trials", "objective", "best valid", "best parameters"], tl), ""]
    payload: dict[str, Any] = {"study": {"name": st.name, "title": st.title, "source": st.source, "command": command,
                                         "protocol": st.protocol, "seeds": st.seeds, "data_seeds": st.data_seeds,
                                         "split": st.split, "alpha": st.alpha, "reduced": reduced,
                                         "generated": time.strftime("%Y-%m-%d %H:%M:%S")},
                               "tables": [], "claims": [], "figures": [], "rankings": [], "runs": {}, "measures": [],
                               "tuning": [asdict(t) for t in col.plan.tuning.values()]}
    for i, sec in enumerate(st.sections):
        if sec.heading:
            lines += [f"## {sec.heading}", ""]
        if sec.text:
            lines += [sec.text.strip(), ""]
        if sec.file:
            lines += [_read_text_file(sec.file, st, doc), ""]
        if sec.table is not None:
            tr = table_result(col, sec.table)
            if sec.table.title:
                lines += [f"*{sec.table.title}*", ""]
            lines += [tr.markdown(), ""]
            rundir.atomic_write_text(out / TABLES / f"{sec.table.name}.csv", tr.csv())
            rundir.atomic_write_text(out / TABLES / f"{sec.table.name}.tex", tr.latex())
            payload["tables"].append({"name": sec.table.name, "title": sec.table.title,
                                      "headers": [*sec.table.label_headers, *sec.table.headers],
                                      "lines": [{"labels": labels, "reference": ref, "cells": [c.to_dict() for c in cells]}
                                                for labels, cells, ref in tr.lines]})
        if sec.claims:
            results = [claim_result(col, c) for c in sec.claims]
            lines += [claims_markdown(results, st), ""]
            payload["claims"].extend(r.to_dict() for r in results)
        if sec.figure is not None:
            files, caption = figure(col, sec.figure, out)
            for f in files:
                rel = f.relative_to(out).as_posix()
                lines += [f"![{f.stem}]({rel})", ""]
            lines += [f"*{caption.splitlines()[0]}*" if files else f"*(figure {sec.figure.name}: {caption.splitlines()[0]})*",
                      ""]
            if "\n" in caption:
                lines += [caption.split("\n", 1)[1].strip(), ""]
            fig = sec.figure
            payload["figures"].append({
                "name": fig.name, "kind": fig.kind, "files": [f.relative_to(out).as_posix() for f in files],
                "rows": fig.rows, "data": fig.data,
                "values": {f"{r} | {d}": {_pair_key(p): v for p, v in col.values(r, d, fig.metric).items()}
                           for r in fig.rows for d in fig.data} if fig.kind == "sweep" and fig.metric else None,
                "runs": {f"{r} | {d}": {_pair_key(p): v for p, v in col.sources(r, d).items()}
                         for r in fig.rows for d in fig.data}})
        if sec.params is not None:
            lines += [params_markdown(sec.params), ""]
        if sec.log_rows is not None:
            lines += [log_rows_markdown(col, sec.log_rows), ""]
        if sec.ranking is not None:
            text, ranked = ranking_markdown(col, sec.ranking)
            lines += [text, ""]
            payload["rankings"].extend(ranked)
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- `{r.path}`: {r.error}" for r in failed] + [""]
    for key, run in col.plan.runs.items():
        rec = records.get(key)
        payload["runs"][key] = {"row": run.cell[0], "data": run.cell[1], "seed": run.pair[0], "data_seed": run.pair[1],
                                "path": rec.path if rec else str(run.path), "host": rec.host if rec else None,
                                "config": str(Path(rec.path if rec else run.path) / rundir.CONFIG),
                                "state": rec.state if rec else "pending", "error": rec.error if rec else None}
    payload["measures"] = [{"data": d, "data_seed": s, "kind": k, "value": v} for (d, s, k), v in col.measures.items()]
    text = "\n".join(lines).rstrip("\n") + "\n"
    rundir.atomic_write_text(out / STUDY_MD, text)
    rundir.atomic_write_json(out / STUDY_JSON, payload)
    files = {"markdown": out / STUDY_MD, "json": out / STUDY_JSON}
    if doc is not None:
        files["doc"] = write_doc(text, out, doc, command, st)
    if log:
        log(f"written: {out / STUDY_MD}, {out / STUDY_JSON}, {out / TABLES}/, {out / FIGURES}/"
            + (f"; document {doc}" if doc else ""))
    return files


def write_doc(text: str, out: Path, doc: Path, command: str, st: S.Study) -> Path:
    """``study.md`` as a document at ``doc``, its figures in ``<doc stem>_files/``; the first line names the command."""
    assets = doc.parent / f"{doc.stem}_files"
    if assets.is_dir():
        shutil.rmtree(assets)
    figs = out / FIGURES
    if figs.is_dir() and any(figs.iterdir()):
        assets.mkdir(parents=True)
        for f in sorted(figs.glob("*.png")):
            shutil.copy2(f, assets / f.name)
    body = text.replace(f"]({FIGURES}/", f"]({assets.name}/")
    first = (f"> Generated by `{command}` from the study `{st.name}`; edit the study "
             f"(`{_source_name(st)}`), not this file.")
    doc.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(doc, first + "\n\n" + body)
    return doc


def _source_name(st: S.Study) -> str:
    p = Path(st.source)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return f"mmib/experiments/studies/{p.name}" if p.parent == S.builtin_dir() else str(p)
