"""mmib: multimodal representation learning with information-bottleneck and MI objectives.

The Python API mirrors the ``mmib`` command: :func:`load_dataset`,
:func:`build_model`, :func:`train`, :func:`evaluate`, :func:`load_run`.
"""

from mmib.api import Run, evaluate, load_run, make_config, predict, train
from mmib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from mmib.data import DatasetSpec, MultimodalDataset, TaskSpec, load_dataset
from mmib.errors import MMIBError
from mmib.models import build_model, list_models

__version__ = "0.1.0"

__all__ = [
    "DataConfig", "DatasetSpec", "MMIBError", "ModelConfig", "MultimodalDataset", "Run", "RunConfig", "TaskSpec",
    "TrainConfig", "build_model", "evaluate", "list_models", "load_dataset", "load_run", "make_config", "predict",
    "train",
]
