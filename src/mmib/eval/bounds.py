"""OMIB's bounds on the regularisation weight beta (OMIB paper, section 5.2, App. D, Alg. 2).

For two modalities the paper sets

    M_u = 1 / (3 (H(v1) + H(v2) - I(v1; v2)))      (upper bound: beta <= M_u keeps all
                                                    task-relevant information)
    M_l = 1 / (3 (H(v1) + H(v2)))                   (lower bound, "to accelerate training")

and for three

    M_u = 1 / (5 (sum_i H(v_i) - (2/3) sum_{i<j} I(v_i; v_j)))
    M_l = 1 / (5 sum_i H(v_i)).

The factor 3 (= 1 + max r with r in (0, 2)) and 5 (= 1 + r1 + r2 at their
maxima) come from the dynamic weights. The derivation does not give a formula
for four or more modalities (it needs higher-order interaction terms), so
:func:`beta_bounds` refuses them; pass beta explicitly there.

``H(v) = I(v; v)`` and ``I(v_i; v_j)`` are estimated with MINE
(:mod:`mmib.nn.mine`) on the training split, as Algorithm 2 does. Sequence
modalities are mean-pooled over their valid steps first.

**What the range can say.** ``H(v) = I(v; v)`` is infinite for a continuous ``v``,
and so is ``I(v_i; v_j)`` when the modalities share a part exactly (SIM's ``a0`` and
``b0``). The all-pairs DV bound can never exceed ``log(batch_size)`` (5.55 nats at
256), so such estimates sit at that cap and ``M_u`` comes out near
``1 / (3 log B)`` (0.060 at B = 256) on every dataset: the range then reflects the
estimator's batch size, not the data. :attr:`BetaBounds.at_cap` names the estimates
within :data:`CAP_MARGIN` nats of the cap and ``mmib bound`` says so. Use beta then
as what it is, a hyperparameter in (0, 1) to tune on validation data: the dynamic
weights put ``beta`` on the first modality's KL and ``beta r_j`` on the others', and
the IB trade-off makes the constant representation optimal once a weight reaches 1,
so the representation collapses once ``beta * min(1, r) >= 1`` (on the SIM sets
accuracy is flat from 1e-6 to 0.3 and falls at 1; docs/results/omib.md).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmib.data.dataset import MultimodalDataset
from mmib.errors import ConfigError, DataError
from mmib.nn.encoders import masked_mean
from mmib.nn.mine import MIEstimate, estimate_mi


@dataclass
class MineSettings:
    """Budget of every MINE estimate.

    Kept small by default so that the bound ``omib`` computes before its main
    phase takes seconds: 200 steps on at most 4,096 training rows, batches of
    256 (so entropies saturate near log 256 = 5.5 nats). On SIM-I/III the three
    estimates then agree across seeds to about +-0.15 nats (checked by hand).
    """

    steps: int = 200
    batch_size: int = 256
    hidden: int = 128
    max_samples: int = 4096
    eval_batches: int = 8
    lr: float = 3e-4
    critic: str = "separable"
    seed: int = 0


#: An estimate within this many nats of ``log(batch_size)`` is reported as sitting at the DV cap.
CAP_MARGIN = 1.0


def estimator_cap(batch_size: int) -> float:
    """The largest value the all-pairs DV bound can take on batches of ``batch_size`` pairs: ``log B``."""
    return math.log(batch_size)


def at_cap(estimate: MIEstimate, margin: float = CAP_MARGIN) -> bool:
    """Whether a MINE estimate is within ``margin`` nats of its batch's cap ``log B`` (then it measures the
    estimator, not the data)."""
    return estimate.value >= estimator_cap(estimate.batch_size) - margin


@dataclass
class BetaBounds:
    """Entropies, pairwise MI (nats), and the bounds ``M_l < M_u`` on beta."""

    entropy: dict[str, float]
    mutual_information: dict[tuple[str, str], float]
    lower: float
    upper: float
    details: dict[str, MIEstimate] = field(default_factory=dict)

    @property
    def at_cap(self) -> list[str]:
        """Names of the estimates (``H(m)``, ``I(a;b)``) that sit at the estimator's cap ``log B``."""
        return [name for name, est in self.details.items() if at_cap(est)]

    def draw(self, generator: torch.Generator | None = None, quantile: float | None = None) -> float:
        """A beta in ``[M_l, M_u]``: uniform at random, or at ``quantile`` (0 = M_l, 1 = M_u)."""
        if quantile is None:
            q = float(torch.rand((), generator=generator))
        else:
            if not 0.0 <= quantile <= 1.0:
                raise ConfigError(f"beta_quantile must lie in [0, 1], got {quantile}")
            q = float(quantile)
        return self.lower + q * (self.upper - self.lower)

    def as_dict(self) -> dict[str, float]:
        out = {f"H({m})": v for m, v in self.entropy.items()}
        out.update({f"I({a};{b})": v for (a, b), v in self.mutual_information.items()})
        out.update({"M_l": self.lower, "M_u": self.upper})
        return out


