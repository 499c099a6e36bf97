"""The study file: its schema, parsed and checked without training (and without importing torch).

A study is one YAML file (see ``docs`` in the README's "Studies" section and the
built-in files in ``mmib/experiments/studies/``)::

    name: tiny
    title: Two models on a small sim-msa
    protocol: fixed            # or fair (default): equal tuning budget, >= 5 seeds x 2 data seeds
    seeds: 2                   # training seeds: a count or a list
    data_seeds: [0]            # data seeds: a count, a list, or "same" (data seed = training seed)
    train: {epochs: 5}         # training options of every run
    datasets:
      msa: {name: sim-msa, options: {n_train: 200}}
    rows:                      # what tables compare: models, derived rows, groups
      concat: {}
      c-mib: {options: {beta: 1e-3}}
      "c-mib beta={beta}": {model: c-mib, grid: {beta: [0, 1e-3, 1]}}
      "head [a0]": {model: feature-head, select: [a0]}
      oracle: {oracle: true}
      "c-mib, mean over betas": {mean: ["c-mib beta=*"]}
    sections:
      - heading: Results
        table: {data: msa, rows: [concat, c-mib], columns: [mae, corr]}
        claims: [{better: c-mib, than: concat, metric: mae, data: msa}]
        figure: {kind: sweep, rows: ["c-mib beta=*"], x: beta, metric: mae, data: [msa]}

A claim may also say ``why`` its data can show it (a text, or one per dataset key), or name the
row every other beats (``worse: l-mib`` with ``than: [e-mib, c-mib]``); the means of its rows
appear beside those of the reference rows (``linear``, the oracle) on its data. ``oracle: KEY``
scores the per-sample predictions in another ``meta`` entry (``oracle: true`` is ``meta["oracle"]``).
With ``tuning:``, every tuned row searches its model's space except the options the row fixes
itself (``c-mib beta=0`` keeps beta = 0 and tunes the rest). A file with ``collect: [study, ...]``
instead of datasets, rows and sections is a collection (:mod:`mmib.experiments.study.collection`).

Every error is one line naming the file and the key (``tiny.yaml: sections[0].table.rows[1]:
unknown row 'x'``). Strings in ``rows``/``columns`` entries may use ``{var}`` for variables of
the same entry, of its ``for:`` expansion, or of the table's other axis.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mmib.config import TrainConfig, parse_value
from mmib.errors import ConfigError

PROTOCOLS = ("fair", "fixed")
#: The fair protocol's minimums (issue requirement 5).
FAIR_SEEDS, FAIR_DATA_SEEDS = 5, 2
TESTS = ("t", "wilcoxon")
FIGURE_KINDS = ("curves", "kl", "tsne", "sweep", "probes", "robust")
STATS = ("mean", "values", "delta", "p", "n")
RESULT_FIELDS = ("params", "trainable_params", "seconds_per_epoch", "train_seconds", "epochs_run", "best_epoch",
                 "inference_ms_per_sample", "peak_rss_mb", "peak_gpu_mb")
#: Reference rows every row-table gets unless it says ``references: false``.
DEFAULT_REFERENCES = ("linear", "oracle")
STUDIES_PACKAGE = "mmib.experiments"
STUDIES_DIR = "studies"
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TRAIN_FIELDS = {f for f in TrainConfig.__dataclass_fields__}


# ----------------------------------------------------------------------------- small helpers
def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _keys(d: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    unknown = [k for k in d if k not in allowed]
    if unknown:
        from mmib.config import suggest

        raise _fail(where, f"unknown key {unknown[0]!r}{suggest(unknown[0], allowed)}; expected {', '.join(allowed)}")


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _str(value: Any, where: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise _fail(where, f"expected a string, got {value!r}")
    return str(value)


def scalar(value: Any) -> Any:
    """YAML scalars as the CLI reads them (``1e-3`` is a float, not the string YAML 1.1 makes of it)."""
    if isinstance(value, str):
        return parse_value(value)
    if isinstance(value, list):
        return [scalar(v) for v in value]
    if isinstance(value, dict):
        return {k: scalar(v) for k, v in value.items()}
    return value


def show(value: Any) -> str:
    """A value as it appears in an expanded row name (``1e-06``, ``0.001``, ``concat``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list):
        return ",".join(show(v) for v in value)
    return str(value)


