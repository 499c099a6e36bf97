"""Per-model, per-dataset training recipes kept as YAML inside the package.

As MMSA keeps one configuration per model and dataset, each model may have a
file ``<model>.yaml`` here, and ``default.yaml`` holds what applies to every
model. A file maps a dataset name (or ``"*"``: every dataset) to ``train`` and
``model`` sections::

    "*":
      train: {optimizer: adamw, weight_decay: 0.01}
    sim-msa-small:
      model: {encoder: mlp}

For a run of model M on dataset D the values are layered, later winning:
``default.yaml["*"]``, ``default.yaml[D]``, ``M.yaml["*"]``, ``M.yaml[D]``. They
fill only what the user did not set: ``--set`` values, ``--config`` files and
keyword arguments always win. :func:`mmib.api.make_config` applies them and
records them in the run's ``config.yaml`` (section ``preset``: the sources and
every value applied), so a run says where each default came from;
``--set preset.use=false`` turns presets off.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mmib.config import PresetConfig, RunConfig, TrainConfig, coerce, copy_config, parse_value, split_override
from mmib.errors import ConfigError

PRESET_DIR = Path(__file__).parent
DEFAULT_FILE = "default.yaml"
SECTIONS = ("train", "model")
ANY_DATASET = "*"


def unflatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"encoders.audio": "mlp"}`` -> ``{"encoders": {"audio": "mlp"}}`` (the inverse of :func:`flatten`)."""
    out: dict[str, Any] = {}
    for dotted, value in values.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


@dataclass
class PresetValues:
    """The flattened values a preset lookup found (``train.lr``, ``model.encoders.audio``) and their sources."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def flatten(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"encoders": {"audio": "mlp"}}`` under ``model`` -> ``{"model.encoders.audio": "mlp"}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(dotted, value))
        else:
            out[dotted] = value
    return out


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """One preset file as ``{dataset: {flattened key: value}}``; errors name the file and key."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of dataset names to train/model sections")
    out: dict[str, dict[str, Any]] = {}
    for dataset, entry in raw.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {dataset!r} must map to train/model sections")
        unknown = set(entry) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"{path}: {dataset!r} has unknown section(s) {sorted(unknown)}; expected train, model")
        flat: dict[str, Any] = {}
        for section in SECTIONS:
            values = entry.get(section) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {dataset}.{section} must be a mapping")
            flat.update(flatten(section, values))
        out[str(dataset)] = flat
    return out


def lookup(model: str, dataset: str, directory: Path | None = None) -> PresetValues:
    """The preset values for ``model`` on ``dataset`` (see the module docstring for the layering)."""
    directory = directory or PRESET_DIR
    found = PresetValues()
    for filename in (DEFAULT_FILE, f"{model}.yaml"):
        path = directory / filename
        if not path.is_file():
            continue
        entries = _read(path)
        for key in dict.fromkeys((ANY_DATASET, dataset)):
            if key in entries and entries[key]:
                found.values.update(entries[key])
                found.sources.append(f"{_shown(path)}#{key}")
    return found


def _shown(path: Path) -> str:
    """A preset file's name as recorded in config.yaml: package-relative for the built-in ones."""
    try:
        return f"mmib/presets/{path.relative_to(PRESET_DIR)}"
    except ValueError:
        return str(path)


def preset_files(directory: Path | None = None) -> Iterable[Path]:
    """Every preset file (for validation in tests and `mmib models -v`)."""
    return sorted((directory or PRESET_DIR).glob("*.yaml"))


# ----------------------------------------------------------------------------- resolution
def _option_names(model: str) -> set[str] | None:
    """Top-level option names of a registered model (None for an unknown name: the caller reports it)."""
    from mmib.models.registry import _MODELS, _ensure_loaded

    _ensure_loaded()
    entry = _MODELS.get(model)
    return None if entry is None else {f.name for f in fields(entry.cls.Options)}


