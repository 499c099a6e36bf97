"""OMIB: optimal multimodal information bottleneck (Wu et al., ICML 2025; paper 002).

Per modality ``i`` (any number ``M >= 2``):

* a task-relevance branch (TRB): encoder ``Enc_i`` gives ``z_i``; head ``Dec_i``
  predicts ``y`` from ``[z_i, e_i]`` with noise ``e_i ~ N(0, I_k)`` during the
  warm-up (eq. 3) and from ``[z_i, xi]`` in main training (eq. 9);
* a VAE ``VAE_i`` maps ``z_i`` to ``N(mu_i, Sigma_i)``; ``zeta_i`` is a
  reparameterised sample (eq. 5-6; :class:`~mmib.nn.bottleneck.VariationalBottleneck`).

The optimal multimodal fusion (OMF) block fuses the ``M`` tokens ``zeta_i`` by
multi-head attention (each token attends to all), concatenates the attended
tokens and maps them back to width ``k`` (Appendix H), giving ``xi``; the OMF
head predicts ``y`` from ``xi``. The main loss (eq. 10, App. D.1) is

    L = L_task(OMF head) + beta (KL_1 + sum_{j>=2} r_j KL_j) + sum_i L_TRB_i

with dynamic weights ``r_j = 1 - tanh(ln(D_j / D_1))`` (eq. 11), ``D_i`` the
batch mean of ``KL(p(y | xi, z_i) || p(y | xi))`` between TRB head ``i`` and the
OMF head, computed without gradient: ``r_j`` is in (0, 2) and shrinks when
modality ``j`` still holds more task information outside ``xi`` than modality 1.
For regression (and anomaly scores) the heads are Gaussians of fixed variance,
so the KL is half the squared difference.

Training is a fixed-length warm-up phase over the TRBs only (the engine
freezes the OMF block) and then the open-ended main phase over everything.
``beta`` defaults to a draw from the paper's bound ``[M_l, M_u]`` estimated by
MINE on the training split when the main phase starts
(:mod:`mmib.eval.bounds`); it is stored in a buffer and logged every epoch
with the bounds and the mean ``r_j``. Inference uses ``Enc_i`` and the OMF block only.

Design choices the paper leaves open:

* ``xi`` enters the TRB heads detached (``detach_xi``), so ``L_TRB_i`` trains
  ``Enc_i`` and ``Dec_i`` (the paper: "L_TRB ... for updating Enc_i and Dec_i") and
  the OMF block is trained by ``L_OMF`` (which also reaches the encoders through
  ``z_i``). Algorithm 2 can also be read as letting ``L_TRB`` reach ``xi``
  (``detach_xi=false``); on SIM-I that changed test accuracy by +0.004 and
  +0.012 on two seeds (within seed noise; docs/results/omib.md).
* ``trb_weight`` (default 1, the paper) weighs the main phase's sum of ``L_TRB``;
  ``r_from=held_out`` measures ``D_i`` (hence ``r``) after every epoch on a fixed
  ``r_holdout`` share of the training rows that no loss trains on (the branches and
  the OMF head memorise the training batches, where ``D_1`` and ``D_2`` are both near
  0 and ``r`` near 1 whatever the modalities hold), and uses it for the next epoch
  (``r_momentum`` > 0 averages it with the previous epoch's r: without that, r
  alternated between about 0.05 and 1.5 from one epoch to the next on SIM-I);
  ``r_from=batch`` (default) computes it on each training batch, as Algorithm 2.
  ``std_offset`` (default 5, the MIB convention; OMIB does not state one) sets the
  VAEs' ``std = softplus(. - std_offset)``.
* Anomaly detection follows Deep SVDD (Ruff et al., 2018; paper App. H). The whole
  network is bias-free (``svdd_bias_free=network``: encoders, VAEs, attention,
  fusion and heads; every layer then maps 0 to 0, so the constant map onto a centre
  away from 0, the trivial minimiser of the one-class loss, is out of reach;
  ``svdd_bias_free=head`` keeps the earlier variant, bias-free heads only, where
  zeroing the fusion output and solving ``W2 u = c`` gives every sample score 0).
  Epochs are selected without anomaly labels: the default monitor of anomaly tasks
  is ``normal_score``, the mean score on the (normal) validation data, i.e. the
  one-class loss there. The heads output ``svdd_dim``-d embeddings, each head's centre is the
  mean embedding of the normal training samples at the start of the phase in
  which the head is trained with its input (TRBs at warm-up with noise and again
  at the main phase with ``xi``; the OMF head at the main phase), stored in
  buffers; the loss is the squared distance to the centre over normal samples
  (weight decay, ``--set weight_decay=...``, is the paper's regulariser), and the
  anomaly score is the OMF head's squared distance. Distances are divided by the
  normal samples' mean squared distance when the centre was fixed (a buffer), so
  the one-class loss starts at 1 whatever the embedding scale. The default beta
  of the anomaly task is 1e-4, not a draw from the MINE bound: the bound is
  derived for a likelihood loss, and here the KL term and the one-class loss are
  both minimised by a constant representation. With a beta like the bound's
  (0.046 on SIM) validation AUC fell sharply after the first main epoch in our
  runs, and test AUC on sim-anomaly was 0.91 +- 0.04, against 1.00 at 1e-4
  (docs/results/omib.md).

Ablations (paper Table 6) are options: ``warmup_epochs=0`` (no warm-up),
``fusion=concat`` (no cross-attention: concatenation and a linear map),
``omf=false`` (no OMF block: ``xi`` is a linear map of the concatenated ``z_i``,
no VAEs, no KL) and ``dynamic_r=false`` (every ``r_j = 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmib.config import TrainConfig
from mmib.data.dataset import Batch, DatasetSpec, MultimodalDataset
from mmib.errors import ConfigError
from mmib.models.base import (
    FitContext, ModelOutput, MultimodalModel, Objective, Phase, Stage, head_output, make_head, task_loss,
)
from mmib.models.common import EncoderOptions, make_encoders
from mmib.models.registry import register_model
from mmib.nn.bottleneck import VariationalBottleneck

FUSIONS = ("attention", "concat")
R_SOURCES = ("batch", "held_out")
SVDD_BIAS_FREE = ("network", "head")
_KL_EPS = 1e-8
_R_MARGIN = 1e-6
#: Default beta for the anomaly task (see the module docstring: the MINE bound does not apply there).
ANOMALY_BETA = 1e-4


def dynamic_weights(divergences: Tensor) -> Tensor:
    """``r_j = 1 - tanh(ln(D_j / D_1))`` for ``j >= 2`` from per-modality divergences ``D`` ``(M,)``.

    Returns ``(M - 1,)`` values in (0, 2) (eq. 11 and App. D.1 of the OMIB paper). Computed as
    ``2 / (1 + (D_j / D_1)^2)``, the same function without tanh's saturation, in float64
    and clamped to ``[1e-6, 2 - 1e-6]`` so that it stays strictly inside (0, 2) in floating point.
    """
    d = divergences.detach().double().clamp_min(0.0) + _KL_EPS
    ratio = d[1:] / d[0]
    r = 2.0 / (1.0 + ratio * ratio)
    return r.clamp(_R_MARGIN, 2.0 - _R_MARGIN).to(divergences.dtype)


def prediction_divergence(kind: str, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample ``KL(p_a || p_b)`` between two heads' predictive distributions.

    Classes: softmax of the logits; multilabel: independent Bernoullis; regression
    and anomaly scores: Gaussians of unit variance (half the squared difference).
    """
    if kind in ("binary", "multiclass"):
        la, lb = F.log_softmax(a, -1), F.log_softmax(b, -1)
        return (la.exp() * (la - lb)).sum(-1)
    if kind == "multilabel":
        pa = torch.sigmoid(a)
        la1, la0 = F.logsigmoid(a), F.logsigmoid(-a)
        lb1, lb0 = F.logsigmoid(b), F.logsigmoid(-b)
        return (pa * (la1 - lb1) + (1 - pa) * (la0 - lb0)).sum(-1)
    diff = a - b
    return 0.5 * (diff.pow(2).sum(-1) if diff.dim() > 1 else diff.pow(2))


