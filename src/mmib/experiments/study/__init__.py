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
    study: Any  # a Study, or a Collection of studies
    out: Path
    runs: int
    done: int
    failed: int
    pending: int
    files: dict[str, Path]
    claims: list[Any] = dataclasses.field(default_factory=list)  # render.ClaimResult of every claim


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
    from mmib.experiments.study.engine import cell_config, row_space
    from mmib.experiments.sweep import ParamSpec, apply_params
    from mmib.models.registry import model_options

    for row_key, data_key in plan.untuned:
        row = st.rows[row_key]
        base = cell_config(st, row, st.datasets[data_key])
        for name, text in row_space(st, row_key, data_key).items():
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
    from mmib.experiments._util import require
    from mmib.experiments.study import collection, engine, render
    from mmib.experiments.study.queue import DONE, FAILED, RunStore
    from mmib.experiments.study.spec import parse_study, read_yaml

    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    path = study_path(name_or_file)
    d = read_yaml(path)
    if collection.is_collection(d):
        return _run_collection(collection.parse_collection(d, path), name_or_file, out=out, jobs=jobs,
                               storage=storage, dry_run=dry_run, doc=doc, retry_failed=retry_failed, seeds=seeds,
                               data_seeds=data_seeds, trials=trials, overrides=overrides, log=log, command=command)
    st, reduced, out, plan = _prepare(parse_study(d, path), out, jobs, seeds, data_seeds, trials, overrides)
    doc_path: Path | None = None
    if doc is True:
        if not st.doc:
            raise ConfigError(f"{Path(st.source).name}: --doc without a path needs a doc: field in the study")
        doc_path = Path(st.doc)
    elif doc:
        doc_path = Path(doc)
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
        claims = [render.claim_result(col, c) for c in st.claims]
    finally:
        store.close()
    states = [r.state for r in col.records.values()]
    done, failed = states.count(DONE), states.count(FAILED)
    return StudyOutcome(st, out, len(plan.runs), done, failed, len(plan.runs) - done - failed, files, claims)


def _prepare(st: Study, out: str | Path | None, jobs: int, seeds: Any, data_seeds: Any, trials: int | None,
             overrides: Sequence[str]) -> tuple[Study, str | None, Path, Any]:
    """The study reduced as asked, checked, with its output directory and run plan (before tuning)."""
    from mmib.experiments._util import slug
    from mmib.experiments.study import engine

    st, reduced = _reduce(st, seeds, data_seeds, trials)
    if overrides:
        reduced = ", ".join(filter(None, [reduced, "--set " + " ".join(overrides)]))
    _check_data(st)
    out = Path(out) if out is not None else Path("runs") / "studies" / slug(st.name)
    plan = engine.plan_study(st, out, jobs=jobs, overrides=overrides)
    _check_spaces(st, plan)
    return st, reduced, out, plan


def plan_counts(plan: Any) -> tuple[int, int]:
    """(runs, tuning trials) of a plan: its runs, those of cells still to be tuned, and their trials."""
    st = plan.study
    return (len(plan.runs) + len(plan.untuned) * len(st.pairs),
            len(plan.untuned) * st.tuning.trials if st.tuning else 0)


def _run_collection(col: Any, name_or_file: str | Path, *, out: str | Path | None, doc: bool | str | Path,
                    dry_run: bool, log: Log | None, command: str | None, seeds: Any, data_seeds: Any,
                    trials: int | None, overrides: Sequence[str], **options: Any) -> StudyOutcome | list[str]:
    """Run every study of a collection (see :mod:`mmib.experiments.study.collection`), then its claims table."""
    from mmib.experiments._util import slug
    from mmib.experiments.study import collection

    base = Path(out) if out is not None else None
    reduce = {"seeds": seeds, "data_seeds": data_seeds, "trials": trials, "overrides": overrides}
    if dry_run:
        from mmib.experiments.study import engine

        lines, runs, trial_count = [], 0, 0
        for name in col.studies:
            _, _, _, plan = _prepare(load_study(name), collection.member_out(base, name), options.get("jobs", 1),
                                     seeds, data_seeds, trials, overrides)
            engine.tune_cells(plan, "", options.get("jobs", 1), overrides, None, dry_run=True)
            n_runs, n_trials = plan_counts(plan)
            runs, trial_count = runs + n_runs, trial_count + n_trials
            lines += ["", *plan_lines(plan)]
        head = (f"study {col.name!r} ({col.source}): collects {len(col.studies)} studies "
                f"({', '.join(col.studies)}); {runs} runs in all, plus {trial_count} tuning trials")
        return [head, *lines]
    doc_path: Path | None = None
    if doc is True:
        if not col.doc:
            raise ConfigError(f"{Path(col.source).name}: --doc without a path needs a doc: field in the collection")
        doc_path = Path(col.doc)
    elif doc:
        doc_path = Path(doc)
    members = []
    for name in col.studies:
        if log:
            log(f"collection {col.name}: study {name}")
        own = load_study(name).doc
        # --doc: every study's own document too; --doc PATH: those documents beside PATH
        member_doc: bool | Path = False
        if own and doc_path is not None:
            member_doc = True if doc is True else doc_path.parent / Path(own).name
        member = run_study(name, out=collection.member_out(base, name), log=log, dry_run=False, doc=member_doc,
                           **reduce, **options)
        assert isinstance(member, StudyOutcome)
        members.append((name, member))
    notes = [f"--{flag} {value}" for flag, value in (("seeds", seeds), ("data-seeds", data_seeds), ("trials", trials))
             if value is not None] + (["--set " + " ".join(overrides)] if overrides else [])
    target = col.name if Path(col.source).parent == _builtin_dir() and str(name_or_file) == col.name else str(name_or_file)
    cmd = command or f"mmib study {target}" + (" --doc" if doc_path is not None else "")
    where = base if base is not None else Path("runs") / "studies" / slug(col.name)
    files = collection.write_collection(col, members, where, cmd, ", ".join(notes) or None, doc_path)
    if log:
        log(f"written: {files['markdown']}" + (f"; document {doc_path}" if doc_path else ""))
    return StudyOutcome(col, where, sum(o.runs for _, o in members), sum(o.done for _, o in members),
                        sum(o.failed for _, o in members), sum(o.pending for _, o in members), files,
                        [r for _, o in members for r in o.claims])


def default_command(st: Study, name_or_file: str | Path, doc: bool) -> str:
    target = st.name if Path(st.source).parent == _builtin_dir() and str(name_or_file) == st.name else str(name_or_file)
    return f"mmib study {target}" + (" --doc" if doc else "")


def _builtin_dir() -> Path:
    from mmib.experiments.study.spec import builtin_dir

    return builtin_dir()