def fill(text: str, variables: Mapping[str, Any], where: str) -> str:
    """``{name}`` replaced by ``variables[name]``; an unknown name is an error (no other format syntax)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise _fail(where, f"{{{name}}} is not defined here (variables: {', '.join(sorted(variables)) or 'none'})")
        return show(variables[name])

    return _VAR.sub(sub, text)


def fill_all(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        return fill(value, variables, where)
    if isinstance(value, list):
        return [fill_all(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: fill_all(v, variables, where) for k, v in value.items()}
    return value


def _expand_for(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """``{for: {a: [1, 2], b: [x]}, ...}`` -> one entry per combination, with a and b as variables."""
    loops = entry.pop("for", None)
    if loops is None:
        return [entry]
    loops = _mapping(loops, f"{where}.for")
    names = list(loops)
    values = [[scalar(v) for v in _list(loops[n], f"{where}.for.{n}")] for n in names]
    if any(not v for v in values):
        raise _fail(f"{where}.for", "every variable needs at least one value")
    return [{**entry, **dict(zip(names, combo))} for combo in itertools.product(*values)]


# ----------------------------------------------------------------------------- definitions
@dataclass
class DataDef:
    """One dataset of the study (a registered name or file, with loader options)."""

    key: str
    name: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass
class RowDef:
    """One row of the study's tables.

    ``kind``: ``model`` (a registered model, trained for every seed pair), ``oracle``
    (the dataset's ``meta["oracle"]`` predictions, or those of another ``meta`` key named by
    ``oracle: KEY``, scored without training) or ``mean`` (the per-pair mean of ``members``).
    """

    key: str
    kind: str = "model"
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    select: list[str] | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)
    per_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: list[str] | None = None
    label: str = ""
    paper: dict[str, str] = field(default_factory=dict)
    tune: bool = True
    members: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    oracle_key: str = "oracle"

    @property
    def measure(self) -> str:
        """The dataset measure an oracle row reads (``oracle``, or ``oracle:KEY`` for another meta key)."""
        return "oracle" if self.oracle_key == "oracle" else f"oracle:{self.oracle_key}"

    def applies_to(self, data: str) -> bool:
        return self.datasets is None or data in self.datasets

    @property
    def display(self) -> str:
        return self.label or self.key


@dataclass
class TuningDef:
    """An equal Optuna budget for every tuned model row (validation split; the sweep's machinery)."""

    trials: int
    sampler: str = "tpe"
    pruner: str = "median"
    prune_warmup: int = 2
    spaces: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CellRef:
    """What one table cell shows: ``stat`` of ``metric`` for ``row`` on ``data`` (``vs``: for delta and p)."""

    row: str | None
    data: str
    metric: str
    stat: str = "mean"
    vs: str | None = None
    paper: str | None = None

    @property
    def id(self) -> str:
        parts = [self.row or "-", self.data, self.metric, self.stat]
        if self.vs:
            parts.append(f"vs {self.vs}")
        if self.paper:
            parts.append(f"paper {self.paper}")
        return " | ".join(parts)


@dataclass
class TableLine:
    labels: list[str]
    cells: list[CellRef | None]  # None: the row does not apply to the column's dataset (n/a)
    row: str | None = None
    reference: bool = False


@dataclass
class TableDef:
    name: str
    title: str
    label_headers: list[str]
    headers: list[str]
    lines: list[TableLine]
    percent: bool = True
    digits: int = 3
    best: bool = True


@dataclass
class ClaimDef:
    """``better`` is better than each of ``than`` on ``metric`` of ``data`` (or, ``kind: fails``, fails more often;
    or, ``worse``, each of ``than`` is better than it: the row is the worst)."""

    id: str
    text: str
    better: str
    than: list[str]
    metric: str
    data: str
    alpha: float
    kind: str = "compare"
    min_effect: float | None = None
    margin: float | None = None
    test: str = "t"
    mode: str | None = None
    than_metrics: list[str] = field(default_factory=list)
    why: str = ""
    worse: bool = False


@dataclass
class FigureDef:
    kind: str
    name: str
    title: str
    rows: list[str]
    data: list[str]
    metric: str | None = None
    x: str | None = None
    span: list[str] = field(default_factory=list)
    points: dict[str, str] | None = None
    log: bool = True
    representations: list[str] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    samples: int = 600


@dataclass
class ParamsDef:
    models: list[str]
    dims: dict[str, int]
    seq_len: int | None = None
    sets: list[str] = field(default_factory=list)
    bert: bool = False
    baseline: str = "concat"


@dataclass
class LogRowsDef:
    """Rows of a JSON-lines file in one run directory (e.g. MCER's generated labels) at the best epoch."""

    row: str
    data: str
    file: str
    columns: list[str]
    limit: int = 6
    epoch: str = "best"


@dataclass
class RankingDef:
    """One line per dataset: the rows in order of their mean on ``metric`` (best first)."""

    rows: list[str]
    data: list[str]
    metric: str
    mode: str | None = None


@dataclass
class Section:
    heading: str | None = None
    text: str | None = None
    file: str | None = None
    table: TableDef | None = None
    claims: list[ClaimDef] = field(default_factory=list)
    figure: FigureDef | None = None
    params: ParamsDef | None = None
    log_rows: LogRowsDef | None = None
    ranking: RankingDef | None = None


@dataclass
class Study:
    """A parsed, checked study."""

    name: str
    title: str
    source: str
    description: str = ""
    doc: str | None = None
    protocol: str = "fair"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    data_seeds: list[int] | str = field(default_factory=lambda: [0, 1])
    split: str = "test"
    alpha: float = 0.05
    train: dict[str, Any] = field(default_factory=dict)
    tuning: TuningDef | None = None
    references: list[str] = field(default_factory=lambda: list(DEFAULT_REFERENCES))
    datasets: dict[str, DataDef] = field(default_factory=dict)
    rows: dict[str, RowDef] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Every (training seed, data seed) pair a model row is trained for."""
        if self.data_seeds == "same":
            return [(s, s) for s in self.seeds]
        return [(s, d) for d in self.data_seeds for s in self.seeds]  # type: ignore[union-attr]

    @property
    def claims(self) -> list[ClaimDef]:
        return [c for s in self.sections for c in s.claims]

    @property
    def tables(self) -> list[TableDef]:
        return [s.table for s in self.sections if s.table is not None]

    @property
    def figures(self) -> list[FigureDef]:
        return [s.figure for s in self.sections if s.figure is not None]

    def match_rows(self, pattern: str, where: str) -> list[str]:
        """Row keys named by ``pattern``: a key, or a glob (``c-mib beta=*``) in definition order."""
        if pattern in self.rows:
            return [pattern]
        if any(c in pattern for c in "*?["):
            found = [k for k in self.rows if fnmatch.fnmatchcase(k, pattern)]
            if found:
                return found
        raise _fail(where, f"unknown row {pattern!r}" + _near(pattern, self.rows))


def _near(name: str, choices: Iterable[str]) -> str:
    from mmib.config import suggest

    return suggest(name, list(choices))


def default_references() -> list[str]:
    """``linear`` and ``oracle``: the reference rows every model table gets unless the study says otherwise."""
    return list(DEFAULT_REFERENCES)


# ----------------------------------------------------------------------------- built-in studies
def builtin_dir() -> Path:
    return Path(str(resources.files(STUDIES_PACKAGE).joinpath(STUDIES_DIR)))


def builtin_studies() -> dict[str, Path]:
    """Built-in study files by name (``mmib study --list``)."""
    d = builtin_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


def study_path(name_or_file: str | Path) -> Path:
    """A built-in study's file, or the given file."""
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: no such study file")
        return p
    found = builtin_studies()
    if str(name_or_file) not in found:
        raise ConfigError(f"unknown study {str(name_or_file)!r}{_near(str(name_or_file), found)}; "
                          f"built-in: {', '.join(found) or 'none'} (or give a FILE.yaml)")
    return found[str(name_or_file)]


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a study file is a mapping (name, datasets, rows, sections, ...)")
    return data


def summary(path: Path) -> dict[str, str]:
    """Name, title and document of a study file, read without validating it."""
    d = read_yaml(path)
    return {"name": str(d.get("name") or path.stem), "title": str(d.get("title") or ""), "doc": str(d.get("doc") or "")}


@cache
def search_spaces() -> dict[str, dict[str, str]]:
    """The per-model Optuna search spaces shipped in the package (``search_spaces.yaml``)."""
    path = Path(str(resources.files(STUDIES_PACKAGE).joinpath("search_spaces.yaml")))
    d = read_yaml(path)
    spaces = d.get("models")
    if not isinstance(spaces, dict):
        raise ConfigError(f"{path}: expected a 'models' mapping of model -> parameter -> spec")
    return {str(m): {str(k): str(v) for k, v in (s or {}).items()} for m, s in spaces.items()}


# ----------------------------------------------------------------------------- parsing
TOP_KEYS = ("name", "title", "description", "doc", "protocol", "seeds", "data_seeds", "split", "alpha", "train",
            "tuning", "references", "datasets", "rows", "sections")


def load_study(name_or_file: str | Path) -> Study:
    """Parse and check a study (a built-in name or a YAML file)."""
    path = study_path(name_or_file)
    d = read_yaml(path)
    if "collect" in d:
        raise ConfigError(f"{path.name}: a collection of studies (collect:), not one study; run it with `mmib study`")
    return parse_study(d, path)


def parse_study(d: dict[str, Any], path: Path) -> Study:
    w = path.name
    _keys(d, TOP_KEYS, w)
    st = Study(name=_str(d.get("name") or path.stem, f"{w}: name"), title=str(d.get("title") or path.stem),
               source=str(path), description=str(d.get("description") or "").strip())
    if d.get("doc") is not None:
        st.doc = _str(d["doc"], f"{w}: doc")
    st.protocol = str(d.get("protocol", "fair"))
    if st.protocol not in PROTOCOLS:
        raise _fail(f"{w}: protocol", f"{st.protocol!r}: choose {' or '.join(PROTOCOLS)}")
    if "seeds" in d:
        st.seeds = _seeds(d["seeds"], f"{w}: seeds")
    if "data_seeds" in d:
        st.data_seeds = "same" if d["data_seeds"] == "same" else _seeds(d["data_seeds"], f"{w}: data_seeds")
    elif st.protocol == "fixed":
        st.data_seeds = [0]
    st.split = str(d.get("split", "test"))
    if st.split not in ("valid", "test"):
        raise _fail(f"{w}: split", f"{st.split!r}: report valid or test")
    st.alpha = _alpha(d.get("alpha", 0.05), f"{w}: alpha")
    st.train = _train(d.get("train"), f"{w}: train")
    if d.get("tuning") is not None:
        st.tuning = _tuning(d["tuning"], f"{w}: tuning")
    if "references" in d:
        st.references = [_str(r, f"{w}: references") for r in _list(d["references"], f"{w}: references")]
    else:
        st.references = default_references()
    datasets = _mapping(d.get("datasets"), f"{w}: datasets")
    if not datasets:
        raise _fail(w, "a study needs at least one entry under datasets")
    for key, spec in datasets.items():
        st.datasets[key] = _dataset(key, spec, f"{w}: datasets.{key}")
    for key, spec in _mapping(d.get("rows"), f"{w}: rows").items():
        for row in _rows(key, spec, f"{w}: rows.{key}"):
            if row.key in st.rows:
                raise _fail(f"{w}: rows.{key}", f"row {row.key!r} is defined twice")
            st.rows[row.key] = row
    for ref in st.references:
        if ref not in st.rows:
            st.rows[ref] = RowDef(ref, kind="oracle") if ref == "oracle" else RowDef(ref, model=ref, tune=True)
    for key, row in st.rows.items():
        where = f"{w}: rows.{key}"
        for name in row.per_data:
            if name not in st.datasets:
                raise _fail(f"{where}.per_data", f"unknown dataset {name!r}{_near(name, st.datasets)}")
        for name in row.datasets or []:
            if name not in st.datasets:
                raise _fail(f"{where}.datasets", f"unknown dataset {name!r}{_near(name, st.datasets)}")
        if row.kind == "mean":
            members = []
            for m in row.members:
                members.extend(st.match_rows(m, f"{where}.mean"))
            if any(st.rows[m].kind == "mean" for m in members):
                raise _fail(f"{where}.mean", "a mean row averages model or oracle rows, not other mean rows")
            row.members = members
    sections = _list(d.get("sections"), f"{w}: sections")
    if not sections:
        raise _fail(w, "a study needs at least one entry under sections")
    for i, sec in enumerate(sections):
        st.sections.append(_section(st, sec, i, f"{w}: sections[{i}]"))
    names = [t.name for t in st.tables] + [f.name for f in st.figures]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _fail(f"{w}: sections", f"two tables or figures are named {dup[0]!r} (give each a distinct name)")
    _check_protocol(st, w)
    return st


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, bool):
        raise _fail(where, f"expected a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise _fail(where, f"must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(set(value)) != len(value):
            raise _fail(where, f"{value}: a seed is listed twice")
        return list(value)
    raise _fail(where, f"expected a count or a non-empty list of integers, got {value!r}")


def _alpha(value: Any, where: str) -> float:
    try:
        a = float(scalar(value))
    except (TypeError, ValueError):
        raise _fail(where, f"expected a number in (0, 1), got {value!r}") from None
    if not 0 < a < 1:
        raise _fail(where, f"must lie in (0, 1), got {a}")
    return a


def _train(value: Any, where: str) -> dict[str, Any]:
    d = {k: scalar(v) for k, v in _mapping(value, where).items()}
    for k in d:
        if k not in _TRAIN_FIELDS:
            raise _fail(where, f"unknown training option {k!r}{_near(k, _TRAIN_FIELDS)}")
    if "seed" in d:
        raise _fail(where, "the training seed comes from the study's seeds, not train.seed")
    return d


def _tuning(value: Any, where: str) -> TuningDef:
    from mmib.experiments.sweep import PRUNERS, SAMPLERS, ParamSpec

    d = _mapping(value, where)
    _keys(d, ("trials", "sampler", "pruner", "prune_warmup", "spaces"), where)
    trials = d.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise _fail(f"{where}.trials", f"expected a whole number >= 1, got {trials!r}")
    t = TuningDef(trials, str(d.get("sampler", "tpe")), str(d.get("pruner", "median")), int(d.get("prune_warmup", 2)))
    if t.sampler not in SAMPLERS or t.sampler == "grid":
        raise _fail(f"{where}.sampler", f"{t.sampler!r}: choose tpe or random")
    if t.pruner not in PRUNERS:
        raise _fail(f"{where}.pruner", f"{t.pruner!r}: choose one of {', '.join(PRUNERS)}")
    for model, space in _mapping(d.get("spaces"), f"{where}.spaces").items():
        t.spaces[model] = {}
        for name, spec in _mapping(space, f"{where}.spaces.{model}").items():
            ParamSpec.parse(f"{name}={spec}")  # a malformed spec fails here, naming it
            t.spaces[model][name] = str(spec)
    return t


def _dataset(key: str, spec: Any, where: str) -> DataDef:
    d = _mapping(spec, where)
    _keys(d, ("name", "path", "options", "label"), where)
    opts = {k: scalar(v) for k, v in _mapping(d.get("options"), f"{where}.options").items()}
    if "seed" in opts:
        raise _fail(f"{where}.options", "the data seed comes from the study's data_seeds, not options.seed")
    return DataDef(key, _str(d.get("name", key), f"{where}.name"), d.get("path"), opts, str(d.get("label") or key))


ROW_KEYS = ("model", "options", "select", "data", "train", "set", "per_data", "datasets", "label", "paper", "tune",
            "grid", "oracle", "mean")


def _rows(key: str, spec: Any, where: str) -> list[RowDef]:
    d = _mapping(spec, where)
    _keys(d, ROW_KEYS, where)
    grid = _mapping(d.pop("grid", None), f"{where}.grid")
    if not grid:
        return [_row(key, d, {}, where)]
    names = list(grid)
    missing = [n for n in names if "{" + n + "}" not in key]
    if missing:
        raise _fail(where, f"a grid row's name must contain {{{missing[0]}}} (one row per value)")
    values = [[scalar(v) for v in _list(grid[n], f"{where}.grid.{n}")] for n in names]
    # A grid variable is the model (``model``), a template used in the entry's settings ({name} in
    # options, train, set, ...; a label does not count), or else a model option of that name.
    settings = repr({k: v for k, v in d.items() if k not in ("label", "paper")})
    used = {n for n in names if "{" + n + "}" in settings}
    out = []
    for combo in itertools.product(*values):
        variables = dict(zip(names, combo))
        filled = fill_all(d, variables, where)
        derived = "mean" in d or "oracle" in d  # a grid of derived rows only fills its templates
        for n, v in variables.items():
            if derived:
                continue
            if n == "model":
                filled["model"] = v
            elif n not in used:
                filled["options"] = {**_mapping(filled.get("options"), f"{where}.options"), n: v}
        out.append(_row(fill(key, variables, where), filled, variables, where))
    return out


def _row(key: str, d: dict[str, Any], variables: dict[str, Any], where: str) -> RowDef:
    row = RowDef(key, variables=variables, label=str(d.get("label") or ""))
    if d.get("oracle"):
        extra = [k for k in d if k not in ("oracle", "label", "datasets")]
        if extra:
            raise _fail(where, f"an oracle row takes only label and datasets (not {extra[0]})")
        row.kind, row.tune = "oracle", False
        if isinstance(d["oracle"], str):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d["oracle"]):
                raise _fail(f"{where}.oracle", f"{d['oracle']!r}: true, or the meta key of per-sample predictions")
            row.oracle_key = d["oracle"]
        elif d["oracle"] is not True:
            raise _fail(f"{where}.oracle", f"{d['oracle']!r}: true, or the meta key of per-sample predictions")
    elif d.get("mean") is not None:
        extra = [k for k in d if k not in ("mean", "label", "datasets")]
        if extra:
            raise _fail(where, f"a mean row takes only mean, label and datasets (not {extra[0]})")
        row.kind, row.tune = "mean", False
        row.members = [_str(m, f"{where}.mean") for m in _list(d["mean"], f"{where}.mean")]
        if not row.members:
            raise _fail(f"{where}.mean", "list the rows to average (keys or globs like 'e-mib/*')")
    else:
        row.model = _str(d.get("model", key), f"{where}.model")
        row.options = {k: scalar(v) for k, v in _mapping(d.get("options"), f"{where}.options").items()}
        if d.get("select") is not None:
            row.select = [_str(s, f"{where}.select") for s in _list(d["select"], f"{where}.select")]
        row.data_options = {k: scalar(v) for k, v in _mapping(d.get("data"), f"{where}.data").items()}
        if "seed" in row.data_options or "select" in row.data_options:
            raise _fail(f"{where}.data", "use the row's select key, and the study's data_seeds for the data seed")
        row.train = _train(d.get("train"), f"{where}.train")
        row.sets = [_str(s, f"{where}.set") for s in _list(d.get("set"), f"{where}.set")]
        for s in row.sets:
            if "=" not in s:
                raise _fail(f"{where}.set", f"{s!r}: expected key=value")
        for name, pd in _mapping(d.get("per_data"), f"{where}.per_data").items():
            pdd = _mapping(pd, f"{where}.per_data.{name}")
            _keys(pdd, ("options", "train", "set", "data"), f"{where}.per_data.{name}")
            row.per_data[name] = {
                "options": {k: scalar(v) for k, v in _mapping(pdd.get("options"), f"{where}.per_data.{name}").items()},
                "train": _train(pdd.get("train"), f"{where}.per_data.{name}.train"),
                "set": [_str(s, f"{where}.per_data.{name}.set") for s in _list(pdd.get("set"), where)],
                "data": {k: scalar(v) for k, v in _mapping(pdd.get("data"), f"{where}.per_data.{name}.data").items()},
            }
        row.tune = bool(d.get("tune", True))
    if d.get("datasets") is not None:
        row.datasets = [_str(x, f"{where}.datasets") for x in _list(d["datasets"], f"{where}.datasets")]
    for table_id, name in _mapping(d.get("paper"), f"{where}.paper").items():
        row.paper[table_id] = _str(name, f"{where}.paper.{table_id}")
    return row


