"""Runs trained together: K runs of one network as one vectorised ensemble in one process.

Many small runs (seeds, data seeds, tuning trials) of a network of 0.1-1 M parameters spend
most of their time on per-step and per-run overhead, not arithmetic. :class:`EnsembleTrainer`
trains K such runs at once: their parameters are stacked into one tensor per parameter name
(:func:`torch.func.stack_module_state` in spirit; here each member's own parameters are views
of the stacked tensors, see below), and every training step is one
``torch.func.vmap(functional_call(model.objective), randomness="different")`` over the members,
each reading its own batch, with one backward pass over the sum of the members' losses (the
gradient of a sum is each member's own gradient, exactly).

What stays per member, exactly as :class:`~mmib.train.engine.Trainer` does it for a run alone
(each member *is* a ``Trainer``; only the forward/backward of the training step is shared):

* the initial weights (the caller builds each member's model after seeding it with its seed);
* the data order (its own shuffle generator seeded with its seed, read through
  :meth:`~mmib.data.dataset.MultimodalDataset.batches`; members may even have datasets of
  their own, e.g. other data seeds, when the shapes agree);
* the optimiser: each member keeps its own ``torch.optim`` optimizer over its own parameters
  (so its own lr, weight decay, gradient clipping), stepped on its slice of the gradient; when
  every member's optimizer is the same fused Adam/AdamW at the same learning rate and step count,
  one kernel call over the stacked tensors does all their steps at once (:class:`_GroupedAdam`,
  bit-identical to stepping each, since Adam's rule is elementwise);
* validation after every epoch (when the members validate alike, their eval-mode forwards run
  as one vmapped forward too, :class:`_Validation`, and each member's metrics are computed from
  its own predictions; otherwise each evaluates alone), the monitor, early stopping and
  patience, best-epoch saving and restore, metrics.jsonl, results.json and checkpoint.pt
  through the Trainer's own methods, so each member's run directory is an ordinary run
  directory; a member that stops leaves the ensemble and no longer affects the others;
* model options a model class declares per-member-able (``ensemble_options``: ``beta`` of the
  MIB family) may differ between members.

What differs from runs trained alone: the random draws inside the model (dropout masks, the
bottleneck's noise) come from one generator for the whole ensemble, seeded from the members'
seeds; every member gets its own draws (``randomness="different"``), but not the numbers its
run alone would draw. Dropout masks have the same distribution as ``nn.Dropout``'s but are drawn
by comparing a uniform draw with ``p`` (:class:`_EnsembleDropout`, twice as fast under vmap).
Batched matrix products round differently from unbatched ones, so even without randomness a
member matches its run alone to float rounding (about 1e-7 relative per step), not bit for bit.
A member's ``seconds`` per epoch (and ``train_seconds``) is its share of the ensemble's epoch:
the epoch's wall time divided by the members that trained in it.

Storage: during an epoch each member's parameters and buffers are views of slices of the
stacked tensors (so the member's optimizer updates the stacked tensors in place, without a
copy); around the Trainer's bookkeeping each member gets tensors of its own again, so nothing
it saves shares storage with the other members. Two-dimensional parameters are stacked
transposed in memory, which is the layout the batched weight gradient comes in (no copy).

Support (:func:`why_not_together`): one phase with one stage, fp32, no training hooks, no
feature cache, the same parameter shapes, batch size, device and training-split size in every
member, and a model class that does not declare ``ensemble_unsupported``; then a trial step on
one batch under vmap decides (an LSTM over packed sequences fails there). Unsupported members
train one at a time (:func:`train_members` says why in one line).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.adam import adam as adam_step

from mmib.config import RunConfig, TrainConfig
from mmib.data.dataset import Batch, MultimodalDataset
from mmib.errors import MMIBError
from mmib.models.base import MultimodalModel, Phase, Stage
from mmib.train.engine import FitResult, Trainer, _Run, fused_options, seed_everything

Log = Callable[[str], None]

#: Training options that may differ between the members of one ensemble (each member's own
#: Trainer and optimizer use them); every other option must agree.
PER_MEMBER_TRAIN_OPTIONS = (
    "seed", "lr", "text_lr", "weight_decay", "optimizer", "clip_grad", "patience", "epochs", "monitor",
    "eval_batch_size", "progress", "checkpoint", "warmup_epochs",
)
_HOOKS = ("on_fit_start", "on_phase_start", "on_epoch_end")
#: PyTorch's warning when an operator has no vmap batching rule (vmap then loops over the members)
_NO_BATCH_RULE = re.compile(r"batching rule for (\S+?)\.? ")


@dataclass
class Member:
    """One run of an ensemble: what :class:`~mmib.train.engine.Trainer` takes for a run alone.

    ``model`` must have been built right after ``seed_everything(config.seed)`` (as
    :func:`mmib.api.train` does), so that its initial weights are those of the run alone.
    """

    model: MultimodalModel
    dataset: MultimodalDataset
    config: TrainConfig
    run_dir: str | Path | None = None
    run_config: RunConfig | None = None
    epoch_callback: Callable[[int, dict[str, Any]], None] | None = None
    resume: bool = False

    def trainer(self) -> Trainer:
        return Trainer(self.model, self.dataset, self.config, self.run_dir, self.run_config, self.epoch_callback)


def ensemble_seed(seeds: Sequence[int]) -> int:
    """The seed of an ensemble's shared generator (dropout, sampling): a hash of its members' seeds."""
    digest = hashlib.blake2b(repr([int(s) for s in seeds]).encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big")


class EnsembleUnsupported(MMIBError):
    """Runs asked to train together cannot (the message says why); raised only when the caller
    asked for no fallback (:func:`train_members` with ``fallback=False``)."""


# ----------------------------------------------------------------------------- support
def class_unsupported(model_class: type[MultimodalModel], config: TrainConfig) -> str | None:
    """What can be told from a model class and training config alone (no data, no instance):
    why its runs cannot train together, or None if they may (the instance checks come later)."""
    name = model_class.registry_name or model_class.__name__
    if model_class.ensemble_unsupported:
        return f"{name}: {model_class.ensemble_unsupported}"
    hooks = [h for h in _HOOKS if getattr(model_class, h) is not getattr(MultimodalModel, h)]
    if hooks:
        return f"{name}: it has training hooks ({', '.join(hooks)}) that act on one run's state"
    if config.precision != "fp32":
        return f"precision {config.precision} (ensembles train in fp32)"
    if config.detect_anomaly:
        return "detect_anomaly is on"
    return None


def model_unsupported(model: MultimodalModel, config: TrainConfig) -> str | None:
    """Why ``model`` under ``config`` cannot be an ensemble member (a short reason), or None."""
    name = model.registry_name or type(model).__name__
    reason = class_unsupported(type(model), config)
    if reason:
        return reason
    if any(getattr(m, "uses_feature_cache", False) for m in model.modules()):
        return f"{name}: a frozen text encoder with a per-run feature cache"
    plan = model.training_plan(config)
    if len(plan) != 1 or len(plan[0].stages) != 1 or plan[0].epochs is not None:
        return f"{name}: its training plan has {len(plan)} phase(s) / {sum(len(p.stages) for p in plan)} stage(s); " \
               "ensembles train one open-ended phase with one stage"
    return None


def _options_differ(a: Any, b: Any, allowed: Sequence[str]) -> list[str]:
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [k for k in da if k not in allowed and da[k] != db.get(k)]


def why_not_together(members: Sequence[Member]) -> str | None:
    """Why these members cannot train as one ensemble (one line), or None if they can (before the trial step)."""
    if not members:
        return "no members"
    first = members[0]
    for m in members:
        reason = model_unsupported(m.model, m.config)
        if reason:
            return reason
    ref_model, ref_cfg, ref_ds = first.model, first.config, first.dataset
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in ref_model.state_dict().items()}
    for m in members[1:]:
        if type(m.model) is not type(ref_model):
            return f"members are different models ({ref_model.registry_name}, {m.model.registry_name})"
        diff = _options_differ(ref_model.options, m.model.options, type(ref_model).ensemble_options)
        if diff:
            return f"model options differ between members ({', '.join(diff)})"
        if {k: (tuple(v.shape), v.dtype) for k, v in m.model.state_dict().items()} != shapes:
            return "members' parameters differ in shape"
        diff = _options_differ(ref_cfg, m.config, PER_MEMBER_TRAIN_OPTIONS)
        if diff:
            return f"training options differ between members ({', '.join(diff)})"
        if m.dataset.spec.to_dict() != ref_ds.spec.to_dict():
            return "members' datasets have different modalities or tasks"
        if m.dataset.split_size("train") != ref_ds.split_size("train"):
            return "members' training splits differ in size"
    seen: set[str] = set()
    for m in members:
        if m.run_dir is not None:
            key = str(Path(m.run_dir).resolve())
            if key in seen:
                return f"two members write the same run directory {m.run_dir}"
            seen.add(key)
    return None


# ----------------------------------------------------------------------------- stacking
class _ObjectiveCall(nn.Module):
    """``model.objective`` as a module call (what ``functional_call`` runs)."""

    def __init__(self, model: MultimodalModel, phase: str, stage: str) -> None:
        super().__init__()
        self.model = model
        self.phase, self.stage = phase, stage

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        obj = self.model.objective(batch, self.phase, self.stage)
        return obj.total, obj.terms


def _stacked_empty(t: Tensor, k: int) -> Tensor:
    """An uninitialised ``(k, *t.shape)`` tensor; matrices are stored transposed per member, the
    layout in which vmap's batched matrix products return their weight gradients."""
    if t.dim() == 2:
        return torch.empty(k, t.shape[1], t.shape[0], dtype=t.dtype, device=t.device).transpose(1, 2)
    return torch.empty(k, *t.shape, dtype=t.dtype, device=t.device)


