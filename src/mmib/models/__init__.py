"""Registered models. Importing this package registers every model by name."""

from mmib.models import baselines  # noqa: F401
from mmib.models import linear  # noqa: F401
from mmib.models import mcer  # noqa: F401
from mmib.models import mmim  # noqa: F401
from mmib.models import mib  # noqa: F401
from mmib.models import omib  # noqa: F401
from mmib.models.base import ModelOutput, MultimodalModel, Objective, ParamGroup, Phase, Stage
from mmib.models.registry import build_model, get_model, list_models, register_model

__all__ = [
    "ModelOutput", "MultimodalModel", "Objective", "ParamGroup", "Phase", "Stage",
    "build_model", "get_model", "list_models", "register_model",
]
