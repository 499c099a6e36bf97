"""Non-IB baselines: early fusion by concatenation and late fusion by averaging."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mmib.data.dataset import Batch, DatasetSpec
from mmib.errors import ConfigError
from mmib.models.base import ModelOutput, MultimodalModel, Objective, head_output, make_head, task_loss
from mmib.models.registry import register_model
from mmib.models.common import EncoderOptions, make_encoders
from mmib.nn.encoders import masked_mean

#: How the late-fusion heads learn: on the averaged prediction, or each head on its own.
LATE_LOSSES = ("fused", "separate")


@register_model("concat", "encoders per modality, concatenation, MLP head (early fusion, no IB)")
class ConcatFusion(MultimodalModel):
    @dataclass
    class Options(EncoderOptions):
        head_hidden: int = 128

    def __init__(self, spec: DatasetSpec, options: "ConcatFusion.Options") -> None:
        super().__init__(spec, options)
        self.encoders = make_encoders(spec, options)
        fused = options.hidden * len(spec.modalities)
        self.head = make_head(fused, spec.task, options.head_hidden, options.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.encoders(batch)
        fused = torch.cat(list(h.values()), dim=-1)
        return ModelOutput(head_output(self.task, self.head(fused)), fused, h)


@register_model("late", "per-modality encoders and heads; predictions averaged (late fusion, no IB)")
class LateFusion(MultimodalModel):
    """Late fusion: one encoder and head per modality, the prediction their mean.

    With ``late_loss=fused`` (default) the task loss is taken on the averaged
    prediction, so the model is additive across modalities (a linear model on
    the union is one of its solutions); with ``separate`` each head learns on its
    own and the mean is an ensemble of unimodal predictors, which cannot combine
    information that only the modalities together hold (on sim-msa it lost to
    ``linear`` by 0.28 MAE: 1.139 against 0.861).
    """

    @dataclass
    class Options(EncoderOptions):
        head_hidden: int = 64
        late_loss: str = field(default="fused", metadata={
            "help": "fused: the task loss on the averaged prediction (an additive model); "
                    "separate: each head on its own (an ensemble of unimodal predictors)"})

    def __init__(self, spec: DatasetSpec, options: "LateFusion.Options") -> None:
        super().__init__(spec, options)
        if options.late_loss not in LATE_LOSSES:
            raise ConfigError(f"late: late_loss {options.late_loss!r} is not one of {', '.join(LATE_LOSSES)}")
        self.encoders = make_encoders(spec, options)
        self.heads = nn.ModuleDict(
            {m: make_head(options.hidden, spec.task, options.head_hidden, options.dropout) for m in spec.names}
        )

    def _per_modality(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        h = self.encoders(batch)
        preds = {m: head_output(self.task, self.heads[m](h[m])) for m in h}
        return h, preds

    def forward(self, batch: Batch) -> ModelOutput:
        h, preds = self._per_modality(batch)
        prediction = torch.stack(list(preds.values())).mean(0)
        return ModelOutput(prediction, torch.cat(list(h.values()), dim=-1), {**h, **{f"pred_{m}": p for m, p in preds.items()}})

    def objective(self, batch: Batch, phase: str, stage: str) -> Objective:
        """The task loss of the averaged prediction (``fused``), or the mean of the per-modality
        task losses (``separate``); the per-modality losses are reported either way."""
        assert batch.y is not None
        _, preds = self._per_modality(batch)
        loss = self.options.regression_loss
        terms = {f"task_{m}": task_loss(self.task, p, batch.y, loss) for m, p in preds.items()}
        if self.options.late_loss == "separate":
            return Objective(torch.stack(list(terms.values())).mean(), terms)
        fused = task_loss(self.task, torch.stack(list(preds.values())).mean(0), batch.y, loss)
        return Objective(fused, {"task": fused, **{k: v.detach() for k, v in terms.items()}})


@register_model("feature-head", "OMIB's OMF head (Linear-ReLU-Dropout-Linear) on the concatenated input features; "
                "with --set data.select=... the yardstick of what chosen parts or modalities allow (OMIB Table 2)")
class FeatureHead(MultimodalModel):
    """No encoders: one MLP head on the concatenated features (sequences: masked mean over valid steps).

    With ``data.select`` it is "the same head trained on chosen ground-truth parts
    or modalities" that OMIB's Table 2 sets beside the learned representations.
    """

    @dataclass
    class Options:
        head_hidden: int = 128
        dropout: float = 0.1
        regression_loss: str = "l1"

    def __init__(self, spec: DatasetSpec, options: "FeatureHead.Options") -> None:
        super().__init__(spec, options)
        self.head = make_head(sum(m.dim for m in spec.modalities), spec.task, options.head_hidden, options.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        parts = []
        for m in self.spec.names:
            x = batch.features[m]
            parts.append(masked_mean(x, batch.lengths.get(m)) if x.dim() == 3 else x)
        x = torch.cat(parts, dim=-1)
        return ModelOutput(head_output(self.task, self.head(x)), x)