class _Stack:
    """The members' parameters and buffers as stacked tensors; each member's own tensors are
    views of its slice while the stack is bound (:meth:`release` gives them storage of their own)."""

    def __init__(self, models: Sequence[nn.Module], trained: set[str]) -> None:
        self.models = list(models)
        k = len(self.models)
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        #: per member: (its parameter, the stacked tensor) for the parameters it trains
        self.pairs: list[list[tuple[nn.Parameter, Tensor]]] = [[] for _ in range(k)]
        named = [dict(m.named_parameters()) for m in self.models]
        for name, p0 in named[0].items():
            stacked = _stacked_empty(p0.detach(), k)
            with torch.no_grad():
                for i in range(k):
                    stacked[i].copy_(named[i][name])
            stacked.requires_grad_(name in trained)
            self.params[f"model.{name}"] = stacked
            for i in range(k):
                named[i][name].data = stacked.detach()[i]
                if name in trained:
                    self.pairs[i].append((named[i][name], stacked))
        bufs = [dict(m.named_buffers()) for m in self.models]
        for name, b0 in bufs[0].items():
            stacked = torch.stack([b[name].detach() for b in bufs])
            self.buffers[f"model.{name}"] = stacked
            for i in range(k):
                _set_tensor(self.models[i], name, stacked[i])

    def grads_to_members(self) -> None:
        """Give each member's parameters their slice of the stacked gradients (views, no copy)."""
        for i, pairs in enumerate(self.pairs):
            for p, stacked in pairs:
                p.grad = None if stacked.grad is None else stacked.grad[i]

    def zero_grad(self) -> None:
        for t in self.params.values():
            t.grad = None

    def release(self) -> None:
        """Give every member contiguous tensors of its own (same values); the stack is unusable after."""
        for i, model in enumerate(self.models):
            for p in model.parameters():
                p.grad = None
                p.data = p.data.clone(memory_format=torch.contiguous_format)
            for name, b in list(model.named_buffers()):
                _set_tensor(model, name, b.clone(memory_format=torch.contiguous_format))
        self.models, self.pairs, self.params, self.buffers = [], [], {}, {}


