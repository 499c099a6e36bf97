"""One registry of models by name: ``build_model("c-mib", spec, beta=1e-3)``.

Models register with :func:`register_model` at import; ``mmib.models`` imports
every model module, so importing it fills the registry once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mmib.config import coerce_dataclass, suggest
from mmib.data.dataset import DatasetSpec
from mmib.errors import ConfigError
from mmib.models.base import MultimodalModel

M = TypeVar("M", bound=type[MultimodalModel])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[MultimodalModel]
    description: str
    tasks: tuple[str, ...]
    min_modalities: int


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    description: str,
    tasks: tuple[str, ...] = ("regression", "binary", "multiclass", "multilabel"),
    min_modalities: int = 1,
) -> Callable[[M], M]:
    """Class decorator: make a :class:`MultimodalModel` subclass buildable by ``name``."""

    def wrap(cls: M) -> M:
        if name in _MODELS and _MODELS[name].cls is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        if not dataclasses.is_dataclass(cls.Options):
            raise TypeError(f"{cls.__name__}.Options must be a dataclass")
        cls.registry_name = name
        _MODELS[name] = ModelEntry(name, cls, description, tasks, min_modalities)
        return cls

    return wrap


def _ensure_loaded() -> None:
    import mmib.models  # noqa: F401  (imports every model module)


def list_models() -> list[ModelEntry]:
    _ensure_loaded()
    return [_MODELS[k] for k in sorted(_MODELS)]


def get_model(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}{suggest(name, _MODELS)}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def model_options(name: str, options: dict[str, Any] | None = None) -> Any:
    """Validate and type-convert ``options`` for model ``name`` into its Options dataclass."""
    entry = get_model(name)
    return coerce_dataclass(entry.cls.Options, _merge_defaults(entry.cls.Options, dict(options or {})), f"model {name}")


def _merge_defaults(opts_cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """Dict-valued options given partially (``encoders.audio=lstm``) extend their defaults."""
    out = dict(options)
    for f in dataclasses.fields(opts_cls):
        if f.name in out and isinstance(out[f.name], dict) and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if isinstance(default, dict):
                out[f.name] = {**default, **out[f.name]}
    return out


def build_model(name: str, spec: DatasetSpec, **options: Any) -> MultimodalModel:
    """Build registered model ``name`` for data described by ``spec``."""
    entry = get_model(name)
    if spec.task.kind not in entry.tasks:
        raise ConfigError(f"model {name!r} does not support {spec.task.kind} tasks (supports: {', '.join(entry.tasks)})")
    if len(spec.modalities) < entry.min_modalities:
        raise ConfigError(f"model {name!r} needs at least {entry.min_modalities} modalities; the data have {len(spec.modalities)}")
    opts = model_options(name, options)
    return entry.cls(spec, opts)