SECTION_KEYS = ("heading", "text", "file", "table", "claims", "figure", "params", "log_rows", "ranking")


def _section(st: Study, value: Any, index: int, where: str) -> Section:
    d = _mapping(value, where)
    _keys(d, SECTION_KEYS, where)
    sec = Section(heading=d.get("heading"), text=d.get("text"), file=d.get("file"))
    if sec.file is not None and not re.fullmatch(r"[A-Za-z0-9._-]+\.(md|txt)", str(sec.file)):
        raise _fail(f"{where}.file", f"{sec.file!r}: a .md or .txt file name beside the document or the study "
                                     "(no directories)")
    if d.get("table") is not None:
        sec.table = _table(st, d["table"], f"t{index}", f"{where}.table")
    for i, c in enumerate(_list(d.get("claims"), f"{where}.claims")):
        sec.claims.extend(_claims(st, c, f"{where}.claims[{i}]"))
    if d.get("figure") is not None:
        sec.figure = _figure(st, d["figure"], f"f{index}", f"{where}.figure")
    if d.get("params") is not None:
        sec.params = _params(d["params"], f"{where}.params")
    if d.get("log_rows") is not None:
        sec.log_rows = _log_rows(st, d["log_rows"], f"{where}.log_rows")
    if d.get("ranking") is not None:
        sec.ranking = _ranking(st, d["ranking"], f"{where}.ranking")
    return sec