def _rows(batch: Batch, keep: Tensor) -> Batch:
    """The rows ``keep`` (a boolean mask) of ``batch``."""
    return Batch(
        features={k: v[keep] for k, v in batch.features.items()},
        lengths={k: v[keep] for k, v in batch.lengths.items()},
        y=None if batch.y is None else batch.y[keep],
        index=batch.index[keep],
        extras={k: v[keep] for k, v in batch.extras.items()},
    )


def strip_biases(module: nn.Module) -> None:
    """Remove every additive bias from ``module`` in place (Deep SVDD's bias-free network, Ruff et al. 2018).

    A network without bias terms maps 0 to 0, so with a centre away from 0 the constant map onto
    the centre (the trivial minimiser of the one-class loss) is out of reach. Linear, convolution,
    LayerNorm and multi-head attention lose their biases; an LSTM is rebuilt with ``bias=False``
    (weights kept). Any other module that holds a bias (e.g. a pretrained text model) is refused.
    """
    for name, child in list(module.named_children()):
        if getattr(child, "pretrained_text", None) is True:
            raise ConfigError("omib: a pretrained text model cannot be made bias-free for Deep SVDD; "
                              "use precomputed text features, or --set svdd_bias_free=head")
        if isinstance(child, nn.LSTM):
            lstm = nn.LSTM(child.input_size, child.hidden_size, child.num_layers, bias=False,
                           batch_first=child.batch_first, dropout=child.dropout, bidirectional=child.bidirectional)
            with torch.no_grad():
                for pname, value in lstm.named_parameters():
                    value.copy_(getattr(child, pname))
            setattr(module, name, lstm)
            continue
        if isinstance(child, nn.MultiheadAttention):
            if child.in_proj_bias is not None:
                child.register_parameter("in_proj_bias", None)
            if child.bias_k is not None or child.bias_v is not None:
                child.register_parameter("bias_k", None)
                child.register_parameter("bias_v", None)
        if isinstance(child, (nn.Linear, nn.Conv1d, nn.LayerNorm)) and getattr(child, "bias", None) is not None:
            child.register_parameter("bias", None)
        strip_biases(child)
    left = [n for n, _ in module.named_parameters(recurse=False) if "bias" in n]
    if left:
        raise ConfigError(f"omib: cannot make {type(module).__name__} bias-free for Deep SVDD (parameters {left}); "
                          "use mlp/lstm/conv1d encoders, or --set svdd_bias_free=head")


