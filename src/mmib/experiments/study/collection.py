"""A collection of studies: the claims of several studies, one row each, in one document.

A collection is a study file with ``collect:`` instead of datasets, rows and sections::

    name: claims
    title: Every claim of the four papers, tested where it can hold
    doc: docs/results/claims.md
    description: |
      What the table shows ...
    collect: [claims-mib, claims-mmim]     # built-in study names or FILE.yaml (relative to this file)

``mmib study claims`` runs every collected study as ``mmib study NAME`` would (runs cached by
their configuration, so a study run before is only collected again), each into its own
directory (``OUT/NAME`` with ``--out OUT``, else the study's default), and writes one row per
claim: the claim, its data and why they can show it (the claim's ``why:``), the command of the
study that tests it, the means of the compared rows beside the study's reference rows
(``linear``, the oracle), the effect with its 95 % confidence interval, and the verdict.
``--doc`` writes the collection's document and every collected study's own document (``--doc PATH``:
the collection's at PATH, the studies' beside it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmib.errors import ConfigError

COLLECTION_KEYS = ("name", "title", "description", "doc", "collect")


@dataclass
class Collection:
    """A parsed collection: its name, document and the studies it collects (names or files)."""

    name: str
    title: str
    source: str
    description: str = ""
    doc: str | None = None
    studies: list[str] = field(default_factory=list)


def is_collection(d: dict[str, Any]) -> bool:
    return "collect" in d


def parse_collection(d: dict[str, Any], path: Path) -> Collection:
    from mmib.experiments.study.spec import _keys, _list, _str, builtin_studies

    w = path.name
    _keys(d, COLLECTION_KEYS, w)
    col = Collection(_str(d.get("name") or path.stem, f"{w}: name"), str(d.get("title") or path.stem), str(path),
                     str(d.get("description") or "").strip())
    if d.get("doc") is not None:
        col.doc = _str(d["doc"], f"{w}: doc")
    found = builtin_studies()
    for i, entry in enumerate(_list(d.get("collect"), f"{w}: collect")):
        name = _str(entry, f"{w}: collect[{i}]")
        if name.endswith((".yaml", ".yml")):
            p = Path(name) if Path(name).is_absolute() else path.parent / name
            if not p.is_file():
                raise ConfigError(f"{w}: collect[{i}]: no such study file {name!r}")
            name = str(p)
        elif name not in found:
            from mmib.config import suggest

            raise ConfigError(f"{w}: collect[{i}]: unknown study {name!r}{suggest(name, found)}")
        target = Path(name) if name.endswith((".yaml", ".yml")) else found[name]
        if target.resolve() == path.resolve():
            raise ConfigError(f"{w}: collect[{i}]: a collection cannot collect itself")
        if name in col.studies:
            raise ConfigError(f"{w}: collect[{i}]: {name!r} is listed twice")
        col.studies.append(name)
    if not col.studies:
        raise ConfigError(f"{w}: collect: list at least one study")
    return col


def member_out(out: Path | None, name: str) -> Path | None:
    """Where a collected study writes: ``OUT/<study>`` under an explicit ``--out``, else its own default."""
    from mmib.experiments._util import slug

    return None if out is None else out / slug(Path(name).stem if name.endswith((".yaml", ".yml")) else name)


def command_of(name: str) -> str:
    return f"mmib study {name}"


# ----------------------------------------------------------------------------- the table
def _num(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:+.2g}" if 1e-9 < abs(v) < 1e-3 else f"{0.0 if abs(v) <= 1e-9 else v:+.3f}"


def _p(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def means_text(result: Any) -> str:
    """The compared rows' means, then the references' (``<br>`` between rows: one table cell)."""
    parts = []
    for m in result.means or []:
        name = m["label"] if m.get("metric") and result.claim.than_metrics else m["row"]
        if "failed" in m:
            parts.append(f"{name}: {m['failed']} of {m['total']} runs failed")
        elif m["n"]:
            parts.append(f"{name}: {m['text']}")
    return "<br>".join(parts) or "-"


def effect_text(result: Any) -> str:
    """Each comparison's effect in the claimed direction with its 95 % interval and Holm-adjusted p."""
    c = result.claim
    if result.note:
        return result.note
    parts = []
    for e in result.effects:
        if c.kind == "fails":
            ci = e.rate_ci
            parts.append(f"vs {e.than}: failure rate {e.failed}/{e.total} (95 % CI "
                         f"{'-' if not math.isfinite(ci[0]) else f'{ci[0]:.2f}'}-"
                         f"{'-' if not math.isfinite(ci[1]) else f'{ci[1]:.2f}'}) vs {e.other_failed}/{e.other_total}, "
                         f"p {_p(e.p_adjusted)}")
            continue
        if e.n == 0:
            parts.append(f"vs {e.than}: no paired values")
            continue
        who = f"{e.better} vs {e.than}" if c.worse else f"vs {e.than}"
        text = f"{who}: {_num(e.mean)} [{_num(e.ci[0])}, {_num(e.ci[1])}], p {_p(e.p_adjusted)}, {e.n} pairs"
        if len(result.effects) > 1:
            text += f" ({e.verdict})"
        parts.append(text)
    return "<br>".join(parts) or "-"


