"""Non-IB baselines: early fusion by concatenation and late fusion by averaging."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmib.data.dataset import Batch, DatasetSpec
from mmib.models.base import ModelOutput, MultimodalModel, Objective, head_output, make_head, task_loss
from mmib.models.registry import register_model
from mmib.models.common import EncoderOptions, make_encoders
from mmib.nn.encoders import masked_mean


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
    @dataclass
    class Options(EncoderOptions):
        head_hidden: int = 64

    def __init__(self, spec: DatasetSpec, options: "LateFusion.Options") -> None:
        super().__init__(spec, options)
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
        """Each head learns on its own (the mean of the per-modality task losses)."""
        assert batch.y is not None
        _, preds = self._per_modality(batch)
        terms = {f"task_{m}": task_loss(self.task, p, batch.y, self.options.regression_loss) for m, p in preds.items()}
        return Objective(torch.stack(list(terms.values())).mean(), terms)


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
