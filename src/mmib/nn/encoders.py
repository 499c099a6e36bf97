"""Unimodal encoders: one module per modality that maps its input to a vector.

Every encoder has ``forward(x, lengths=None) -> (B, out_dim)`` and an
``out_dim`` attribute. ``x`` is ``(B, D)`` for vector modalities or ``(B, L, D)``
for padded sequences with ``lengths`` ``(B,)`` valid steps (0 = missing: the
encoder returns zeros for that sample's pooled features). :func:`build_encoder`
picks one by name; :class:`ModalityEncoders` holds one per modality and feeds
each from a :class:`~mmib.data.dataset.Batch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmib.data.dataset import Batch, DatasetSpec, ModalitySpec
from mmib.errors import ConfigError

ENCODER_KINDS: dict[str, str] = {
    "mlp": "two-layer MLP (vectors; sequences are mean-pooled over valid steps first)",
    "lstm": "LSTM over a padded sequence, last valid hidden state",
    "conv1d": "Conv1d (kernel 3) then masked mean pooling",
    "transformer": "Conv1d projection, learned positions, Transformer encoder, masked mean pooling",
    "bert": "a Hugging Face BERT-type model loaded from a local directory (text token ids)",
}


def masked_mean(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Mean over valid steps of ``(B, L, H)``; samples with length 0 give zeros."""
    if lengths is None:
        return x.mean(1)
    mask = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)).to(x.dtype)
    total = torch.einsum("blh,bl->bh", x, mask)
    return total / mask.sum(1, keepdim=True).clamp_min(1.0)