def _ranking(st: Study, value: Any, where: str) -> RankingDef:
    d = _mapping(value, where)
    _keys(d, ("rows", "data", "metric", "mode"), where)
    rows: list[str] = []
    for r in _list(d.get("rows"), f"{where}.rows"):
        rows.extend(st.match_rows(_str(r, f"{where}.rows"), f"{where}.rows"))
    data = _data_keys(st, d, where, "a ranking")
    metric = _str(d.get("metric", ""), f"{where}.metric")
    check_metric(metric, f"{where}.metric")
    if not rows:
        raise _fail(where, "a ranking needs rows")
    mode = d.get("mode")
    if mode is not None and mode not in ("min", "max"):
        raise _fail(f"{where}.mode", f"{mode!r}: choose min or max")
    return RankingDef(rows, data, metric, mode)


# ----------------------------------------------------------------------------- tables
TABLE_KEYS = ("name", "title", "rows", "columns", "row", "data", "metric", "label", "percent", "digits", "best",
              "references", "optional_rows")
CELL_KEYS = ("row", "data", "metric", "stat", "vs", "paper", "label")


def _entries(value: Any, where: str, string_key: str) -> list[tuple[dict[str, Any], str]]:
    """A rows/columns list: strings become ``{string_key: s}``; ``for:`` entries are expanded."""
    out = []
    for i, item in enumerate(_list(value, where)):
        w = f"{where}[{i}]"
        if isinstance(item, dict):
            for e in _expand_for({str(k): v for k, v in item.items()}, w):
                out.append((e, w))
        else:
            out.append(({string_key: _str(item, w)}, w))
    return out


