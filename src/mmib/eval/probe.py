"""Linear probes: how much of each ground-truth latent part a learned representation keeps.

Synthetic datasets keep their latent parts (:class:`~mmib.data.dataset.GroundTruth`):
SIM has task-relevant ``a0`` (shared), ``a1``, ``a2`` (modality-specific) and
superfluous ``b0``, ``b1``, ``b2``; ``sim-msa`` has ``shared``,
``<modality>_specific`` and their superfluous counterparts. The optimal MIB
keeps every relevant part and none of the superfluous ones.

For every part we fit ridge regression (alpha chosen by efficient
leave-one-out CV) from the standardised representation of the ``fit`` split to
the part's values and report the held-out R^2 on the ``eval`` split:

* ``r2``: of the whole part, variance-weighted over its dimensions (the
  share of the part's variance a linear read-out recovers). A representation of
  width ``k`` can recover at most about ``k / d`` of a ``d``-dimensional part of
  independent coordinates, so compare methods of similar width.
* ``r2_label``: of the part's contribution to the label, ``<delta_p, part>``
  (only for relevant parts, and only when the dataset records the label
  direction: ``meta["delta"]`` for SIM, ``meta["direction"]`` for ``sim-msa``,
  split over the relevant parts in order). For SIM this scalar is all of a
  part that matters for the label, so a sufficient representation should keep
  it whatever its width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mmib.data.dataset import MultimodalDataset
from mmib.errors import DataError
from mmib.models.base import MultimodalModel

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))


@dataclass
class ProbeResult:
    """Held-out R^2 of a linear probe for one ground-truth part."""

    part: str
    relevant: bool
    dim: int
    r2: float
    r2_label: float | None = None


def linear_probe_r2(
    fit_x: np.ndarray | Tensor, fit_y: np.ndarray | Tensor, eval_x: np.ndarray | Tensor, eval_y: np.ndarray | Tensor,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
) -> float:
    """Held-out R^2 (variance-weighted over target columns) of ridge regression with CV alpha."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fx, fy, ex, ey = (np.asarray(a, dtype=np.float64) for a in (fit_x, fit_y, eval_x, eval_y))
    if fy.ndim == 1:
        fy, ey = fy[:, None], ey[:, None]
    if fx.ndim != 2 or ex.ndim != 2 or fx.shape[1] != ex.shape[1]:
        raise DataError(f"probe inputs must be (N, D) with equal D, got {fx.shape} and {ex.shape}")
    if fx.shape[0] != fy.shape[0] or ex.shape[0] != ey.shape[0]:
        raise DataError("probe inputs and targets have different numbers of rows")
    if fx.shape[0] < 3 or ex.shape[0] < 2:
        raise DataError("a probe needs at least 3 fitting and 2 evaluation samples")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas))
    model.fit(fx, fy)
    pred = model.predict(ex).reshape(ey.shape)
    return float(r2_score(ey, pred, multioutput="variance_weighted"))


def label_directions(dataset: MultimodalDataset) -> dict[str, Tensor]:
    """Per relevant part, its slice of the label direction (empty if the dataset records none)."""
    gt = dataset.ground_truth
    if gt is None or not gt.relevant:
        return {}
    direction = dataset.meta.get("delta", dataset.meta.get("direction"))
    if direction is None:
        return {}
    direction = torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
    widths = [int(gt.get(dataset, p).shape[1]) for p in gt.relevant]
    if sum(widths) != direction.numel():
        return {}
    out, start = {}, 0
    for part, w in zip(gt.relevant, widths):
        out[part] = direction[start : start + w]
        start += w
    return out


def probe_features(
    dataset: MultimodalDataset,
    fit_rep: Tensor,
    fit_index: Tensor,
    eval_rep: Tensor,
    eval_index: Tensor,
    parts: list[str] | None = None,
) -> list[ProbeResult]:
    """Probe a representation given per split (rows aligned with ``*_index``) for every part."""
    gt = dataset.ground_truth
    if gt is None:
        raise DataError(f"{dataset.name}: the dataset keeps no ground-truth parts to probe (only synthetic sets do)")
    parts = list(parts or gt.parts)
    unknown = [p for p in parts if p not in gt.parts]
    if unknown:
        raise DataError(f"unknown ground-truth parts {unknown}; known: {', '.join(gt.parts)}")
    directions = label_directions(dataset)
    results = []
    for part in parts:
        values = gt.get(dataset, part).float()
        fy, ey = values.index_select(0, fit_index), values.index_select(0, eval_index)
        r2 = linear_probe_r2(fit_rep, fy, eval_rep, ey)
        r2_label = None
        if part in directions:
            w = directions[part]
            r2_label = linear_probe_r2(fit_rep, fy @ w, eval_rep, ey @ w)
        results.append(ProbeResult(part, part in gt.relevant, int(values.shape[1]), r2, r2_label))
    return results


def probe_model(
    model: MultimodalModel,
    dataset: MultimodalDataset,
    fit_split: str = "train",
    eval_split: str = "test",
    representation: str | None = None,
    max_fit: int | None = 20_000,
    seed: int = 0,
    device: str = "cpu",
) -> list[ProbeResult]:
    """Probe ``model``'s representation (``ModelOutput.representation``, or the named
    entry ``representation`` of ``ModelOutput.representations``) on ``dataset``."""
    from mmib.train.engine import predict

    if dataset.ground_truth is None:
        raise DataError(f"{dataset.name}: the dataset keeps no ground-truth parts to probe (only synthetic sets do)")
    if fit_split == eval_split:
        raise DataError(f"the probe is fitted and evaluated on different splits; both are {fit_split!r}")
    reps = {}
    for split in (fit_split, eval_split):
        if dataset.split_size(split) == 0:
            raise DataError(f"{dataset.name}: split {split!r} is empty")
        p = predict(model, dataset, split, device=device, representations=True)
        if representation is None:
            if p.representation is None:
                raise DataError(f"model {model.registry_name!r} returns no representation to probe")
            rep = p.representation
        else:
            if representation not in p.representations:
                raise DataError(f"model {model.registry_name!r} has no representation {representation!r}; "
                                f"available: {', '.join(p.representations) or 'none'}")
            rep = p.representations[representation]
        rep = rep.reshape(rep.shape[0], -1)
        index = p.index
        if split == fit_split and max_fit is not None and rep.shape[0] > max_fit:
            keep = torch.randperm(rep.shape[0], generator=torch.Generator().manual_seed(seed))[:max_fit]
            rep, index = rep[keep], index[keep]
        reps[split] = (rep, index)
    (fit_rep, fit_index), (eval_rep, eval_index) = reps[fit_split], reps[eval_split]
    return probe_features(dataset, fit_rep, fit_index, eval_rep, eval_index)