def _get(cfg: RunConfig, key: str) -> Any:
    section, _, rest = key.partition(".")
    if section == "train":
        return getattr(cfg.train, rest, None)
    node: Any = cfg.model.options
    for part in rest.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _reset(cfg: RunConfig, key: str) -> None:
    """Put ``key`` back to its default (a training field's default; a model option's absence)."""
    section, _, rest = key.partition(".")
    if section == "train":
        setattr(cfg.train, rest, getattr(TrainConfig(), rest))
        return
    parts = rest.split(".")
    node = cfg.model.options
    trail = []
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            return
        trail.append((node, part))
        node = node[part]
    node.pop(parts[-1], None)
    for parent, part in reversed(trail):  # drop dicts the removal left empty
        if not parent[part]:
            del parent[part]


def _set(cfg: RunConfig, key: str, value: Any, where: str) -> Any:
    section, _, rest = key.partition(".")
    if section == "train":
        hints = typing.get_type_hints(TrainConfig)
        if rest not in hints:
            raise ConfigError(f"{where}: unknown training option {rest!r}")
        value = coerce(value, hints[rest], where)
        setattr(cfg.train, rest, value)
        return value
    node = cfg.model.options
    parts = rest.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return value


def changed_keys(cfg: RunConfig) -> set[str]:
    """Flattened keys whose values differ from the defaults, except values a preset filled."""
    default = TrainConfig()
    keys = {f"train.{f.name}" for f in fields(TrainConfig) if getattr(cfg.train, f.name) != getattr(default, f.name)}
    keys |= set(flatten("model", cfg.model.options))
    applied = cfg.preset.applied
    return {k for k in keys if not (k in applied and _get(cfg, k) == applied[k])}


def file_keys(raw: Mapping[str, Any]) -> set[str]:
    """Flattened keys a run config file sets (its ``train`` fields and ``model.options`` leaves)."""
    keys = {f"train.{k}" for k in (raw.get("train") or {})}
    model = raw.get("model") or {}
    if isinstance(model, Mapping):
        keys |= set(flatten("model", model.get("options") or {}))
    return keys


def override_keys(overrides: Sequence[str]) -> set[str]:
    """Flattened training and model-option keys that ``--set`` strings address."""
    keys: set[str] = set()
    for item in overrides:
        section, rest, raw = split_override(item)
        if section not in SECTIONS or rest == "name":
            continue
        value = parse_value(raw)
        keys |= set(flatten(section, {rest: value})) if isinstance(value, dict) else {f"{section}.{rest}"}
    return keys


def resolve(cfg: RunConfig, explicit: set[str], directory: Path | None = None) -> RunConfig:
    """``cfg`` with the presets of its model and dataset filled into every key not in ``explicit``
    (values an earlier resolution filled are first put back to their defaults) and recorded in
    ``cfg.preset``."""
    cfg = copy_config(cfg)
    model, dataset = cfg.model.name, str(cfg.data.name)
    if cfg.preset.use and cfg.preset.resolved_for == [model, dataset]:
        # resolved before for this model and dataset (a planned run handed to train(), a config.yaml):
        # every value the presets did not fill is the user's, even one equal to a built-in default
        kept = {k: v for k, v in cfg.preset.applied.items() if k not in explicit and _get(cfg, k) == v}
        cfg.preset = PresetConfig(True, cfg.preset.sources if kept else [], kept, [model, dataset])
        return cfg
    for key, value in cfg.preset.applied.items():
        if key not in explicit and _get(cfg, key) == value:
            _reset(cfg, key)
    if not cfg.preset.use:
        cfg.preset = PresetConfig(use=False)
        return cfg
    found = lookup(model, dataset, directory)
    options = _option_names(model) or set()
    applied: dict[str, Any] = {}
    for key, value in found.values.items():
        if key in explicit:
            continue
        if key.startswith("model.") and key.split(".")[1] not in options:
            continue  # a shared recipe's model option this model does not have
        applied[key] = _set(cfg, key, value, f"preset {', '.join(found.sources)}: {key}")
    cfg.preset = PresetConfig(True, list(found.sources) if applied else [], applied, [model, dataset])
    return cfg
