"""Pieces several models share: per-modality encoder options and their construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmib.data.dataset import DatasetSpec
from mmib.nn.encoders import ModalityEncoders


@dataclass
class EncoderOptions:
    """Options shared by models with one encoder per modality."""

    hidden: int = 128
    encoder: str = "auto"
    encoders: dict[str, str] = field(default_factory=dict)
    encoder_layers: int = 1
    dropout: float = 0.3
    text_model: str | None = None
    #: options of the ``bert`` text encoder (``mmib.nn.text.HFTextEncoder``): trainable,
    #: train_last_k_layers, pooling, random_init, cache (``--set model.text_encoder.trainable=false``
    #: freezes it, ``...train_last_k_layers=2`` fine-tunes only the last 2 layers; a frozen encoder's
    #: features are computed once per run and cached unless ``...cache=false``)
    text_encoder: dict[str, Any] = field(default_factory=dict)
    regression_loss: str = "l1"


def make_encoders(spec: DatasetSpec, o: EncoderOptions, out_dim: int | None = None) -> ModalityEncoders:
    """The per-modality encoders described by ``o`` (out width ``o.hidden`` unless given)."""
    return ModalityEncoders(
        spec, out_dim or o.hidden, kinds=o.encoders, default=o.encoder, hidden=o.hidden, dropout=o.dropout,
        layers=o.encoder_layers, text_model=o.text_model, text_options=o.text_encoder,
    )
