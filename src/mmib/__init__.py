"""mmib: multimodal representation learning with information-bottleneck and MI objectives.

The Python API mirrors the ``mmib`` command: :func:`load_dataset`,
:func:`build_model`, :func:`train`, :func:`evaluate`, :func:`load_run`.

The names below are imported on first use (PEP 562), so that ``import mmib`` (and the
``mmib`` command's start-up, ``mmib --help``) does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Run": "mmib.api", "evaluate": "mmib.api", "load_run": "mmib.api", "make_config": "mmib.api",
    "predict": "mmib.api", "train": "mmib.api", "train_together": "mmib.api",
    "DataConfig": "mmib.config", "ModelConfig": "mmib.config", "RunConfig": "mmib.config", "TrainConfig": "mmib.config",
    "DatasetSpec": "mmib.data", "MultimodalDataset": "mmib.data", "TaskSpec": "mmib.data", "load_dataset": "mmib.data",
    "MMIBError": "mmib.errors",
    "build_model": "mmib.models", "list_models": "mmib.models",
}

__all__ = sorted(_EXPORTS)

# ``mmib.train`` names the function (as ``from mmib import train`` always gave), not the subpackage
# of the same name: import the (empty) subpackage now, then drop the attribute its import set, so
# that the name resolves through __getattr__ and no later import of ``mmib.train.*`` rebinds it.
importlib.import_module("mmib.train")
globals().pop("train", None)

if TYPE_CHECKING:  # pragma: no cover
    from mmib.api import Run, evaluate, load_run, make_config, predict, train, train_together
    from mmib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from mmib.data import DatasetSpec, MultimodalDataset, TaskSpec, load_dataset
    from mmib.errors import MMIBError
    from mmib.models import build_model, list_models


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