def check_metric(metric: str, where: str) -> None:
    """The metric address grammar (values are checked against the runs' results later)."""
    head, _, rest = metric.partition(".")
    if not rest:
        return
    if head in ("valid", "test"):
        return
    if head == "results":
        if rest not in RESULT_FIELDS:
            raise _fail(where, f"results.{rest}: choose one of {', '.join(RESULT_FIELDS)}")
        return
    if head in ("best", "last"):
        section, _, key = rest.partition(".")
        if section not in ("train", "valid", "model") or not key:
            raise _fail(where, f"{metric}: expected {head}.train|valid|model.KEY (a metrics.jsonl entry)")
        return
    if head == "probe":
        parts = rest.split(".")
        if len(parts) != 3 or parts[2] not in ("r2", "r2_label", "dim"):
            raise _fail(where, f"{metric}: expected probe.REPRESENTATION.PART.r2|r2_label|dim")
        return
    if head in ("fusion", "bounds"):
        return
    raise _fail(where, f"metric {metric!r}: expected a metric name (mae), valid.X, test.X, results.X, best.X.Y, "
                       "last.X.Y, probe.R.P.r2, fusion.M or bounds.X")


def _table(st: Study, value: Any, default_name: str, where: str) -> TableDef:
    d = _mapping(value, where)
    _keys(d, TABLE_KEYS, where)
    defaults = {k: d[k] for k in ("row", "data", "metric") if k in d}
    rows = []
    for r, rw in _entries(d.get("rows"), f"{where}.rows", "row"):
        if set(r) == {"row"} and isinstance(r["row"], str) and any(ch in r["row"] for ch in "*?["):
            rows.extend(({"row": k}, rw) for k in st.match_rows(r["row"], rw))  # a glob: every matching row
        else:
            rows.append((r, rw))
    cols = _entries(d.get("columns"), f"{where}.columns", "metric")
    if not rows:
        raise _fail(where, "a table needs rows")
    if not cols:
        raise _fail(where, "a table needs columns")
    label = d.get("label")
    label_headers = [_str(x, f"{where}.label") for x in _list(label, where)] if label is not None else []
    simple_rows = all(set(r) <= {"row", "label", "paper"} for r, _ in rows) and not any("row" in c for c, _ in cols)
    if d.get("references", simple_rows) and simple_rows:
        present = {r.get("row") for r, _ in rows}
        for ref in st.references:
            if ref not in present:
                rows.append(({"row": ref, "_reference": True}, f"{where}.references"))
    lines: list[TableLine] = []
    headers: list[str] = []
    for c, cw in cols:
        headers.append(_header(st, c, cw))
    for r, rw in rows:
        reference = bool(r.pop("_reference", False))
        labels = _labels(st, r, defaults, rw, label_headers)
        cells: list[CellRef | None] = []
        row_key = None
        for c, cw in cols:
            # the column's keys make the cell (a column's row template wins), the row's values fill templates
            variables = {k: v for k, v in {**defaults, **c, **r}.items() if not isinstance(v, (dict, list))}
            spec = {k: v for k, v in {**defaults, **r, **{k: v for k, v in c.items() if k != "label"}}.items()}
            ref = _cell(st, spec, variables, f"{rw} x {cw.rsplit('.', 1)[-1]}", bool(d.get("optional_rows")))
            if ref is not None and row_key is None:
                row_key = ref.row
            cells.append(ref)
        lines.append(TableLine(labels, cells, row_key, reference))
    width = max(len(line.labels) for line in lines)
    if not label_headers:
        label_headers = [""] * (width - 1) + ["model" if any(line.row for line in lines) else "dataset"]
    for line in lines:
        if len(line.labels) != len(label_headers):
            line.labels = (line.labels + [""] * len(label_headers))[: len(label_headers)]
    digits = d.get("digits", 3)
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 8:
        raise _fail(f"{where}.digits", f"expected a whole number in 0..8, got {digits!r}")
    name = _file_name(str(d.get("name") or default_name), where)
    return TableDef(name, str(d.get("title") or ""), label_headers, headers, lines, bool(d.get("percent", True)),
                    digits, bool(d.get("best", True)))


