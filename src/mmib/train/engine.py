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
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmib.config import RunConfig, TrainConfig, dump_config
from mmib.data.dataset import Batch, MultimodalDataset
from mmib.errors import ConfigError, MMIBError, RunError
from mmib.eval.metrics import compute_metrics, default_monitor, metric_mode
from mmib.models.base import FitContext, MultimodalModel, Phase, Stage
from mmib.nn.cache import feature_caches
from mmib.train import rundir

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
PRECISIONS = ("fp32", "bf16", "fp16")


class TrainingDiverged(MMIBError):
    """The loss became NaN or infinite."""


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
    stopped: bool = False
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


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
    """

    def __init__(
        self,
        model: MultimodalModel,
        dataset: MultimodalDataset,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        run_config: RunConfig | None = None,
        epoch_callback: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        self.model = model
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
        if config.batch_size < 1 or config.epochs < 0 or config.patience < 1:
            raise ConfigError("batch_size and patience must be >= 1 and epochs >= 0")
        self.monitor = config.monitor or default_monitor(dataset.task)
        try:
            self.mode = metric_mode(self.monitor)
        except ConfigError as exc:
            raise ConfigError(f"monitor {self.monitor!r}: {exc}") from None
        self.has_valid = dataset.split_size("valid") > 0
        self._best_state: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ setup
    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        groups = [{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay} for g in stage.groups]
        return OPTIMIZERS[self.config.optimizer](groups)

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
            "format": "mmib-model",
            "version": 1,
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
        with feature_caches(self.model, len(self.dataset)):
            return self._fit(resume)

    def _fit(self, resume: bool) -> FitResult:
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
        model.on_fit_start(ctx)
        original_flags = {id(p): p.requires_grad for p in model.parameters()}
        anomaly = torch.autograd.detect_anomaly() if cfg.detect_anomaly else contextlib.nullcontext()
        progress = self._progress(plan)
        try:
            with anomaly:
                for pi, phase in enumerate(plan):
                    if pi < state.phase_index:
                        continue
                    n_epochs = phase.epochs if phase.epochs is not None else cfg.epochs
                    if state.phase_epoch == 0 and n_epochs > 0:
                        model.on_phase_start(phase.name, ctx)
                    while state.phase_epoch < n_epochs and not state.stopped:
                        self._epoch(model, phase, optimizers, scaler, generator, state, original_flags)
                        state.phase_epoch += 1
                        state.epoch += 1
                        self._after_epoch(model, phase, state, generator, optimizers, scaler, progress)
                    state.phase_index, state.phase_epoch, state.stopped = pi + 1, 0, False
        finally:
            for p in model.parameters():
                p.requires_grad_(original_flags.get(id(p), True))
            if progress is not None:
                progress.close()
        return self._finish(model, state)

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
                clip = stage.clip_grad if stage.clip_grad is not None else cfg.clip_grad
                if clip:
                    nn.utils.clip_grad_norm_(list(stage.parameters()), clip)
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
        for stage in phase.stages:  # the last step's gradients are not needed through evaluation and saving
            optimizers[(phase.name, stage.name)].zero_grad(set_to_none=True)
        if len(phase.stages) > 1 or not covers_all:
            for p in trainable:
                p.requires_grad_(True)
        train_terms = {k: float(v) / max(count, 1) for k, v in totals.items()}
        bad = [k for k, v in train_terms.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"training diverged in epoch {state.epoch + 1} ({phase.name}): non-finite {', '.join(bad)}; "
                "try a smaller lr, gradient clipping (--set clip_grad=1.0) or --set detect_anomaly=true"
            )
        state.train_seconds += time.perf_counter() - start
        state.history.append({"epoch": state.epoch + 1, "phase": phase.name, "seconds": time.perf_counter() - start,
                              "train": train_terms})

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
        scaler: Any, progress: Any,
    ) -> None:
        cfg = self.config
        row = state.history[-1]
        extra = model.on_epoch_end(state.epoch, phase.name)
        if extra:
            row["model"] = {k: float(v) for k, v in extra.items()}
        if self.has_valid:
            row["valid"] = evaluate(model, self.dataset, "valid", cfg.eval_batch_size, self.device, cfg.precision)
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
                self._save_best(model, state.epoch)
            else:
                state.bad_epochs += 1
                if state.bad_epochs >= cfg.patience:
                    state.stopped = True
        row["best_epoch"] = state.best_epoch
        if self.run_dir is not None:
            rundir.atomic_write_jsonl(self.run_dir / rundir.METRICS, state.history)
            if cfg.checkpoint:
                self._save_checkpoint(model, state, generator, optimizers, scaler)
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
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in (rundir.METRICS, rundir.RESULTS, rundir.CHECKPOINT, rundir.MODEL):
            (self.run_dir / name).unlink(missing_ok=True)
        if self.run_config is not None:
            rundir.atomic_write_text(self.run_dir / rundir.CONFIG, dump_config(self.run_config))

    def _save_best(self, model: MultimodalModel, epoch: int) -> None:
        if self.run_dir is not None:
            rundir.atomic_torch_save(self.run_dir / rundir.MODEL, self._model_payload(model.state_dict(), epoch))
            self._best_state = None
        else:
            self._best_state = _copy_state(model.state_dict(), self._best_state)

    def _save_checkpoint(
        self, model: MultimodalModel, state: _State, generator: torch.Generator, optimizers: dict, scaler: Any
    ) -> None:
        assert self.run_dir is not None
        payload = {
            "format": "mmib-checkpoint",
            "state": asdict(state),
            "model": model.state_dict(),
            "optimizers": {f"{p}/{s}": o.state_dict() for (p, s), o in optimizers.items()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": self._rng_state(generator),
            "standardizer": self.dataset.standardizer.state_dict() if self.dataset.standardizer else None,
        }
        rundir.atomic_torch_save(self.run_dir / rundir.CHECKPOINT, payload)

    def _load_checkpoint(self, generator: torch.Generator, optimizers: dict, scaler: Any) -> _State:
        if self.run_dir is None:
            raise RunError("--resume needs a run directory")
        path = self.run_dir / rundir.CHECKPOINT
        if not path.is_file():
            if (self.run_dir / rundir.RESULTS).is_file():
                raise RunError(f"{self.run_dir}: the run already finished (results.json exists); nothing to resume")
            raise RunError(f"{path}: no checkpoint to resume from")
        ck = rundir.torch_load(path)
        if not isinstance(ck, dict) or ck.get("format") != "mmib-checkpoint":
            raise RunError(f"{path}: not an mmib checkpoint")
        try:
            self.model.load_state_dict(ck["model"])
        except RuntimeError as exc:
            raise RunError(f"{path}: does not match this model ({str(exc).splitlines()[0]})") from None
        for key, opt in optimizers.items():
            saved = ck["optimizers"].get(f"{key[0]}/{key[1]}")
            if saved is not None:
                opt.load_state_dict(saved)
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        self._set_rng_state(ck["rng"], generator)
        return _State(**ck["state"])

    def _finish(self, model: MultimodalModel, state: _State) -> FitResult:
        cfg = self.config
        best_epoch = state.best_epoch or state.epoch
        if state.best_epoch:
            if self.run_dir is not None:
                payload = rundir.torch_load(self.run_dir / rundir.MODEL)
                model.load_state_dict(payload["state_dict"])
            elif self._best_state is not None:
                model.load_state_dict(self._best_state)
        elif self.run_dir is not None:
            rundir.atomic_torch_save(self.run_dir / rundir.MODEL, self._model_payload(model.state_dict(), best_epoch))
        valid = evaluate(model, self.dataset, "valid", cfg.eval_batch_size, self.device, cfg.precision) if self.has_valid else {}
        test: dict[str, float] = {}
        latency_ms = None
        if self.dataset.split_size("test"):
            start = time.perf_counter()
            test = evaluate(model, self.dataset, "test", cfg.eval_batch_size, self.device, cfg.precision)
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
            rundir.atomic_write_json(self.run_dir / rundir.RESULTS, results)
            (self.run_dir / rundir.CHECKPOINT).unlink(missing_ok=True)
        return FitResult(model, state.history, best_epoch, valid, test, self.monitor, state.train_seconds,
                         self.run_dir, results)

