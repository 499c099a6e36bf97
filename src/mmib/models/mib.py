"""The multimodal information bottleneck family (MIB, paper 000): E-MIB, L-MIB, C-MIB, B-MIB.

All four share one structure, differing in where the variational bottleneck
(:class:`~mmib.nn.bottleneck.VariationalBottleneck`) sits relative to the
fusion operator (:mod:`mmib.nn.fusion`):

* ``e-mib`` (early fusion, eq. 15): ``h_m = F_m(x_m)``, ``x = fuse(h_m)``,
  ``z ~ p(z|x)``, ``y^ = D(z)``. Loss ``task(y^) + beta KL(p(z|x) || N(0, I))``.
* ``l-mib`` (late fusion, eq. 17): ``z_m ~ p(z_m|h_m)`` per modality, each with its
  own decoder ``D_m``; ``z = fuse(z_m)``, ``y^ = D(z)``. Loss ``task(y^) +
  sum_m [task(D_m(z_m)) + beta KL_m]``. ``fusion=poe`` fuses the Gaussian
  posteriors by a product of experts with the N(0, I) prior (eq. 19).
* ``c-mib`` (complete, eqs. 20-23): per-modality bottlenecks and decoders as in
  L-MIB, ``x = fuse(z_m)``, then a bottleneck ``z ~ p(z|x)`` on the fused
  representation as in E-MIB. Loss ``task(y^) + beta KL + sum_m [task_m + beta KL_m]``.
* ``b-mib``: E-MIB with ``beta = 0`` (the paper's no-IB baseline).

The task loss is ``-log q(y|z)``: the L1 error for regression (eq. 11) and the
cross-entropy for classification (eq. 12). Every term is returned separately
(``task``, ``kl``, ``task_<m>``, ``kl_<m>``), so the engine logs each per epoch.
``representation`` is the fused ``z`` (the posterior mean at evaluation); the
named representations hold each ``z_<m>``, per-modality predictions and the
per-sample KL values.

**Beta's units.** Every logged ``kl`` term is the KL divergence to N(0, I) in nats,
summed over z's dimensions and averaged over the batch, as eq. 15 writes it. With
``kl_reduction=sum`` (default) the loss adds ``beta * kl``; with ``kl_reduction=mean``
it adds ``beta * kl / z_dim``, the KL averaged over batch *and* dimensions as the MIB
reference code computes it. The reference also counts the fused task loss twice
(its model adds the fused L1 to a loss that already holds it); ``fused_task_weight=2``
reproduces that, the default 1 follows eqs. 15, 17 and 23. So the reference's
``beta = B`` equals ``kl_reduction=mean, fused_task_weight=2, beta=B`` here, or, for the
fused bottleneck, about ``kl_reduction=sum, beta=B / (2 z_dim)`` (1e-3 -> 1e-5 at z_dim 50).

**Sizes.** The bottleneck's hidden ReLU layer is ``ib_ratio`` (default 0.25) times as
wide as the bottleneck's input unless ``ib_hidden`` fixes it (the reference's 1024 on
50-d inputs, 0 for none): a fixed 1024-unit layer on sim-msa-sized inputs made the
network at beta = 0 (b-mib) worse than concat and added 341 % parameters, against
0.14 % in the paper, so the IB-vs-no-IB comparison measured the network, not beta.
Test MAE on sim-msa (5 seeds) fell with the width: e-mib 0.898 (1024), 0.877 (ratio 2),
0.876 (1), 0.871 (0.5), 0.862 (0.25; concat 0.862); c-mib 0.941 (1024), 0.922 (1), 0.926
(0.5), 0.910 (0.25); b-mib 0.887 (1024), 0.864 (0.25). The no-IB
yardstick of each variant is the same network at ``beta=0`` (``b-mib`` for e-mib;
``--set beta=0`` for l-mib and c-mib).

**Fusions against the reference code** (``mmib.nn.fusion``): ``tensor`` projects each
input to 50 dimensions (``fusion_dim``; unless it already has 50), takes the outer
product of the 51-d ``[1; x]`` (132,651 features for three modalities) and a 3-layer
``tanh`` post-fusion network 50 -> 50 (``fusion_hidden``, ``fusion_out``), as the
reference; ``graph`` has the reference's separate bimodal and trimodal networks
(2d -> 64 -> d), 6 trimodal nodes for three modalities and its ``tanh`` output network;
``lmf`` has the reference's rank 5 and output width 50. ``fusion_hidden=0`` drops the
post-fusion networks and ``fusion_dim=16 fusion_hidden=0`` is the earlier tensor fusion.
Still different: the reference's ``concat`` adds ``ReLU(Linear(3d, d))`` after the
concatenation and its ``mul`` multiplies only vision and text (a bug); here they are
the plain operators, whose output the bottleneck's hidden layer maps anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from mmib.data.dataset import Batch, DatasetSpec
from mmib.errors import ConfigError
from mmib.models.base import ModelOutput, MultimodalModel, Objective, head_output, make_head, task_loss
from mmib.models.common import EncoderOptions, make_encoders
from mmib.models.registry import register_model
from mmib.nn.bottleneck import KL_REDUCTIONS, VariationalBottleneck, gaussian_kl_standard, kl_weight
from mmib.nn.fusion import build_fusion, fusion_name, pack_posterior

#: Per-modality width of tensor fusion's inputs when ``fusion_dim`` is not given (the reference's 50:
#: 51^3 = 132,651 product features for three modalities).
TENSOR_DEFAULT_DIM = 50

BETA_HELP = ("weight of every KL term; the KL is in nats, summed over z's dimensions (kl_reduction=sum, eq. 15) "
             "or averaged over them (mean, the reference code), averaged over the batch")


class MIBModel(MultimodalModel):
    """Shared implementation; subclasses choose where the bottlenecks are."""

    #: bottleneck on each modality before fusion (L-MIB, C-MIB)
    unimodal_ib: ClassVar[bool] = False
    #: bottleneck on the fused representation (E-MIB, C-MIB, B-MIB)
    fused_ib: ClassVar[bool] = True
    #: beta is read by ``objective`` on every call and only multiplies KL terms: members of one
    #: ensemble (:mod:`mmib.train.ensemble`) may each have their own
    ensemble_options = ("beta",)

    @dataclass
    class Options(EncoderOptions):
        """``fusion``: concat, add, mul, tensor, lmf, graph, poe (L-MIB/C-MIB only).
        ``beta``: weight of every KL term (units: see the module docstring and ``kl_reduction``).
        ``kl_reduction``: ``sum`` (eq. 15: nats summed over z's dimensions) or ``mean`` (the
        reference: averaged over them, i.e. the KL divided by ``z_dim``). ``z_dim``: bottleneck
        width (each z_m and z). ``ib_hidden``: width of the ReLU layer inside each bottleneck
        (None: ``ib_ratio`` times the bottleneck's input width; 1024 in the MIB reference; 0 = no
        layer). ``std_offset``: std = softplus(. - std_offset). ``fusion_dim``: project each
        fusion input to this width first (None: no projection, except tensor fusion: 50).
        ``fusion_rank``: rank of lmf. ``fusion_hidden``: hidden width of the post-fusion tanh
        network of tensor and graph fusion (0: none). ``fusion_out``: output width of lmf and of
        those networks. ``fused_task_weight``: weight of the fused task loss (2: the reference,
        which counts it twice). ``head_hidden``: hidden layer of the fused decoder (None: linear,
        as the per-modality decoders are)."""

        fusion: str = "concat"
        beta: float = field(default=1e-3, metadata={"help": BETA_HELP})
        kl_reduction: str = field(default="sum", metadata={"help": "sum (eq. 15) or mean over z's dimensions "
                                                                    "(the reference; beta then weighs KL / z_dim)"})
        z_dim: int = 50
        ib_hidden: int | None = field(default=None, metadata={"help": "None: ib_ratio x the bottleneck's input width"})
        ib_ratio: float = 0.25
        std_offset: float = 5.0
        fusion_dim: int | None = None
        fusion_rank: int = 5
        fusion_hidden: int = 50
        fusion_out: int = 50
        fused_task_weight: float = field(default=1.0, metadata={"help": "2: the reference code's double count"})
        unimodal_task_weight: float = field(default=1.0, metadata={
            "help": "weight of each per-modality decoder's task loss (1: eqs. 17 and 21; unused without per-modality bottlenecks)"})
        head_hidden: int | None = None

    def __init__(self, spec: DatasetSpec, options: "MIBModel.Options") -> None:
        super().__init__(spec, options)
        o = options
        if o.beta < 0:
            raise ConfigError(f"{self.registry_name}: beta must be >= 0, got {o.beta}")
        if o.z_dim < 1 or (o.ib_hidden is not None and o.ib_hidden < 0) or not o.ib_ratio > 0:
            raise ConfigError(f"{self.registry_name}: z_dim must be >= 1, ib_hidden >= 0 (or none) and ib_ratio > 0")
        if o.kl_reduction not in KL_REDUCTIONS:
            raise ConfigError(f"{self.registry_name}: kl_reduction {o.kl_reduction!r} is not one of {', '.join(KL_REDUCTIONS)}")
        if o.fusion_hidden < 0 or o.fusion_out < 1 or o.fusion_rank < 1:
            raise ConfigError(f"{self.registry_name}: fusion_hidden must be >= 0, fusion_out and fusion_rank >= 1")
        if o.fused_task_weight < 0:
            raise ConfigError(f"{self.registry_name}: fused_task_weight must be >= 0, got {o.fused_task_weight}")
        self.fusion_kind = fusion_name(o.fusion)
        if self.fusion_kind == "poe" and not self.unimodal_ib:
            raise ConfigError(
                f"{self.registry_name}: fusion 'poe' fuses Gaussian posteriors of per-modality bottlenecks; "
                "use it with l-mib or c-mib"
            )
        names = spec.names
        self.encoders = make_encoders(spec, o)
        self.kl_scale = kl_weight(o.kl_reduction, o.z_dim)
        if self.unimodal_ib:
            width_in = self.encoders.out_dim
            self.unimodal = nn.ModuleDict(
                {m: VariationalBottleneck(width_in, o.z_dim, self._ib_hidden(width_in), o.std_offset, o.dropout)
                 for m in names}
            )
            self.decoders = nn.ModuleDict({m: make_head(o.z_dim, spec.task) for m in names})
            in_dims = [o.z_dim] * len(names)
        else:
            in_dims = [self.encoders.out_dim] * len(names)
        proj = o.fusion_dim
        if proj is None and self.fusion_kind == "tensor" and any(d != TENSOR_DEFAULT_DIM for d in in_dims):
            proj = TENSOR_DEFAULT_DIM
        self.fusion = build_fusion(
            self.fusion_kind, in_dims, proj_dim=proj, out_dim=o.fusion_out, rank=o.fusion_rank, dropout=o.dropout,
            hidden=o.fusion_hidden,
        )
        width = self.fusion.out_dim
        if self.fused_ib:
            self.bottleneck = VariationalBottleneck(width, o.z_dim, self._ib_hidden(width), o.std_offset, o.dropout)
            width = o.z_dim
        self.head = make_head(width, spec.task, o.head_hidden, o.dropout)

    def _ib_hidden(self, in_dim: int) -> int | None:
        """Width of a bottleneck's hidden layer for an input of ``in_dim`` (None: no layer)."""
        o = self.options
        if o.ib_hidden is not None:
            return o.ib_hidden or None
        return max(1, round(o.ib_ratio * in_dim))

    # ------------------------------------------------------------------ pieces
    def _run(self, batch: Batch) -> dict[str, object]:
        """Encoders, bottlenecks and fusion; returns every intermediate the loss and outputs need."""
        h = self.encoders(batch)
        out: dict[str, object] = {}
        if self.unimodal_ib:
            uni = {m: self.unimodal[m](h[m]) for m in h}
            out["unimodal"] = uni
            if self.fusion.takes_posteriors:
                x = self.fusion([pack_posterior(uni[m].mu, uni[m].std) for m in h])
            else:
                x = self.fusion([uni[m].z for m in h])
        else:
            x = self.fusion(list(h.values()))
        if self.fused_ib:
            b = self.bottleneck(x)
            out["fused"] = b
            z = b.z
        else:
            z = x
        out["z"] = z
        out["prediction"] = head_output(self.task, self.head(z))
        return out

    def forward(self, batch: Batch) -> ModelOutput:
        r = self._run(batch)
        reps: dict[str, Tensor] = {}
        if self.fused_ib:
            fb = r["fused"]
            reps["kl"] = gaussian_kl_standard(fb.mu, fb.std)  # type: ignore[attr-defined]
        for m, b in r.get("unimodal", {}).items():  # type: ignore[union-attr]
            reps[f"z_{m}"] = b.z
            reps[f"kl_{m}"] = gaussian_kl_standard(b.mu, b.std)
            reps[f"pred_{m}"] = head_output(self.task, self.decoders[m](b.z))
        return ModelOutput(r["prediction"], r["z"], reps)  # type: ignore[arg-type]

    def objective(self, batch: Batch, phase: str, stage: str) -> Objective:
        """Eqs. 15 / 17 / 21-23 as a loss to minimise: task losses (-log q) plus beta times KL terms."""
        assert batch.y is not None
        o = self.options
        r = self._run(batch)
        terms: dict[str, Tensor] = {"task": task_loss(self.task, r["prediction"], batch.y, o.regression_loss)}  # type: ignore[arg-type]
        total = o.fused_task_weight * terms["task"]
        beta = o.beta * self.kl_scale  # the KL terms are nats summed over z's dimensions (see the module docstring)
        if self.fused_ib:
            terms["kl"] = r["fused"].kl  # type: ignore[attr-defined]
            total = total + beta * terms["kl"]
        for m, b in r.get("unimodal", {}).items():  # type: ignore[union-attr]
            pred = head_output(self.task, self.decoders[m](b.z))
            terms[f"task_{m}"] = task_loss(self.task, pred, batch.y, o.regression_loss)
            terms[f"kl_{m}"] = b.kl
            total = total + o.unimodal_task_weight * terms[f"task_{m}"] + beta * b.kl
        return Objective(total, terms)


