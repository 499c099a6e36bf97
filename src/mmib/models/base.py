"""The contract between models and the training engine.

A model is an ``nn.Module`` built from a :class:`~mmib.data.dataset.DatasetSpec`
and an options dataclass. It

* maps a :class:`~mmib.data.dataset.Batch` to a :class:`ModelOutput`
  (``forward``: predictions and named representations, used at evaluation);
* computes its named loss terms for a phase and stage (``objective``), returning
  an :class:`Objective` whose ``total`` the engine back-propagates;
* declares how it is trained (``training_plan``): a list of :class:`Phase`, each
  with one or more :class:`Stage` that update given parameter groups.

It never owns an optimizer and never calls ``backward``. State a model carries
across batches or epochs (memories, running labels) lives in buffers or
``get_extra_state`` so that checkpoints and ``--resume`` restore it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmib.data.dataset import Batch, DatasetSpec, TaskSpec

if TYPE_CHECKING:
    from mmib.config import TrainConfig
    from mmib.data.dataset import MultimodalDataset


@dataclass
class ModelOutput:
    """What a forward pass returns.

    ``prediction``: regression ``(B,)``; binary/multiclass ``(B, C)`` logits;
    multilabel ``(B, L)`` logits; anomaly ``(B,)`` scores (higher = more anomalous).
    ``representation``: the learned joint representation (probes and t-SNE read it).
    ``representations``: further named tensors (per-modality codes, scores, ...).
    """

    prediction: Tensor
    representation: Tensor | None = None
    representations: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Objective:
    """A stage's loss: ``total`` to minimise and its named terms for logging."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ParamGroup:
    """Parameters updated together with one learning rate and weight decay."""

    params: list[nn.Parameter]
    lr: float
    weight_decay: float = 0.0
    name: str = "main"


@dataclass
class Stage:
    """One optimiser step per batch over ``groups``; parameters outside it stay frozen."""

    name: str
    groups: list[ParamGroup]
    clip_grad: float | None = None

    def parameters(self) -> Iterator[nn.Parameter]:
        for g in self.groups:
            yield from g.params


#: How a phase with several stages interleaves them (:attr:`Phase.stage_schedule`).
STAGE_SCHEDULES = ("batch", "epoch")


@dataclass
class Phase:
    """A run of epochs with the same stages.

    ``epochs=None`` makes the phase open-ended: it runs ``TrainConfig.epochs``
    epochs with early stopping. Fixed-length phases (a warm-up) run exactly
    ``epochs`` and never select the best checkpoint unless ``select_best``.

    ``stage_schedule`` says how several stages share an epoch: ``"batch"`` (default)
    runs every stage on each batch in turn; ``"epoch"`` lets each stage sweep the
    whole training split (its own shuffle) before the next one starts, as MMIM's
    reference code alternates its two stages. Either way one epoch is one pass of
    every stage, followed by one validation.
    """

    name: str
    stages: list[Stage]
    epochs: int | None = None
    select_best: bool | None = None
    stage_schedule: str = "batch"

    def __post_init__(self) -> None:
        if self.stage_schedule not in STAGE_SCHEDULES:
            from mmib.errors import ConfigError

            raise ConfigError(
                f"phase {self.name!r}: stage_schedule {self.stage_schedule!r} is not one of {', '.join(STAGE_SCHEDULES)}"
            )

    @property
    def selects_best(self) -> bool:
        return self.epochs is None if self.select_best is None else self.select_best


@dataclass
class FitContext:
    """What hooks may use: the dataset, the training config, the device and the run
    directory (None when the run writes none; a model may put its own files there)."""

    dataset: "MultimodalDataset"
    config: "TrainConfig"
    device: torch.device
    generator: torch.Generator
    run_dir: Path | None = None


