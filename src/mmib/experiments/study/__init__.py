"""Studies as data: one declarative engine for every comparison, tuning budget and paper table.

A study file (:mod:`mmib.experiments.study.spec`) declares datasets, rows (models
with options, derived rows: the same head on ground-truth parts, the oracle, means
over rows), training and data seeds, an optional equal tuning budget, tables,
claims and figures. :func:`run_study` plans its runs, tunes, trains them through
the shared work queue (:mod:`~mmib.experiments.study.queue`, with
:func:`mmib.experiments.compare.execute`), analyses them and writes the study
directory (:mod:`~mmib.experiments.study.render`). Built-in studies live in
``mmib/experiments/studies/`` (``mmib study --list``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmib.errors import ConfigError
from mmib.experiments.study.spec import Study, builtin_studies, load_study, study_path, summary

Log = Callable[[str], None]

__all__ = ["Study", "StudyOutcome", "builtin_studies", "load_study", "plan_lines", "run_study", "study_path", "summary"]


@dataclass
class StudyOutcome:
    study: Study
    out: Path
    runs: int
    done: int
    failed: int
    pending: int
    files: dict[str, Path]


def _reduce(st: Study, seeds: Any, data_seeds: Any, trials: int | None) -> tuple[Study, str | None]:
    """The study with fewer seeds or trials (a quick check); says what changed."""
    from mmib.experiments.study.spec import _seeds

    notes = []
    if seeds is not None:
        st = dataclasses.replace(st, seeds=_seeds(_count_or_list(seeds), "--seeds"))
        notes.append(f"seeds {st.seeds}")
    if data_seeds is not None:
        value = "same" if data_seeds == "same" else _seeds(_count_or_list(data_seeds), "--data-seeds")
        st = dataclasses.replace(st, data_seeds=value)
        notes.append(f"data seeds {value}")
    if trials is not None:
        if st.tuning is None:
            raise ConfigError(f"--trials: study {st.name!r} has no tuning budget")
        if trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {trials}")
        st = dataclasses.replace(st, tuning=dataclasses.replace(st.tuning, trials=trials))
        notes.append(f"{trials} tuning trials")
    return st, ", ".join(notes) or None


def _count_or_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        try:
            return [int(t) for t in text.split(",")] if "," in text else int(text)
        except ValueError:
            raise ConfigError(f"{value!r}: expected a count N or a list like 0,1,2") from None
    return value


def _check_data(st: Study) -> None:
    from mmib.data.registry import list_datasets

    names = {e.name for e in list_datasets()}
    for d in st.datasets.values():
        if d.name not in names and not Path(d.name).exists():
            from mmib.config import suggest

            raise ConfigError(f"{Path(st.source).name}: datasets.{d.key}: unknown dataset {d.name!r}"
                              f"{suggest(d.name, names)}; see `mmib datasets`")


def _check_spaces(st: Study, plan: Any) -> None:
    """Every tuned model's search space parses and names options the model accepts."""
    from mmib.experiments.study.engine import cell_config, space_for
    from mmib.experiments.sweep import ParamSpec, apply_params
    from mmib.models.registry import model_options

    for row_key, data_key in plan.untuned:
        row = st.rows[row_key]
        base = cell_config(st, row, st.datasets[data_key])
        for name, text in space_for(st, row.model or "").items():
            p = ParamSpec.parse(f"{name}={text}")
            for value in p.representative():
                cfg = apply_params(base, {p.name: value})
                try:
                    model_options(cfg.model.name, cfg.model.options)
                except ConfigError as exc:
                    raise ConfigError(f"search space of {row.model!r}: {name}={text}: {exc}") from None