def bounds_from_information(entropy: dict[str, float], mutual_information: dict[tuple[str, str], float]) -> tuple[float, float]:
    """``(M_l, M_u)`` from entropies and pairwise MI, by the paper's 2- and 3-modality formulas."""
    m = len(entropy)
    # Information is non-negative: a slightly negative MINE estimate is noise, counted as 0.
    h = sum(max(v, 0.0) for v in entropy.values())
    i = sum(max(v, 0.0) for v in mutual_information.values())
    if m == 2:
        upper_total, factor = h - i, 3.0
    elif m == 3:
        upper_total, factor = h - (2.0 / 3.0) * i, 5.0
    else:
        raise ConfigError(
            f"the OMIB beta bound is derived for 2 or 3 modalities, not {m}; set beta explicitly (--set beta=...)"
        )
    if h <= 0 or upper_total <= 0:
        raise DataError(
            f"MINE estimates give a non-positive information total (sum H = {h:.4g}, bound total = {upper_total:.4g}); "
            "increase the MINE budget or set beta explicitly (--set beta=...)"
        )
    return 1.0 / (factor * h), 1.0 / (factor * upper_total)


def modality_matrix(dataset: MultimodalDataset, name: str, index: Tensor) -> Tensor:
    """Rows ``index`` of modality ``name`` as a ``(n, D)`` float matrix (sequences mean-pooled)."""
    x = dataset.features[name].index_select(0, index)
    if x.dim() == 3:
        lengths = dataset.lengths.get(name)
        x = masked_mean(x, lengths.index_select(0, index) if lengths is not None else None)
    return x


def beta_bounds(
    dataset: MultimodalDataset,
    split: str = "train",
    settings: MineSettings | None = None,
    modalities: list[str] | None = None,
    device: torch.device | str = "cpu",
) -> BetaBounds:
    """Estimate ``H(v_i)``, ``I(v_i; v_j)`` with MINE on ``split`` and return the beta bounds."""
    s = settings or MineSettings()
    names = list(modalities or dataset.modalities)
    unknown = [m for m in names if m not in dataset.features]
    if unknown:
        raise ConfigError(f"unknown modalities {unknown}; the dataset has {', '.join(dataset.modalities)}")
    if len(names) not in (2, 3):
        raise ConfigError(
            f"the OMIB beta bound is derived for 2 or 3 modalities, not {len(names)}; set beta explicitly (--set beta=...)"
        )
    index = dataset.splits.get(split)
    if index is None or index.numel() < 4:
        raise DataError(f"{dataset.name}: split {split!r} has too few samples for MINE")
    g = torch.Generator().manual_seed(s.seed)
    if index.numel() > s.max_samples:
        index = index[torch.randperm(index.numel(), generator=g)[: s.max_samples]].sort().values
    data = {m: modality_matrix(dataset, m, index) for m in names}

    def run(a: str, b: str, k: int) -> MIEstimate:
        return estimate_mi(
            data[a], data[b], steps=s.steps, batch_size=s.batch_size, hidden=s.hidden, lr=s.lr,
            eval_batches=s.eval_batches, seed=s.seed + k, device=device, critic=s.critic,
        )

    details: dict[str, MIEstimate] = {}
    entropy: dict[str, float] = {}
    k = 0
    for m in names:
        est = run(m, m, k)
        details[f"H({m})"] = est
        entropy[m] = est.value
        k += 1
    mi: dict[tuple[str, str], float] = {}
    for a, b in itertools.combinations(names, 2):
        est = run(a, b, k)
        details[f"I({a};{b})"] = est
        mi[(a, b)] = est.value
        k += 1
    lower, upper = bounds_from_information(entropy, mi)
    return BetaBounds(entropy, mi, lower, upper, details)
