"""Parameter counts of registered models for given modality shapes (MIB Table XI analogue).

Models are built on PyTorch's ``meta`` device, so counting even a BERT-base-size
model allocates no memory and takes no time to initialise weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from mmib.config import parse_value
from mmib.data.dataset import DatasetSpec, ModalitySpec, TaskSpec
from mmib.errors import ConfigError, MMIBError
from mmib.models.registry import build_model, get_model

#: CMU-MOSI feature widths (BERT text, COVAREP audio, Facet vision), as in the MIB paper.
MOSI_DIMS = {"text": 768, "audio": 74, "vision": 47}


def parse_dims(text: str) -> dict[str, int]:
    """``"text=768,audio=74"`` -> ``{"text": 768, "audio": 74}`` (ConfigError on bad input)."""
    dims: dict[str, int] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            d = int(value)
        except ValueError:
            d = 0
        if not sep or not name.strip() or d < 1:
            raise ConfigError(f"--dims: expected NAME=WIDTH pairs like text=768,audio=74, got {item!r}")
        if name.strip() in dims:
            raise ConfigError(f"--dims: modality {name.strip()!r} given twice")
        dims[name.strip()] = d
    if not dims:
        raise ConfigError("--dims: no modalities given")
    return dims


def parse_task(text: str) -> TaskSpec:
    """``regression``, ``binary``, ``multiclass:K`` (or ``multiclass`` = 10 classes)."""
    kind, _, k = text.partition(":")
    if kind == "multiclass":
        try:
            return TaskSpec("multiclass", num_classes=int(k or 10))
        except ValueError:
            raise ConfigError(f"--task: expected multiclass:K with an integer K, got {text!r}") from None
    if kind not in ("regression", "binary"):
        raise ConfigError(f"--task: choose regression, binary or multiclass:K, got {text!r}")
    return TaskSpec(kind)  # type: ignore[arg-type]


def spec_from_dims(
    dims: dict[str, int], seq_len: int | None = None, task: TaskSpec | None = None, text_tokens: int | None = None
) -> DatasetSpec:
    """Vector modalities, or sequences of ``seq_len`` steps when given."""
    if seq_len is not None and seq_len < 1:
        raise ConfigError(f"--seq-len must be >= 1, got {seq_len}")
    mods = tuple(ModalitySpec(n, d, seq_len is not None, seq_len) for n, d in dims.items())
    return DatasetSpec(mods, task or TaskSpec("regression"), text_tokens)


@dataclass
class ParamCount:
    """One model's count; ``error`` says why it could not be built for these inputs."""

    model: str
    params: int | None = None
    trainable: int | None = None
    error: str | None = None


def model_options_from_sets(model: str, sets: list[str]) -> dict[str, Any]:
    """``key=value`` options, keeping only those whose top-level key is an option of ``model``."""
    names = {f.name for f in dataclasses.fields(get_model(model).cls.Options)}
    options: dict[str, Any] = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip().removeprefix("model.")
        *parents, leaf = key.split(".")
        if key.split(".")[0] not in names:
            continue
        node = options
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(raw)
    return options


def count_parameters(models: list[str], spec: DatasetSpec, sets: list[str] | None = None) -> list[ParamCount]:
    """Build each model (on the meta device) for ``spec`` and count its parameters."""
    rows = []
    for name in models:
        get_model(name)  # unknown names are an error, not a row
        try:
            options = model_options_from_sets(name, list(sets or []))
            with torch.device("meta"):
                model = build_model(name, spec, **options)
            rows.append(ParamCount(name, model.num_parameters(), model.num_parameters(trainable_only=True)))
        except MMIBError as exc:
            rows.append(ParamCount(name, error=str(exc)))
    return rows


def overhead(rows: list[ParamCount], baseline: str = "concat") -> dict[str, tuple[int, float]]:
    """``{model: (extra parameters, extra as a fraction)}`` relative to ``baseline``'s count."""
    base = next((r.params for r in rows if r.model == baseline and r.params), None)
    if base is None:
        return {}
    return {r.model: (r.params - base, (r.params - base) / base) for r in rows if r.params is not None}


def params_table(rows: list[ParamCount], baseline: str = "concat") -> str:
    """The counts as a Markdown table: params, trainable, and the change against ``baseline``."""
    from mmib.eval.tables import markdown_table

    extra = overhead(rows, baseline)
    table = []
    for r in rows:
        if r.params is None:
            table.append([r.model, "-", "-", "-", "-", f"n/a: {r.error}"])
            continue
        d, frac = extra.get(r.model, (None, None))
        table.append([r.model, f"{r.params:,}", f"{r.trainable:,}", "-" if d is None else f"{d:+,}",
                      "-" if frac is None else f"{100 * frac:+.2f} %", ""])
    return markdown_table(["model", "params", "trainable", f"vs {baseline}", f"vs {baseline} %", "note"], table)