def _labels(st: Study, r: dict[str, Any], defaults: dict[str, Any], where: str, headers: list[str]) -> list[str]:
    variables = {k: v for k, v in {**defaults, **r}.items() if not isinstance(v, (dict, list))}
    if "label" in r:
        return [fill(_str(x, f"{where}.label"), variables, f"{where}.label") for x in _list(r["label"], where)]
    if isinstance(r.get("row"), str) and "{" not in r["row"]:
        key = r["row"]
        return [st.rows[key].display if key in st.rows else key]
    if isinstance(r.get("data"), str) and r["data"] in st.datasets:
        return [st.datasets[r["data"]].label]
    if "row" in r:
        key = fill(_str(r["row"], where), variables, where)
        return [st.rows[key].display if key in st.rows else key]
    raise _fail(where, "give this table row a label (it has neither a row nor a dataset to name it)")


def _header(st: Study, c: dict[str, Any], where: str) -> str:
    if "label" in c:
        variables = {k: v for k, v in c.items() if not isinstance(v, (dict, list))}
        return fill(_str(c["label"], f"{where}.label"), variables, f"{where}.label")
    parts = []
    if isinstance(c.get("data"), str) and "{" not in c["data"]:
        parts.append(st.datasets[c["data"]].label if c["data"] in st.datasets else c["data"])
    if isinstance(c.get("row"), str) and "{" not in c["row"]:
        parts.append(st.rows[c["row"]].display if c["row"] in st.rows else c["row"])
    if c.get("paper"):
        parts.append(f"paper {c['paper']}")
    if c.get("metric") and not (c.get("data") or c.get("row")):
        parts.append(str(c["metric"]))
    stat = c.get("stat")
    if stat in ("delta", "p"):
        parts.append(f"{'Δ' if stat == 'delta' else 'p'} vs {c.get('vs')}")
    return " ".join(parts) or "value"


def _cell(st: Study, spec: dict[str, Any], variables: dict[str, Any], where: str,
          optional_rows: bool = False) -> CellRef | None:
    """The cell a table row and column make; None (n/a) where the row does not run on the dataset, or where
    a templated row does not exist and the table says ``optional_rows: true``."""
    # keys other than CELL_KEYS are template variables only
    text = {k: fill(_str(v, f"{where}.{k}"), variables, f"{where}.{k}") if isinstance(v, str) else v
            for k, v in spec.items() if k in CELL_KEYS}
    data = text.get("data")
    if data is None:
        raise _fail(where, "no dataset for this cell (set data on the table, its row or its column)")
    if data not in st.datasets:
        raise _fail(where, f"unknown dataset {data!r}{_near(str(data), st.datasets)}")
    metric = text.get("metric")
    if metric is None:
        raise _fail(where, "no metric for this cell (set metric on the table, its row or its column)")
    metric = str(metric)
    check_metric(metric, where)
    row = text.get("row")
    if row is not None:
        row = str(row)
        if row not in st.rows:
            if optional_rows and "{" in str(spec.get("row")):
                return None
            raise _fail(where, f"unknown row {row!r}{_near(row, st.rows)}")
        r = st.rows[row]
        if not r.applies_to(data) or (r.kind == "mean" and not all(st.rows[m].applies_to(data) for m in r.members)):
            return None
    elif not metric.startswith("bounds.") and not text.get("paper"):
        raise _fail(where, f"metric {metric!r} belongs to a row (a model): set row on the table, its row or column")
    stat = str(text.get("stat", "mean"))
    if stat not in STATS:
        raise _fail(where, f"stat {stat!r}: choose one of {', '.join(STATS)}")
    vs = text.get("vs")
    if stat in ("delta", "p"):
        if vs is None:
            raise _fail(where, f"stat {stat} compares with another row: give vs")
        if vs not in st.rows:
            raise _fail(where, f"unknown row {vs!r}{_near(str(vs), st.rows)}")
    paper = text.get("paper")
    if paper is not None and row is None:
        raise _fail(where, "a paper cell needs a row (whose paper: entry names the paper's row)")
    return CellRef(row, str(data), metric, stat, str(vs) if vs else None, str(paper) if paper else None)


