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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from mmib.data.dataset import Batch, DatasetSpec
from mmib.errors import ConfigError
from mmib.models.base import ModelOutput, MultimodalModel, Objective, head_output, make_head, task_loss
from mmib.models.common import EncoderOptions, make_encoders
from mmib.models.registry import register_model
from mmib.nn.bottleneck import VariationalBottleneck, gaussian_kl_standard
from mmib.nn.fusion import build_fusion, fusion_name, pack_posterior

#: Per-modality projection width used by tensor fusion when ``fusion_dim`` is not given
#: (so that prod(d_m + 1) stays small: 17^3 = 4,913 for three modalities).
TENSOR_DEFAULT_DIM = 16


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
        ``beta``: weight of every KL term. ``z_dim``: bottleneck width (each z_m and z).
        ``ib_hidden``: ReLU layer inside each bottleneck (1024 in the MIB reference; 0 = none).
        ``std_offset``: std = softplus(. - std_offset). ``fusion_dim``: project each fusion
        input to this width first (None: no projection, except tensor fusion, which uses 16).
        ``fusion_rank``: rank of lmf. ``head_hidden``: hidden layer of the fused decoder (None:
        linear, as the per-modality decoders are)."""

        fusion: str = "concat"
        beta: float = 1e-3
        z_dim: int = 50
        ib_hidden: int = 1024
        std_offset: float = 5.0
        fusion_dim: int | None = None
        fusion_rank: int = 4
        head_hidden: int | None = None

    def __init__(self, spec: DatasetSpec, options: "MIBModel.Options") -> None:
        super().__init__(spec, options)
        o = options
        if o.beta < 0:
            raise ConfigError(f"{self.registry_name}: beta must be >= 0, got {o.beta}")
        if o.z_dim < 1 or o.ib_hidden < 0:
            raise ConfigError(f"{self.registry_name}: z_dim must be >= 1 and ib_hidden >= 0")
        self.fusion_kind = fusion_name(o.fusion)
        if self.fusion_kind == "poe" and not self.unimodal_ib:
            raise ConfigError(
                f"{self.registry_name}: fusion 'poe' fuses Gaussian posteriors of per-modality bottlenecks; "
                "use it with l-mib or c-mib"
            )
        names = spec.names
        self.encoders = make_encoders(spec, o)
        hidden_ib = o.ib_hidden or None
        if self.unimodal_ib:
            self.unimodal = nn.ModuleDict(
                {m: VariationalBottleneck(self.encoders.out_dim, o.z_dim, hidden_ib, o.std_offset, o.dropout) for m in names}
            )
            self.decoders = nn.ModuleDict({m: make_head(o.z_dim, spec.task) for m in names})
            in_dims = [o.z_dim] * len(names)
        else:
            in_dims = [self.encoders.out_dim] * len(names)
        proj = o.fusion_dim
        if proj is None and self.fusion_kind == "tensor":
            proj = TENSOR_DEFAULT_DIM
        self.fusion = build_fusion(
            self.fusion_kind, in_dims, proj_dim=proj, out_dim=None, rank=o.fusion_rank, dropout=o.dropout
        )
        width = self.fusion.out_dim
        if self.fused_ib:
            self.bottleneck = VariationalBottleneck(width, o.z_dim, hidden_ib, o.std_offset, o.dropout)
            width = o.z_dim
        self.head = make_head(width, spec.task, o.head_hidden, o.dropout)

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
        total = terms["task"]
        if self.fused_ib:
            terms["kl"] = r["fused"].kl  # type: ignore[attr-defined]
            total = total + o.beta * terms["kl"]
        for m, b in r.get("unimodal", {}).items():  # type: ignore[union-attr]
            pred = head_output(self.task, self.decoders[m](b.z))
            terms[f"task_{m}"] = task_loss(self.task, pred, batch.y, o.regression_loss)
            terms[f"kl_{m}"] = b.kl
            total = total + terms[f"task_{m}"] + o.beta * b.kl
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
        beta: float = 0.0

    def __init__(self, spec: DatasetSpec, options: "BaseMIB.Options") -> None:
        if options.beta != 0:
            raise ConfigError(f"b-mib is E-MIB with beta = 0 (got beta={options.beta}); use e-mib for beta > 0")
        super().__init__(spec, options)
