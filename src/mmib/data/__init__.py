"""Data layer: the multimodal dataset type, built-in benchmarks and file loaders."""

from mmib.data.dataset import (
    Batch,
    DatasetSpec,
    GroundTruth,
    ModalitySpec,
    MultimodalDataset,
    Standardizer,
    TaskSpec,
)
from mmib.data.registry import list_datasets, load_dataset

__all__ = [
    "Batch", "DatasetSpec", "GroundTruth", "ModalitySpec", "MultimodalDataset", "Standardizer", "TaskSpec",
    "load_dataset", "list_datasets",
]
