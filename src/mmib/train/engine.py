"""The one training engine every model goes through.

:class:`Trainer` runs a model's :meth:`~mmib.models.base.MultimodalModel.training_plan`
(phases of epochs; stages per batch, or per epoch with ``Phase.stage_schedule="epoch"``,
each with its own optimizer over its own parameters), evaluates on the validation split after every epoch, stops early
on a monitored metric, restores the best epoch, evaluates on test and writes the
run directory. Everything it logs is a detached number; evaluation runs under
``torch.inference_mode()``; autograd anomaly detection only with
``TrainConfig.detect_anomaly``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmib.config import RunConfig, TrainConfig, dump_config, validate_train_config
from mmib.data.dataset import Batch, MultimodalDataset
from mmib.errors import ConfigError, MMIBError, RunError
from mmib.eval.metrics import compute_metrics, default_monitor, metric_mode
from mmib.models.base import FitContext, MultimodalModel, Phase, Stage
from mmib.nn.cache import feature_caches
from mmib.train import rundir

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}

#: devices and dtypes on which PyTorch's fused Adam/AdamW kernel runs
_FUSED_DEVICES = ("cpu", "cuda")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_options(kind: type[torch.optim.Optimizer], params: Sequence[Tensor]) -> dict[str, Any]:
    """``{"fused": True}`` for Adam/AdamW when every parameter is a dense floating-point tensor on
    CPU or CUDA, else ``{}`` (the optimizer's default implementation).

    Why: the default Adam on CPU loops over the parameters with about ten kernel calls each per
    step; the fused kernel is one call per step with the same update rule (it rounds differently
    by at most an ulp per step). A small run alone here takes 10-23% less wall time (sim-msa, 30
    epochs with its run directory: concat 2.66 -> 2.04 s, mmim 8.86 -> 7.98 s)."""
    if kind not in (torch.optim.Adam, torch.optim.AdamW):
        return {}
    if not params or any(p.device.type not in _FUSED_DEVICES or p.dtype not in _FUSED_DTYPES or p.is_sparse
                         for p in params):
        return {}
    return {"fused": True}


PRECISIONS = ("fp32", "bf16", "fp16")


class TrainingDiverged(MMIBError):
    """The loss became NaN or infinite, or grew (or the predictions grew) by orders of magnitude."""


#: A training loss this many times beyond the first epoch's (floored at 1) means divergence.
LOSS_EXPLOSION = 1e6
#: Regression predictions further than this many target ranges outside the training targets' range.
PREDICTION_EXPLOSION = 100.0
#: Classification logits beyond this magnitude (softmax saturates near 100).
LOGIT_EXPLOSION = 1e6
#: Training options that may change between a run's start and its resume (they do not change results).
RESUMABLE_CHANGES = ("train.progress", "train.threads", "train.eval_batch_size", "train.device",
                     "data.trust_pickle")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux/macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device (use cpu or cuda)") from None


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision context: bf16 autocast on CPU or CUDA, fp16 on CUDA only."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use bf16 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class Predictions:
    """Model outputs over one split, in split order."""

    prediction: Tensor
    y: Tensor | None
    index: Tensor
    representation: Tensor | None = None
    representations: dict[str, Tensor] = field(default_factory=dict)


def predict(
    model: MultimodalModel,
    dataset: MultimodalDataset,
    split: str,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    representations: bool = False,
) -> Predictions:
    """Run ``model`` over ``split`` without autograd and collect its outputs."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    preds, ys, idxs, reps = [], [], [], []
    named: dict[str, list[Tensor]] = {}
    with torch.inference_mode(), autocast_context(precision, device):
        for batch in dataset.batches(split, batch_size):
            out = model(batch.to(device))
            preds.append(out.prediction.float().cpu())
            idxs.append(batch.index)
            if batch.y is not None:
                ys.append(batch.y)
            if representations:
                if out.representation is not None:
                    reps.append(out.representation.float().cpu())
                for k, v in out.representations.items():
                    if v.dim() >= 1 and v.shape[0] == len(batch):
                        named.setdefault(k, []).append(v.float().cpu())
    model.train(was_training)
    if not preds:
        raise ConfigError(f"split {split!r} of {dataset.name} is empty")
    return Predictions(
        prediction=torch.cat(preds),
        y=torch.cat(ys) if ys else None,
        index=torch.cat(idxs),
        representation=torch.cat(reps) if reps else None,
        representations={k: torch.cat(v) for k, v in named.items()},
    )


def evaluate(
    model: MultimodalModel,
    dataset: MultimodalDataset,
    split: str = "test",
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> dict[str, float]:
    """Task metrics of ``model`` on ``split``."""
    p = predict(model, dataset, split, batch_size, device, precision)
    assert p.y is not None
    return compute_metrics(dataset.task, p.prediction, p.y)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    model: MultimodalModel
    history: list[dict]
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    monitor: str
    train_seconds: float
    run_dir: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    epoch: int = 0
    phase_index: int = 0
    phase_epoch: int = 0
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    steps: int = 0
    stopped: bool = False
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


@dataclass
class _Run:
    """A run between :meth:`Trainer._start` and :meth:`Trainer._finish`."""

    model: MultimodalModel
    plan: list[Phase]
    optimizers: dict[tuple[str, str], torch.optim.Optimizer]
    scaler: Any
    state: _State
    generator: torch.Generator
    context: FitContext
    original_flags: dict[int, bool]
    anomaly: contextlib.AbstractContextManager
    progress: Any = None


def _copy_state(state: dict[str, Tensor], previous: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """A detached copy of ``state``, written into ``previous``'s tensors where names and shapes match,
    so that keeping the best weights never holds two copies of a large model at once."""
    if previous is None or previous.keys() != state.keys():
        return {k: v.detach().clone() for k, v in state.items()}
    out = {}
    for k, v in state.items():
        old = previous[k]
        if old.shape == v.shape and old.dtype == v.dtype and old.device == v.device:
            out[k] = old.copy_(v.detach())
        else:
            out[k] = v.detach().clone()
    return out


class Trainer:
    """Train ``model`` on ``dataset`` under ``config``; optionally write ``run_dir``.

    ``run_config`` (the full data/model/train config) is written to the run
    directory so that the run can be reloaded and resumed. ``epoch_callback(epoch,
    row)``, if given, is called after every epoch with that epoch's metrics.jsonl row,
    once the row and the checkpoint are written; it may raise (e.g. to prune a sweep
    trial): the exception propagates out of :meth:`fit` and the run stays resumable.

    While it writes ``run_dir`` the trainer holds the directory's lock
    (:class:`~mmib.train.rundir.RunLock`): a second process on the same directory gets a
    RunError. A fresh start refuses a directory that holds a finished or unfinished run
    unless ``overwrite``. Per epoch it writes ``metrics.jsonl``, then the checkpoint, then
    (if the epoch is the best so far) the model file, so that a kill at any moment loses at
    most the running epoch (see :meth:`_load_checkpoint`).
    """

    def __init__(
        self,
        model: MultimodalModel,
        dataset: MultimodalDataset,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        run_config: RunConfig | None = None,
        epoch_callback: Callable[[int, dict[str, Any]], None] | None = None,
        overwrite: bool = True,
    ) -> None:
        self.model = model
        self.overwrite = overwrite
        self.epoch_callback = epoch_callback
        self.dataset = dataset
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_config = run_config
        self.device = resolve_device(config.device)
        if config.precision not in PRECISIONS:
            raise ConfigError(f"precision {config.precision!r}: choose one of {', '.join(PRECISIONS)}")
        autocast_context(config.precision, self.device)  # validates the precision/device pair
        if config.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {config.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        validate_train_config(config)
        self.warmup_steps = math.ceil(config.warmup_epochs * dataset.num_batches("train", config.batch_size))
        self.monitor = config.monitor or default_monitor(dataset.task)
        try:
            self.mode = metric_mode(self.monitor)
        except ConfigError as exc:
            raise ConfigError(f"monitor {self.monitor!r}: {exc}") from None
        self.has_valid = dataset.split_size("valid") > 0
        if not self.has_valid:
            warnings.warn(f"{dataset.name}: the validation split is empty, so no best epoch can be selected and "
                          "early stopping is off: the last epoch is kept", stacklevel=2)
        self._best_state: dict[str, Tensor] | None = None
        self._fingerprint: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup
    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        groups = [{"params": g.params, "lr": g.lr, "initial_lr": g.lr, "weight_decay": g.weight_decay}
                  for g in stage.groups]
        kind = OPTIMIZERS[self.config.optimizer]
        return kind(groups, **fused_options(kind, [p for g in stage.groups for p in g.params]))

    def clip_norm(self, stage: Stage) -> float | None:
        """The gradient-norm clip of ``stage``: its own, else the training config's (None: no clipping)."""
        return stage.clip_grad if stage.clip_grad is not None else self.config.clip_grad

    def _warm_up(self, opt: torch.optim.Optimizer, step: int) -> None:
        """Linear warm-up: the ``step``-th step (0-based) runs at ``(step + 1) / warmup_steps`` of each
        group's learning rate, then at the full rate."""
        if not self.warmup_steps or step > self.warmup_steps:
            return
        factor = min(1.0, (step + 1) / self.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def _rng_state(self, generator: torch.Generator) -> dict[str, Any]:
        state = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "shuffle": generator.get_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        generator.set_state(state["shuffle"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def _model_payload(self, state_dict: dict[str, Tensor], epoch: int) -> dict[str, Any]:
        st = self.dataset.standardizer
        return {
            "model": self.model.registry_name,
            "options": asdict(self.model.options),
            "spec": self.model.spec.to_dict(),
            "state_dict": state_dict,
            "standardizer": st.state_dict() if st is not None else None,
            "epoch": epoch,
            # how the training features were made from raw clips (`mmib extract`), for `mmib predict RUN CLIP`
            "extractor": self.dataset.meta.get("extractor"),
        }

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> FitResult:
        """Train, select the best epoch, evaluate on test; write the run dir if any.

        Frozen encoders that can (``uses_feature_cache``: a frozen BERT-type text encoder) get a
        per-sample feature cache for the run (:func:`mmib.nn.cache.feature_caches`)."""
        with feature_caches(self.model, len(self.dataset)), self.holding_run_dir(resume):
            return self._fit(resume)

    @contextlib.contextmanager
    def holding_run_dir(self, resume: bool = False) -> Any:
        """Everything that writes ``run_dir`` runs inside this: the folder is checked (writable, enough
        space) before training, its lock is held (a second process gets a RunError), and temporary
        files of killed writes are removed. A no-op without a run directory."""
        if self.run_dir is None:
            yield
            return
        if resume and not self.run_dir.is_dir():
            raise RunError(f"{self.run_dir}: no such run directory (no checkpoint to resume from)")
        rundir.prepare_dir(self.run_dir, self._bytes_needed())
        with rundir.RunLock(self.run_dir) as lock:
            if lock.note:
                warnings.warn(lock.note, stacklevel=3)
            rundir.remove_stale_temps(self.run_dir)
            yield

    def _bytes_needed(self) -> int:
        """Disk space a run directory needs: the weights (model file and checkpoint, each with its
        temporary copy), optimizer state of up to twice the weights, and some slack, less the files
        of this run that will be replaced."""
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        replaced = sum((self.run_dir / n).stat().st_size for n in (rundir.MODEL, rundir.CHECKPOINT)
                       if self.run_dir is not None and (self.run_dir / n).is_file())
        return max(6 * weights - replaced, 0) + 2**20

    def _fit(self, resume: bool) -> FitResult:
        run = self._start(resume)
        model, state = run.model, run.state
        try:
            with run.anomaly:
                for pi, phase in enumerate(run.plan):
                    if pi < state.phase_index:
                        continue
                    n_epochs = self.phase_epochs(phase)
                    if state.phase_epoch == 0 and n_epochs > 0:
                        model.on_phase_start(phase.name, run.context)
                    while state.phase_epoch < n_epochs and not state.stopped:
                        self._epoch(model, phase, run.optimizers, run.scaler, run.generator, state, run.original_flags)
                        state.phase_epoch += 1
                        state.epoch += 1
                        self._after_epoch(model, phase, state, run.generator, run.optimizers, run.scaler, run.progress)
                    state.phase_index, state.phase_epoch, state.stopped = pi + 1, 0, False
        finally:
            self._stop(run)
        return self._finish(model, state)

    def _start(self, resume: bool, progress: bool = True) -> _Run:
        """Everything before the first epoch: threads, seeds, the plan and its optimizers, the run
        directory (or the checkpoint to resume from) and ``on_fit_start``. The ensemble engine
        (:mod:`mmib.train.ensemble`) starts each member's run with this too."""
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        model = self.model.to(self.device)
        plan = model.training_plan(cfg)
        if not plan:
            raise ConfigError(f"model {model.registry_name!r} declared no training phases")
        optimizers = {(p.name, s.name): self._optimizer(s) for p in plan for s in p.stages}
        scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        state = _State()
        if resume:
            state = self._load_checkpoint(generator, optimizers, scaler)
        elif self.run_dir is not None:
            self._start_run_dir()
        ctx = FitContext(self.dataset, cfg, self.device, generator, self.run_dir)
        fit_start = time.perf_counter()
        model.on_fit_start(ctx)  # a closed-form model (linear) fits here: its time counts as training time
        state.train_seconds += time.perf_counter() - fit_start
        original_flags = {id(p): p.requires_grad for p in model.parameters()}
        anomaly = torch.autograd.detect_anomaly() if cfg.detect_anomaly else contextlib.nullcontext()
        return _Run(model, plan, optimizers, scaler, state, generator, ctx, original_flags, anomaly,
                    self._progress(plan) if progress else None)

    @staticmethod
    def _stop(run: _Run) -> None:
        """Undo what training changed on the model (requires_grad flags); close the progress bar."""
        for p in run.model.parameters():
            p.requires_grad_(run.original_flags.get(id(p), True))
        if run.progress is not None:
            run.progress.close()

    def phase_epochs(self, phase: Phase) -> int:
        """Epochs ``phase`` runs: its own count, or ``TrainConfig.epochs`` for an open-ended phase."""
        return phase.epochs if phase.epochs is not None else self.config.epochs

    def _progress(self, plan: list[Phase]) -> Any:
        if not self.config.progress:
            return None
        from tqdm.auto import tqdm

        total = sum(p.epochs if p.epochs is not None else self.config.epochs for p in plan)
        return tqdm(total=total, desc=f"{self.model.registry_name} on {self.dataset.name}", unit="epoch", leave=False)

    def _epoch(
        self, model: MultimodalModel, phase: Phase, optimizers: dict, scaler: Any, generator: torch.Generator,
        state: _State, original_flags: dict[int, bool],
    ) -> None:
        cfg = self.config
        model.train()
        trainable = [p for p in model.parameters() if original_flags.get(id(p), True)]
        stage_sets = [{id(p) for p in s.parameters()} for s in phase.stages]
        covers_all = len(phase.stages) == 1 and all(id(p) in stage_sets[0] for p in trainable)
        if len(phase.stages) == 1 and not covers_all:
            self._set_trainable(trainable, stage_sets[0])
        totals: dict[str, Tensor] = {}
        count = 0
        start = time.perf_counter()
        for stage_indices, batch, first_pass in self._stage_batches(phase, generator):
            batch = batch.to(self.device)
            n = len(batch)
            for si in stage_indices:
                stage = phase.stages[si]
                if len(phase.stages) > 1:
                    self._set_trainable(trainable, stage_sets[si])
                opt = optimizers[(phase.name, stage.name)]
                opt.zero_grad(set_to_none=True)
                with autocast_context(cfg.precision, self.device):
                    obj = model.objective(batch, phase.name, stage.name)
                if scaler is not None:
                    scaler.scale(obj.total).backward()
                    scaler.unscale_(opt)
                else:
                    obj.total.backward()
                clip = self.clip_norm(stage)
                if clip:
                    nn.utils.clip_grad_norm_(list(stage.parameters()), clip)
                self._warm_up(opt, state.steps)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                prefix = "" if len(phase.stages) == 1 else f"{stage.name}/"
                with torch.no_grad():
                    for k, v in {"loss": obj.total, **obj.terms}.items():
                        key = prefix + k
                        val = v.detach().float() * n
                        totals[key] = totals[key] + val if key in totals else val
            if first_pass:
                count += n
                state.steps += 1
        for stage in phase.stages:  # the last step's gradients are not needed through evaluation and saving
            optimizers[(phase.name, stage.name)].zero_grad(set_to_none=True)
        if len(phase.stages) > 1 or not covers_all:
            for p in trainable:
                p.requires_grad_(True)
        self._record_epoch(phase, state, totals, count, time.perf_counter() - start)

    def _record_epoch(self, phase: Phase, state: _State, totals: dict[str, Tensor], count: int, seconds: float) -> None:
        """Close a training epoch: mean loss terms per sample (``totals`` hold sums of term x batch
        size), the divergence checks (non-finite, exploded), the epoch's metrics.jsonl row and its seconds."""
        train_terms = {k: float(v) / max(count, 1) for k, v in totals.items()}
        bad = [k for k, v in train_terms.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"training diverged in epoch {state.epoch + 1} ({phase.name}): non-finite {', '.join(bad)}; "
                "try a smaller lr, gradient clipping (--set clip_grad=1.0) or --set detect_anomaly=true"
            )
        self._check_loss_growth(state, train_terms, phase.name)
        state.train_seconds += seconds
        state.history.append({"epoch": state.epoch + 1, "phase": phase.name, "seconds": seconds, "train": train_terms})

    def _check_loss_growth(self, state: _State, terms: dict[str, float], phase: str) -> None:
        """TrainingDiverged when a loss grew LOSS_EXPLOSION-fold beyond its value in the phase's first epoch
        (floored at 1): a finite explosion the NaN check does not see."""
        for key, value in terms.items():
            if key != "loss" and not key.endswith("/loss"):
                continue
            first = next((r["train"][key] for r in state.history
                          if r.get("phase") == phase and key in r.get("train", {})), None)
            if first is None:
                continue
            limit = LOSS_EXPLOSION * max(abs(first), 1.0)
            if abs(value) > limit:
                raise TrainingDiverged(
                    f"training diverged in epoch {state.epoch + 1} ({phase}): {key} {value:.3g} is more than "
                    f"{LOSS_EXPLOSION:.0e} times its first-epoch value {first:.3g}; try a smaller lr "
                    f"(now {self.config.lr:g}) or gradient clipping (--set clip_grad=1.0)"
                )

    def _final_metrics(self, model: MultimodalModel, split: str) -> dict[str, float]:
        """Metrics of the selected weights on ``split``, after checking the predictions did not explode."""
        cfg = self.config
        p = predict(model, self.dataset, split, cfg.eval_batch_size, self.device, cfg.precision)
        self._check_predictions(split, p)
        assert p.y is not None
        return compute_metrics(self.dataset.task, p.prediction, p.y)

    def _check_predictions(self, split: str, p: Predictions) -> None:
        """TrainingDiverged when predictions explode: regression outputs more than PREDICTION_EXPLOSION target
        ranges outside the training targets' range, or classification logits beyond LOGIT_EXPLOSION."""
        pred = p.prediction.float()
        hint = f"try a smaller lr (now {self.config.lr:g}) or gradient clipping (--set clip_grad=1.0)"
        if not torch.isfinite(pred).all():
            raise TrainingDiverged(f"training diverged: {int((~torch.isfinite(pred)).sum())} {split} predictions "
                                   f"are NaN/inf; {hint}")
        task = self.dataset.task
        if task.kind == "regression" and pred.numel():
            y = self.dataset.y.index_select(0, self.dataset.splits["train"]).float()
            low, high = float(y.min()), float(y.max())
            width = high - low if high > low else max(abs(high), 1.0)
            worst = float(torch.maximum(low - pred, pred - high).max())
            if worst > PREDICTION_EXPLOSION * width:
                extreme = float(pred[(pred - (low + high) / 2).abs().argmax()])
                raise TrainingDiverged(
                    f"training diverged: {split} predictions reach {extreme:.3g}, more than {PREDICTION_EXPLOSION:g} "
                    f"times the width of the training targets' range [{low:.3g}, {high:.3g}] outside it; {hint}"
                )
        elif task.kind in ("binary", "multiclass", "multilabel") and pred.numel():
            peak = float(pred.abs().max())
            if peak > LOGIT_EXPLOSION:
                raise TrainingDiverged(f"training diverged: {split} logits reach {peak:.3g} (beyond "
                                       f"{LOGIT_EXPLOSION:.0e}); {hint}")

    def _stage_batches(
        self, phase: Phase, generator: torch.Generator
    ) -> Iterator[tuple[list[int], Batch, bool]]:
        """``(stage indices, batch, first pass)`` in the order of ``phase.stage_schedule``: every stage
        on each batch (``"batch"``), or each stage over the whole shuffled split in turn (``"epoch"``)."""
        everyone = list(range(len(phase.stages)))
        size = self.config.batch_size
        if phase.stage_schedule == "epoch" and len(everyone) > 1:
            for si in everyone:
                for batch in self.dataset.batches("train", size, shuffle=True, generator=generator):
                    yield [si], batch, si == 0
        else:
            for batch in self.dataset.batches("train", size, shuffle=True, generator=generator):
                yield everyone, batch, True

    @staticmethod
    def _set_trainable(params: list[nn.Parameter], ids: set[int]) -> None:
        for p in params:
            p.requires_grad_(id(p) in ids)

    def _after_epoch(
        self, model: MultimodalModel, phase: Phase, state: _State, generator: torch.Generator, optimizers: dict,
        scaler: Any, progress: Any, valid: dict[str, float] | None = None,
    ) -> None:
        """Validation, model selection and early stopping, metrics.jsonl, the checkpoint, the callback.
        ``valid``: this epoch's validation metrics when the caller computed them already."""
        cfg = self.config
        row = state.history[-1]
        extra = model.on_epoch_end(state.epoch, phase.name)
        if extra:
            row["model"] = {k: float(v) for k, v in extra.items()}
        if self.has_valid:
            row["valid"] = valid if valid is not None else evaluate(
                model, self.dataset, "valid", cfg.eval_batch_size, self.device, cfg.precision)
        improved = False
        if phase.selects_best:
            value = row["valid"].get(self.monitor) if self.has_valid else None
            if self.has_valid and value is None:
                raise ConfigError(
                    f"monitor {self.monitor!r} is not a metric of this task; available: {', '.join(row['valid'])}"
                )
            improved = (
                value is None
                or (value is not None and math.isfinite(value) and (
                    state.best_value is None
                    or (value < state.best_value if self.mode == "min" else value > state.best_value)
                ))
            )
            if improved:
                state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
            else:
                state.bad_epochs += 1
                if state.bad_epochs >= cfg.patience:
                    state.stopped = True
        row["best_epoch"] = state.best_epoch
        # Order matters for kills (see _load_checkpoint): metrics, checkpoint, then the best weights.
        if self.run_dir is not None:
            rundir.atomic_write_jsonl(self.run_dir / rundir.METRICS, state.history)
            if cfg.checkpoint:
                self._save_checkpoint(model, state, generator, optimizers, scaler)
        if improved:
            self._save_best(model, state.epoch)
        if progress is not None:
            post = {"loss": f"{row['train'].get('loss', float('nan')):.4g}"}
            if "valid" in row and self.monitor in row["valid"]:
                post[self.monitor] = f"{row['valid'][self.monitor]:.4g}"
            progress.set_postfix(post, refresh=False)
            progress.update(1)
        if self.epoch_callback is not None:
            self.epoch_callback(state.epoch, dict(row))

    # ------------------------------------------------------------------ persistence
    def _start_run_dir(self) -> None:
        """A fresh start (under the lock): refuse an existing run unless overwriting, clear it, write config.yaml."""
        assert self.run_dir is not None
        d = self.run_dir
        if not self.overwrite:
            if (d / rundir.RESULTS).is_file():
                raise RunError(f"{d}: holds a finished run; pass --overwrite to replace it or choose another --out")
            if rundir.is_unfinished(d):
                raise RunError(f"{d}: holds an unfinished run; pass --resume to continue it or --overwrite")
        for name in (rundir.METRICS, rundir.RESULTS, rundir.CHECKPOINT, rundir.MODEL, *rundir.LEGACY_FILES):
            (d / name).unlink(missing_ok=True)
        if self.run_config is not None:
            rundir.atomic_write_text(d / rundir.CONFIG, dump_config(self.run_config))

    def _save_best(self, model: MultimodalModel, epoch: int) -> None:
        if self.run_dir is not None:
            rundir.write_state(self.run_dir / rundir.MODEL, rundir.MODEL_FORMAT,
                               self._model_payload(model.state_dict(), epoch))
            self._best_state = None
        else:
            self._best_state = _copy_state(model.state_dict(), self._best_state)

    def _save_checkpoint(
        self, model: MultimodalModel, state: _State, generator: torch.Generator, optimizers: dict, scaler: Any
    ) -> None:
        assert self.run_dir is not None
        payload = {
            # shallow (not dataclasses.asdict, which deep-copies the whole history every epoch):
            # the payload is serialised at once and never kept
            "state": {f.name: getattr(state, f.name) for f in fields(state)},
            "model": model.state_dict(),
            "optimizers": {f"{p}/{s}": o.state_dict() for (p, s), o in optimizers.items()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": self._rng_state(generator),
            "standardizer": self.dataset.standardizer.state_dict() if self.dataset.standardizer else None,
            "config": self.run_config.to_dict() if self.run_config is not None else None,
            "data": self._data_fingerprint(),
        }
        rundir.write_state(self.run_dir / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT, payload)

    def _load_checkpoint(self, generator: torch.Generator, optimizers: dict, scaler: Any) -> _State:
        """Restore the last completed epoch; check that the configuration and data are those the run started with.

        Because every epoch writes metrics, then the checkpoint, then the best weights, a kill can only leave
        a model file one step behind a checkpoint whose own epoch is the best: its weights are then written
        as the model file here. metrics.jsonl is rewritten from the checkpoint, so a row of an epoch the kill
        interrupted disappears and the resumed run writes it again."""
        if self.run_dir is None:
            raise RunError("--resume needs a run directory")
        path = self.run_dir / rundir.CHECKPOINT
        if not path.is_file():
            if (self.run_dir / rundir.LEGACY_CHECKPOINT).is_file():
                raise rundir.legacy_error(self.run_dir, rundir.LEGACY_CHECKPOINT)
            if (self.run_dir / rundir.RESULTS).is_file():
                raise RunError(f"{self.run_dir}: the run already finished (results.json exists); nothing to resume")
            raise RunError(f"{path}: no checkpoint to resume from")
        ck = rundir.read_state(path, rundir.CHECKPOINT_FORMAT, "mmib checkpoint")
        rundir.require_keys(ck, ("state", "model", "optimizers", "rng"), path, "mmib checkpoint")
        self._check_same_run(ck, path)
        try:
            self.model.load_state_dict(ck["model"])
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise RunError(f"{path}: does not match this model ({str(exc).splitlines()[0]})") from None
        saved_opts = ck["optimizers"] if isinstance(ck["optimizers"], dict) else {}
        for key, opt in optimizers.items():
            name = f"{key[0]}/{key[1]}"
            if saved_opts.get(name) is None:
                raise RunError(f"{path}: has no optimizer state for stage {name!r} (not a complete mmib checkpoint)")
            try:
                opt.load_state_dict(saved_opts[name])
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise RunError(f"{path}: optimizer state of stage {name!r} does not match this model ({exc})") from None
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        try:
            self._set_rng_state(ck["rng"], generator)
            state = _State(**ck["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RunError(f"{path}: malformed training state ({type(exc).__name__}: {exc})") from None
        rundir.atomic_write_jsonl(self.run_dir / rundir.METRICS, state.history)
        model_file = self.run_dir / rundir.MODEL
        if state.best_epoch:
            saved_epoch = None
            if model_file.is_file():
                saved_epoch = rundir.read_state_header(model_file, rundir.MODEL_FORMAT, "mmib model file").get("epoch")
            if saved_epoch != state.best_epoch:
                if state.best_epoch != state.epoch:
                    raise RunError(f"{model_file}: holds epoch {saved_epoch}, not the best epoch {state.best_epoch} "
                                   "the checkpoint records; the run cannot be resumed consistently")
                self._save_best(self.model, state.epoch)  # killed between the checkpoint and the model write
        return state

    def _data_fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(self.dataset)
        return dict(self._fingerprint)

    def _check_same_run(self, ck: dict[str, Any], path: Path) -> None:
        """RunError unless the configuration and the data are those the checkpoint was written with."""
        saved, now = ck.get("config"), self.run_config.to_dict() if self.run_config is not None else None
        if isinstance(saved, dict) and now is not None:
            a, b = _flatten(saved), _flatten(now)
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]
            if diff:
                k = diff[0]
                raise RunError(
                    f"{self.run_dir / rundir.CONFIG}: differs from the configuration the run started with "
                    f"({', '.join(diff[:4])}{', ...' if len(diff) > 4 else ''}; {k} was {a.get(k)!r}, now {b.get(k)!r}); "
                    "a resumed run continues as it started: restore the file, or start a new run"
                )
        saved_data = ck.get("data")
        if isinstance(saved_data, dict):
            current = self._data_fingerprint()
            if saved_data != current:
                what = next((k for k in current if saved_data.get(k) != current[k]), "digest")
                raise RunError(
                    f"{path}: the run started on other data ({what} differs: {_short(saved_data.get(what))} then, "
                    f"{_short(current[what])} now); resume it on the data it started with"
                )

    def _finish(self, model: MultimodalModel, state: _State) -> FitResult:
        cfg = self.config
        best_epoch = state.best_epoch or state.epoch
        if state.best_epoch:
            if self.run_dir is not None:
                path = self.run_dir / rundir.MODEL
                payload = rundir.read_state(path, rundir.MODEL_FORMAT, "mmib model file")
                if payload.get("epoch") != state.best_epoch:
                    raise RunError(f"{path}: holds epoch {payload.get('epoch')}, not the best epoch {state.best_epoch}")
                model.load_state_dict(payload["state_dict"])
            elif self._best_state is not None:
                model.load_state_dict(self._best_state)
        elif self.run_dir is not None:
            rundir.write_state(self.run_dir / rundir.MODEL, rundir.MODEL_FORMAT,
                               self._model_payload(model.state_dict(), best_epoch))
        valid = self._final_metrics(model, "valid") if self.has_valid else {}
        test: dict[str, float] = {}
        latency_ms = None
        if self.dataset.split_size("test"):
            start = time.perf_counter()
            test = self._final_metrics(model, "test")
            latency_ms = 1000 * (time.perf_counter() - start) / self.dataset.split_size("test")
        results = {
            "model": model.registry_name,
            "dataset": self.dataset.name,
            "task": self.dataset.task.kind,
            "monitor": self.monitor,
            "best_epoch": best_epoch,
            "epochs_run": state.epoch,
            "train_seconds": state.train_seconds,
            "seconds_per_epoch": state.train_seconds / max(state.epoch, 1),
            "params": model.num_parameters(),
            "trainable_params": model.num_parameters(trainable_only=True),
            "inference_ms_per_sample": latency_ms,
            "peak_rss_mb": peak_rss_mb(),
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None,
            "seed": cfg.seed,
            "valid": valid,
            "test": test,
        }
        if self.run_dir is not None:
            if not state.history:  # a run of zero epochs (a closed-form model) still has its metrics file
                rundir.atomic_write_jsonl(self.run_dir / rundir.METRICS, state.history)
            rundir.atomic_write_json(self.run_dir / rundir.RESULTS, results)
            (self.run_dir / rundir.CHECKPOINT).unlink(missing_ok=True)
        return FitResult(model, state.history, best_epoch, valid, test, self.monitor, state.train_seconds,
                         self.run_dir, results)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def data_fingerprint(dataset: MultimodalDataset) -> dict[str, Any]:
    """What identifies a run's data: sample and split counts, the spec, and a digest of the targets, the
    split indices, the lengths and up to 256 evenly spaced rows of every modality."""
    h = hashlib.blake2b(digest_size=16)
    n = len(dataset)
    rows = torch.unique(torch.linspace(0, max(n - 1, 0), min(n, 256)).round().long()) if n else torch.zeros(0, dtype=torch.long)
    h.update(dataset.y.contiguous().numpy().tobytes())
    for name in sorted(dataset.splits):
        h.update(name.encode())
        h.update(dataset.splits[name].contiguous().numpy().tobytes())
    for name in sorted(dataset.features):
        h.update(name.encode())
        h.update(dataset.features[name].index_select(0, rows).contiguous().numpy().tobytes())
        if name in dataset.lengths:
            h.update(dataset.lengths[name].contiguous().numpy().tobytes())
    return {
        "samples": n,
        "splits": {s: dataset.split_size(s) for s in sorted(dataset.splits)},
        "spec": json.loads(json.dumps(dataset.spec.to_dict())),
        "digest": h.hexdigest(),
    }

