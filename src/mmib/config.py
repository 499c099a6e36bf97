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

import copy
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
    #: Open MMSA/MulT pickles with plain ``pickle.load`` (runs any code in the file). Only a
    #: command line or API call grants it: a config read from a run directory never does.
    trust_pickle: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """How the engine trains. ``epochs`` counts the main (open-ended) phase;
    fixed-length phases a model declares (e.g. a warm-up) come on top."""

    epochs: int = 50
    batch_size: int = 64
    lr: float = 5e-4
    text_lr: float = 5e-5
    weight_decay: float = 0.01
    optimizer: str = "adamw"
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
    #: linear learning-rate warm-up of every parameter group from 0 over this many epochs of steps
    #: (fractions allowed: 0.5 = the first half of the first epoch); 0 = none
    warmup_epochs: float = 0.0


@dataclass
class ModelConfig:
    """A registered model name and its options (validated by the model)."""

    name: str = "concat"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PresetConfig:
    """Whether per-model, per-dataset presets (:mod:`mmib.presets`) fill unset values, and what they
    filled: ``sources`` (``file#dataset`` entries) and ``applied`` (``train.lr: 3e-4``, ...) for the
    model and dataset in ``resolved_for``."""

    use: bool = True
    sources: list[str] = field(default_factory=list)
    applied: dict[str, Any] = field(default_factory=dict)
    resolved_for: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    """Everything needed to reproduce a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: PresetConfig = field(default_factory=PresetConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping with data/model/train sections")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(SECTIONS)}")
        cfg = cls(
            data=coerce_dataclass(DataConfig, d.get("data") or {}, f"{where}: data"),
            model=coerce_dataclass(ModelConfig, d.get("model") or {}, f"{where}: model"),
            train=coerce_dataclass(TrainConfig, d.get("train") or {}, f"{where}: train"),
            preset=coerce_dataclass(PresetConfig, d.get("preset") or {}, f"{where}: preset"),
        )
        validate_train_config(cfg.train, f"{where}: train.")
        return cfg


def validate_train_config(cfg: TrainConfig, prefix: str = "") -> None:
    """ConfigError naming the option when a training value is out of its range.

    Every entry point goes through here (YAML configs, ``--set``, the Trainer), so a value
    like ``lr=-1`` or ``dropout=1.5`` never reaches PyTorch."""
    def bad(key: str, rule: str, value: Any) -> ConfigError:
        return ConfigError(f"{prefix}{key} must be {rule}, got {value!r}")

    for key in ("lr", "text_lr"):
        value = getattr(cfg, key)
        if not (math.isfinite(value) and value > 0):
            raise bad(key, "a finite number > 0", value)
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise bad("weight_decay", "a finite number >= 0", cfg.weight_decay)
    if cfg.clip_grad is not None and not (math.isfinite(cfg.clip_grad) and cfg.clip_grad > 0):
        raise bad("clip_grad", "a finite number > 0 (or null for no clipping)", cfg.clip_grad)
    for key in ("batch_size", "eval_batch_size", "patience"):
        if getattr(cfg, key) < 1:
            raise bad(key, "an integer >= 1", getattr(cfg, key))
    if cfg.epochs < 0:
        raise bad("epochs", "an integer >= 0", cfg.epochs)
    if cfg.threads is not None and cfg.threads < 1:
        raise bad("threads", "an integer >= 1 (or null for PyTorch's default)", cfg.threads)
    if not (math.isfinite(cfg.warmup_epochs) and cfg.warmup_epochs >= 0):
        raise bad("warmup_epochs", "a finite number >= 0", cfg.warmup_epochs)


#: Option names (in any dataclass: model options too) that hold a probability of dropping units.
def _is_dropout(name: str) -> bool:
    return name == "dropout" or name.endswith("_dropout")


#: The sections of a run config file.
SECTIONS: tuple[str, ...] = ("data", "model", "train", "preset")


def read_config_dict(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML run config file (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: expected a mapping with data/model/train sections")
    return d


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run config (any section may be omitted)."""
    return RunConfig.from_dict(read_config_dict(path), where=str(path))


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
        if _is_dropout(key) and isinstance(kwargs[key], float) and not 0.0 <= kwargs[key] < 1.0:
            raise ConfigError(f"{where}.{key} must lie in [0, 1), got {kwargs[key]!r}")
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


def copy_config(cfg: RunConfig) -> RunConfig:
    """A copy of ``cfg`` that shares no mutable option dict with it."""
    return copy.deepcopy(cfg)


def split_override(item: str) -> tuple[str, str, str]:
    """``"lr=1e-3"`` -> ``("train", "lr", "1e-3")``: the section a ``--set`` key addresses (see the
    module docstring), the key inside it and the raw value."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    section, _, rest = key.partition(".")
    if section not in SECTIONS or not rest:
        train_fields = {f.name for f in fields(TrainConfig)}
        data_fields = {f.name for f in fields(DataConfig)} - {"options"}
        section, rest = ("train", key) if key in train_fields else ("data", key) if key in data_fields else ("model", key)
    return section, rest, raw


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` strings to a copy of ``cfg`` (see the module docstring)."""
    cfg = copy_config(cfg)
    train_fields = {f.name for f in fields(TrainConfig)}
    data_fields = {f.name for f in fields(DataConfig)} - {"options"}
    for item in overrides:
        section, rest, raw = split_override(item)
        key = item.split("=", 1)[0].strip()
        value = parse_value(raw)
        if section == "preset":
            if rest != "use":
                raise ConfigError(f"--set {key}: the preset section takes only preset.use=true|false")
            cfg.preset = dataclasses.replace(cfg.preset, use=coerce(value, bool, f"--set {key}"))
        elif section == "train":
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
    validate_train_config(cfg.train, "--set ")
    return cfg
