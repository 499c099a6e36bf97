"""``sim-anomaly``: a two-modality anomaly-detection set built from the SIM generator.

Normal samples follow a SIM distribution (``x1 = [a0; b0; a1; b1]``,
``x2 = [a0; b0; a2; b2]``, see :func:`mmib.data.synthetic.make_sim`).
Anomalies come from another distribution, chosen by ``mode``:

* ``"scale"`` (default): an anomaly's task-relevant parts ``a0, a1, a2`` are
  drawn with standard deviation ``anomaly_scale`` instead of 1 (consistently
  in both modalities); the superfluous parts stay normal.
* ``"mismatch"``: the modalities disagree. An anomaly's ``x2`` has
  its shared parts ``[a0; b0]`` drawn afresh instead of copied from ``x1``,
  so each modality on its own is distributed exactly like a normal one and
  only the pair gives the anomaly away: a genuinely multimodal anomaly, but a
  hard one for Deep SVDD, whose one-class objective has no reason to learn the
  cross-modal difference (our OMIB runs stay near chance; see docs/results/omib.md).
* ``"class"``: normal samples are the SIM samples of class 0, anomalies those
  of class 1 (the two sides of the label hyperplane). A one-class detector
  has little to go on here (the classes differ along one direction of an
  800-dimensional space), so expect AUCs near chance; it is kept as the hard case.

The training split holds normal samples only (one-class training), and so does
the validation split by default (``valid_anomaly_fraction=0``): a one-class user
has held-out normal data but no labelled anomalies, so epochs are selected by the
one-class loss on normal validation data (the ``normal_score`` monitor, the
default for anomaly tasks). The test split holds ``anomaly_fraction`` anomalies.
``valid_anomaly_fraction=0.1`` with ``--set monitor=auc`` is the earlier protocol,
whose model selection saw labelled anomalies. ``y`` is 1 for an anomaly and 0 for
a normal sample; the task kind is ``anomaly``.

Oracle (``meta["oracle"]``, an anomaly score per row, higher = more anomalous;
AUC and the top-k F1 depend only on its order, so any increasing function of the
likelihood ratio is Bayes-optimal):

* ``"scale"``: the log-likelihood ratio of the relevant parts,
  ``|a|^2 (1 - 1/s^2) / 2 - d_a log s`` for ``a = [a0; a1; a2]``, ``s = anomaly_scale``;
* ``"mismatch"``: ``|x2[a0; b0] - x1[a0; b0]|^2``, zero exactly for normal samples;
* ``"class"``: the SIM score ``<delta, [a0; a1; a2]>``, positive exactly for anomalies.

The last two separate the classes perfectly (oracle AUC 1).
"""

from __future__ import annotations

import math

import torch

from mmib.data.dataset import GroundTruth, MultimodalDataset, TaskSpec
from mmib.data.synthetic import SIM_SHARED_DIM, SIM_SUPERFLUOUS_DIM, make_sim
from mmib.errors import DataError

ANOMALY_MODES = ("scale", "mismatch", "class")