def plan_lines(plan: Any) -> list[str]:
    """The run plan as text lines (``--dry-run``)."""
    from mmib.eval.tables import markdown_table
    from mmib.train import rundir

    st = plan.study
    rows = []
    done = 0
    for (r, d), pairs in plan.cells.items():
        finished = sum((plan.runs[k].path / rundir.RESULTS).is_file() for k in set(pairs.values()))
        done += finished
        cfg = plan.runs[next(iter(pairs.values()))].config
        rows.append([r, d, cfg.model.name, len(set(pairs.values())), finished, "-"])
    for cell in plan.untuned:
        row = st.rows[cell[0]]
        t = plan.tuning.get(cell)
        rows.append([cell[0], cell[1], row.model, len(st.pairs), 0, f"{t.trials} trials first" if t else "tuned first"])
    n_untuned = len(plan.untuned) * len(st.pairs)
    total = len(plan.runs) + n_untuned
    trials = sum(t.trials for t in plan.tuning.values())
    lines = [f"study {st.name!r} ({st.source}): {len(plan.cells) + len(plan.untuned)} cells, {total} runs "
             f"({done} finished, {total - done} to train)"
             + (f", plus {trials} tuning trials ({len(plan.tuning)} budgets of {st.tuning.trials})" if plan.tuning else "")
             + f"; pairs (seed, data seed): {len(st.pairs)}"]
    lines.append(markdown_table(["row", "data", "model", "runs", "finished", "tuning"], rows))
    if plan.measures:
        lines.append("dataset measures: " + ", ".join(f"{k} of {d}" for d, k in sorted(plan.measures)))
    return lines


def run_study(
    name_or_file: str | Path,
    *,
    out: str | Path | None = None,
    jobs: int = 1,
    storage: str | None = None,
    dry_run: bool = False,
    doc: bool | str | Path = False,
    retry_failed: bool = False,
    seeds: Any = None,
    data_seeds: Any = None,
    trials: int | None = None,
    overrides: Sequence[str] = (),
    log: Log | None = print,
    command: str | None = None,
) -> StudyOutcome | list[str]:
    """Run (or continue) a study and write its directory; with ``dry_run`` only return the plan's lines.

    ``out`` holds the study's outputs, its runs (``out/runs``), tuning sweeps (``out/tuning``)
    and, unless ``storage`` names another database, its queue (``out/study.db``). ``doc``:
    True writes the study's ``doc:`` document, a path writes it there.
    """
    from mmib.experiments._util import require, slug
    from mmib.experiments.study import engine, render
    from mmib.experiments.study.queue import DONE, FAILED, RunStore

    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    st = load_study(name_or_file)
    st, reduced = _reduce(st, seeds, data_seeds, trials)
    if overrides:
        reduced = ", ".join(filter(None, [reduced, "--set " + " ".join(overrides)]))
    _check_data(st)
    out = Path(out) if out is not None else Path("runs") / "studies" / slug(st.name)
    doc_path: Path | None = None
    if doc is True:
        if not st.doc:
            raise ConfigError(f"{Path(st.source).name}: --doc without a path needs a doc: field in the study")
        doc_path = Path(st.doc)
    elif doc:
        doc_path = Path(doc)
    plan = engine.plan_study(st, out, jobs=jobs, overrides=overrides)
    _check_spaces(st, plan)
    if dry_run:
        engine.tune_cells(plan, "", jobs, overrides, None, dry_run=True)
        return plan_lines(plan)
    require("sqlalchemy")
    if plan.untuned:
        require("optuna")
    out.mkdir(parents=True, exist_ok=True)
    url = storage or engine.default_storage(out)
    store = RunStore(url, st.name)
    try:
        if plan.untuned:
            tuned = engine.tune_cells(plan, url, jobs, overrides, log)
            tuning = plan.tuning
            plan = engine.plan_study(st, out, jobs=jobs, overrides=overrides, tuned=tuned)
            plan.tuning = tuning
        if log:
            log(plan_lines(plan)[0])
        engine.train_plan(plan, store, jobs, log, retry_failed=retry_failed)
        engine.analyse(plan, store, list(plan.runs), log)
        col = engine.collect(plan, store)
        cmd = command or default_command(st, name_or_file, doc_path is not None)
        files = render.render(col, out, command=cmd, doc=doc_path, log=log, reduced=reduced)
    finally:
        store.close()
    states = [r.state for r in col.records.values()]
    done, failed = states.count(DONE), states.count(FAILED)
    return StudyOutcome(st, out, len(plan.runs), done, failed, len(plan.runs) - done - failed, files)


def default_command(st: Study, name_or_file: str | Path, doc: bool) -> str:
    target = st.name if Path(st.source).parent == _builtin_dir() and str(name_or_file) == st.name else str(name_or_file)
    return f"mmib study {target}" + (" --doc" if doc else "")


def _builtin_dir() -> Path:
    from mmib.experiments.study.spec import builtin_dir

    return builtin_dir()
