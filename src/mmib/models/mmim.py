"""MMIM: MultiModal InfoMax (Han, Chen & Poria, EMNLP 2021; paper 001).

Hierarchical mutual-information maximisation around a plain fusion network:

* encoders per modality give ``h_m`` (LSTM for sequences as in the paper, MLP
  for vectors, precomputed text features or a local BERT-type model);
* a fusion MLP maps ``[h_1; ...; h_K]`` to ``Z`` (the reference's SubNet:
  dropout, ``tanh(W1 .)``, ``tanh(W2 .)``), and a linear head predicts from ``Z``;
* inter-modality MI: Barber-Agakov bounds ``I(h_anchor; t_m)`` with Gaussian
  predictors ``q(t_m | h_anchor)`` and ``H(t_m)`` from a GMM over the label's
  polarity classes with a FIFO history memory (eqs. 3-9, :mod:`mmib.nn.mi`).
  ``t_m = tanh(W h_m + b)`` is a fixed random map to a quarter of the width
  (``target_project``; the reference applies such a never-trained layer before
  its covariances): q predicts the same ``t_m`` whose entropy is estimated, so
  the two terms of the bound describe one variable, and an 8-d covariance is
  well estimated from a batch of 32 plus one batch of memory. Both terms are
  taken for ``t_m + N(0, cov_eps I)`` (the covariance jitter).
* fusion-level MI: CPC/InfoNCE between ``Z`` and every ``h_m`` (eqs. 10-12).

How the BA term reaches the representations (``ba_form``). Maximising a lower
bound with respect to the variables it measures also rewards making the bound
*tight*, and the cheapest way to make ``E log q(t_m | h_anchor)`` tight is to
shrink ``t_m`` until q predicts it exactly: with the gradient of the likelihood
flowing into the target (``joint``, the previous default), the log-likelihood
rose from -6.8 to +32 in 6 epochs on sim-msa while the GMM entropy fell from -17
to -35 and the total variance of ``h_audio``/``h_vision`` fell from 1.2 to below
0.1 (q's log-variance near -7). The default ``stopgrad`` detaches the target
inside the likelihood term of stage ``main``: the likelihood then moves only the
anchor's encoder (towards predicting the other modality), and the only MI gradient
a target representation receives is that of ``H(t_m)``, the log-determinant of
its covariance, which can only spread it. So the MI terms cannot collapse the
representations they measure (CPC scores unit vectors and is blind to scale).
``reference`` is the public code's form: a likelihood without the
``log sigma^2`` term and its constant, q predicting the raw ``h_m`` (the
projection serves the entropy only), gradients through everything; stage ``lld``
then drives q's log-variance to its bound (10) and the likelihood fades, so
the BA term is in effect ``-beta H`` (entropy maximisation).

Training (Algorithm 1) runs two stages: stage ``lld`` updates only the
predictors ``q`` (learning rate ``lr_lld``) by maximising their likelihood, with
the encoders run under ``torch.no_grad`` (that stage needs no gradient through
them); stage ``main`` updates everything else with ``L_task + alpha L_CPC + beta
L_BA``, ``L_BA = -sum_pairs (E log q + H)`` (as the reference combines it; ``H``
enters once the memory holds ``memory_batches`` batches), learning rate
``lr_main`` (default: the run's ``lr``). Gradients are clipped at 5.0 in both
stages. ``stage_schedule=batch`` runs both stages on every batch;
``stage_schedule=epoch`` sweeps the whole training split with stage ``lld`` and
then with stage ``main`` in every epoch, as Algorithm 1 and the reference do.

Defaults follow the paper's Table 3, CMU-MOSI column: alpha 0.3, beta 0.1,
``lr_lld`` 5e-3, ``lr_main`` 1e-3 (the engine's default ``lr``), modality hidden
width 32 (the V/A-LSTM hidden size; here every modality's ``h_m`` has this width,
text included, unless a BERT-type text encoder is used), fusion width 128,
memory 1 batch, clip 5.0, BERT lr 5e-5 (the engine's ``text_lr``); weight decay
1e-4 on every parameter group as the reference code uses (its preset,
``mmib/presets/mmim.yaml``: ``--set weight_decay=...`` wins). The paper's batch size 32 is a training
option: ``--set batch_size=32``.

Generalisations and choices (documented in ``docs/results/mmim.md`` too):

* ``anchor`` (default ``text`` when present, else the first modality) plays
  text's role: pairs are ``(anchor, m)`` for every other ``m``; ``pairs=all``
  adds every pair among the other modalities (Table 4's ``I_va``). With one
  modality there are no pairs and only the CPC term remains.
* GMM components: regression uses the polarity classes (``y > 0``, ``y < 0``;
  ``y = 0`` in neither), binary/multiclass use one component per class,
  multilabel uses a single Gaussian. Anomaly detection is not supported.
* ``gmm=false`` replaces the mixture by one Gaussian over all samples (Table 4's
  "w/o GMM"); ``memory_batches=0`` estimates the covariances on the current
  batch only (the paper saw NaNs there; here the regularised covariance and the
  Cholesky log-determinant keep it finite, and a component with fewer than
  ``min_component_samples`` samples in the batch is left out); ``ba=false`` and
  ``cpc=false`` drop the respective MI terms (and their networks).
* ``score_<m>`` outputs hold the per-sample fusion-modality score
  ``s(h_m, Z) = exp(cos(h_m, G_m(Z)))`` of eq. 10 (in ``[1/e, e]``), printed by
  ``mmib predict --explain`` and returned by :func:`fusion_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mmib.data.dataset import Batch, DatasetSpec
from mmib.errors import ConfigError
from mmib.models.base import (
    STAGE_SCHEDULES, ModelOutput, MultimodalModel, Objective, ParamGroup, Phase, Stage, head_output, task_loss,
)
from mmib.models.common import EncoderOptions, make_encoders
from mmib.models.registry import register_model
from mmib.nn.mi import BarberAgakov, ContrastivePredictor, GMMEntropy, RandomProjection, polarity_components

if TYPE_CHECKING:
    from mmib.api import Run
    from mmib.config import TrainConfig
    from mmib.data.dataset import MultimodalDataset

PAIR_MODES = ("anchor", "all")
#: How the BA term reaches the representations (see the module docstring).
BA_FORMS = ("stopgrad", "joint", "reference")


def _key(x: str, y: str) -> str:
    return f"{x}__{y}"


class FusionMLP(nn.Module):
    """The MMIM reference's fusion network: dropout, ``tanh(W1 x)``, ``Z = tanh(W2 .)``."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.out_dim = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_model(
    "mmim",
    "MultiModal InfoMax: BA bounds (GMM entropy, history memory) between an anchor and each modality, "
    "CPC between fusion and modalities, two stages (per batch or per epoch)",
    tasks=("regression", "binary", "multiclass", "multilabel"),
)
class MMIM(MultimodalModel):
    ensemble_unsupported = "it keeps a memory of past batches' representations and takes two optimiser stages per batch"

    @dataclass
    class Options(EncoderOptions):
        """MMIM options (defaults: Table 3, CMU-MOSI column, where it gives one).

        ``hidden``: width of every ``h_m`` (and of the encoders); ``fusion_hidden``/``fusion_dropout``: the
        fusion MLP; ``anchor``: the modality that predicts the others (default ``text``, else the first);
        ``pairs``: ``anchor`` or ``all``; ``alpha``/``beta``: weights of L_CPC and L_BA; ``lr_lld``: stage-1
        learning rate; ``lr_main``: stage-2 learning rate (None: the run's ``lr``); ``grad_clip``: clip
        norm of both stages unless the run sets ``clip_grad``; ``ba``/``cpc``: the two MI terms;
        ``gmm``: a mixture over polarity classes (or classes) instead of one Gaussian;
        ``memory_batches``: past batches kept for the covariances (0: none); ``target_project``: width of
        the fixed tanh map of the BA target as a fraction of ``hidden`` (None: no map); ``cov_shrinkage``,
        ``cov_eps``: covariance regularisation (``cov_eps`` is also the BA smoothing variance);
        ``min_component_samples``: fewer samples leave a component out; ``predictor_hidden``: hidden
        width of q (None: the target width); ``cpc_hidden``: hidden width of G (0: linear, as the reference).
        ``ba_form``: ``stopgrad`` (the target is detached inside the likelihood: the MI terms cannot
        collapse it), ``joint`` (gradients through both sides), ``reference`` (the public code's form);
        ``stage_schedule``: ``batch`` (both stages on every batch) or ``epoch`` (each stage sweeps the
        training split in turn).
        """

        hidden: int = 32
        fusion_hidden: int = 128
        fusion_dropout: float = 0.1
        anchor: str | None = None
        pairs: str = "anchor"
        alpha: float = 0.3
        beta: float = 0.1
        lr_lld: float = 5e-3
        lr_main: float | None = None
        grad_clip: float | None = 5.0
        ba: bool = True
        cpc: bool = True
        gmm: bool = True
        memory_batches: int = 1
        target_project: float | None = 0.25
        cov_shrinkage: float = 0.0
        cov_eps: float = 1e-4
        min_component_samples: int = 2
        predictor_hidden: int | None = None
        cpc_hidden: int = 0
        ba_form: str = "stopgrad"
        stage_schedule: str = "batch"

    def __init__(self, spec: DatasetSpec, options: "MMIM.Options") -> None:
        super().__init__(spec, options)
        o = options
        if o.pairs not in PAIR_MODES:
            raise ConfigError(f"mmim option pairs={o.pairs!r}: choose one of {', '.join(PAIR_MODES)}")
        if o.ba_form not in BA_FORMS:
            raise ConfigError(f"mmim option ba_form={o.ba_form!r}: choose one of {', '.join(BA_FORMS)}")
        if o.stage_schedule not in STAGE_SCHEDULES:
            raise ConfigError(f"mmim option stage_schedule={o.stage_schedule!r}: choose one of {', '.join(STAGE_SCHEDULES)}")
        for name in ("alpha", "beta"):
            if getattr(o, name) < 0:
                raise ConfigError(f"mmim option {name} must be >= 0, got {getattr(o, name)}")
        if o.lr_lld <= 0 or (o.lr_main is not None and o.lr_main <= 0):
            raise ConfigError("mmim options lr_lld and lr_main must be > 0")
        names = spec.names
        if o.anchor is not None and o.anchor not in names:
            raise ConfigError(f"mmim option anchor={o.anchor!r} is not a modality of the data ({', '.join(names)})")
        self.anchor = o.anchor or ("text" if "text" in names else names[0])
        others = [m for m in names if m != self.anchor]
        self.pairs: list[tuple[str, str]] = [(self.anchor, m) for m in others]
        if o.pairs == "all":
            self.pairs += [(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]

        self.encoders = make_encoders(spec, o)
        width = self.encoders.out_dim
        self.fusion = FusionMLP(width * len(names), o.fusion_hidden, o.fusion_dropout)
        self.head = nn.Linear(o.fusion_hidden, spec.task.output_dim)

        # Inter-modality MI: one predictor per pair, one entropy estimator per predicted modality.
        self.use_ba = bool(o.ba and self.pairs)
        self.num_components = 1
        self.predictors = nn.ModuleDict()
        self.targets = nn.ModuleDict()
        self.entropy = nn.ModuleDict()
        if self.use_ba:
            if spec.task.kind in ("binary", "multiclass") and o.gmm:
                components = int(spec.task.num_classes or 2)
            elif spec.task.kind == "regression" and o.gmm:
                components = 2
            else:
                components = 1
            self.num_components = components
            if o.target_project is not None and not 0.0 < o.target_project <= 1.0:
                raise ConfigError(f"mmim option target_project must lie in (0, 1] or be none, got {o.target_project}")
            target = width if o.target_project is None else max(1, round(width * o.target_project))
            reference = o.ba_form == "reference"  # q predicts the raw h_m; the projection serves H only
            for x, y in self.pairs:
                self.predictors[_key(x, y)] = BarberAgakov(
                    width, width if reference else target, o.predictor_hidden, noise_var=0.0 if reference else o.cov_eps,
                    likelihood="reference" if reference else "gaussian",
                )
                if y not in self.entropy:
                    self.targets[y] = RandomProjection(width, target) if o.target_project is not None else nn.Identity()
                    self.entropy[y] = GMMEntropy(
                        target, components, o.memory_batches, o.cov_shrinkage, o.cov_eps, o.min_component_samples
                    )
        # Fusion-level MI: G_m(Z) predicts h_m.
        self.cpc = nn.ModuleDict()
        if o.cpc:
            for m in names:
                self.cpc[m] = ContrastivePredictor(o.fusion_hidden, width, o.cpc_hidden or None)

    # ------------------------------------------------------------ pieces
    def components(self, y: Tensor) -> Tensor:
        """GMM component of each sample: polarity for regression, class for classification, else 0."""
        if self.num_components == 1:
            return torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        if self.task.kind == "regression":
            return polarity_components(y)
        return y.long()

    def _fuse(self, h: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        z = self.fusion(torch.cat([h[m] for m in self.spec.names], dim=-1))
        return z, head_output(self.task, self.head(z))

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.encoders(batch)
        z, prediction = self._fuse(h)
        reps: dict[str, Tensor] = dict(h)
        for m, g in self.cpc.items():
            reps[f"score_{m}"] = g.score(z, h[m])
        return ModelOutput(prediction, z, reps)

    # ------------------------------------------------------------ training
    def _lld_terms(self, h: dict[str, Tensor], t: dict[str, Tensor], detach_target: bool = False) -> dict[str, Tensor]:
        """Per pair ``E log q(target_y | h_x)``: the projected ``t_y`` (the raw ``h_y`` for ``ba_form=reference``),
        detached when ``detach_target`` (then only the anchor side ``h_x`` gets the likelihood's gradient)."""
        source = h if self.options.ba_form == "reference" else t
        out = {}
        for x, y in self.pairs:
            target = source[y].detach() if detach_target else source[y]
            out[f"lld_{x}_{y}"] = self.predictors[_key(x, y)].log_likelihood(h[x], target)
        return out

    def _targets(self, h: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: proj(h[m]) for m, proj in self.targets.items()}

    def objective(self, batch: Batch, phase: str, stage: str) -> Objective:
        assert batch.y is not None
        if stage == "lld":
            # Stage 1: only q moves; no gradient through the encoders is needed.
            with torch.no_grad():
                h = self.encoders(batch)
                h = {k: v.detach() for k, v in h.items()}
                t = self._targets(h)
            terms = self._lld_terms(h, t)
            lld = torch.stack(list(terms.values())).sum()
            return Objective(-lld, {"lld": lld, **terms})

        o = self.options
        h = self.encoders(batch)
        z, prediction = self._fuse(h)
        task = task_loss(self.task, prediction, batch.y, o.regression_loss)
        total = task
        terms: dict[str, Tensor] = {"task": task}
        if self.cpc:
            nce = {f"nce_{m}": g(z, h[m]) for m, g in self.cpc.items()}
            cpc = torch.stack(list(nce.values())).sum()
            total = total + o.alpha * cpc
            terms.update({"cpc": cpc, **nce})
        if self.use_ba:
            t = self._targets(h)
            lld_terms = self._lld_terms(h, t, detach_target=o.ba_form == "stopgrad")
            lld = torch.stack(list(lld_terms.values())).sum()
            comps = self.components(batch.y)
            entropies: dict[str, Tensor] = {}
            for m, est in self.entropy.items():
                ready = est.memory_full
                e = est(t[m], comps, update=True)  # estimate on memory + batch, then enqueue the batch
                if ready and e.entropy is not None:
                    entropies[m] = e.entropy
            ent = sum((entropies[y] for _, y in self.pairs if y in entropies), lld.new_zeros(()))
            ba = -(lld + ent)
            total = total + o.beta * ba
            terms.update({"ba": ba, "lld": lld, "entropy": ent, **lld_terms})
        return Objective(total, terms)

    def training_plan(self, config: "TrainConfig") -> list[Phase]:
        """One open-ended phase: stage ``lld`` (predictors q) then stage ``main`` (the rest), on every batch
        or, with ``stage_schedule=epoch``, each over the whole training split in turn."""
        o = self.options
        clip = config.clip_grad if config.clip_grad is not None else o.grad_clip
        q_params = list(self.predictors.parameters())
        q_ids = {id(p) for p in q_params}
        groups = self.param_groups((p for p in self.parameters() if id(p) not in q_ids), config)
        if o.lr_main is not None:
            for g in groups:
                if g.name == "main":
                    g.lr = o.lr_main
        stages = []
        if q_params:
            stages.append(Stage("lld", [ParamGroup(q_params, o.lr_lld, config.weight_decay, "lld")], clip))
        stages.append(Stage("main", groups, clip))
        return [Phase("main", stages, stage_schedule=o.stage_schedule)]

    def predictor_parameters(self) -> list[nn.Parameter]:
        """The parameters of the predictors q (stage ``lld``)."""
        return list(self.predictors.parameters())


# ---------------------------------------------------------------- interpretability API
@dataclass
class FusionScores:
    """Per-sample fusion-modality scores ``s(h_m, Z)`` (eq. 10) over one split, in split order.

    ``scores[m]`` is ``(N,)``; ``index`` holds the dataset rows, ``prediction`` and
    ``y`` the model's predictions and the targets (as in the paper's Table 5).
    """

    index: Tensor
    prediction: Tensor
    y: Tensor | None
    scores: dict[str, Tensor]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per sample: index, prediction, target and ``score_<m>`` values."""
        out = []
        for i in range(self.index.shape[0]):
            row: dict[str, Any] = {"index": int(self.index[i])}
            pred = self.prediction[i]
            row["prediction"] = float(pred) if pred.dim() == 0 else pred.tolist()
            if self.y is not None:
                yi = self.y[i]
                row["y"] = float(yi) if yi.dim() == 0 else yi.tolist()
            row.update({f"score_{m}": float(v[i]) for m, v in self.scores.items()})
            out.append(row)
        return out


def fusion_scores(
    run_or_model: "Run | MMIM | str | Path",
    dataset: "MultimodalDataset | None" = None,
    split: str = "test",
    batch_size: int = 512,
    device: str = "cpu",
) -> FusionScores:
    """Fusion-modality scores of a trained MMIM (a run directory, a loaded run or a model) on ``split``.

    ``dataset`` defaults to the run's own data (standardised as in training); a
    bare model needs one.
    """
    from mmib.api import Run, load_run
    from mmib.train.engine import predict

    if isinstance(run_or_model, (str, Path)):
        run_or_model = load_run(run_or_model)
    if isinstance(run_or_model, Run):
        model = run_or_model.model
        if dataset is None:
            dataset = run_or_model.dataset()
    else:
        model = run_or_model
        if dataset is None:
            raise ConfigError("fusion_scores(model) needs a dataset")
    if not isinstance(model, MMIM):
        raise ConfigError(f"fusion_scores needs an mmim model, got {getattr(model, 'registry_name', type(model).__name__)!r}")
    if not model.cpc:
        raise ConfigError("this mmim model was trained with cpc=false: it has no fusion-modality scores")
    model.to(device)
    p = predict(model, dataset, split, batch_size, device, representations=True)
    scores = {k.removeprefix("score_"): v for k, v in p.representations.items() if k.startswith("score_")}
    return FusionScores(p.index, p.prediction, p.y, scores)


__all__ = ["MMIM", "FusionScores", "fusion_scores"]