@register_model("e-mib", "early-fusion MIB: fuse encodings, one variational bottleneck (MIB eq. 15)")
class EarlyMIB(MIBModel):
    unimodal_ib = False
    fused_ib = True

    @dataclass
    class Options(MIBModel.Options):
        pass


@register_model("l-mib", "late-fusion MIB: a bottleneck and decoder per modality, then fusion (eq. 17; poe: eq. 19)")
class LateMIB(MIBModel):
    unimodal_ib = True
    fused_ib = False

    @dataclass
    class Options(MIBModel.Options):
        pass


@register_model("c-mib", "complete MIB: per-modality bottlenecks, fusion, then a fused bottleneck (eqs. 21-23)")
class CompleteMIB(MIBModel):
    unimodal_ib = True
    fused_ib = True

    @dataclass
    class Options(MIBModel.Options):
        pass


@register_model("b-mib", "E-MIB with beta = 0: the same network without the minimal-information constraint")
class BaseMIB(MIBModel):
    unimodal_ib = False
    fused_ib = True

    @dataclass
    class Options(MIBModel.Options):
        beta: float = field(default=0.0, metadata={"help": "always 0: the same network as e-mib without the KL term"})

    def __init__(self, spec: DatasetSpec, options: "BaseMIB.Options") -> None:
        if options.beta != 0:
            raise ConfigError(f"b-mib is E-MIB with beta = 0 (got beta={options.beta}); use e-mib for beta > 0")
        super().__init__(spec, options)