def _svdd_head(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    """Bias-free two-layer MLP (LeakyReLU), as Deep SVDD needs to avoid a constant solution."""
    return nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.LeakyReLU(), nn.Linear(hidden, out_dim, bias=False))


@register_model(
    "omib",
    "optimal multimodal IB: warm-up TRBs, per-modality VAEs, cross-attention fusion, beta from the MINE bound",
    tasks=("regression", "binary", "multiclass", "multilabel", "anomaly"),
    min_modalities=2,
)
class OMIB(MultimodalModel):
    ensemble_unsupported = "it has a warm-up phase and draws beta from a MINE bound and its weights r from running sums"

    @dataclass
    class Options(EncoderOptions):
        hidden: int = 256  # width of z_i (the paper's SIM encoders output 256)
        latent: int = 64  # k: width of zeta_i, xi and the warm-up noise e_i
        vae_hidden: int = 256  # hidden layer of each VAE
        heads: int = 4  # attention heads of the fusion
        head_hidden: int = 128  # hidden layer of the TRB and OMF heads
        warmup_epochs: int = 5  # 0: ablation "without warm-up"
        beta: float | None = None  # None: drawn from [M_l, M_u] (MINE, training split); anomaly task: 1e-4
        beta_quantile: float | None = None  # None: uniform draw; q in [0, 1]: M_l + q (M_u - M_l)
        fusion: str = "attention"  # "concat": ablation "without cross-attention"
        omf: bool = True  # False: ablation "without the OMF block"
        dynamic_r: bool = True  # False: ablation "without r" (all r_j = 1)
        mine_steps: int = 200  # MINE budget for the default beta (see mmib.eval.bounds.MineSettings)
        mine_samples: int = 4096
        mine_batch: int = 256
        svdd_dim: int = 64  # anomaly task: width of the Deep SVDD embeddings
        detach_xi: bool = True  # L_TRB does not reach xi (False: Algorithm 2's literal "update all with L")
        trb_weight: float = 1.0  # weight of the main phase's sum of L_TRB (0: the TRB heads stop learning)
        r_from: str = "batch"  # "batch": r from the training batch (the paper); "held_out": from held-out rows
        r_holdout: float = 0.1  # r_from=held_out: share of the training split no loss sees, where r is measured
        r_momentum: float = 0.0  # r_from=held_out: r <- m r + (1 - m) r(D) after each epoch (damps oscillation)
        std_offset: float = 5.0  # the VAEs' std = softplus(. - std_offset) (5: the MIB convention)
        svdd_bias_free: str = "network"  # anomaly task: "network" (Ruff et al.) or "head" (the heads only)

    def __init__(self, spec: DatasetSpec, options: "OMIB.Options") -> None:
        super().__init__(spec, options)
        o = options
        names = list(spec.names)
        m = len(names)
        if m < 2:
            raise ConfigError(f"omib needs at least 2 modalities; the data have {m}")
        if o.fusion not in FUSIONS:
            raise ConfigError(f"omib: fusion {o.fusion!r} is not one of {', '.join(FUSIONS)}")
        if o.latent < 1 or o.hidden < 1 or o.head_hidden < 1 or o.vae_hidden < 0 or o.svdd_dim < 1:
            raise ConfigError("omib: latent, hidden, head_hidden and svdd_dim must be >= 1 (vae_hidden >= 0)")
        if o.fusion == "attention" and o.latent % o.heads != 0:
            raise ConfigError(f"omib: latent ({o.latent}) must be divisible by heads ({o.heads})")
        if o.warmup_epochs < 0:
            raise ConfigError(f"omib: warmup_epochs must be >= 0, got {o.warmup_epochs}")
        if o.beta is not None and (not math.isfinite(o.beta) or o.beta < 0):
            raise ConfigError(f"omib: beta must be a finite number >= 0, got {o.beta}")
        if o.beta_quantile is not None and not 0.0 <= o.beta_quantile <= 1.0:
            raise ConfigError(f"omib: beta_quantile must lie in [0, 1], got {o.beta_quantile}")
        if not math.isfinite(o.trb_weight) or o.trb_weight < 0:
            raise ConfigError(f"omib: trb_weight must be a finite number >= 0, got {o.trb_weight}")
        if o.r_from not in R_SOURCES:
            raise ConfigError(f"omib: r_from {o.r_from!r} is not one of {', '.join(R_SOURCES)}")
        if not 0.0 < o.r_holdout < 1.0:
            raise ConfigError(f"omib: r_holdout must lie in (0, 1), got {o.r_holdout}")
        if not 0.0 <= o.r_momentum < 1.0:
            raise ConfigError(f"omib: r_momentum must lie in [0, 1), got {o.r_momentum}")
        if o.svdd_bias_free not in SVDD_BIAS_FREE:
            raise ConfigError(f"omib: svdd_bias_free {o.svdd_bias_free!r} is not one of {', '.join(SVDD_BIAS_FREE)}")
        if o.omf and o.beta is None and m > 3 and spec.task.kind != "anomaly":
            raise ConfigError(
                f"omib: the beta bound is derived for 2 or 3 modalities, the data have {m}; set beta (--set beta=...)"
            )
        self.names = names
        self.anomaly = self.task.kind == "anomaly"
        out_dim = o.svdd_dim if self.anomaly else self.task.output_dim

        def head(in_dim: int) -> nn.Module:
            if self.anomaly:
                return _svdd_head(in_dim, o.head_hidden, out_dim)
            return make_head(in_dim, self.task, o.head_hidden, o.dropout)

        # Task-relevance branches.
        self.encoders = make_encoders(spec, o)
        self.trb_heads = nn.ModuleDict({n: head(o.hidden + o.latent) for n in names})
        # OMF block.
        if o.omf:
            self.vaes = nn.ModuleDict(
                {n: VariationalBottleneck(o.hidden, o.latent, hidden=o.vae_hidden or None, std_offset=o.std_offset,
                                          dropout=o.dropout) for n in names}
            )
            self.attention = (
                nn.MultiheadAttention(o.latent, o.heads, dropout=o.dropout, batch_first=True)
                if o.fusion == "attention" else None
            )
            self.fuse_out = nn.Linear(m * o.latent, o.latent)
        else:
            self.vaes = nn.ModuleDict()
            self.attention = None
            self.fuse_out = nn.Linear(m * o.hidden, o.latent)
        self.omf_head = head(o.latent)

        nan = float("nan")
        self.register_buffer("beta_value", torch.tensor(nan if o.beta is None else float(o.beta)))
        self.register_buffer("beta_lower", torch.tensor(nan))
        self.register_buffer("beta_upper", torch.tensor(nan))
        self.register_buffer("center_omf", torch.zeros(out_dim if self.anomaly else 0))
        self.register_buffer("center_trb", torch.zeros(m, out_dim if self.anomaly else 0))
        # Mean squared distance of the normal training samples to each centre when it was fixed: SVDD
        # distances are divided by it, so the one-class loss starts at 1 whatever the embedding scale.
        self.register_buffer("scale_omf", torch.ones(()))
        self.register_buffer("scale_trb", torch.ones(m))
        # Per-epoch accumulators of r (reset every epoch, so not saved).
        self.register_buffer("_r_sum", torch.zeros(m - 1), persistent=False)
        self.register_buffer("_r_count", torch.zeros(()), persistent=False)
        # r_from=held_out: the weights measured on the held-out rows after the last epoch (NaN until the first
        # measurement; saved for --resume).
        self.register_buffer("r_held_out", torch.full((m - 1,), nan))
        self._beta_checked = False
        self._dataset: MultimodalDataset | None = None
        if self.anomaly and o.svdd_bias_free == "network":
            strip_biases(self)

    # ------------------------------------------------------------------ parts
    def omf_modules(self) -> list[nn.Module]:
        """The OMF block (VAEs, fusion, OMF head): what the warm-up must leave untouched."""
        mods: list[nn.Module] = [self.vaes, self.fuse_out, self.omf_head]
        if self.attention is not None:
            mods.append(self.attention)
        return mods

    def trb_modules(self) -> list[nn.Module]:
        """The task-relevance branches (encoders and TRB heads)."""
        return [self.encoders, self.trb_heads]

    def fuse(self, tokens: list[Tensor]) -> Tensor:
        """``xi`` from the ``M`` modality tokens ``zeta_i`` (or from ``z_i`` without the OMF block)."""
        x = torch.stack(tokens, dim=1)  # (B, M, width)
        if self.attention is not None:
            attended, _ = self.attention(x, x, x, need_weights=False)
            x = x + attended
        return self.fuse_out(x.flatten(1))

    def _omf_pass(self, z: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``xi``, the per-modality KLs and the ``zeta_i`` (``mu_i`` at evaluation)."""
        if not self.options.omf:
            return self.fuse([z[n] for n in self.names]), {}, {}
        kls, zetas = {}, {}
        for n in self.names:
            b = self.vaes[n](z[n])
            kls[n], zetas[n] = b.kl, b.z
        return self.fuse([zetas[n] for n in self.names]), kls, zetas

    def _svdd_score(self, raw: Tensor, center: Tensor, scale: Tensor) -> Tensor:
        return (raw - center).pow(2).sum(-1) / scale

    def _head_prediction(self, raw: Tensor, center: Tensor, scale: Tensor) -> Tensor:
        return self._svdd_score(raw, center, scale) if self.anomaly else head_output(self.task, raw)

    def _loss(self, raw: Tensor, batch: Batch, center: Tensor, scale: Tensor) -> Tensor:
        if self.anomaly:
            dist = self._svdd_score(raw, center, scale)
            if batch.y is None:
                return dist.mean()
            w = (batch.y == 0).to(dist.dtype)  # one-class: only normal samples pull towards the centre
            return (dist * w).sum() / w.sum().clamp_min(1.0)
        assert batch.y is not None
        return task_loss(self.task, head_output(self.task, raw), batch.y, self.options.regression_loss)

    def current_beta(self) -> float:
        beta = float(self.beta_value)
        if math.isnan(beta):
            raise ConfigError(
                "omib: beta is not set yet (it is drawn when the main phase starts); train through the engine or pass beta"
            )
        return beta

    # ------------------------------------------------------------------ inference
    def forward(self, batch: Batch) -> ModelOutput:
        z = self.encoders(batch)
        xi, _, zetas = self._omf_pass(z)
        prediction = self._head_prediction(self.omf_head(xi), self.center_omf, self.scale_omf)
        reps = {f"z_{n}": z[n] for n in self.names}
        reps.update({f"zeta_{n}": v for n, v in zetas.items()})
        return ModelOutput(prediction, xi, reps)

    # ------------------------------------------------------------------ training
    def held_out(self, index: Tensor) -> Tensor:
        """Which dataset rows are held out of every loss (``r_from=held_out``): a fixed pseudo-random
        ``r_holdout`` share, chosen by a hash of the row index (the same rows every epoch and after --resume)."""
        if self.options.r_from != "held_out":
            return torch.zeros(index.shape, dtype=torch.bool, device=index.device)
        u = (index.long() * 2654435761 + 97) % 4294967296  # Knuth's multiplicative hash, uniform in [0, 2^32)
        return u.double() / 4294967296.0 < self.options.r_holdout

    def objective(self, batch: Batch, phase: str, stage: str) -> Objective:
        if self.options.r_from == "held_out":  # the held-out rows measure r; no loss trains on them
            keep = ~self.held_out(batch.index)
            if not bool(keep.any()):  # a zero loss that still reaches the graph
                return Objective(sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0, {})
            if not bool(keep.all()):
                batch = _rows(batch, keep)
        z = self.encoders(batch)
        k = self.options.latent
        terms: dict[str, Tensor] = {}
        if phase == "warmup":
            total = None
            for i, n in enumerate(self.names):
                noise = torch.randn(z[n].shape[0], k, device=z[n].device, dtype=z[n].dtype)
                loss = self._loss(self.trb_heads[n](torch.cat([z[n], noise], -1)), batch, self.center_trb[i],
                                  self.scale_trb[i])
                terms[f"trb_{n}"] = loss
                total = loss if total is None else total + loss
            assert total is not None
            return Objective(total, terms)

        xi, kls, _ = self._omf_pass(z)
        raw = self.omf_head(xi)
        omf_task = self._loss(raw, batch, self.center_omf, self.scale_omf)
        terms["omf_task"] = omf_task
        side = xi.detach() if self.options.detach_xi else xi
        trb_raw = {n: self.trb_heads[n](torch.cat([z[n], side], -1)) for n in self.names}
        trb_total = None
        for i, n in enumerate(self.names):
            loss = self._loss(trb_raw[n], batch, self.center_trb[i], self.scale_trb[i])
            terms[f"trb_{n}"] = loss
            trb_total = loss if trb_total is None else trb_total + loss
        assert trb_total is not None
        total = omf_task + self.options.trb_weight * trb_total
        if self.options.omf:
            r = self._weights(raw, trb_raw)
            weighted = kls[self.names[0]]
            for j, n in enumerate(self.names[1:]):
                weighted = weighted + r[j] * kls[n]
            for n in self.names:
                terms[f"kl_{n}"] = kls[n]
            if not self._beta_checked:
                self.current_beta()  # raises while beta is unset
                self._beta_checked = True
            total = total + self.beta_value * weighted  # a tensor: no device sync per batch
        return Objective(total, terms)

    def _divergences(self, raw: Tensor, trb_raw: dict[str, Tensor]) -> Tensor:
        """Per-sample ``KL(p(y | xi, z_i) || p(y | xi))`` of every TRB head against the OMF head: ``(M, B)``."""
        kind = self.task.kind
        if self.anomaly:  # compare the heads' anomaly scores
            ref = self._svdd_score(raw, self.center_omf, self.scale_omf)
            heads = [self._svdd_score(trb_raw[n], self.center_trb[i], self.scale_trb[i])
                     for i, n in enumerate(self.names)]
        else:
            ref = raw if kind != "regression" else raw.squeeze(-1)
            heads = [trb_raw[n] if kind != "regression" else trb_raw[n].squeeze(-1) for n in self.names]
        return torch.stack([prediction_divergence(kind, h.float(), ref.float()) for h in heads])

    @torch.no_grad()
    def _weights(self, raw: Tensor, trb_raw: dict[str, Tensor]) -> Tensor:
        """The dynamic weights ``r_j`` (no gradient): from this batch, or (``r_from=held_out``) the ones
        measured on the held-out rows after the last epoch; accumulated for logging."""
        if not self.options.dynamic_r:
            r = torch.ones(len(self.names) - 1, device=raw.device)
        elif self.options.r_from == "held_out":
            measured = self.r_held_out.to(raw.device)
            r = torch.where(torch.isnan(measured), torch.ones_like(measured), measured)
        else:
            r = dynamic_weights(self._divergences(raw, trb_raw).mean(1))
        self._r_sum += r.to(self._r_sum.dtype)
        self._r_count += 1
        return r.detach()

    @torch.no_grad()
    def measure_held_out_r(self, batch_size: int = 1024) -> dict[str, float]:
        """``r_j`` from the divergences averaged over the held-out training rows (eval mode), stored for the
        next epoch; returns the mean divergences ``D_<m>`` for logging. Needs the fit's dataset."""
        ds = self._dataset
        if ds is None or not self.options.omf or not self.options.dynamic_r:
            return {}
        train = ds.splits["train"]
        rows = train[self.held_out(train)]
        if rows.numel() == 0:
            raise ConfigError(f"omib: r_holdout={self.options.r_holdout} holds out no row of {ds.name}'s training split")
        device = self.r_held_out.device
        was_training = self.training
        self.eval()
        total = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        for start in range(0, rows.numel(), batch_size):
            batch = ds.take(rows[start : start + batch_size]).to(device)
            z = self.encoders(batch)
            xi, _, _ = self._omf_pass(z)
            raw = self.omf_head(xi)
            trb_raw = {n: self.trb_heads[n](torch.cat([z[n], xi], -1)) for n in self.names}
            total += self._divergences(raw, trb_raw).double().sum(1)
        self.train(was_training)
        d = (total / rows.numel()).float()
        r = dynamic_weights(d)
        if bool(torch.isnan(self.r_held_out).any()):  # the first measurement (NaN: none yet; saved for --resume)
            self.r_held_out.copy_(r)
        else:
            m = self.options.r_momentum
            self.r_held_out.mul_(m).add_((1.0 - m) * r)
        return {f"D_{n}": float(d[i]) for i, n in enumerate(self.names)}

    def training_plan(self, config: TrainConfig) -> list[Phase]:
        """Warm-up over the TRBs only (``warmup_epochs``), then the open-ended main phase."""
        phases = []
        if self.options.warmup_epochs > 0:
            trb_params = [p for mod in self.trb_modules() for p in mod.parameters()]
            phases.append(Phase(
                "warmup", [Stage("warmup", self.param_groups(trb_params, config), config.clip_grad)],
                epochs=self.options.warmup_epochs,
            ))
        phases.append(Phase("main", [Stage("main", self.param_groups(self.parameters(), config), config.clip_grad)]))
        return phases

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, context: FitContext) -> None:
        """Keep the dataset for the held-out measurement of r (not model state)."""
        self._dataset = context.dataset

    def on_phase_start(self, phase: str, context: FitContext) -> None:
        """Main phase: draw beta from the MINE bound if not given. Anomaly: fix the SVDD centres.
        ``r_from=held_out``: measure the first main epoch's r on the held-out rows."""
        if phase == "main" and self.options.omf and self.options.beta is None and math.isnan(float(self.beta_value)):
            if self.anomaly:
                self.beta_value.fill_(ANOMALY_BETA)
            else:
                self.set_beta_from_bound(context)
        if self.anomaly:
            self.fix_centers(phase, context)
        if phase == "main" and self.options.r_from == "held_out":
            self.measure_held_out_r()

    def set_beta_from_bound(self, context: FitContext) -> None:
        """Estimate ``[M_l, M_u]`` on the training split and draw beta from it (Algorithm 2)."""
        from mmib.eval.bounds import MineSettings, beta_bounds

        o = self.options
        settings = MineSettings(steps=o.mine_steps, batch_size=o.mine_batch, max_samples=o.mine_samples,
                                seed=context.config.seed)
        bounds = beta_bounds(context.dataset, "train", settings, self.names, device=context.device)
        g = torch.Generator().manual_seed(context.config.seed + 104729)
        self._beta_checked = False
        self.beta_lower.fill_(bounds.lower)
        self.beta_upper.fill_(bounds.upper)
        self.beta_value.fill_(bounds.draw(g, o.beta_quantile))

    @torch.no_grad()
    def fix_centers(self, phase: str, context: FitContext, batch_size: int = 1024, eps: float = 0.1) -> None:
        """Deep SVDD centres: mean head embeddings over the normal training samples (Ruff et al.),
        coordinates nudged away from 0; and each head's mean squared distance to its centre (the scale)."""
        ds = context.dataset
        train = ds.splits["train"]
        normal = train[ds.y.index_select(0, train) == 0]
        if normal.numel() == 0:
            raise ConfigError(f"{ds.name}: the training split has no normal samples (y == 0) to fix the SVDD centre")
        heads = [n for n in self.names] + ([] if phase == "warmup" else ["_omf"])
        sums: dict[str, Tensor] = {}
        squares: dict[str, Tensor] = {}
        was_training = self.training
        self.eval()
        for start in range(0, normal.numel(), batch_size):
            batch = ds.take(normal[start : start + batch_size]).to(context.device)
            z = self.encoders(batch)
            out: dict[str, Tensor] = {}
            if phase == "warmup":
                for n in self.names:
                    noise = torch.randn(z[n].shape[0], self.options.latent, device=z[n].device)
                    out[n] = self.trb_heads[n](torch.cat([z[n], noise], -1))
            else:
                xi, _, _ = self._omf_pass(z)
                out["_omf"] = self.omf_head(xi)
                for n in self.names:
                    out[n] = self.trb_heads[n](torch.cat([z[n], xi], -1))
            for h in heads:
                e = out[h].double()
                sums[h] = sums[h] + e.sum(0) if h in sums else e.sum(0)
                squares[h] = squares[h] + e.pow(2).sum() if h in squares else e.pow(2).sum()
        self.train(was_training)
        count = float(normal.numel())

        def nudge(c: Tensor) -> Tensor:  # keep coordinates away from 0 (a trivial solution), as Ruff et al. do
            small = c.abs() < eps
            return torch.where(small & (c < 0), torch.full_like(c, -eps), torch.where(small, torch.full_like(c, eps), c))

        for h in heads:
            mean = sums[h] / count
            center = nudge(mean)
            # E||e - c||^2 = E||e||^2 - 2 c.E[e] + ||c||^2
            scale = (squares[h] / count - 2 * (center * mean).sum() + center.pow(2).sum()).clamp_min(1e-12)
            if h == "_omf":
                self.center_omf.copy_(center)
                self.scale_omf.copy_(scale)
            else:
                i = self.names.index(h)
                self.center_trb[i].copy_(center)
                self.scale_trb[i].copy_(scale)

    def on_epoch_end(self, epoch: int, phase: str) -> dict[str, float]:
        """Log beta (and its bounds when drawn) and the epoch mean of every ``r_j``; with
        ``r_from=held_out`` measure next epoch's r on the held-out rows (logged as ``D_<m>``)."""
        out: dict[str, float] = {}
        if phase == "main" and self.options.omf:
            out["beta"] = float(self.beta_value)
            if not math.isnan(float(self.beta_upper)):
                out["beta_lower"] = float(self.beta_lower)
                out["beta_upper"] = float(self.beta_upper)
            if float(self._r_count) > 0:
                for j, n in enumerate(self.names[1:]):
                    out[f"r_{n}"] = float(self._r_sum[j] / self._r_count)
            if self.options.r_from == "held_out":
                out.update(self.measure_held_out_r())
        self._r_sum.zero_()
        self._r_count.zero_()
        return out
