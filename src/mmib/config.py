"""Run configuration: dataclasses loadable from YAML and overridable from the CLI.

A run is described by a :class:`RunConfig` holding a :class:`DataConfig`, a
:class:`ModelConfig` and a :class:`TrainConfig`. ``--set key=value`` overrides
resolve as follows: ``data.X``, ``model.X`` and ``train.X`` address a section
explicitly; a bare ``X`` goes to the training config if it names one of its
fields, to the data config if it names one of its fields, and otherwise to the
model's options (which the model validates). Unknown data fields become loader
options (``data.n_samples=3000``). Dotted keys reach into dict options
(``model.encoders.audio=lstm``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from mmib.errors import ConfigError


@dataclass
class DataConfig:
    """Which dataset to load and how to prepare it."""

    name: str = "sim-i"
    path: str | None = None
    seed: int = 0
    standardize: bool = True
    replace_nonfinite: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """How the engine trains. ``epochs`` counts the main (open-ended) phase;
    fixed-length phases a model declares (e.g. a warm-up) come on top."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    text_lr: float = 5e-5
    weight_decay: float = 0.0
    optimizer: str = "adam"
    clip_grad: float | None = None
    patience: int = 10
    monitor: str | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "cpu"
    eval_batch_size: int = 512
    progress: bool = True
    precision: str = "fp32"
    detect_anomaly: bool = False
    threads: int | None = None
    checkpoint: bool = True


@dataclass
class ModelConfig:
    """A registered model name and its options (validated by the model)."""

    name: str = "concat"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """Everything needed to reproduce a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping with data/model/train sections")
        unknown = set(d) - {"data", "model", "train"}
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}; expected data, model, train")
        return cls(
            data=coerce_dataclass(DataConfig, d.get("data") or {}, f"{where}: data"),
            model=coerce_dataclass(ModelConfig, d.get("model") or {}, f"{where}: model"),
            train=coerce_dataclass(TrainConfig, d.get("train") or {}, f"{where}: train"),
        )


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run config (any section may be omitted)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return RunConfig.from_dict(d, where=str(p))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- value parsing
def parse_value(text: str) -> Any:
    """Parse a CLI value: YAML scalars/lists plus float forms YAML 1.1 misses (``1e-3``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") or value.lower() in ("inf", "-inf", "nan") else int(value)
        except ValueError:
            return value
    return value


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to type ``tp`` (a type hint), or raise ConfigError naming ``where``."""
    if tp is Any:
        return value
    origin = _origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin in (dict,):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = (typing.get_args(tp) + (Any, Any))[:2]
        return {coerce(k, kt, where): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [parse_value(v) for v in value.split(",")] if value else []
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        item = args[0] if args else Any
        out = [coerce(v, item, where) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if math.isnan(out):
            raise ConfigError(f"{where}: NaN is not a valid value")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean X?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``values``, coercing types; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown option {key!r}{suggest(key, names)}; valid: {', '.join(names)}")
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _set_nested(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        cur = d.get(k)
        if not isinstance(cur, dict):
            cur = {}
            d[k] = cur
        d = cur
    d[keys[-1]] = value


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` strings to a copy of ``cfg`` (see the module docstring)."""
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, options=dict(cfg.data.options)),
        model=dataclasses.replace(cfg.model, options=dict(cfg.model.options)),
        train=dataclasses.replace(cfg.train),
    )
    train_fields = {f.name for f in fields(TrainConfig)}
    data_fields = {f.name for f in fields(DataConfig)} - {"options"}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: empty key")
        value = parse_value(raw)
        section, _, rest = key.partition(".")
        if section not in ("data", "model", "train") or not rest:
            section, rest = ("train", key) if key in train_fields else ("data", key) if key in data_fields else ("model", key)
        if section == "train":
            if rest not in train_fields:
                raise ConfigError(f"--set {key}: unknown training option{suggest(rest, train_fields)}")
            setattr(cfg.train, rest, coerce(value, _hints(TrainConfig)[rest], f"--set {key}"))
        elif section == "data":
            if rest in data_fields:
                setattr(cfg.data, rest, coerce(value, _hints(DataConfig)[rest], f"--set {key}"))
            else:
                _set_nested(cfg.data.options, rest, value)
        else:
            if rest == "name":
                cfg.model.name = str(value)
            else:
                _set_nested(cfg.model.options, rest, value)
    return cfg


def override_train_keys(overrides: typing.Iterable[str]) -> set[str]:
    """The training options that ``key=value`` overrides set (``train.X``, or a bare ``X`` naming one)."""
    train_fields = {f.name for f in fields(TrainConfig)}
    keys: set[str] = set()
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        section, _, rest = key.partition(".")
        if section == "train" and rest:
            keys.add(rest)
        elif key in train_fields:
            keys.add(key)
    return keys


def changed_train_keys(train: TrainConfig) -> set[str]:
    """Training options whose value differs from :class:`TrainConfig`'s default (set by someone)."""
    default = TrainConfig()
    return {f.name for f in fields(TrainConfig) if getattr(train, f.name) != getattr(default, f.name)}


def apply_training_defaults(cfg: RunConfig, defaults: dict[str, Any], explicit: set[str], where: str) -> RunConfig:
    """A copy of ``cfg`` with a model's declared training defaults for every option not in ``explicit``."""
    hints = _hints(TrainConfig)
    train = dataclasses.replace(cfg.train)
    for key, value in defaults.items():
        if key not in hints:
            raise ConfigError(f"{where}: declares unknown training option {key!r}")
        if key not in explicit:
            setattr(train, key, coerce(value, hints[key], f"{where}: training default {key}"))
    return dataclasses.replace(cfg, train=train)
