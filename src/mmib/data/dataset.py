"""The in-memory multimodal dataset every model and loader shares.

A :class:`MultimodalDataset` holds K named modalities as float tensors, either
vectors ``(N, D)`` or padded sequences ``(N, L, D)`` with per-sample lengths, a
target ``y`` for one task, and index tensors for the ``train``, ``valid`` and
``test`` splits. Batches are sliced from those tensors with one gather per
modality (:meth:`MultimodalDataset.batches`); there is no per-sample collate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mmib.errors import DataError

TaskKind = Literal["regression", "binary", "multiclass", "multilabel", "anomaly"]
TASK_KINDS: tuple[str, ...] = ("regression", "binary", "multiclass", "multilabel", "anomaly")
SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class TaskSpec:
    """What is predicted.

    ``regression``: ``y`` float ``(N,)``. ``binary``/``multiclass``: ``y`` int64
    ``(N,)`` in ``[0, num_classes)``. ``multilabel``: ``y`` float ``(N, L)`` of
    0/1, one column per name in ``label_names``. ``anomaly``: ``y`` int64
    ``(N,)`` with 1 for an anomaly, 0 for a normal sample.
    """

    kind: TaskKind
    num_classes: int | None = None
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise DataError(f"unknown task kind {self.kind!r}; expected one of {', '.join(TASK_KINDS)}")
        if self.kind == "binary" and self.num_classes not in (None, 2):
            raise DataError("a binary task has num_classes=2")
        if self.kind == "binary" and self.num_classes is None:
            object.__setattr__(self, "num_classes", 2)
        if self.kind == "multiclass" and (self.num_classes is None or self.num_classes < 2):
            raise DataError("a multiclass task needs num_classes >= 2")
        if self.kind == "multilabel" and not self.label_names:
            raise DataError("a multilabel task needs label_names")

    @property
    def is_classification(self) -> bool:
        return self.kind in ("binary", "multiclass")

    @property
    def output_dim(self) -> int:
        """Width of a prediction head's output for this task."""
        if self.kind == "regression":
            return 1
        if self.kind in ("binary", "multiclass"):
            assert self.num_classes is not None
            return self.num_classes
        if self.kind == "multilabel":
            return len(self.label_names)
        return 1  # anomaly: a score

    def to_dict(self) -> dict:
        return {"kind": self.kind, "num_classes": self.num_classes, "label_names": list(self.label_names)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TaskSpec":
        return cls(kind=d["kind"], num_classes=d.get("num_classes"), label_names=tuple(d.get("label_names", ())))


@dataclass(frozen=True)
class ModalitySpec:
    """Shape of one modality: feature width, and whether it is a padded sequence."""

    name: str
    dim: int
    sequence: bool = False
    max_len: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sequence": self.sequence, "max_len": self.max_len}


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about its data to be built: modalities and task.

    ``text_tokens`` is the length of the ``text_bert`` token-id arrays when the
    dataset carries them (so a model can run a BERT-type text encoder), else None.
    """

    modalities: tuple[ModalitySpec, ...]
    task: TaskSpec
    text_tokens: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def __getitem__(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "modalities": [m.to_dict() for m in self.modalities],
            "task": self.task.to_dict(),
            "text_tokens": self.text_tokens,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "DatasetSpec":
        return cls(
            modalities=tuple(ModalitySpec(**m) for m in d["modalities"]),
            task=TaskSpec.from_dict(d["task"]),
            text_tokens=d.get("text_tokens"),
        )

    @classmethod
    def simple(
        cls, dims: Mapping[str, int], task: TaskSpec | str = "regression", num_classes: int | None = None
    ) -> "DatasetSpec":
        """Spec for vector modalities given as ``{name: dim}`` (handy in Python and tests)."""
        if isinstance(task, str):
            task = TaskSpec(task, num_classes=num_classes)  # type: ignore[arg-type]
        return cls(modalities=tuple(ModalitySpec(n, int(d)) for n, d in dims.items()), task=task)


@dataclass
class Batch:
    """A mini-batch: one tensor per modality, sequence lengths, target, sample indices.

    ``lengths[m]`` exists for sequence modalities (valid steps per sample; 0 means
    the modality is missing for that sample) and, optionally, for vector
    modalities as a 0/1 presence flag. ``extras`` carries side arrays such as
    ``text_bert`` token ids.
    """

    features: dict[str, Tensor]
    lengths: dict[str, Tensor]
    y: Tensor | None
    index: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        """Copy to ``device`` (no-op when already there)."""
        dev = torch.device(device)
        if dev.type == "cpu" and self.index.device.type == "cpu":
            return self
        nb = dev.type == "cuda"
        return Batch(
            features={k: v.to(dev, non_blocking=nb) for k, v in self.features.items()},
            lengths={k: v.to(dev, non_blocking=nb) for k, v in self.lengths.items()},
            y=None if self.y is None else self.y.to(dev, non_blocking=nb),
            index=self.index.to(dev, non_blocking=nb),
            extras={k: v.to(dev, non_blocking=nb) for k, v in self.extras.items()},
        )

    def mask(self, modality: str) -> Tensor | None:
        """Boolean ``(B, L)`` mask of valid steps for a sequence modality, else None."""
        x = self.features[modality]
        if x.dim() != 3 or modality not in self.lengths:
            return None
        steps = torch.arange(x.shape[1], device=x.device)
        return steps.unsqueeze(0) < self.lengths[modality].unsqueeze(1)


@dataclass
class Standardizer:
    """Per-modality, per-feature mean and std fitted on the training split.

    Stored with a run so that new inputs (``mmib predict``) are scaled the same way.
    """

    mean: dict[str, Tensor]
    std: dict[str, Tensor]

    def apply_(self, features: dict[str, Tensor], lengths: Mapping[str, Tensor] | None = None) -> None:
        """Standardise ``features`` in place; padded sequence steps stay zero."""
        for name, x in features.items():
            if name not in self.mean:
                continue
            x.sub_(self.mean[name]).div_(self.std[name])
            if x.dim() == 3 and lengths is not None and name in lengths:
                steps = torch.arange(x.shape[1])
                pad = steps.unsqueeze(0) >= lengths[name].unsqueeze(1)
                x.masked_fill_(pad.unsqueeze(-1), 0.0)

    def state_dict(self) -> dict:
        return {"mean": dict(self.mean), "std": dict(self.std)}

    @classmethod
    def from_state_dict(cls, d: Mapping) -> "Standardizer":
        return cls(mean=dict(d["mean"]), std=dict(d["std"]))


class GroundTruth:
    """Ground-truth latent parts of a synthetic dataset, for probing representations.

    A part is either a column slice of a modality (SIM: ``a0`` is columns 0..200 of
    ``x1``; kept as a view so large sets are never copied) or a stored array
    (``sim-msa``'s latent factors). ``relevant`` names the task-relevant parts.
    """

    def __init__(
        self,
        slices: Mapping[str, tuple[str, int, int]] | None = None,
        arrays: Mapping[str, Tensor] | None = None,
        relevant: Sequence[str] = (),
    ) -> None:
        self.slices = dict(slices or {})
        self.arrays = dict(arrays or {})
        self.relevant = tuple(relevant)

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.slices) + tuple(k for k in self.arrays if k not in self.slices)

    def get(self, dataset: "MultimodalDataset", part: str, raw: bool = True) -> Tensor:
        """The ``(N, d)`` values of ``part``; for slices, undo standardisation if ``raw``."""
        if part in self.arrays:
            return self.arrays[part]
        if part not in self.slices:
            raise DataError(f"unknown ground-truth part {part!r}; known: {', '.join(self.parts)}")
        modality, start, stop = self.slices[part]
        x = dataset.features[modality][:, start:stop]
        st = dataset.standardizer
        if raw and st is not None and modality in st.mean:
            x = x * st.std[modality][start:stop] + st.mean[modality][start:stop]
        return x


class MultimodalDataset:
    """K named modalities, a target, and train/valid/test index splits, all in memory."""

    def __init__(
        self,
        name: str,
        features: Mapping[str, Tensor | np.ndarray],
        y: Tensor | np.ndarray,
        task: TaskSpec,
        splits: Mapping[str, Tensor | np.ndarray | Sequence[int]],
        lengths: Mapping[str, Tensor | np.ndarray] | None = None,
        extras: Mapping[str, Tensor | np.ndarray] | None = None,
        ids: Sequence[str] | None = None,
        ground_truth: GroundTruth | None = None,
        meta: Mapping | None = None,
        replace_nonfinite: bool = False,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.source = source or name
        if not features:
            raise DataError(f"{self.source}: no modalities")
        self.features: dict[str, Tensor] = {k: _as_float(v, f"{self.source}: modality {k!r}") for k, v in features.items()}
        self.task = task
        self.y = _as_target(y, task, self.source)
        self.lengths: dict[str, Tensor] = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).long() for k, v in (lengths or {}).items()}
        self.extras: dict[str, Tensor] = {k: torch.as_tensor(v) for k, v in (extras or {}).items()}
        self.ids = list(ids) if ids is not None else None
        self.splits: dict[str, Tensor] = {k: torch.as_tensor(np.asarray(v), dtype=torch.long) for k, v in splits.items()}
        self.ground_truth = ground_truth
        self.meta = dict(meta or {})
        self.standardizer: Standardizer | None = None
        self._validate(replace_nonfinite)

    # ------------------------------------------------------------------ checks
    def _validate(self, replace_nonfinite: bool) -> None:
        src = self.source
        n = self.y.shape[0]
        for name, x in self.features.items():
            if x.dim() not in (2, 3):
                raise DataError(f"{src}: modality {name!r} has shape {tuple(x.shape)}; expected (N, D) or (N, L, D)")
            if x.shape[0] != n:
                raise DataError(f"{src}: modality {name!r} has {x.shape[0]} samples but y has {n}")
            if x.shape[-1] == 0:
                raise DataError(f"{src}: modality {name!r} has zero features")
        for name, ln in self.lengths.items():
            if name not in self.features:
                raise DataError(f"{src}: lengths given for unknown modality {name!r}")
            if ln.shape != (n,):
                raise DataError(f"{src}: lengths of {name!r} have shape {tuple(ln.shape)}; expected ({n},)")
            x = self.features[name]
            limit = x.shape[1] if x.dim() == 3 else 1
            if (ln < 0).any() or (ln > limit).any():
                raise DataError(f"{src}: lengths of {name!r} must lie in [0, {limit}]")
        for name, x in self.features.items():
            if x.dim() == 3 and name not in self.lengths:
                self.lengths[name] = torch.full((n,), x.shape[1], dtype=torch.long)
        for name, e in self.extras.items():
            if e.shape[0] != n:
                raise DataError(f"{src}: {name!r} has {e.shape[0]} samples but y has {n}")
        if self.ids is not None and len(self.ids) != n:
            raise DataError(f"{src}: {len(self.ids)} ids for {n} samples")
        for name, x in self.features.items():
            # In row chunks: torch.isfinite on a whole tensor allocates float temporaries as large
            # as the tensor, which would hold a large dataset twice at its peak.
            n_nan = n_inf = 0
            for start in range(0, x.shape[0], 65536):
                part = x[start : start + 65536]
                bad = ~torch.isfinite(part)
                if bad.any():
                    nan = int(torch.isnan(part).sum())
                    n_nan, n_inf = n_nan + nan, n_inf + int(bad.sum()) - nan
                    if replace_nonfinite:
                        part.masked_fill_(bad, 0.0)
            if n_nan or n_inf:
                if not replace_nonfinite:
                    raise DataError(
                        f"{src}: modality {name!r} has {n_nan} NaN and {n_inf} inf values "
                        "(pass replace_nonfinite=True / --set data.replace_nonfinite=true to replace them with 0)"
                    )
                warnings.warn(f"{src}: replaced {n_nan} NaN and {n_inf} inf values in {name!r} with 0", stacklevel=3)
        if self.y.is_floating_point() and not torch.isfinite(self.y).all():
            raise DataError(f"{src}: y has {int((~torch.isfinite(self.y)).sum())} NaN/inf values")
        for split, idx in self.splits.items():
            if split not in SPLITS:
                raise DataError(f"{src}: unknown split {split!r}; expected train, valid, test")
            if idx.dim() != 1:
                raise DataError(f"{src}: split {split!r} must be a 1-d index array")
            if idx.numel() and (idx.min() < 0 or idx.max() >= n):
                raise DataError(f"{src}: split {split!r} has indices outside [0, {n})")
        if "train" not in self.splits or self.splits["train"].numel() == 0:
            raise DataError(f"{src}: the train split is empty")
        seen = torch.zeros(n, dtype=torch.int32)
        for idx in self.splits.values():
            seen.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
        if (seen > 1).any():
            raise DataError(f"{src}: splits overlap ({int((seen > 1).sum())} samples in more than one split)")
        self._check_not_empty()

    def _check_not_empty(self) -> None:
        """Warn about a modality without a single valid step in the training split; no data at all is an error."""
        train = self.splits["train"]
        empty = [name for name in self.features
                 if name in self.lengths and int(self.lengths[name].index_select(0, train).max()) == 0]
        if empty and len(empty) == len(self.features):
            raise DataError(f"{self.source}: no data at all: every modality ({', '.join(empty)}) has length 0 "
                            "in every training sample")
        for name in empty:
            warnings.warn(f"{self.source}: modality {name!r} has length 0 in every training sample (no data): "
                          "models see it as missing everywhere", stacklevel=4)

    # ------------------------------------------------------------------ shape
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def spec(self) -> DatasetSpec:
        mods = []
        for name, x in self.features.items():
            seq = x.dim() == 3
            mods.append(ModalitySpec(name, int(x.shape[-1]), seq, int(x.shape[1]) if seq else None))
        tb = self.extras.get("text_bert")
        return DatasetSpec(tuple(mods), self.task, int(tb.shape[-1]) if tb is not None else None)

    def split_size(self, split: str) -> int:
        return int(self.splits[split].numel()) if split in self.splits else 0

    def summary(self) -> str:
        parts = []
        for name, x in self.features.items():
            shape = "x".join(str(s) for s in x.shape[1:])
            parts.append(f"{name}[{shape}]")
        sizes = "/".join(str(self.split_size(s)) for s in SPLITS)
        return f"{self.name}: {len(self)} samples ({sizes} train/valid/test), {self.task.kind}, " + ", ".join(parts)

    # ------------------------------------------------------------------ preprocessing
    def standardize(self, eps: float = 1e-6) -> Standardizer:
        """Fit per-feature mean/std on the training split and standardise every split in place.

        For sequences only valid (unpadded) steps count. Constant features keep
        std 1 so they map to 0 rather than to inf.
        """
        train = self.splits["train"]
        mean: dict[str, Tensor] = {}
        std: dict[str, Tensor] = {}
        chunk = 32768
        for name, x in self.features.items():
            # Chunked float64 sums: never materialise a copy of the whole split.
            total = torch.zeros(x.shape[-1], dtype=torch.float64)
            total_sq = torch.zeros(x.shape[-1], dtype=torch.float64)
            count = 0.0
            for start in range(0, train.numel(), chunk):
                rows = train[start : start + chunk]
                xc = x.index_select(0, rows).double()
                if x.dim() == 3:
                    valid = torch.arange(x.shape[1]).unsqueeze(0) < self.lengths[name].index_select(0, rows).unsqueeze(1)
                    xc = xc[valid]
                total += xc.sum(0)
                total_sq += (xc * xc).sum(0)
                count += xc.shape[0]
            count = max(count, 1.0)
            mu = total / count
            sd = (total_sq / count - mu * mu).clamp_min(0.0).sqrt()
            sd = torch.where(sd > eps, sd, torch.ones_like(sd))
            mean[name], std[name] = mu.float(), sd.float()
        st = Standardizer(mean, std)
        st.apply_(self.features, self.lengths)
        self.standardizer = st
        return st

    # ------------------------------------------------------------------ views
    def select(self, items: Sequence[str]) -> "MultimodalDataset":
        """A dataset whose modalities are ``items``: modalities of this one, or ground-truth parts
        (each a vector modality named after the part, with its raw values).

        Rows, target, splits, ids and ``meta`` (so ``meta["oracle"]``) are kept; the
        ground truth is kept as arrays, so the view can still be probed. Call it before
        :meth:`standardize` (the loader does: ``--set data.select=a0,b0``). It trains
        "the same head on chosen parts or modalities", as in OMIB's Table 2.
        """
        if self.standardizer is not None:
            raise DataError(f"{self.source}: select before standardising (the view's statistics are its own)")
        items = list(items)
        if not items:
            raise DataError(f"{self.source}: select needs at least one modality or ground-truth part")
        if len(set(items)) != len(items):
            raise DataError(f"{self.source}: select lists an item twice ({', '.join(items)})")
        gt = self.ground_truth
        parts = gt.parts if gt is not None else ()
        features: dict[str, Tensor] = {}
        lengths: dict[str, Tensor] = {}
        for item in items:
            if item in self.features:
                features[item] = self.features[item]
                if item in self.lengths:
                    lengths[item] = self.lengths[item]
            elif item in parts:
                assert gt is not None
                features[item] = gt.get(self, item, raw=True).float().reshape(len(self), -1)
            else:
                known = ", ".join([*self.features, *parts])
                raise DataError(f"{self.source}: cannot select {item!r}; modalities and ground-truth parts: {known}")
        kept_gt = None
        if gt is not None:
            kept_gt = GroundTruth(arrays={p: gt.get(self, p, raw=True) for p in parts}, relevant=gt.relevant)
        extras = dict(self.extras) if "text" in features else {k: v for k, v in self.extras.items() if k != "text_bert"}
        return MultimodalDataset(f"{self.name}[{','.join(items)}]", features, self.y, self.task, self.splits, lengths,
                                 extras, self.ids, kept_gt, self.meta, source=self.source)

    # ------------------------------------------------------------------ batches
    def batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        with_target: bool = True,
    ) -> Iterator[Batch]:
        """Yield batches of ``split`` sliced from the in-memory tensors."""
        if split not in self.splits:
            raise DataError(f"{self.source}: no {split!r} split (have {', '.join(self.splits)})")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        idx = self.splits[split]
        if shuffle:
            idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n = idx.numel()
        stop = n - (n % batch_size) if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield self.take(idx[start : start + batch_size], with_target)

    def num_batches(self, split: str, batch_size: int, drop_last: bool = False) -> int:
        n = self.split_size(split)
        if drop_last and n >= batch_size:
            return n // batch_size
        return math.ceil(n / batch_size)

    def take(self, index: Tensor, with_target: bool = True) -> Batch:
        """Gather the samples at ``index`` into a :class:`Batch`."""
        return Batch(
            features={k: v.index_select(0, index) for k, v in self.features.items()},
            lengths={k: v.index_select(0, index) for k, v in self.lengths.items()},
            y=self.y.index_select(0, index) if with_target else None,
            index=index,
            extras={k: v.index_select(0, index) for k, v in self.extras.items()},
        )


def _as_float(x: Tensor | np.ndarray, what: str) -> Tensor:
    if isinstance(x, Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float32)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{what} is not numeric ({exc})") from None
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise DataError(f"{what} is not numeric (dtype {arr.dtype})")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype != torch.float32:
        t = t.float()
    return t


def _as_target(y: Tensor | np.ndarray, task: TaskSpec, source: str) -> Tensor:
    t = y if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    if task.kind == "regression":
        t = t.float()
        if t.dim() == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.dim() != 1:
            raise DataError(f"{source}: regression target has shape {tuple(t.shape)}; expected (N,)")
        return t
    if task.kind == "multilabel":
        if t.dim() != 2 or t.shape[1] != len(task.label_names):
            raise DataError(f"{source}: multilabel target has shape {tuple(t.shape)}; expected (N, {len(task.label_names)})")
        t = t.float()
        if not torch.isin(t, torch.tensor([0.0, 1.0])).all():
            raise DataError(f"{source}: multilabel target must hold only 0 and 1")
        return t
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            raise DataError(f"{source}: {task.kind} target must hold whole class numbers")
    t = t.long()
    if t.dim() != 1:
        raise DataError(f"{source}: {task.kind} target has shape {tuple(t.shape)}; expected (N,)")
    k = 2 if task.kind == "anomaly" else task.num_classes
    assert k is not None
    if t.numel() and (t.min() < 0 or t.max() >= k):
        raise DataError(f"{source}: labels out of range: found {int(t.min())}..{int(t.max())}, expected 0..{k - 1}")
    return t