def _data_keys(st: Study, d: dict[str, Any], where: str, what: str) -> list[str]:
    """The ``data`` entry of a claim, figure or ranking: dataset keys of the study (one or a list)."""
    data = [_str(x, f"{where}.data") for x in _list(d.get("data"), where)]
    if not data:
        raise _fail(where, f"{what} needs data (a dataset key or a list)")
    for x in data:
        if x not in st.datasets:
            raise _fail(f"{where}.data", f"unknown dataset {x!r}{_near(x, st.datasets)}")
    return data


def _file_name(name: str, where: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise _fail(f"{where}.name", f"{name!r}: use letters, digits, '.', '_' and '-' (it names files)")
    return name


# ----------------------------------------------------------------------------- claims, figures, extras
CLAIM_KEYS = ("id", "text", "better", "worse", "than", "than_metrics", "fails", "metric", "data", "alpha",
              "min_effect", "margin", "test", "mode", "why")


def _claims(st: Study, value: Any, where: str) -> list[ClaimDef]:
    d = _mapping(value, where)
    _keys(d, CLAIM_KEYS, where)
    kind = "fails" if d.get("fails") is not None else "compare"
    worse = d.get("worse") is not None
    if sum(d.get(k) is not None for k in ("better", "worse", "fails")) > 1:
        raise _fail(where, "a claim names one row: better, worse or fails")
    better = d.get("fails") if kind == "fails" else d.get("worse") if worse else d.get("better")
    if better is None:
        raise _fail(where, "a claim names the row that should win: better (or worse, the row every other beats; "
                           "or fails, for a failure-rate claim)")
    better = _str(better, where)
    if better not in st.rows:
        raise _fail(where, f"unknown row {better!r}{_near(better, st.rows)}")
    than: list[str] = []
    for t in _list(d.get("than"), f"{where}.than"):
        than.extend(st.match_rows(_str(t, f"{where}.than"), f"{where}.than"))
    than_metrics = [_str(m, f"{where}.than_metrics") for m in _list(d.get("than_metrics"), where)]
    for m in than_metrics:
        check_metric(m, f"{where}.than_metrics")
    if than_metrics:  # one row, its metric against its other metrics (paired by run)
        if kind == "fails" or worse or d.get("than") is not None:
            raise _fail(where, "than_metrics compares the row's metric with its other metrics: drop than")
        than = [better] * len(than_metrics)
    else:
        than = [t for t in than if t != better]
    if not than:
        raise _fail(where, "a claim compares with at least one other row: than")
    datasets = _data_keys(st, d, where, "a claim")
    metric = _str(d.get("metric", ""), f"{where}.metric") if kind == "compare" or d.get("metric") else "failed"
    if kind == "compare":
        if not metric:
            raise _fail(where, "a claim needs a metric")
        check_metric(metric, f"{where}.metric")
    mode = d.get("mode")
    if mode is not None and mode not in ("min", "max"):
        raise _fail(f"{where}.mode", f"{mode!r}: choose min or max")
    test = str(d.get("test", "t"))
    if test not in TESTS:
        raise _fail(f"{where}.test", f"{test!r}: choose {' or '.join(TESTS)}")
    nums = {}
    for k in ("min_effect", "margin"):
        if d.get(k) is not None:
            try:
                nums[k] = float(scalar(d[k]))
            except (TypeError, ValueError):
                raise _fail(f"{where}.{k}", f"expected a number, got {d[k]!r}") from None
            if nums[k] < 0:
                raise _fail(f"{where}.{k}", "give it as a non-negative size (the direction is the claim's)")
    if "min_effect" in nums and "margin" in nums:
        raise _fail(where, "a claim has either min_effect (superiority) or margin (non-inferiority), not both")
    alpha = _alpha(d.get("alpha", st.alpha), f"{where}.alpha")
    base_id = str(d.get("id") or f"{better} vs {', '.join(than_metrics or than)}")
    text = str(d.get("text") or (f"{better} fails more often than {', '.join(than)}" if kind == "fails"
                                 else f"{better} is worse than {', '.join(than)} on {metric}" if worse
                                 else f"{better} is better than {', '.join(than)} on {metric}"))
    for r in [better, *than]:
        row = st.rows[r]
        for x in datasets:
            if not row.applies_to(x):
                raise _fail(where, f"row {r!r} is not run on dataset {x!r} (its datasets: {', '.join(row.datasets or [])})")
    why = _why(d.get("why"), datasets, f"{where}.why")
    return [ClaimDef(f"{base_id} [{x}]" if len(datasets) > 1 else base_id, text, better, than, metric, x, alpha, kind,
                     nums.get("min_effect"), nums.get("margin"), test, mode, than_metrics, why.get(x, ""), worse)
            for x in datasets]


def _why(value: Any, datasets: list[str], where: str) -> dict[str, str]:
    """A claim's ``why`` (why its data can show the claim): one text, or one per dataset key of the claim."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = {str(k): " ".join(_str(v, f"{where}.{k}").split()) for k, v in value.items()}
        for k in out:
            if k not in datasets:
                raise _fail(where, f"{k!r} is not a dataset of this claim ({', '.join(datasets)})")
        return out
    text = " ".join(_str(value, where).split())
    return {x: text for x in datasets}


FIGURE_KEYS = ("kind", "name", "title", "rows", "data", "metric", "x", "span", "points", "log", "representations",
               "levels", "samples")


def _figure(st: Study, value: Any, default_name: str, where: str) -> FigureDef:
    d = _mapping(value, where)
    _keys(d, FIGURE_KEYS, where)
    kind = str(d.get("kind", ""))
    if kind not in FIGURE_KINDS:
        raise _fail(f"{where}.kind", f"{kind!r}: choose one of {', '.join(FIGURE_KINDS)}")
    rows: list[str] = []
    for r in _list(d.get("rows"), f"{where}.rows"):
        rows.extend(st.match_rows(_str(r, f"{where}.rows"), f"{where}.rows"))
    if not rows:
        raise _fail(where, "a figure needs rows")
    bad = [r for r in rows if st.rows[r].kind != "model"]
    if bad:
        raise _fail(f"{where}.rows", f"{bad[0]!r} is not a model row (figures show trained runs)")
    data = _data_keys(st, d, where, "a figure")
    name = _file_name(str(d.get("name") or default_name), where)
    f = FigureDef(kind, name, str(d.get("title") or ""), rows, data, d.get("metric"), d.get("x"),
                  [str(s) for s in _list(d.get("span"), where)], None, bool(d.get("log", True)))
    if kind == "sweep":
        if not f.x or not f.metric:
            raise _fail(where, "a sweep figure needs x (the swept option) and metric")
        check_metric(str(f.metric), f"{where}.metric")
        for r in rows:
            if f.x not in st.rows[r].options:
                raise _fail(f"{where}.x", f"row {r!r} sets no option {f.x!r} (x is read from each row's options)")
        if f.span and (len(f.span) != 2 or not all(s.startswith("bounds.") for s in f.span)):
            raise _fail(f"{where}.span", "expected two dataset measures, e.g. [bounds.M_l, bounds.M_u]")
        if d.get("points") is not None:
            p = _mapping(d["points"], f"{where}.points")
            _keys(p, ("row", "x", "label"), f"{where}.points")
            if p.get("row") not in st.rows:
                raise _fail(f"{where}.points.row", f"unknown row {p.get('row')!r}")
            check_metric(str(p.get("x", "")), f"{where}.points.x")
            f.points = {k: str(v) for k, v in p.items()}
    if kind == "probes":
        f.representations = [str(r) for r in _list(d.get("representations"), where)] or ["representation"]
        f.metric = str(f.metric or "r2_label")
        if f.metric not in ("r2", "r2_label"):
            raise _fail(f"{where}.metric", "a probe figure shows r2 or r2_label")
    if kind == "robust":
        f.levels = [float(scalar(v)) for v in _list(d.get("levels"), where)] or [0.0, 0.5, 1.0, 2.0, 4.0]
    if d.get("samples") is not None:
        f.samples = int(d["samples"])
        if f.samples < 5:
            raise _fail(f"{where}.samples", "t-SNE needs at least 5 samples")
    return f


def _params(value: Any, where: str) -> ParamsDef:
    d = _mapping(value, where)
    _keys(d, ("models", "dims", "seq_len", "set", "bert", "baseline"), where)
    models = [_str(m, f"{where}.models") for m in _list(d.get("models"), where)]
    dims = {k: int(v) for k, v in _mapping(d.get("dims"), f"{where}.dims").items()}
    if not models or not dims:
        raise _fail(where, "a params section needs models and dims")
    return ParamsDef(models, dims, d.get("seq_len"), [str(s) for s in _list(d.get("set"), where)], bool(d.get("bert")),
                     str(d.get("baseline", "concat")))


def _log_rows(st: Study, value: Any, where: str) -> LogRowsDef:
    d = _mapping(value, where)
    _keys(d, ("row", "data", "file", "columns", "limit", "epoch"), where)
    row, data = str(d.get("row")), str(d.get("data"))
    if row not in st.rows or st.rows[row].kind != "model":
        raise _fail(f"{where}.row", f"{row!r} is not a model row of the study")
    if data not in st.datasets:
        raise _fail(f"{where}.data", f"unknown dataset {data!r}")
    file = str(d.get("file", ""))
    if not re.fullmatch(r"[A-Za-z0-9._-]+\.jsonl", file):
        raise _fail(f"{where}.file", f"{file!r}: a .jsonl file name inside the run directory")
    cols = [str(c) for c in _list(d.get("columns"), where)]
    if not cols:
        raise _fail(where, "list the columns to show")
    return LogRowsDef(row, data, file, cols, int(d.get("limit", 6)), str(d.get("epoch", "best")))


# ----------------------------------------------------------------------------- protocol
def tuned_members(st: Study, key: str) -> list[str]:
    row = st.rows[key]
    return row.members if row.kind == "mean" else [key]


def _check_protocol(st: Study, w: str) -> None:
    """``protocol: fair`` (the default): claims stand on an equal tuning budget and >= 5 x 2 seed pairs."""
    if st.protocol != "fair" or not st.claims:
        return
    problems = []
    if len(st.seeds) < FAIR_SEEDS:
        problems.append(f"{len(st.seeds)} training seeds (needs >= {FAIR_SEEDS})")
    n_data = len(st.data_seeds) if isinstance(st.data_seeds, list) else 0
    if n_data < FAIR_DATA_SEEDS:
        problems.append(f"data_seeds {st.data_seeds!r} (needs >= {FAIR_DATA_SEEDS} data seeds crossed with the seeds)")
    if st.tuning is None:
        problems.append("no tuning budget (tuning: {trials: N})")
    else:
        for c in st.claims:
            for r in [c.better, *c.than]:
                for m in tuned_members(st, r):
                    row = st.rows[m]
                    if row.kind == "model" and not row.tune:
                        problems.append(f"claim {c.id!r}: row {m!r} has tune: false")
    if problems:
        raise _fail(f"{w}: protocol", "fair (the default for claims) is not met: " + "; ".join(problems[:3])
                    + " -- meet it, or set protocol: fixed and the document says the verdicts are under a fixed budget")