def metric_text(result: Any) -> str:
    c = result.claim
    if c.kind == "fails":
        return "runs that fail (NaN or error)"
    arrow = "lower" if result.mode == "min" else "higher" if result.mode == "max" else "?"
    extra = f"; margin {c.margin:g}" if c.margin is not None else f"; min effect {c.min_effect:g}" \
        if c.min_effect is not None else ""
    return f"{c.metric} ({arrow} is better{extra})"


def _link(name: str, outcome: Any, doc: Path | None) -> str:
    cmd = f"`{command_of(name)}`"
    written = outcome.files.get("doc")
    if doc is not None and written is not None:
        rel = os.path.relpath(Path(written), doc.parent)
        return f"{cmd} ([{Path(written).name}]({Path(rel).as_posix()}))"
    return cmd


def claims_rows(members: list[tuple[str, Any]], doc: Path | None) -> list[list[str]]:
    rows = []
    for name, outcome in members:
        st = outcome.study
        for r in outcome.claims:
            c = r.claim
            data = st.datasets[c.data].label
            rows.append([c.text, f"{data}: {c.why}" if c.why else data, _link(name, outcome, doc), metric_text(r),
                         means_text(r), effect_text(r), f"**{r.verdict}**"])
    return rows


def collection_markdown(col: Collection, members: list[tuple[str, Any]], command: str, reduced: str | None,
                        doc: Path | None) -> str:
    from mmib.eval.tables import markdown_table
    from mmib.experiments.study.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE

    lines = [f"# {col.title}", ""]
    if col.description:
        lines += [col.description, ""]
    runs = sum(o.runs for _, o in members)
    done = sum(o.done for _, o in members)
    failed = sum(o.failed for _, o in members)
    lines += [f"Collection `{col.name}` ({Path(col.source).name}), regenerated by `{command}`: the claims of "
              f"{len(members)} studies ({', '.join(f'`{n}`' for n, _ in members)}; {runs} runs). Each study's own "
              "document holds its tables, tuning and per-comparison statistics; its `study.json` every number with "
              "the run directories it comes from.", ""]
    if reduced:
        lines += [f"**Reduced setting** ({reduced}): not the studies' protocol; do not quote these verdicts.", ""]
    if done + failed < runs or failed:
        lines += [f"Incomplete: {done} of {runs} runs finished, {failed} failed (rerun the command to continue).", ""]
    rows = claims_rows(members, doc)
    verdicts = [r[-1].strip("*") for r in rows]
    lines += [f"{len(rows)} claims: {verdicts.count(HOLDS)} hold, {verdicts.count(DOES_NOT_HOLD)} do not hold, "
              f"{verdicts.count(INCONCLUSIVE)} inconclusive at this power.", ""]
    lines += [markdown_table(["claim", "data, and why it can show the claim", "study", "metric",
                              "means (mean ± sd over seed pairs; then the references)",
                              "effect in the claimed direction [95 % CI], Holm p", "verdict"], rows), ""]
    lines += ["Effect: the mean paired improvement of the first row over each compared row in the claimed direction "
              "(metric units; pairs = training seed x data seed), with its 95 % t interval and the Holm-adjusted p "
              "of the paired test within the claim. Verdicts: *holds* (significant in the claimed direction; for a "
              "margin claim, significantly no worse than the margin), *does not hold* (significant the other way, "
              "or the interval excludes the stated minimal effect), otherwise *inconclusive at this power*.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def collection_json(col: Collection, members: list[tuple[str, Any]], command: str, reduced: str | None) -> dict:
    import time

    return {"collection": {"name": col.name, "title": col.title, "source": col.source, "command": command,
                           "reduced": reduced, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "studies": [n for n, _ in members]},
            "claims": [{"study": n, "command": command_of(n), "out": str(o.out), **r.to_dict()}
                       for n, o in members for r in o.claims]}


def write_collection(col: Collection, members: list[tuple[str, Any]], out: Path, command: str,
                     reduced: str | None, doc: Path | None) -> dict[str, Path]:
    from mmib.experiments.study.render import STUDY_JSON, STUDY_MD
    from mmib.train import rundir

    out.mkdir(parents=True, exist_ok=True)
    text = collection_markdown(col, members, command, reduced, doc)
    rundir.atomic_write_text(out / STUDY_MD, collection_markdown(col, members, command, reduced, None))
    rundir.atomic_write_json(out / STUDY_JSON, collection_json(col, members, command, reduced))
    files = {"markdown": out / STUDY_MD, "json": out / STUDY_JSON}
    if doc is not None:
        source = Path(col.source)
        from mmib.experiments.study.spec import builtin_dir

        shown = f"mmib/experiments/studies/{source.name}" if source.parent == builtin_dir() else str(source)
        first = f"> Generated by `{command}` from the collection `{col.name}`; edit the studies (`{shown}`), not this file."
        doc.parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_text(doc, first + "\n\n" + text)
        files["doc"] = doc
    return files
