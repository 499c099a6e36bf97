"""Gated cross-modal transformers (MCER eqs. 10-16, 21; after BBFN, Han et al. 2021).

For a pair of modalities ``(a, b)`` a :class:`GatedCrossModalTransformer` stacks
``L`` :class:`GatedPairLayer`. Each layer updates both streams (``a`` attends to
``b`` and ``b`` attends to ``a``), each direction with its own weights:

* sequence-level summaries ``x_s = avgpool(BiGRU(M_s))`` (eq. 11; the average runs
  over the valid steps only),
* the filter gate ``g_f = sigmoid(W_f [x_s || x_m])`` (eq. 12: how much of the
  current modality is kept) and the complementary gate
  ``g_c = sigmoid(W_c [x_m || x_s])`` (eq. 13: how much of the other modality is
  injected), each ``(B, d)`` and broadcast over time,
* cross-modal multi-head attention ``o = MHA(Q = M_s, K = V = M_m)`` (eq. 14; the
  paper writes the pooled ``x`` in the MHA; the gates act on the sequence
  ``M_s`` in eq. 15, so queries, keys and values are the sequences, as in BBFN;
  padded key steps are masked),
* ``M_bar = LN(g_f * M_s + g_c * o)`` and ``M_s' = LN(M_bar + FFN(M_bar))``
  (eqs. 15-16).

:class:`SequenceEncoder` is eq. 10's single-layer BiGRU plus a linear projection
that brings every modality to the common width ``d``. The layer summaries feed
the modality discriminator of eq. 21 (:meth:`GatedCrossModalTransformer.discriminator_loss`):
summaries are averaged in groups of ``k`` samples of one modality and a linear
discriminator per layer tells the two modalities apart (binary cross-entropy
against pseudo labels 0 = ``a``, 1 = ``b``); minimising it keeps the two streams
of a pair in distinguishable, modality-specific subspaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmib.errors import ConfigError
from mmib.nn.encoders import masked_mean

READOUTS = ("first", "mean")


def step_mask(lengths: Tensor | None, steps: int, device: torch.device) -> Tensor | None:
    """``(B, L)`` True at valid steps (None when every step is valid)."""
    if lengths is None:
        return None
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def run_gru(gru: nn.GRU, x: Tensor, lengths: Tensor | None) -> Tensor:
    """All step outputs of ``gru`` over the valid steps of ``x`` ``(B, L, D)`` (zero past each length).

    Length-0 samples (a missing modality) are run over one (zero) step. Length-1
    inputs skip packing (vector modalities seen as one-step sequences).
    """
    if lengths is None or x.shape[1] == 1:
        return gru(x)[0]
    packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = gru(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def readout(x: Tensor, lengths: Tensor | None, how: str = "first") -> Tensor:
    """One vector per sequence: the head (first) step, or the mean over valid steps."""
    if how == "first":
        return x[:, 0]
    if how == "mean":
        return masked_mean(x, lengths)
    raise ConfigError(f"readout {how!r}: choose one of {', '.join(READOUTS)}")


class SequenceEncoder(nn.Module):
    """Eq. 10: a single-layer BiGRU over ``(B, L, in_dim)`` and a linear map to ``(B, L, d)``."""

    def __init__(self, in_dim: int, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, d, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * d, d)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = d

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() == 2:  # a vector modality: a one-step sequence
            x = x.unsqueeze(1)
        out = self.proj(self.dropout(run_gru(self.gru, x, lengths)))
        mask = step_mask(lengths, out.shape[1], out.device) if out.shape[1] > 1 else None
        return out if mask is None else out * mask.unsqueeze(-1).to(out.dtype)


class GatedCrossAttention(nn.Module):
    """One direction of a gated layer: stream ``s`` attends to stream ``m`` (eqs. 12-16)."""

    def __init__(self, d: int, heads: int = 4, dropout: float = 0.1, ffn_mult: int = 2) -> None:
        super().__init__()
        self.filter_gate = nn.Linear(2 * d, d)
        self.complementary_gate = nn.Linear(2 * d, d)
        self.attention = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_mult * d, d))
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, m_s: Tensor, x_s: Tensor, m_m: Tensor, x_m: Tensor, pad_m: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """New ``M_s`` ``(B, L_s, d)``, the filter gate and the complementary gate ``(B, d)``."""
        g_f = torch.sigmoid(self.filter_gate(torch.cat([x_s, x_m], dim=-1)))
        g_c = torch.sigmoid(self.complementary_gate(torch.cat([x_m, x_s], dim=-1)))
        o, _ = self.attention(m_s, m_m, m_m, key_padding_mask=pad_m, need_weights=False)
        bar = self.norm1(g_f.unsqueeze(1) * m_s + g_c.unsqueeze(1) * self.dropout(o))
        return self.norm2(bar + self.dropout(self.ffn(bar))), g_f, g_c


@dataclass
class LayerInfo:
    """What one gated layer saw: the summaries ``x_a``, ``x_b`` (eq. 11) and the four gates."""

    x_a: Tensor
    x_b: Tensor
    gates: dict[str, Tensor] = field(default_factory=dict)


class GatedPairLayer(nn.Module):
    """One gated transformer layer for a modality pair: both directions (``a <- b`` and ``b <- a``)."""

    def __init__(self, d: int, heads: int = 4, dropout: float = 0.1, ffn_mult: int = 2) -> None:
        super().__init__()
        self.summary_a = nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
        self.summary_b = nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
        self.a_from_b = GatedCrossAttention(d, heads, dropout, ffn_mult)
        self.b_from_a = GatedCrossAttention(d, heads, dropout, ffn_mult)

    def forward(
        self, m_a: Tensor, len_a: Tensor | None, m_b: Tensor, len_b: Tensor | None
    ) -> tuple[Tensor, Tensor, LayerInfo]:
        x_a = masked_mean(run_gru(self.summary_a, m_a, len_a), len_a)
        x_b = masked_mean(run_gru(self.summary_b, m_b, len_b), len_b)
        pad_a = _key_padding(len_a, m_a.shape[1])
        pad_b = _key_padding(len_b, m_b.shape[1])
        new_a, gf_a, gc_a = self.a_from_b(m_a, x_a, m_b, x_b, pad_b)
        new_b, gf_b, gc_b = self.b_from_a(m_b, x_b, m_a, x_a, pad_a)
        new_a, new_b = _zero_padding(new_a, len_a), _zero_padding(new_b, len_b)
        gates = {"filter_a": gf_a, "complementary_a": gc_a, "filter_b": gf_b, "complementary_b": gc_b}
        return new_a, new_b, LayerInfo(x_a, x_b, gates)


def _key_padding(lengths: Tensor | None, steps: int) -> Tensor | None:
    """``(B, L)`` True at padded steps; a length-0 sample keeps its first step (never all-masked)."""
    if lengths is None or steps == 1:
        return None
    return torch.arange(steps, device=lengths.device).unsqueeze(0) >= lengths.clamp_min(1).unsqueeze(1)


def _zero_padding(x: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None or x.shape[1] == 1:
        return x
    mask = step_mask(lengths.clamp_min(1), x.shape[1], x.device)
    assert mask is not None
    return x * mask.unsqueeze(-1).to(x.dtype)


@dataclass
class GatedOutput:
    """The last layer's two streams ``(B, L_a, d)``, ``(B, L_b, d)`` and every layer's :class:`LayerInfo`."""

    a: Tensor
    b: Tensor
    layers: list[LayerInfo]


class GatedCrossModalTransformer(nn.Module):
    """``L`` stacked :class:`GatedPairLayer` for one modality pair, plus a per-layer discriminator.

    Args:
        d: common width of both streams (even: the summary BiGRU has ``d / 2`` units per direction;
            divisible by ``heads``).
        layers: number of stacked gated layers ``L``.
        heads: attention heads.
        dropout: dropout in attention and feed-forward blocks.
        ffn_mult: feed-forward width as a multiple of ``d``.
        discriminator: build the per-layer modality discriminators (eq. 21).
    """

    def __init__(
        self, d: int, layers: int = 2, heads: int = 4, dropout: float = 0.1, ffn_mult: int = 2,
        discriminator: bool = True,
    ) -> None:
        super().__init__()
        if d < 2 or d % 2:
            raise ConfigError(f"gated transformer width d={d} must be even (a BiGRU of d/2 units per direction)")
        if heads < 1 or d % heads:
            raise ConfigError(f"gated transformer width d={d} must be divisible by heads={heads}")
        if layers < 1:
            raise ConfigError(f"gated transformer needs layers >= 1, got {layers}")
        self.layers = nn.ModuleList(GatedPairLayer(d, heads, dropout, ffn_mult) for _ in range(layers))
        self.discriminators = nn.ModuleList(nn.Linear(d, 1) for _ in range(layers)) if discriminator else nn.ModuleList()
        self.d = d

    def forward(self, m_a: Tensor, len_a: Tensor | None, m_b: Tensor, len_b: Tensor | None) -> GatedOutput:
        infos = []
        for layer in self.layers:
            m_a, m_b, info = layer(m_a, len_a, m_b, len_b)
            infos.append(info)
        return GatedOutput(m_a, m_b, infos)

    def discriminator_loss(self, out: GatedOutput, group_size: int = 1) -> Tensor:
        """Eq. 21 averaged over layers: BCE of the discriminator on group means of ``x_a`` (label 0)
        and ``x_b`` (label 1); ``group_size`` consecutive samples of one modality form a group."""
        if not len(self.discriminators):
            raise ConfigError("this gated transformer was built without discriminators")
        losses = []
        for disc, info in zip(self.discriminators, out.layers):
            reps = torch.cat([group_means(info.x_a, group_size), group_means(info.x_b, group_size)])
            n = reps.shape[0] // 2
            target = torch.cat([reps.new_zeros(n), reps.new_ones(n)])
            losses.append(F.binary_cross_entropy_with_logits(disc(reps).squeeze(-1), target))
        return torch.stack(losses).mean()


def group_means(x: Tensor, k: int) -> Tensor:
    """Means of consecutive groups of ``k`` rows of ``(B, d)`` (the last group may be smaller)."""
    if k < 1:
        raise ConfigError(f"discriminator group size must be >= 1, got {k}")
    if k == 1:
        return x
    b = x.shape[0]
    groups = torch.arange(b, device=x.device) // k
    n = int(groups[-1]) + 1
    sums = x.new_zeros(n, x.shape[1]).index_add_(0, groups, x)
    counts = torch.bincount(groups, minlength=n).to(x.dtype).unsqueeze(1)
    return sums / counts


__all__ = [
    "GatedCrossAttention", "GatedCrossModalTransformer", "GatedOutput", "GatedPairLayer", "LayerInfo", "READOUTS",
    "SequenceEncoder", "group_means", "readout", "run_gru", "step_mask",
]