class MLPEncoder(nn.Module):
    """Linear-ReLU-Dropout-Linear-ReLU; sequences are mean-pooled first."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = hidden or out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim), nn.ReLU()
        )
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() == 3:
            x = masked_mean(x, lengths)
        return self.net(x)


class LSTMEncoder(nn.Module):
    """LSTM over the valid steps (packed); the last hidden state, projected."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int | None = None, layers: int = 1, dropout: float = 0.1,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        hidden = hidden or out_dim
        self.lstm = nn.LSTM(
            in_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden * (2 if bidirectional else 1), out_dim)
        self.out_dim = out_dim
        self.steps_dim = hidden * (2 if bidirectional else 1)  # width of forward_steps' per-step states

    def _run(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Any]:
        if x.dim() != 3:
            raise ConfigError("the lstm encoder needs a sequence modality (N, L, D); use mlp for vectors")
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        steps, (h, _) = self.lstm(packed)
        last = torch.cat([h[-2], h[-1]], dim=-1) if self.lstm.bidirectional else h[-1]
        out = self.proj(self.dropout(last))
        return out * (lengths > 0).unsqueeze(1).to(out.dtype), steps  # steps: a PackedSequence

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self._run(x, lengths)[0]

    def forward_steps(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The encoding ``(B, out_dim)`` and the per-step LSTM outputs ``(B, L, hidden * dirs)``
        (zero past each sample's length), from one pass: for models that also attend over time."""
        out, steps = self._run(x, lengths)
        return out, pad_packed_sequence(steps, batch_first=True, total_length=x.shape[1])[0]


class Conv1dEncoder(nn.Module):
    """Conv1d over time (kernel 3, same length), ReLU, masked mean pooling."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, dropout: float = 0.1, kernel: int = 3) -> None:
        super().__init__()
        hidden = hidden or out_dim
        self.conv = nn.Conv1d(in_dim, hidden, kernel_size=kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 3:
            raise ConfigError("the conv1d encoder needs a sequence modality (N, L, D); use mlp for vectors")
        if lengths is not None:  # zero the padding so the kernel cannot read past the last valid step
            x = x * (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).to(x.dtype)
        h = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return self.proj(self.dropout(masked_mean(h, lengths)))


class TransformerEncoder(nn.Module):
    """Conv1d projection (as in MulT/MIB), learned positions, Transformer layers, masked mean."""

    def __init__(
        self, in_dim: int, out_dim: int, max_len: int, hidden: int | None = None, layers: int = 2, heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = hidden or out_dim
        if hidden % heads:
            raise ConfigError(f"transformer hidden size {hidden} must be divisible by heads={heads}")
        self.proj_in = nn.Conv1d(in_dim, hidden, kernel_size=1, bias=False)
        self.pos = nn.Parameter(torch.zeros(1, max_len, hidden))
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj = nn.Linear(hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 3:
            raise ConfigError("the transformer encoder needs a sequence modality (N, L, D); use mlp for vectors")
        h = self.proj_in(x.transpose(1, 2)).transpose(1, 2) + self.pos[:, : x.shape[1]]
        pad = None
        if lengths is not None:
            pad = torch.arange(x.shape[1], device=x.device).unsqueeze(0) >= lengths.clamp_min(1).unsqueeze(1)
        h = self.encoder(h, src_key_padding_mask=pad)
        return self.proj(masked_mean(h, lengths))


def build_encoder(
    kind: str, modality: ModalitySpec, out_dim: int, hidden: int | None = None, dropout: float = 0.1,
    layers: int = 1, heads: int = 4, text_model: str | None = None, **text_options: object,
) -> nn.Module:
    """Create the encoder ``kind`` for ``modality``; ``auto`` is ``mlp`` (sequences masked-mean-pooled first:
    on small sets an LSTM memorises them; lstm, conv1d and transformer stay available by name)."""
    if kind == "auto":
        kind = "mlp"
    if kind not in ENCODER_KINDS:
        from mmib.config import suggest

        raise ConfigError(
            f"unknown encoder {kind!r} for modality {modality.name!r}{suggest(kind, ENCODER_KINDS)}; "
            f"choose from {', '.join(ENCODER_KINDS)}"
        )
    if kind != "mlp" and kind != "bert" and not modality.sequence:
        raise ConfigError(f"encoder {kind!r} needs a sequence modality but {modality.name!r} is a vector; use mlp")
    if kind == "mlp":
        return MLPEncoder(modality.dim, out_dim, hidden, dropout)
    if kind == "lstm":
        return LSTMEncoder(modality.dim, out_dim, hidden, layers, dropout)
    if kind == "conv1d":
        return Conv1dEncoder(modality.dim, out_dim, hidden, dropout)
    if kind == "transformer":
        assert modality.max_len is not None
        return TransformerEncoder(modality.dim, out_dim, modality.max_len, hidden, max(layers, 1), heads, dropout)
    # bert: a local Hugging Face model; imported lazily (optional extra "text").
    from mmib.nn.text import HFTextEncoder

    if not text_model:
        raise ConfigError(f"encoder 'bert' for {modality.name!r} needs text_model=PATH (a local model directory)")
    return HFTextEncoder(text_model, out_dim=out_dim, **text_options)  # type: ignore[arg-type]


class ModalityEncoders(nn.Module):
    """One encoder per modality; ``forward(batch)`` returns ``{name: (B, out_dim)}``.

    A text encoder of kind ``bert`` reads ``batch.extras["text_bert"]`` (token ids,
    attention mask, segment ids) instead of the precomputed features.
    """

    def __init__(
        self, spec: DatasetSpec, out_dim: int, kinds: Mapping[str, str] | None = None, default: str = "auto",
        hidden: int | None = None, dropout: float = 0.1, layers: int = 1, heads: int = 4,
        text_model: str | None = None, text_options: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        kinds = dict(kinds or {})
        unknown = set(kinds) - set(spec.names)
        if unknown:
            raise ConfigError(f"encoders given for unknown modalities {sorted(unknown)}; have {list(spec.names)}")
        self.kinds: dict[str, str] = {}
        self.encoders = nn.ModuleDict()
        for m in spec.modalities:
            kind = kinds.get(m.name, default)
            if kind == "auto" and text_model and m.name == "text":
                kind = "bert"
            if kind == "bert" and spec.text_tokens is None:
                raise ConfigError(
                    f"encoder 'bert' for {m.name!r} needs token ids (a 'text_bert' array in the data); this dataset has none"
                )
            self.encoders[m.name] = build_encoder(
                kind, m, out_dim, hidden, dropout, layers, heads, text_model, **dict(text_options or {})
            )
            self.kinds[m.name] = kind if kind != "auto" else "mlp"
        self.out_dim = out_dim

    def encode(self, name: str, batch: Batch) -> Tensor:
        """Encode one modality of ``batch``."""
        enc = self.encoders[name]
        if self.kinds[name] == "bert":  # the batch's rows let a frozen text encoder use its feature cache
            return enc(batch.extras["text_bert"], index=batch.index)
        out = enc(batch.features[name], batch.lengths.get(name))
        presence = batch.lengths.get(name)  # a sequence's length 0 or a vector's flag 0: the modality is missing
        if presence is not None:
            out = out * (presence > 0).unsqueeze(1).to(out.dtype)
        return out

    def encode_steps(self, name: str, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Encode one modality and, where its encoder exposes them (``forward_steps``: lstm), also
        return its per-step states ``(B, L, H)``; else ``(encoding, None)``."""
        enc = self.encoders[name]
        if self.kinds[name] == "bert" or not hasattr(enc, "forward_steps"):
            return self.encode(name, batch), None
        return enc.forward_steps(batch.features[name], batch.lengths.get(name))

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return {name: self.encode(name, batch) for name in self.encoders}