class MultimodalModel(nn.Module):
    """Base class of registered models. Subclasses set ``Options`` and implement ``forward``."""

    registry_name: ClassVar[str] = ""
    Options: ClassVar[type] = object
    #: Why this model cannot be trained as a vectorised ensemble of runs (:mod:`mmib.train.ensemble`),
    #: or None when its modules and objective run under ``torch.func.vmap`` and it keeps no state
    #: across batches (a memory, generated labels) that the engine cannot stack.
    ensemble_unsupported: ClassVar[str | None] = None
    #: Options that may differ between the members of one ensemble: ``objective`` reads them from
    #: ``self.options`` on every call and uses them only in arithmetic, so a per-member number can
    #: stand in for each (``beta`` of the MIB family). Every other option must agree.
    ensemble_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: DatasetSpec, options: Any) -> None:
        super().__init__()
        self.spec = spec
        self.task: TaskSpec = spec.task
        self.options = options

    # --------------------------------------------------------------- inference
    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    # --------------------------------------------------------------- training
    def objective(self, batch: Batch, phase: str, stage: str) -> Objective:
        """Default: the task loss of ``forward``'s prediction."""
        out = self.forward(batch)
        assert batch.y is not None
        loss = task_loss(self.task, out.prediction, batch.y, getattr(self.options, "regression_loss", "l1"))
        return Objective(loss, {"task": loss})

    def training_plan(self, config: "TrainConfig") -> list[Phase]:
        """Default: one open-ended phase with one stage over all parameters."""
        return [Phase("main", [Stage("main", self.param_groups(self.parameters(), config), config.clip_grad)])]

    def param_groups(self, params: Iterable[nn.Parameter], config: "TrainConfig") -> list[ParamGroup]:
        """Split ``params`` into the main group (``config.lr``) and a pretrained-text group
        (``config.text_lr``): parameters of any submodule flagged ``pretrained_text = True``, except
        those inside a submodule of it flagged ``pretrained_text = False`` (e.g. a new projection)."""
        text_ids = {id(p) for m in self.modules() if getattr(m, "pretrained_text", None) is True for p in m.parameters()}
        text_ids -= {id(p) for m in self.modules() if getattr(m, "pretrained_text", None) is False for p in m.parameters()}
        main, text = [], []
        for p in params:
            if not p.requires_grad:
                continue
            (text if id(p) in text_ids else main).append(p)
        groups = [ParamGroup(main, config.lr, config.weight_decay, "main")]
        if text:
            groups.append(ParamGroup(text, config.text_lr, config.weight_decay, "text"))
        return [g for g in groups if g.params]

    # --------------------------------------------------------------- hooks
    def on_fit_start(self, context: FitContext) -> None:
        """Called once at the start of every ``fit``, resumed ones included (after the checkpoint is loaded)."""

    def on_phase_start(self, phase: str, context: FitContext) -> None:
        """Called once before the first epoch of each phase (not again on resume)."""

    def on_epoch_end(self, epoch: int, phase: str) -> dict[str, float]:
        """Called after each training epoch; returned values are logged in metrics.jsonl."""
        return {}

    # --------------------------------------------------------------- helpers
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def make_head(in_dim: int, task: TaskSpec, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
    """A prediction head for ``task``: linear, or one hidden ReLU layer when ``hidden``."""
    if hidden:
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, task.output_dim))
    return nn.Linear(in_dim, task.output_dim)


def head_output(task: TaskSpec, raw: Tensor) -> Tensor:
    """Shape a head's raw ``(B, out)`` output as a prediction (regression/anomaly -> ``(B,)``)."""
    if task.kind in ("regression", "anomaly"):
        return raw.squeeze(-1)
    return raw


def task_loss(task: TaskSpec, prediction: Tensor, y: Tensor, regression_loss: str = "l1") -> Tensor:
    """Supervised loss: L1 (MSA convention; or ``mse``) for regression, cross-entropy for
    classes, binary cross-entropy per label for multi-label."""
    if task.kind == "regression":
        if regression_loss == "mse":
            return F.mse_loss(prediction, y)
        return F.l1_loss(prediction, y)
    if task.kind in ("binary", "multiclass"):
        return F.cross_entropy(prediction, y)
    if task.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(prediction, y)
    raise ValueError(f"task {task.kind!r} has no supervised loss; the model must define its own objective")


def mean_of(values: Sequence[Tensor]) -> Tensor:
    return torch.stack(list(values)).mean()