def make_sim_anomaly(
    n_samples: int = 10_000,
    anomaly_fraction: float = 0.1,
    mode: str = "scale",
    anomaly_scale: float = 2.5,
    variant: str = "sim-i",
    seed: int = 0,
    test_fraction: float = 0.1,
    valid_fraction: float = 0.1,
    a1_dim: int | None = None,
    a2_dim: int | None = None,
    shared_dim: int = SIM_SHARED_DIM,
    superfluous_dim: int = SIM_SUPERFLUOUS_DIM,
    valid_anomaly_fraction: float = 0.0,
) -> MultimodalDataset:
    """Build ``sim-anomaly`` (see the module docstring).

    ``n_samples`` SIM samples are drawn (in ``"class"`` mode the class-1 samples
    not used as anomalies are dropped, so the set is smaller). ``anomaly_fraction``
    is the share of anomalies in the test split, ``valid_anomaly_fraction`` (default
    0: normal data only) in the validation split.
    """
    if mode not in ANOMALY_MODES:
        raise DataError(f"unknown sim-anomaly mode {mode!r}; expected one of {', '.join(ANOMALY_MODES)}")
    if not anomaly_scale > 0.0:
        raise DataError(f"anomaly_scale must be > 0, got {anomaly_scale}")
    if not 0.0 < anomaly_fraction < 1.0:
        raise DataError(f"anomaly_fraction must lie in (0, 1), got {anomaly_fraction}")
    if not 0.0 <= valid_anomaly_fraction < 1.0:
        raise DataError(f"valid_anomaly_fraction must lie in [0, 1), got {valid_anomaly_fraction}")
    fractions = {"valid": float(valid_anomaly_fraction), "test": float(anomaly_fraction)}
    base = make_sim(variant, n_samples, seed, test_fraction, valid_fraction, a1_dim, a2_dim, shared_dim, superfluous_dim)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    x1, x2 = base.features["x1"], base.features["x2"]
    d0 = int(shared_dim)
    slices = base.ground_truth.slices if base.ground_truth is not None else {}
    if mode in ("scale", "mismatch"):
        y = torch.zeros(len(base), dtype=torch.long)
        for split in ("valid", "test"):
            idx = base.splits[split]
            k = int(round(fractions[split] * idx.numel()))
            if idx.numel() and k == 0 and fractions[split] > 0:
                k = 1
            chosen = idx[torch.randperm(idx.numel(), generator=g)[:k]]
            y[chosen] = 1
            if mode == "mismatch":
                x2[chosen, : 2 * d0] = torch.randn(chosen.numel(), 2 * d0, generator=g)
            else:
                for part in ("a0", "a1", "a2"):
                    modality, start, stop = slices[part]
                    base.features[modality][chosen, start:stop] *= anomaly_scale
                x2[chosen, :d0] = x1[chosen, :d0]  # a0 stays shared
        features, splits = {"x1": x1, "x2": x2}, base.splits
    else:
        cls = base.y
        parts: dict[str, torch.Tensor] = {}
        keep_chunks, label_chunks, offset = [], [], 0
        for split in ("train", "valid", "test"):
            idx = base.splits[split]
            normal = idx[cls[idx] == 0]
            rows = [normal]
            if split != "train":
                pool = idx[cls[idx] == 1]
                frac = fractions[split]
                k = int(round(frac / (1.0 - frac) * normal.numel()))
                if k > pool.numel():
                    raise DataError(f"sim-anomaly: not enough class-1 samples for an anomaly fraction of {frac}")
                rows.append(pool[torch.randperm(pool.numel(), generator=g)[:k]])
            chosen = torch.cat(rows)
            keep_chunks.append(chosen)
            label_chunks.append(torch.cat([torch.zeros(rows[0].numel(), dtype=torch.long),
                                           torch.ones(chosen.numel() - rows[0].numel(), dtype=torch.long)]))
            parts[split] = torch.arange(offset, offset + chosen.numel())
            offset += chosen.numel()
        keep = torch.cat(keep_chunks)
        if parts["train"].numel() == 0:
            raise DataError("sim-anomaly: the training split has no normal samples; increase n_samples")
        features = {"x1": x1.index_select(0, keep), "x2": x2.index_select(0, keep)}
        y = torch.cat(label_chunks)
        splits = parts
    assert base.ground_truth is not None
    oracle, note = _oracle(mode, features, slices, d0, float(anomaly_scale), base.meta["delta"])
    return MultimodalDataset(
        name="sim-anomaly",
        features=features,
        y=y,
        task=TaskSpec("anomaly"),
        splits=splits,
        # "relevant" = the parts in which anomalies differ from normal samples
        ground_truth=GroundTruth(slices=base.ground_truth.slices,
                                 relevant=("a0", "b0") if mode == "mismatch" else ("a0", "a1", "a2")),
        meta={"generator": "make_sim_anomaly", "mode": mode, "variant": variant, "seed": seed,
              "anomaly_fraction": anomaly_fraction, "valid_anomaly_fraction": valid_anomaly_fraction,
              "anomaly_scale": anomaly_scale, "oracle": oracle, "oracle_note": note},
    )


def _oracle(
    mode: str, features: dict[str, torch.Tensor], slices: dict, d0: int, scale: float, delta: torch.Tensor
) -> tuple[torch.Tensor, str]:
    """The Bayes-optimal anomaly score of every row (see the module docstring) and its note."""
    def part(name: str) -> torch.Tensor:
        modality, start, stop = slices[name]
        return features[modality][:, start:stop].double()

    if mode == "mismatch":
        diff = features["x2"][:, : 2 * d0].double() - features["x1"][:, : 2 * d0].double()
        return diff.pow(2).sum(1).float(), "|x2[a0; b0] - x1[a0; b0]|^2: zero for every normal sample (Bayes AUC 1)"
    relevant = torch.cat([part(p) for p in ("a0", "a1", "a2")], dim=1)
    if mode == "class":
        return (relevant @ delta.double()).float(), "<delta, [a0; a1; a2]>: positive exactly for anomalies (Bayes AUC 1)"
    sq = relevant.pow(2).sum(1)
    llr = 0.5 * sq * (1.0 - 1.0 / scale**2) - relevant.shape[1] * math.log(scale)
    return llr.float(), "log-likelihood ratio of the relevant parts [a0; a1; a2], N(0, s^2 I) against N(0, I)"
