"""The source papers' published numbers (``paper_results.yaml``), matched to our runs by dataset."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mmib.errors import ConfigError

#: mmib dataset names the papers report on.
PAPER_DATASETS = ("mosi", "mosei", "iemocap", "sim-i", "sim-iii", "crema-d")
#: Metric names shown in percent (the papers' convention); MAE, MSE, Corr and counts are not.
_PERCENT_PREFIXES = ("acc", "f1", "wacc")


def is_percent_metric(name: str) -> bool:
    return name == "accuracy" or name.startswith(_PERCENT_PREFIXES)


@cache
def paper_results() -> dict[str, Any]:
    """The parsed, checked ``paper_results.yaml`` (tables and curves)."""
    text = resources.files("mmib.experiments").joinpath("paper_results.yaml").read_text()
    data = yaml.safe_load(text)
    for t in data.get("tables", []):
        for key in ("id", "paper", "table", "dataset", "scale", "rows"):
            if key not in t:
                raise ConfigError(f"paper_results.yaml: table {t.get('id', '?')} lacks {key!r}")
        if t["scale"] not in ("percent", "fraction"):
            raise ConfigError(f"paper_results.yaml: table {t['id']}: scale must be percent or fraction")
    return data


def dataset_key(data_config: dict[str, Any]) -> str | None:
    """The paper dataset a run's data config refers to (by name, else by its file path), or None."""
    name = str(data_config.get("name") or "").lower()
    if name in PAPER_DATASETS:
        return name
    path = str(data_config.get("path") or "").lower()
    stem = Path(path).name
    for key, needles in (("mosei", ("mosei",)), ("mosi", ("mosi",)), ("iemocap", ("iemocap",)),
                         ("crema-d", ("crema",))):
        if any(n in stem or n in path for n in needles):
            return key
    return None


def tables_for(dataset: str | None) -> list[dict[str, Any]]:
    """The papers' tables on ``dataset`` (empty for None or an unmatched dataset)."""
    if dataset is None:
        return []
    return [t for t in paper_results().get("tables", []) if t["dataset"] == dataset]


def curves_for(dataset: str | None, param: str, metric: str) -> list[dict[str, Any]]:
    """Paper curves over ``param`` on ``dataset`` that report ``metric``, as dicts with ``points`` [(x, y)]."""
    if dataset is None:
        return []
    out = []
    for c in paper_results().get("curves", []):
        if c["dataset"] == dataset and c["param"] == param and any(metric in p for p in c["points"]):
            scale = 0.01 if c.get("scale") == "percent" and is_percent_metric(metric) else 1.0
            pts = [(float(p[param]), float(p[metric]) * scale) for p in c["points"] if metric in p]
            out.append({**c, "xy": pts})
    return out


def value_in_fraction(table: dict[str, Any], metric: str, value: float) -> float:
    """A paper value on our scale (accuracies as fractions)."""
    return value / 100.0 if table["scale"] == "percent" and is_percent_metric(metric) else float(value)