def _set_tensor(model: nn.Module, name: str, value: Tensor) -> None:
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    mod._buffers[attr] = value


def _parts_of(batch: Batch) -> dict[str, Any]:
    """One batch as the pytree the vmapped functions take (:meth:`_Step.member_call` rebuilds it)."""
    return {"features": batch.features, "lengths": batch.lengths, "y": batch.y, "index": batch.index,
            "extras": batch.extras}


def _stack_batches(batches: Sequence[Batch]) -> dict[str, Any]:
    """The members' batches as one pytree with a leading member dimension."""
    first = batches[0]
    n = len(first)
    if any(len(b) != n for b in batches):
        raise RuntimeError("members' batches differ in size")
    return {
        "features": {k: torch.stack([b.features[k] for b in batches]) for k in first.features},
        "lengths": {k: torch.stack([b.lengths[k] for b in batches]) for k in first.lengths},
        "y": torch.stack([b.y for b in batches]) if first.y is not None else None,
        "index": torch.stack([b.index for b in batches]),
        "extras": {k: torch.stack([b.extras[k] for b in batches]) for k in first.extras},
    }


class _EnsembleDropout(nn.Module):
    """``nn.Dropout`` as the ensemble draws it: the same Bernoulli(1 - p) mask scaled by
    1 / (1 - p), from one uniform draw per element compared with ``p``. Under vmap this is about
    twice as fast on CPU as ``torch.nn.functional.dropout`` (whose batched Bernoulli draw
    dominates the forward of a small network); the members' masks are their own either way
    (``randomness="different"``), and neither matches the numbers a run alone draws."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        # the boolean mask multiplies directly (no float copy of it): under vmap about 30% less time
        # than ``x * (keep.to(x.dtype) * scale)`` at the sizes of the built-in models, and the same bits
        # (each kept element is x * scale either way). An in-place comparison (``ge_``) would be faster
        # still outside vmap, but has no batching rule.
        keep = torch.rand_like(x) >= self.p
        return (x * (1.0 / (1.0 - self.p))) * keep


def _shares_tensors(module: nn.Module) -> bool:
    """Whether a parameter or buffer of ``module`` is reachable under two names (tied weights).

    ``functional_call`` unties such names on every call (a walk over the whole module tree, about
    3% of a small ensemble's step); a module without ties can skip it with the same result."""
    seen: set[int] = set()
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for _, tensor in named:
        if id(tensor) in seen:
            return True
        seen.add(id(tensor))
    return False


def _with_ensemble_dropout(model: nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` submodule of ``model`` (not subclasses, which may draw
    otherwise) by :class:`_EnsembleDropout` with its ``p``; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                swapped = _EnsembleDropout(child.p)
                swapped.train(child.training)
                setattr(parent, child_name, swapped)
                replaced += 1
    return replaced


class _Step:
    """The vmapped training step of an ensemble over one phase and stage (on ``template``, a copy
    of the first member whose dropout layers are :class:`_EnsembleDropout`)."""

    def __init__(self, template: MultimodalModel, phase: str, stage: str) -> None:
        _with_ensemble_dropout(template)
        self.template = template
        self.call = _ObjectiveCall(template, phase, stage)
        self.base_options = template.options
        #: whether functional_call must untie shared names (see :func:`_shares_tensors`)
        self.tie_weights = _shares_tensors(template)

        def loss(params: dict[str, Tensor], buffers: dict[str, Tensor], parts: dict[str, Any],
                 option_values: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            return self.member_call(self.call, params, buffers, parts, option_values)

        self.vmapped = torch.func.vmap(loss, randomness="different")

    def member_call(self, call: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor],
                    parts: dict[str, Any], option_values: dict[str, Tensor]) -> Any:
        """``call`` (a module wrapping the template) on one member's parameters, buffers, batch
        parts and per-member option values: what the vmapped functions run for each member."""
        batch = Batch(parts["features"], parts["lengths"], parts["y"], parts["index"], parts["extras"])
        if option_values:
            self.template.options = dataclasses.replace(self.base_options, **option_values)
        try:
            return torch.func.functional_call(call, (params, buffers), (batch,), tie_weights=self.tie_weights)
        finally:
            self.template.options = self.base_options

    def __call__(self, stack: _Stack, parts: dict[str, Any], option_values: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        return self.vmapped(stack.params, stack.buffers, parts, option_values)


class _PredictionCall(nn.Module):
    """``model(batch).prediction`` as a module call, under the same parameter names as
    :class:`_ObjectiveCall` (so the stacked tensors bind to both)."""

    def __init__(self, model: MultimodalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch).prediction


class _Validation:
    """Every member's validation predictions in one vmapped eval-mode forward per batch, the
    same computation :func:`~mmib.train.engine.evaluate` runs for each member alone (to float
    rounding: batched products). Used when the members validate alike (:meth:`applies`);
    otherwise, or if it fails, each member's Trainer evaluates on its own."""

    def __init__(self, step: _Step) -> None:
        self.step = step
        call = _PredictionCall(step.template)

        def predict(params: dict[str, Tensor], buffers: dict[str, Tensor], parts: dict[str, Any],
                    option_values: dict[str, Tensor]) -> Tensor:
            return step.member_call(call, params, buffers, parts, option_values)

        self.per_member = torch.func.vmap(predict, in_dims=(0, 0, 0, 0))
        self.shared = torch.func.vmap(predict, in_dims=(0, 0, None, 0))
        #: set when the vmapped forward failed once: the members then evaluate alone from there on
        self.failed = False

    def by_member(self, stack: _Stack, active: Sequence[_Active], option_values: dict[str, Tensor],
                  device: torch.device) -> dict[int, dict[str, float]]:
        """This epoch's validation metrics by member index, for the members it could compute
        (none when it does not apply or the vmapped forward fails: each member evaluates alone)."""
        if self.failed or not self.applies(active):
            return {}
        try:
            metrics = self(stack, active, option_values, device)
        except Exception:  # noqa: BLE001 - not under vmap after all: each member evaluates alone
            self.failed = True
            return {}
        return {a.index: m for a, m in zip(active, metrics) if m is not None}

    @staticmethod
    def applies(active: Sequence[_Active]) -> bool:
        """All members validate every epoch, on validation splits of one size, in batches of one size.
        (A model with an end-of-epoch hook, which a run alone calls before validating, never gets
        here: :func:`class_unsupported` keeps it out of ensembles.)"""
        first = active[0]
        size = first.member.dataset.split_size("valid")
        return size > 0 and all(
            a.trainer.has_valid and a.member.dataset.split_size("valid") == size
            and a.member.config.eval_batch_size == first.member.config.eval_batch_size
            for a in active
        )

    @torch.no_grad()
    def __call__(self, stack: _Stack, active: Sequence[_Active], option_values: dict[str, Tensor],
                 device: torch.device) -> list[dict[str, float] | None]:
        """Each member's validation metrics (None for a member whose metrics could not be computed:
        its Trainer then evaluates it alone and meets the error there)."""
        from mmib.eval.metrics import compute_metrics

        template = self.step.template
        batch_size = active[0].member.config.eval_batch_size
        datasets = [a.member.dataset for a in active]
        shared = all(ds is datasets[0] for ds in datasets)
        iters = [ds.batches("valid", batch_size) for ds in (datasets[:1] if shared else datasets)]
        preds: list[Tensor] = []
        ys: list[list[Tensor]] = [[] for _ in iters]
        template.eval()
        try:
            for batches in zip(*iters):
                for j, b in enumerate(batches):
                    if b.y is None:
                        return [None] * len(active)
                    ys[j].append(b.y)
                if shared:
                    out = self.shared(stack.params, stack.buffers, _parts_of(batches[0].to(device)), option_values)
                else:
                    out = self.per_member(stack.params, stack.buffers,
                                          _stack_batches([b.to(device) for b in batches]), option_values)
                preds.append(out.float().cpu())
        finally:
            template.train()
        prediction = torch.cat(preds, dim=1)
        targets = [torch.cat(y) for y in ys]
        metrics: list[dict[str, float] | None] = []
        for j, a in enumerate(active):
            try:
                metrics.append(compute_metrics(a.member.dataset.task, prediction[j], targets[0 if shared else j]))
            except Exception:  # noqa: BLE001 - the member's own evaluate raises it where a run alone would
                metrics.append(None)
        return metrics


def _option_values(models: Sequence[MultimodalModel], device: torch.device) -> dict[str, Tensor]:
    """Per-member values of the declared per-member options that differ between members."""
    out = {}
    for name in type(models[0]).ensemble_options:
        values = [getattr(m.options, name) for m in models]
        if any(v != values[0] for v in values):
            out[name] = torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)
    return out


def _trained_names(model: MultimodalModel, stage: Stage) -> set[str]:
    ids = {id(p) for p in stage.parameters() if p.requires_grad}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def trial_step(members: Sequence[Member]) -> str | None:
    """Run one vmapped forward and backward on the first training batch (on copies: nothing of the
    members changes); the error as a one-line reason if it fails, else None."""
    models = [copy.deepcopy(m.model) for m in members]
    cfg = members[0].config
    device = torch.device(cfg.device)
    for m in models:
        m.to(device).train()
    plan = models[0].training_plan(cfg)
    phase, stage = plan[0], plan[0].stages[0]
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    try:
        stack = _Stack(models, _trained_names(models[0], stage))
        step = _Step(copy.deepcopy(models[0]).train(), phase.name, stage.name)
        batches = [m.dataset.take(m.dataset.splits["train"][: cfg.batch_size]).to(device) for m in members]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            total, _terms = step(stack, _stack_batches(batches), _option_values(models, device))
            if total.shape != (len(members),):
                return f"the objective's total has shape {tuple(total.shape)} per member; expected a scalar"
            total.sum().backward()
        slow = sorted({m.group(1) for w in caught if (m := _NO_BATCH_RULE.search(str(w.message)))})
        if slow:
            return (f"{members[0].model.registry_name} uses {', '.join(slow)}, which torch.func.vmap runs "
                    "member by member (no batching rule)")
    except Exception as exc:  # noqa: BLE001 - any failure under vmap means: train one at a time
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{members[0].model.registry_name} does not run under torch.func.vmap ({type(exc).__name__}: {first[:100]})"
    finally:
        torch.set_rng_state(state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    return None


# ----------------------------------------------------------------------------- training
def _fuse(opt: torch.optim.Optimizer) -> list[tuple[Any, Any]] | None:
    """Switch an Adam/AdamW optimizer that is not fused yet to PyTorch's fused implementation for an
    epoch (one kernel per step instead of ~10 per parameter; it rounds differently from the loop by
    at most an ulp per step, which the batched products of the ensemble do anyway); returns the
    flags to restore (:func:`_unfuse`) before the Trainer saves its state, so a checkpoint keeps the
    optimizer it was written with. The Trainer builds Adam fused where it can
    (:func:`~mmib.train.engine.fused_options`), so this matters for members resumed from checkpoints
    of a plain Adam. None when the optimizer stays as it is."""
    params = [p for g in opt.param_groups for p in g["params"]]
    if not fused_options(type(opt), params) or any(p.dtype != torch.float32 for p in params):
        return None
    if any(g.get("differentiable") or g.get("capturable") or g.get("fused") for g in opt.param_groups):
        return None
    before = [(g.get("fused"), g.get("foreach")) for g in opt.param_groups]
    for g in opt.param_groups:
        g["fused"], g["foreach"] = True, None
    for p, st in opt.state.items():
        if torch.is_tensor(st.get("step")):
            st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
    return before


def _unfuse(opt: torch.optim.Optimizer, before: list[tuple[Any, Any]] | None) -> None:
    if before is None:
        return
    for g, (fused, foreach) in zip(opt.param_groups, before):
        g["fused"], g["foreach"] = fused, foreach


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give every optimizer state tensor the memory layout of its parameter. A member's parameters
    are strided views of the stack while it trains, but state loaded from a checkpoint (or made
    while the parameter had storage of its own) may be laid out otherwise; PyTorch's fused Adam
    kernel pairs elements by memory position, so mismatched layouts would silently mix them up."""
    for p, st in opt.state.items():
        for k, v in list(st.items()):
            if torch.is_tensor(v) and v.shape == p.shape and v.dim() > 1 and v.stride() != p.stride():
                st[k] = torch.empty_like(p, memory_format=torch.preserve_format).copy_(v)


_ADAM_HYPERPARAMETERS = ("betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")


def _in_layout_of(t: Tensor, like: Tensor) -> Tensor:
    """``t`` with the strides of ``like`` (a copy only when they differ)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, memory_format=torch.preserve_format).copy_(t)


def _dense_view(t: Tensor) -> Tensor:
    """A contiguous view of ``t`` when it is a stacked matrix stored transposed (see
    :func:`_stacked_empty`), else ``t``. The fused Adam kernel is elementwise, so stepping the
    dense views of a parameter, its gradient and its moments (all in one layout) is the same
    step; on the strided tensors the CPU kernel runs about 2.5 times slower."""
    if t.dim() == 3 and not t.is_contiguous() and t.transpose(1, 2).is_contiguous():
        return t.transpose(1, 2)
    return t


class _GroupedAdam:
    """Every member's Adam step as one fused kernel call per parameter group, on the stacked tensors.

    Stepping K optimizers one after another costs K Python calls of ``Optimizer.step`` per batch
    (about 0.3 ms each here, a sixth of a small network's step); when the members' optimizers
    agree on everything but their numbers (the same class, groups over the same parameters, the
    same hyperparameters and learning rate at this step, the same step count), the fused Adam
    kernel applied to the stacked parameters, gradients and moments does, element by element,
    exactly what each member's own fused step does (its rule is elementwise), so each member's
    trajectory is bit-identical to the one stepped alone. The moments are stacked tensors too;
    each member's ``optimizer.state`` holds views of its slices while the ensemble trains, and
    :meth:`release` gives it tensors of its own (and its step count) before the Trainer saves.

    :meth:`build` returns None when the members do not qualify (another optimizer, amsgrad,
    gradient clipping, groups or state that differ); the per-member loop then steps them."""

    def __init__(self, opts: list[torch.optim.Optimizer], groups: list[list[Tensor]],
                 member_params: list[list[list[nn.Parameter]]], hyper: list[dict[str, Any]],
                 states: list[list[list[dict[str, Any]]]]) -> None:
        """``states[g][j]``: the members' optimizer states of the ``j``-th parameter of group ``g``
        (all empty or all at one step count, as :meth:`build` checked)."""
        self.opts, self.groups, self.hyper = opts, groups, hyper
        self.steps: list[list[Tensor]] = []
        self.exp_avgs: list[list[Tensor]] = []
        self.exp_avg_sqs: list[list[Tensor]] = []
        for g, stacked in enumerate(groups):
            steps, avgs, sqs = [], [], []
            for j, s in enumerate(stacked):
                avg = torch.zeros_like(s, memory_format=torch.preserve_format)
                sq = torch.zeros_like(s, memory_format=torch.preserve_format)
                step = torch.zeros((), dtype=torch.float32, device=s.device)
                if states[g][j][0]:
                    step.copy_(states[g][j][0]["step"])
                    for i, st in enumerate(states[g][j]):
                        avg[i].copy_(st["exp_avg"])
                        sq[i].copy_(st["exp_avg_sq"])
                steps.append(step)
                avgs.append(avg)
                sqs.append(sq)
            self.steps.append(steps)
            self.exp_avgs.append(avgs)
            self.exp_avg_sqs.append(sqs)
        self.member_params = member_params
        self.handed_over = False
        self._attach()

    @classmethod
    def build(cls, opts: Sequence[torch.optim.Optimizer], pairs: Sequence[Sequence[tuple[nn.Parameter, Tensor]]],
              clipping: bool) -> _GroupedAdam | None:
        """The grouped step of ``opts`` (one per member, made fused by :func:`_fuse`; ``pairs``
        maps each member's parameters to their stacked tensors), or None when it would not be
        exactly what stepping them one by one does."""
        opts = list(opts)
        if clipping or len(opts) < 2:
            return None
        kind = type(opts[0])
        if kind not in (torch.optim.Adam, torch.optim.AdamW) or any(type(o) is not kind for o in opts):
            return None
        if any(len(o.param_groups) != len(opts[0].param_groups) for o in opts):
            return None
        if any(not g.get("fused") or g.get("capturable") or g.get("differentiable") or torch.is_tensor(g["lr"])
               for o in opts for g in o.param_groups):
            return None
        stacked_of = [{id(p): s for p, s in member} for member in pairs]
        groups: list[list[Tensor]] = []
        member_params: list[list[list[nn.Parameter]]] = [[] for _ in opts]
        hyper: list[dict[str, Any]] = []
        states: list[list[list[dict[str, Any]]]] = []
        for g, group0 in enumerate(opts[0].param_groups):
            want = {k: group0[k] for k in _ADAM_HYPERPARAMETERS}
            if want["amsgrad"]:
                return None
            stacked0: list[Tensor] | None = None
            for i, opt in enumerate(opts):
                group = opt.param_groups[g]
                if any(group[k] != want[k] for k in _ADAM_HYPERPARAMETERS):
                    return None
                try:
                    stacked = [stacked_of[i][id(p)] for p in group["params"]]
                except KeyError:  # a parameter outside the stack
                    return None
                if stacked0 is None:
                    stacked0 = stacked
                elif len(stacked) != len(stacked0) or any(a is not b for a, b in zip(stacked, stacked0)):
                    return None
                member_params[i].append(list(group["params"]))
            assert stacked0 is not None
            group_states = [[opt.state.get(member_params[i][g][j], {}) for i, opt in enumerate(opts)]
                            for j in range(len(stacked0))]
            if not all(_states_agree(per_member) for per_member in group_states):
                return None
            groups.append(stacked0)
            hyper.append(want)
            states.append(group_states)
        return cls(opts, groups, member_params, hyper, states)

    def _attach(self) -> None:
        """Members' optimizer states as views of the stacked moments (their own step tensors)."""
        for i, opt in enumerate(self.opts):
            for g, params in enumerate(self.member_params[i]):
                for j, p in enumerate(params):
                    old = opt.state.get(p, {})
                    step = old["step"] if "step" in old else self.steps[g][j].clone()
                    opt.state[p] = {"step": step, "exp_avg": self.exp_avgs[g][j][i],
                                    "exp_avg_sq": self.exp_avg_sqs[g][j][i]}

    def same_learning_rates(self) -> list[float] | None:
        """Each group's learning rate when all members step at the same one, else None."""
        lrs = [group["lr"] for group in self.opts[0].param_groups]
        for opt in self.opts[1:]:
            if any(group["lr"] != lr for group, lr in zip(opt.param_groups, lrs)):
                return None
        return lrs

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One Adam step of every member (the parameters without a gradient keep their state)."""
        for g, stacked in enumerate(self.groups):
            index = [j for j, s in enumerate(stacked) if s.grad is not None]
            if not index:
                continue
            h = self.hyper[g]
            adam_step(
                [_dense_view(stacked[j]) for j in index],
                [_dense_view(_in_layout_of(stacked[j].grad, stacked[j])) for j in index],
                [_dense_view(self.exp_avgs[g][j]) for j in index],
                [_dense_view(self.exp_avg_sqs[g][j]) for j in index],
                [],
                [self.steps[g][j] for j in index],
                fused=True, decoupled_weight_decay=h["decoupled_weight_decay"], amsgrad=False,
                beta1=h["betas"][0], beta2=h["betas"][1], lr=lrs[g], weight_decay=h["weight_decay"],
                eps=h["eps"], maximize=h["maximize"],
            )

    def hand_over(self) -> None:
        """Give the members their step counts, so that their own optimizers can step on from here
        (their moments are already views of their slices); the grouped step is over after it."""
        if self.handed_over:
            return
        self.handed_over = True
        for i, opt in enumerate(self.opts):
            for g, params in enumerate(self.member_params[i]):
                for j, p in enumerate(params):
                    if self.steps[g][j].item() > 0:
                        opt.state[p]["step"].copy_(self.steps[g][j])
                    elif opt.state[p]["step"].item() == 0:  # never stepped: as a run alone, no state
                        del opt.state[p]

    def release(self) -> None:
        """:meth:`hand_over`, then give every member's moments storage of its own (its layout kept)."""
        self.hand_over()
        for opt in self.opts:
            for st in opt.state.values():
                for k in ("exp_avg", "exp_avg_sq"):
                    if k in st and st[k]._base is not None:
                        st[k] = st[k].clone(memory_format=torch.preserve_format)
        self.opts, self.groups, self.exp_avgs, self.exp_avg_sqs, self.steps = [], [], [], [], []


def _states_agree(states: Sequence[dict[str, Any]]) -> bool:
    """All members' Adam states for one parameter empty, or all with the same step count."""
    if all(not st for st in states):
        return True
    if any(set(st) != {"step", "exp_avg", "exp_avg_sq"} for st in states):
        return False
    steps = [float(st["step"]) for st in states]
    return all(s == steps[0] for s in steps)


@dataclass
class _Active:
    index: int
    member: Member
    trainer: Trainer
    run: _Run



class EnsembleTrainer:
    """Train ``members`` together; :meth:`fit` returns, per member, its
    :class:`~mmib.train.engine.FitResult` or the exception that ended it (a pruned trial, a
    diverged run). ``KeyboardInterrupt`` propagates; every member stays resumable.

    Call :func:`why_not_together` and :func:`trial_step` first (or use :func:`train_members`)."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.device = torch.device(self.members[0].config.device)

    def fit(self) -> list[FitResult | Exception]:
        with contextlib.ExitStack() as held:
            return self._fit(held)

    def _fit(self, held: contextlib.ExitStack) -> list[FitResult | Exception]:
        outcomes: list[FitResult | Exception | None] = [None] * len(self.members)
        active: list[_Active] = []
        resumed = False
        for i, m in enumerate(self.members):
            trainer = m.trainer()
            try:
                # as Trainer.fit: the run directory checked and locked while the member trains
                held.enter_context(trainer.holding_run_dir(m.resume))
                run = trainer._start(m.resume, progress=False)
            except Exception as exc:  # noqa: BLE001 - this member fails, the others train
                outcomes[i] = exc
                continue
            resumed = resumed or m.resume
            active.append(_Active(i, m, trainer, run))
        if not resumed:  # resumed members restored the shared generator from their checkpoints
            seed_everything(ensemble_seed([m.config.seed for m in self.members]))
        started = list(active)
        try:
            self._train(active, outcomes)
        finally:
            for a in started:
                Trainer._stop(a.run)
        return [o if o is not None else RuntimeError("member did not finish") for o in outcomes]

    def _train(self, active: list[_Active], outcomes: list[FitResult | Exception | None]) -> None:
        phase = active[0].run.plan[0] if active else None
        for a in list(active):  # runs that had finished their phase when their checkpoint was written
            if a.run.state.phase_index >= 1 or a.trainer.phase_epochs(phase) == 0:
                active.remove(a)
                self._finish(a, outcomes)
        if not active:
            return
        assert phase is not None
        stage = phase.stages[0]
        template = copy.deepcopy(active[0].run.model).train()
        step = _Step(template, phase.name, stage.name)
        validation = _Validation(step)
        trained = _trained_names(active[0].run.model, active[0].run.plan[0].stages[0])
        for a in active:
            if a.run.state.phase_epoch == 0:
                a.run.model.on_phase_start(phase.name, a.run.context)
        while active:
            failed, valid = self._epoch(active, phase, step, trained, validation)
            for a, exc in failed:
                active.remove(a)
                outcomes[a.index] = exc
            for a in list(active):
                a.run.state.phase_epoch += 1
                a.run.state.epoch += 1
                try:
                    a.trainer._after_epoch(a.run.model, a.run.plan[0], a.run.state, a.run.generator,
                                           a.run.optimizers, a.run.scaler, None, valid.get(a.index))
                except Exception as exc:  # noqa: BLE001 - a pruned trial, a bad monitor: this member ends
                    outcomes[a.index] = exc
                    active.remove(a)
                    continue
                st = a.run.state
                if st.stopped or st.phase_epoch >= a.trainer.phase_epochs(a.run.plan[0]):
                    active.remove(a)
                    self._finish(a, outcomes)

    def _finish(self, a: _Active, outcomes: list[FitResult | Exception | None]) -> None:
        st = a.run.state
        st.phase_index, st.phase_epoch, st.stopped = 1, 0, False
        Trainer._stop(a.run)
        try:
            outcomes[a.index] = a.trainer._finish(a.run.model, st)
        except Exception as exc:  # noqa: BLE001
            outcomes[a.index] = exc

    def _epoch(self, active: list[_Active], phase: Phase, step: _Step, trained: set[str], validation: _Validation
               ) -> tuple[list[tuple[_Active, Exception]], dict[int, dict[str, float]]]:
        """One training epoch of every active member in lockstep; returns the members that failed
        with the exception a run alone would have raised (:class:`~mmib.train.engine.TrainingDiverged`,
        an error of its optimizer step), and the validation metrics of the members, by index, when
        :class:`_Validation` computed them for all at once."""
        key = (phase.name, phase.stages[0].name)
        models = [a.run.model for a in active]
        for m in models:
            m.train()
        option_values = _option_values(models, self.device)
        stack = _Stack(models, trained)
        for a in active:  # after the stack: the parameters' layouts are final for the epoch
            _match_layouts(a.run.optimizers[key])
        fused = [_fuse(a.run.optimizers[key]) for a in active]
        clipping = any(a.trainer.clip_norm(a.run.plan[0].stages[0]) for a in active)
        grouped = _GroupedAdam.build([a.run.optimizers[key] for a in active], stack.pairs, clipping)
        grouping = grouped is not None
        lrs: list[float] | None = None
        totals: dict[str, Tensor] = {}
        broken: dict[int, Exception] = {}
        count = 0
        start = time.perf_counter()
        try:
            iters: list[Iterator[Batch]] = [
                a.member.dataset.batches("train", a.member.config.batch_size, shuffle=True, generator=a.run.generator)
                for a in active
            ]
            for batches in zip(*iters):
                n = len(batches[0])
                parts = _stack_batches([b.to(self.device) for b in batches])
                stack.zero_grad()
                for a in active if not grouping else ():  # grouped: members' .grad stay unset
                    a.run.optimizers[key].zero_grad(set_to_none=True)
                total, terms = step(stack, parts, option_values)
                total.sum().backward()
                if grouping:
                    assert grouped is not None
                    for a in active:
                        a.trainer._warm_up(a.run.optimizers[key], a.run.state.steps)
                    lrs = grouped.same_learning_rates()
                    if lrs is None:  # the members' learning rates part (warm-up from other steps)
                        grouped.hand_over()
                        grouping = False
                if grouping:
                    assert grouped is not None and lrs is not None
                    try:
                        grouped.step(lrs)
                        for a in active:
                            a.run.state.steps += 1
                    except Exception as exc:  # noqa: BLE001 - as each run alone would end; they idle
                        for a in active:
                            broken.setdefault(a.index, exc)
                        grouped.hand_over()
                        grouping = False
                else:
                    stack.grads_to_members()
                for a in active if not grouping else ():
                    if a.index in broken:
                        continue
                    clip = a.trainer.clip_norm(a.run.plan[0].stages[0])
                    opt = a.run.optimizers[key]
                    try:
                        if clip:
                            nn.utils.clip_grad_norm_(list(a.run.plan[0].stages[0].parameters()), clip)
                        a.trainer._warm_up(opt, a.run.state.steps)
                        opt.step()
                    except Exception as exc:  # noqa: BLE001 - as a run alone would end; its slice idles
                        broken[a.index] = exc
                    a.run.state.steps += 1
                with torch.no_grad():
                    for name, v in {"loss": total, **terms}.items():
                        val = v.detach().float() * n
                        totals[name] = totals[name] + val if name in totals else val
                count += n
            seconds = (time.perf_counter() - start) / len(active)
            valid = validation.by_member(stack, active, option_values, self.device)
        finally:
            if grouped is not None:
                grouped.release()
            stack.release()
            for a, before in zip(active, fused):
                _unfuse(a.run.optimizers[key], before)
        failed = []
        for j, a in enumerate(active):
            a.run.optimizers[key].zero_grad(set_to_none=True)
            if a.index in broken:
                failed.append((a, broken[a.index]))
                continue
            try:
                a.trainer._record_epoch(phase, a.run.state, {k: v[j] for k, v in totals.items()}, count, seconds)
            except Exception as exc:  # noqa: BLE001 - TrainingDiverged
                failed.append((a, exc))
        return failed, valid


def train_members(members: Sequence[Member], log: Log | None = None, fallback: bool = True
                  ) -> list[FitResult | Exception]:
    """Train ``members`` as one ensemble when they can (:func:`why_not_together`, then
    :func:`trial_step`), else one at a time with the ordinary Trainer (``fallback=False``: raise
    :class:`EnsembleUnsupported` instead, before any training); ``log`` gets one line saying
    which. Returns, per member, its FitResult or the exception that ended it."""
    reason = why_not_together(members) or trial_step(members)
    if reason is not None and not fallback:
        raise EnsembleUnsupported(reason)
    if reason is None:
        if log:
            log(f"training {len(members)} runs of {members[0].model.registry_name} together "
                "(one vectorised ensemble in this process)")
        return EnsembleTrainer(members).fit()
    if log:
        log(f"training {len(members)} runs of {members[0].model.registry_name} one at a time: {reason}")
    out: list[FitResult | Exception] = []
    for m in members:
        try:
            out.append(m.trainer().fit(resume=m.resume))
        except Exception as exc:  # noqa: BLE001 - one failed run does not stop the others
            out.append(exc)
    return out
