"""MCER: modality-complementary, eliminating-redundancy multi-task learning (Zhao et al.; paper 003).

Three tasks trained jointly over shared unimodal encoders ``X_s`` (text: precomputed
features or a local BERT-type model; sequences: the paper's sLSTM, i.e. the
``lstm`` encoder; vectors: an MLP; all from :func:`~mmib.models.common.make_encoders`):

* **multimodal task** (M, eqs. 3-5): ``F'_m = ReLU(W [X_1; ...; X_K])``, the M-MIB
  bottleneck ``z_m ~ p(z | F'_m)`` (:class:`~mmib.nn.bottleneck.VariationalBottleneck`)
  and a decoder head. Its prediction is the model's output at evaluation.
* **unimodal task** (S, eqs. 6-8): per modality ``H_s = ReLU(W X_s)``, an S-MIB
  bottleneck and a head, supervised by generated s-labels (SLGM, eq. 9).
* **cross-modal task** (C, eqs. 10-20): a BiGRU sequence encoder per modality
  (:class:`~mmib.nn.gated.SequenceEncoder`), ``L`` stacked gated cross-modal
  transformers per modality pair (filter and complementary gates,
  :class:`~mmib.nn.gated.GatedCrossModalTransformer`), the head (first-step)
  readout of both streams of a pair concatenated into ``H_ab``, and for each
  modality ``s`` the concatenation of the ``H`` of every pair containing ``s``
  (``h_{ta,v} = [H_ta; H_tv]`` for text) mapped to the ``s``-dominated
  representation ``h_c = ReLU(W h_p)`` and a prediction (eqs. 17-18), supervised by
  generated c-labels (CLGM, eq. 19).

Generated labels (:class:`~mmib.nn.labelgen.CentroidLabelGenerator`): class centres
of positive and negative samples, relative distances, ``delta`` of eq. 30 against
the reference ``F'_m``, the momentum update across epochs of eq. 31; the S and C
losses weight each sample by ``tanh(|y_gen - y_m|)`` (eq. 32). Epoch ``i``'s losses
use the labels generated up to epoch ``i - 1`` (a sample's label moves right after
its loss, as in Self-MM's code), so the labels equal ``y_m`` and the S and C losses
are zero in epochs 1 and 2.

Loss (eq. 33): ``L_task + alpha L_m + beta L_avl + gamma L_dc + eta L_MI`` with
``L_task = L_m-task + W_c L_c-task + W_s L_s-task`` (L1 losses), ``L_m =
beta_IB KL(z_m)`` and ``L_avl = beta_IB sum_s KL(z^s)`` (eqs. 26, 29; ``ib_beta``
defaults to ``beta``). The paper writes ``beta`` inside eq. 29 and again as the weight
of ``L_avl`` in eq. 33, the same symbol for the same trade-off (eq. 27): read literally,
S-MIB's KL would weigh ``beta^2`` (1e-6 with Table III's MOSI beta 1e-3, 1000 times
weaker than M-MIB's ``alpha beta`` = 1.9e-3, so S-MIB would do nothing). Here beta is
applied once (``avl_beta=once``, default): the S-MIB term of the total is
``beta_IB sum_s KL(z^s)``; ``avl_beta=twice`` keeps the literal ``beta * L_avl``. The
logged ``L_avl`` is eq. 29's value either way. ``L_dc`` the modality
discriminator loss of the gated transformers (eqs. 21-22, averaged over pairs and
layers; eq. 22's constant ``lambda K / 2`` is folded into ``gamma``) and ``L_MI =
-sum_pairs (E log q(X_y | X_x) + H(X_y))`` the Barber-Agakov bound of MMIM between
unimodal representations (:mod:`mmib.nn.mi`; an anchor modality, text by default,
paired with every other). The BA predictors ``q`` learn in the same step by
maximising their likelihood on detached inputs (term ``mi_q``), while ``L_MI``
reaches the encoders through a frozen copy of ``q`` (``torch.func.functional_call``
with detached parameters): MMIM's two stages in one backward pass, without a second
encoder pass. As in :mod:`mmib.models.mmim` (``ba_form``), the target of each pair is
detached inside that likelihood (``mi_form=stopgrad``, default), so the only MI
gradient a target representation gets is its entropy's and the term cannot collapse
it; ``mi_form=joint`` lets the likelihood's gradient reach the target too (the
earlier behaviour).

Defaults follow Table III (CMU-MOSI): alpha 1.9, beta 1e-3, gamma 0.05, eta 0.1;
learning rates 9e-4 for the audio encoder, 6e-3 for the vision encoder, 7e-4 for
everything else and 4.5e-5 for a BERT-type text model (``lr_modality``,
``lr_other``, ``lr_bert``; ``lr_other=none`` uses the run's ``lr``). The paper's
batch size 32 is this model's preset (``mmib/presets/mcer.yaml``; a run's own
``--set batch_size=...`` wins). Widths the paper does not give are ours (see ``Options``).

Ablations (the analogues of Tables IV and V): ``without=m,avl,dc,mi`` drops the
named terms of eq. 33; ``tasks=m,s`` trains without the cross-modal task;
``cross_tasks=text`` (or any subset of modalities) keeps only those
modality-dominated cross-modal heads (only the pairs they need are built).

Limits and choices: label generation needs a real-valued target, so ``mcer`` is
registered for regression only (classification data are refused with a
ConfigError). A vector modality enters the cross-modal task as a one-step
sequence (attention over one key is then a gated linear map). By default the
cross-modal task reads the per-step states of the shared sLSTM
(``cross_input=shared``); a sequence modality whose shared encoder exposes no
per-step states (conv1d, transformer, bert) feeds its input features to the BiGRU
instead, as ``cross_input=input`` does for every modality. Per-epoch generated labels of ``log_labels``
training samples (evenly spaced over the train split) are written to
``generated_labels.jsonl`` in the run directory (one row per sample and epoch:
``epoch``, ``index``, ``id``, ``m`` and each ``s_<modality>`` / ``c_<modality>``),
the analogue of the paper's Table VI; ``metrics.jsonl`` logs per epoch the mean
offset ``|y_gen - y_m|`` and mean task weight of every view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from mmib.data.dataset import Batch, DatasetSpec
from mmib.errors import ConfigError
from mmib.models.base import (
    FitContext, ModelOutput, MultimodalModel, Objective, ParamGroup, Phase, Stage, head_output, make_head, task_loss,
)
from mmib.models.common import EncoderOptions, make_encoders
from mmib.models.registry import register_model
from mmib.nn.bottleneck import VariationalBottleneck
from mmib.nn.gated import READOUTS, GatedCrossModalTransformer, SequenceEncoder, readout
from mmib.nn.labelgen import CentroidLabelGenerator, evenly_spaced, weighted_l1
from mmib.nn.mi import BarberAgakov, GMMEntropy, RandomProjection, polarity_components
from mmib.train import rundir

if TYPE_CHECKING:
    from mmib.config import TrainConfig

TASKS = ("m", "s", "c")
LOSS_TERMS = ("m", "avl", "dc", "mi")
CROSS_INPUTS = ("shared", "input")
AVL_BETA = ("once", "twice")
LABEL_LOG = "generated_labels.jsonl"


def _pair_key(a: str, b: str) -> str:
    return f"{a}__{b}"


@register_model(
    "mcer",
    "MCER: multimodal (M-MIB), unimodal (S-MIB, generated s-labels) and cross-modal (gated transformers, "
    "generated c-labels) tasks, discriminator and BA mutual-information losses",
    tasks=("regression",),
    min_modalities=3,
)
class MCER(MultimodalModel):
    ensemble_unsupported = "it generates unimodal labels from class centres it accumulates across batches and epochs"

    @dataclass
    class Options(EncoderOptions):
        """Widths: ``hidden`` (shared encoders' X_s), ``fusion_dim`` (F'_m), ``unimodal_dim`` (H_s),
        ``z_dim`` / ``unimodal_z_dim`` (M-MIB / S-MIB bottlenecks), ``ib_hidden`` (ReLU layer in each
        bottleneck, the DNN encoder), ``head_hidden`` (decoder hidden layer; None = linear),
        ``cross_dim`` (d of the gated transformers), ``cross_layers`` (L), ``attn_heads``,
        ``cross_hidden`` (h_c), ``cross_readout`` (first = the head step, or mean).
        Loss weights (eq. 33): ``alpha``, ``beta``, ``gamma``, ``eta``; ``ib_beta`` (the MIB beta
        inside L_m and L_avl; None = beta); ``avl_beta`` (``once``: S-MIB's KL weighs ``ib_beta``;
        ``twice``: eq. 33's beta multiplies L_avl again, ``beta * ib_beta``); ``disc_group`` (eq. 21's
        group size k).
        Ablations: ``tasks`` (subset of m, s, c; m required), ``cross_tasks`` (modalities whose
        dominated cross-modal head is used; None = all), ``without`` (terms of eq. 33 to drop:
        m, avl, dc, mi). Labels: ``label_bound`` (clip; None = max |y| of the training split),
        ``log_labels`` (training samples whose generated labels are written per epoch).
        MI: ``mi_anchor`` (None = text if present, else the first modality), ``mi_pairs``
        (anchor or all), ``mi_project`` (target width fraction of MMIM's tanh projection; None =
        none), ``mi_memory`` (GMM memory batches), ``mi_cov_eps``, ``mi_form`` (stopgrad: the
        target is detached inside the likelihood; joint: not).
        Learning rates: ``lr_other``, ``lr_modality`` (per modality's shared encoder; names not in
        the data are ignored), ``lr_bert`` (pretrained text model; None = the run's text_lr),
        ``lr_mi`` (BA predictors; None = lr_other)."""

        hidden: int = 64
        fusion_dim: int = 128
        unimodal_dim: int = 32
        z_dim: int = 50
        unimodal_z_dim: int = 16
        ib_hidden: int = 256
        std_offset: float = 5.0
        head_hidden: int | None = 64
        cross_dim: int = 32
        cross_layers: int = 2
        attn_heads: int = 4
        cross_hidden: int = 64
        cross_readout: str = "first"
        cross_input: str = "shared"
        alpha: float = 1.9
        beta: float = 1e-3
        gamma: float = 0.05
        eta: float = 0.1
        ib_beta: float | None = None
        avl_beta: str = "once"
        disc_group: int = 1
        tasks: list[str] = field(default_factory=lambda: list(TASKS))
        cross_tasks: list[str] | None = None
        without: list[str] = field(default_factory=list)
        label_bound: float | None = None
        log_labels: int = 16
        mi_anchor: str | None = None
        mi_pairs: str = "anchor"
        mi_project: float | None = 0.25
        mi_memory: int = 1
        mi_cov_eps: float = 1e-4
        mi_form: str = "stopgrad"
        lr_other: float | None = 7e-4
        lr_modality: dict[str, float] = field(default_factory=lambda: {"audio": 9e-4, "vision": 6e-3})
        lr_bert: float | None = 4.5e-5
        lr_mi: float | None = None

    def __init__(self, spec: DatasetSpec, options: "MCER.Options") -> None:
        super().__init__(spec, options)
        o = options
        self._validate(spec, o)
        names = spec.names
        self.use_s = "s" in o.tasks
        self.use_c = "c" in o.tasks
        self.dropped = set(o.without)
        self.ib_beta = o.beta if o.ib_beta is None else o.ib_beta

        # Shared unimodal encoders X_s.
        self.encoders = make_encoders(spec, o)
        width = self.encoders.out_dim

        # Multimodal task (eqs. 3-5).
        self.fusion = nn.Sequential(nn.Linear(width * len(names), o.fusion_dim), nn.ReLU())
        self.m_ib = VariationalBottleneck(o.fusion_dim, o.z_dim, o.ib_hidden, o.std_offset, o.dropout)
        self.m_head = make_head(o.z_dim, spec.task, o.head_hidden, o.dropout)

        # Unimodal task (eqs. 6-8).
        self.s_proj = nn.ModuleDict()
        self.s_ib = nn.ModuleDict()
        self.s_head = nn.ModuleDict()
        if self.use_s:
            for m in names:
                self.s_proj[m] = nn.Sequential(nn.Linear(width, o.unimodal_dim), nn.ReLU())
                self.s_ib[m] = VariationalBottleneck(o.unimodal_dim, o.unimodal_z_dim, o.ib_hidden, o.std_offset, o.dropout)
                self.s_head[m] = make_head(o.unimodal_z_dim, spec.task, o.head_hidden, o.dropout)

        # Cross-modal task (eqs. 10-18).
        self.cross_tasks: tuple[str, ...] = tuple(o.cross_tasks) if o.cross_tasks is not None else names
        self.pairs: list[tuple[str, str]] = []
        self.seq_enc = nn.ModuleDict()
        self.gated = nn.ModuleDict()
        self.c_proj = nn.ModuleDict()
        self.c_head = nn.ModuleDict()
        self.cross_from_steps: dict[str, bool] = {}
        if self.use_c:
            self.pairs = [
                (a, b) for i, a in enumerate(names) for b in names[i + 1 :]
                if a in self.cross_tasks or b in self.cross_tasks
            ]
            needed = sorted({m for p in self.pairs for m in p}, key=names.index)
            for m in needed:
                enc = self.encoders.encoders[m]
                steps = o.cross_input == "shared" and spec[m].sequence and hasattr(enc, "forward_steps")
                self.cross_from_steps[m] = steps
                if steps:
                    in_dim = int(enc.steps_dim)
                elif o.cross_input == "shared" and not spec[m].sequence:
                    in_dim = width  # the shared vector encoding as a one-step sequence
                else:
                    in_dim = spec[m].dim  # the modality's input features
                self.seq_enc[m] = SequenceEncoder(in_dim, o.cross_dim, o.dropout)
            for a, b in self.pairs:
                self.gated[_pair_key(a, b)] = GatedCrossModalTransformer(
                    o.cross_dim, o.cross_layers, o.attn_heads, o.dropout, discriminator="dc" not in self.dropped
                )
            for s in self.cross_tasks:
                n_pairs = sum(1 for p in self.pairs if s in p)
                self.c_proj[s] = nn.Sequential(nn.Linear(2 * o.cross_dim * n_pairs, o.cross_hidden), nn.ReLU(),
                                               nn.Dropout(o.dropout))
                self.c_head[s] = nn.Linear(o.cross_hidden, spec.task.output_dim)

        # Label generation (SLGM, CLGM) against the reference F'_m.
        views: dict[str, int] = {}
        if self.use_s:
            views.update({f"s_{m}": o.unimodal_dim for m in names})
        if self.use_c:
            views.update({f"c_{m}": o.cross_hidden for m in self.cross_tasks})
        self.labels = CentroidLabelGenerator(views, o.fusion_dim, o.label_bound) if views else None

        # Inter-modality MI between unimodal representations (BA bound of MMIM).
        self.mi_pairs: list[tuple[str, str]] = []
        self.mi = nn.ModuleDict()
        self.mi_targets = nn.ModuleDict()
        self.mi_entropy = nn.ModuleDict()
        if "mi" not in self.dropped:
            anchor = o.mi_anchor or ("text" if "text" in names else names[0])
            others = [m for m in names if m != anchor]
            self.mi_pairs = [(anchor, m) for m in others]
            if o.mi_pairs == "all":
                self.mi_pairs += [(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]
            target = width if o.mi_project is None else max(1, round(width * o.mi_project))
            for x, y in self.mi_pairs:
                self.mi[_pair_key(x, y)] = BarberAgakov(width, target, noise_var=o.mi_cov_eps)
                if y not in self.mi_targets:
                    self.mi_targets[y] = RandomProjection(width, target) if o.mi_project is not None else nn.Identity()
                    self.mi_entropy[y] = GMMEntropy(target, 2, o.mi_memory, eps=o.mi_cov_eps)

        # Per-epoch label log (set up in on_fit_start; not model state).
        self._log_index: Tensor | None = None
        self._log_ids: list[str] | None = None
        self._log_path: Path | None = None
        self.label_log: list[dict[str, Any]] = []

    @staticmethod
    def _validate(spec: DatasetSpec, o: "MCER.Options") -> None:
        if spec.task.kind != "regression":
            raise ConfigError(
                f"mcer generates labels from a real-valued sentiment target and supports regression only; "
                f"this dataset is {spec.task.kind}"
            )
        if len(spec.modalities) < 3:
            raise ConfigError(f"mcer needs at least 3 modalities; the data have {len(spec.modalities)}")
        bad = [t for t in o.tasks if t not in TASKS]
        if bad or "m" not in o.tasks:
            raise ConfigError(f"mcer option tasks={','.join(o.tasks)}: a subset of m, s, c that contains m")
        bad = [t for t in o.without if t not in LOSS_TERMS]
        if bad:
            raise ConfigError(f"mcer option without={','.join(bad)}: choose from {', '.join(LOSS_TERMS)}")
        if o.cross_tasks is not None:
            unknown = [m for m in o.cross_tasks if m not in spec.names]
            if unknown or not o.cross_tasks:
                raise ConfigError(
                    f"mcer option cross_tasks={','.join(o.cross_tasks)}: give modalities of the data ({', '.join(spec.names)})"
                )
        if o.cross_readout not in READOUTS:
            raise ConfigError(f"mcer option cross_readout={o.cross_readout!r}: choose one of {', '.join(READOUTS)}")
        if o.cross_input not in CROSS_INPUTS:
            raise ConfigError(f"mcer option cross_input={o.cross_input!r}: choose one of {', '.join(CROSS_INPUTS)}")
        if o.mi_form not in ("stopgrad", "joint"):
            raise ConfigError(f"mcer option mi_form={o.mi_form!r}: choose stopgrad or joint")
        if o.mi_pairs not in ("anchor", "all"):
            raise ConfigError(f"mcer option mi_pairs={o.mi_pairs!r}: choose anchor or all")
        if o.mi_anchor is not None and o.mi_anchor not in spec.names:
            raise ConfigError(f"mcer option mi_anchor={o.mi_anchor!r} is not a modality ({', '.join(spec.names)})")
        if o.mi_project is not None and not 0.0 < o.mi_project <= 1.0:
            raise ConfigError(f"mcer option mi_project must lie in (0, 1] or be none, got {o.mi_project}")
        for name in ("alpha", "beta", "gamma", "eta"):
            if getattr(o, name) < 0:
                raise ConfigError(f"mcer option {name} must be >= 0, got {getattr(o, name)}")
        if o.ib_beta is not None and o.ib_beta < 0:
            raise ConfigError(f"mcer option ib_beta must be >= 0, got {o.ib_beta}")
        if o.avl_beta not in AVL_BETA:
            raise ConfigError(f"mcer option avl_beta={o.avl_beta!r}: choose one of {', '.join(AVL_BETA)}")
        if o.disc_group < 1:
            raise ConfigError(f"mcer option disc_group must be >= 1, got {o.disc_group}")
        if o.log_labels < 0:
            raise ConfigError(f"mcer option log_labels must be >= 0, got {o.log_labels}")
        for name in ("fusion_dim", "unimodal_dim", "z_dim", "unimodal_z_dim", "cross_dim", "cross_layers",
                     "cross_hidden", "attn_heads"):
            if getattr(o, name) < 1:
                raise ConfigError(f"mcer option {name} must be >= 1, got {getattr(o, name)}")
        for name in ("lr_other", "lr_bert", "lr_mi"):
            v = getattr(o, name)
            if v is not None and v <= 0:
                raise ConfigError(f"mcer option {name} must be > 0 or none, got {v}")
        if any(v <= 0 for v in o.lr_modality.values()):
            raise ConfigError("mcer option lr_modality: learning rates must be > 0")

    # ------------------------------------------------------------------ pieces
    def _encode(self, batch: Batch, steps: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Shared unimodal encodings ``X_s`` and, where the cross-modal task reads them, per-step states."""
        x: dict[str, Tensor] = {}
        seq: dict[str, Tensor] = {}
        for m in self.spec.names:
            if steps and self.cross_from_steps.get(m):
                x[m], seq[m] = self.encoders.encode_steps(m, batch)
            else:
                x[m] = self.encoders.encode(m, batch)
        return x, seq

    def _multimodal(self, x: dict[str, Tensor]) -> tuple[Tensor, Any, Tensor]:
        fused = self.fusion(torch.cat([x[m] for m in self.spec.names], dim=-1))
        b = self.m_ib(fused)
        return fused, b, head_output(self.task, self.m_head(b.z))

    def _unimodal(self, x: dict[str, Tensor]) -> dict[str, tuple[Tensor, Any, Tensor]]:
        out = {}
        for m in self.s_proj:
            h = self.s_proj[m](x[m])
            b = self.s_ib[m](h)
            out[m] = (h, b, head_output(self.task, self.s_head[m](b.z)))
        return out

    def _cross(
        self, batch: Batch, x: dict[str, Tensor], seq: dict[str, Tensor]
    ) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, Any]]:
        """``{s: (h_c, prediction)}`` for each cross-modal task, and every pair's gated output."""
        o = self.options
        streams: dict[str, tuple[Tensor, Tensor | None]] = {}
        for m, enc in self.seq_enc.items():
            if m in seq:
                inp, ln = seq[m], batch.lengths.get(m)
            elif o.cross_input == "shared" and not self.spec[m].sequence:
                inp, ln = x[m].unsqueeze(1), None
            else:
                inp, ln = batch.features[m], batch.lengths.get(m) if self.spec[m].sequence else None
            streams[m] = (enc(inp, ln), ln)
        pair_rep: dict[tuple[str, str], Tensor] = {}
        gated_out: dict[str, Any] = {}
        for a, b in self.pairs:
            (ma, la), (mb, lb) = streams[a], streams[b]
            out = self.gated[_pair_key(a, b)](ma, la, mb, lb)
            gated_out[_pair_key(a, b)] = out
            pair_rep[(a, b)] = torch.cat([readout(out.a, la, o.cross_readout), readout(out.b, lb, o.cross_readout)], -1)
        result = {}
        for s in self.cross_tasks:
            h_p = torch.cat([rep for p, rep in pair_rep.items() if s in p], dim=-1)
            h_c = self.c_proj[s](h_p)
            result[s] = (h_c, head_output(self.task, self.c_head[s](h_c)))
        return result, gated_out

    # ------------------------------------------------------------------ inference
    def forward(self, batch: Batch) -> ModelOutput:
        """The multimodal task's prediction (the paper's test-time output); the representation is
        ``z_m``; named outputs: ``fused`` (F'_m), each ``X_<m>`` and unimodal prediction ``pred_<m>``."""
        x, _ = self._encode(batch, steps=False)
        fused, b, pred = self._multimodal(x)
        reps: dict[str, Tensor] = {"fused": fused, **{f"X_{m}": v for m, v in x.items()}}
        for m, (_, _, p) in self._unimodal(x).items():
            reps[f"pred_{m}"] = p
        return ModelOutput(pred, b.z, reps)

    # ------------------------------------------------------------------ training
    def objective(self, batch: Batch, phase: str, stage: str) -> Objective:
        assert batch.y is not None
        o = self.options
        y = batch.y
        x, seq = self._encode(batch, steps=self.use_c)
        fused, bm, pred_m = self._multimodal(x)
        task_m = task_loss(self.task, pred_m, y, o.regression_loss)
        terms: dict[str, Tensor] = {"task_m": task_m, "kl_m": bm.kl}
        gen = self.labels.labels(batch.index, y) if self.labels is not None else {}
        views: dict[str, Tensor] = {}
        total = task_m

        if self.use_s:
            uni = self._unimodal(x)
            task_s, kl_s = [], []
            for m, (h, b, p) in uni.items():
                target = gen[f"s_{m}"]
                loss = weighted_l1(p, target, torch.tanh((target - y).abs()))
                terms[f"task_s_{m}"], terms[f"kl_s_{m}"] = loss, b.kl
                task_s.append(loss)
                kl_s.append(b.kl)
                views[f"s_{m}"] = h
            terms["task_s"] = torch.stack(task_s).sum()
            terms["L_avl"] = self.ib_beta * torch.stack(kl_s).sum()
            total = total + terms["task_s"]
            if "avl" not in self.dropped:
                # eq. 29's L_avl already carries beta; "twice" is eq. 33 read literally (beta * L_avl)
                total = total + (o.beta * terms["L_avl"] if o.avl_beta == "twice" else terms["L_avl"])

        if self.use_c:
            cross, gated_out = self._cross(batch, x, seq)
            task_c = []
            for s, (h_c, p) in cross.items():
                target = gen[f"c_{s}"]
                loss = weighted_l1(p, target, torch.tanh((target - y).abs()))
                terms[f"task_c_{s}"] = loss
                task_c.append(loss)
                views[f"c_{s}"] = h_c
            terms["task_c"] = torch.stack(task_c).sum()
            total = total + terms["task_c"]
            gates_f = [g for out in gated_out.values() for info in out.layers for k, g in info.gates.items() if k.startswith("filter")]
            gates_c = [g for out in gated_out.values() for info in out.layers for k, g in info.gates.items() if k.startswith("complementary")]
            terms["gate_filter"] = torch.stack([g.mean() for g in gates_f]).mean().detach()
            terms["gate_complementary"] = torch.stack([g.mean() for g in gates_c]).mean().detach()
            if "dc" not in self.dropped:
                dc = torch.stack([self.gated[k].discriminator_loss(out, o.disc_group) for k, out in gated_out.items()])
                terms["L_dc"] = dc.mean()
                total = total + o.gamma * terms["L_dc"]

        terms["L_m"] = self.ib_beta * bm.kl
        if "m" not in self.dropped:
            total = total + o.alpha * terms["L_m"]

        if self.mi_pairs:
            l_mi, q_loss, mi_terms = self._mi(x, y)
            terms.update(mi_terms)
            terms["L_MI"] = l_mi
            total = total + o.eta * l_mi + q_loss

        if self.training and self.labels is not None:
            self.labels.update(batch.index, fused.detach(), {k: v.detach() for k, v in views.items()})
        return Objective(total, terms)

    def _mi(self, x: dict[str, Tensor], y: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``L_MI = -sum (E log q + H)`` through frozen predictors, the predictors' own loss, and terms."""
        t = {m: proj(x[m]) for m, proj in self.mi_targets.items()}
        comps = polarity_components(y)
        entropy: dict[str, Tensor] = {}
        for m, est in self.mi_entropy.items():
            ready = est.memory_full
            e = est(t[m], comps, update=self.training)
            if ready and e.entropy is not None:
                entropy[m] = e.entropy
        lld_rep, lld_q = [], []
        for a, b in self.mi_pairs:
            ba = self.mi[_pair_key(a, b)]
            lld_q.append(ba.log_likelihood(x[a].detach(), t[b].detach()))
            frozen = {k: v.detach() for k, v in ba.named_parameters()}
            target = t[b].detach() if self.options.mi_form == "stopgrad" else t[b]
            lld_rep.append(functional_call(ba, frozen, (x[a], target)).log_likelihood)
        lld = torch.stack(lld_rep).sum()
        ent = sum((entropy[b] for _, b in self.mi_pairs if b in entropy), lld.new_zeros(()))
        q = -torch.stack(lld_q).sum()
        return -(lld + ent), q, {"mi_lld": lld, "mi_entropy": ent, "mi_q": q}

    def training_plan(self, config: "TrainConfig") -> list[Phase]:
        """One open-ended phase, one stage; parameter groups by Table III's learning rates."""
        o = self.options
        lr_other = config.lr if o.lr_other is None else o.lr_other
        groups: list[ParamGroup] = []
        seen: set[int] = set()
        for m, enc in self.encoders.encoders.items():
            for g in self.param_groups(enc.parameters(), config):
                if g.name == "main":
                    g.lr = o.lr_modality.get(m, lr_other)
                elif g.name == "text" and o.lr_bert is not None:
                    g.lr = o.lr_bert
                g.name = f"{g.name}_{m}"
                groups.append(g)
                seen.update(id(p) for p in g.params)
        mi_params = [p for p in self.mi.parameters() if p.requires_grad]
        if mi_params:
            groups.append(ParamGroup(mi_params, o.lr_mi or lr_other, config.weight_decay, "mi"))
            seen.update(id(p) for p in mi_params)
        rest = [p for p in self.parameters() if id(p) not in seen and p.requires_grad]
        groups.append(ParamGroup(rest, lr_other, config.weight_decay, "other"))
        return [Phase("main", [Stage("main", [g for g in groups if g.params], config.clip_grad)])]

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, context: FitContext) -> None:
        """Pick the logged samples; keep log rows up to the epoch the labels were restored at."""
        ds = context.dataset
        self._log_index = evenly_spaced(ds.splits["train"], self.options.log_labels)
        self._log_ids = [str(ds.ids[i]) for i in self._log_index.tolist()] if ds.ids is not None else None
        self._log_path = Path(context.run_dir) / LABEL_LOG if context.run_dir is not None else None
        done = int(self.labels.epoch) if self.labels is not None else 0
        rows: list[dict[str, Any]] = []
        if self._log_path is not None and self._log_path.is_file() and done:
            rows = [r for r in read_label_log(self._log_path) if r["epoch"] <= done]
        self.label_log = rows
        if self._log_path is not None and self.labels is not None and self._log_index.numel():
            rundir.atomic_write_jsonl(self._log_path, rows)

    def on_phase_start(self, phase: str, context: FitContext) -> None:
        """Size the label buffers by the dataset; all labels start at the multimodal labels."""
        if self.labels is not None:
            self.labels.allocate(context.dataset.y, context.dataset.splits["train"])
        self.label_log = []

    def on_epoch_end(self, epoch: int, phase: str) -> dict[str, float]:
        """Turn this epoch's sums into centres; log label offsets/weights and the sampled labels."""
        if self.labels is None or not self.labels.allocated:
            return {}
        self.labels.end_epoch()
        if self._log_index is not None and self._log_index.numel():
            values = self.labels.sample(self._log_index)
            for j, i in enumerate(self._log_index.tolist()):
                row: dict[str, Any] = {"epoch": epoch, "index": i}
                if self._log_ids is not None:
                    row["id"] = self._log_ids[j]
                row.update({k: round(v[j], 6) for k, v in values.items()})
                self.label_log.append(row)
            if self._log_path is not None:
                rundir.atomic_write_jsonl(self._log_path, self.label_log)
        return self.labels.summary()


def read_label_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``generated_labels.jsonl`` (a run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / LABEL_LOG
    if not p.is_file():
        raise ConfigError(f"{p}: no generated-labels log (train mcer with a run directory and log_labels > 0)")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


__all__ = ["MCER", "read_label_log"]
