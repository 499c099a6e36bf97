"""Built-in synthetic benchmarks with known ground truth.

* ``sim-i``, ``sim-ii``, ``sim-iii``: the two-modality SIM sets of the OMIB
  paper (Appendix F), as fixed in SPEC.md section 4.
* ``sim-msa``: a three-modality stand-in for multimodal sentiment regression
  (CMU-MOSI shaped), see :func:`make_sim_msa`.

Every generator is a pure function of its seed, and keeps the ground-truth
latent parts on the dataset (:class:`~mmib.data.dataset.GroundTruth`) so that a
learned representation can be probed for what it retains.
"""

from __future__ import annotations

import math

import torch

from mmib.data.dataset import GroundTruth, MultimodalDataset, TaskSpec
from mmib.errors import DataError

#: (a1, a2) dimensions of the modality-specific task-relevant parts per SIM set.
SIM_VARIANTS: dict[str, tuple[int, int]] = {"sim-i": (500, 100), "sim-ii": (100, 500), "sim-iii": (300, 300)}
SIM_SHARED_DIM = 200  # a0 and b0
SIM_SUPERFLUOUS_DIM = 200  # b1 and b2 (SPEC.md's choice)


def _check_fractions(n: int, test_fraction: float, valid_fraction: float) -> None:
    if n < 10:
        raise DataError(f"n_samples must be at least 10, got {n}")
    if not (0.0 < test_fraction < 1.0) or not (0.0 <= valid_fraction < 1.0):
        raise DataError("test_fraction must lie in (0, 1) and valid_fraction in [0, 1)")


def split_indices(
    n: int, test_fraction: float, valid_fraction: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random train/valid/test index split: ``test_fraction`` of all samples go to
    test, then ``valid_fraction`` of the rest to valid."""
    perm = torch.randperm(n, generator=generator)
    n_test = max(1, int(round(n * test_fraction)))
    n_valid = int(round((n - n_test) * valid_fraction))
    return {
        "test": perm[:n_test].sort().values,
        "valid": perm[n_test : n_test + n_valid].sort().values,
        "train": perm[n_test + n_valid :].sort().values,
    }


def make_sim(
    variant: str = "sim-i",
    n_samples: int = 10_000,
    seed: int = 0,
    test_fraction: float = 0.1,
    valid_fraction: float = 0.1,
    a1_dim: int | None = None,
    a2_dim: int | None = None,
    shared_dim: int = SIM_SHARED_DIM,
    superfluous_dim: int = SIM_SUPERFLUOUS_DIM,
) -> MultimodalDataset:
    """SIM-I/II/III: ``x1 = [a0; b0; a1; b1]``, ``x2 = [a0; b0; a2; b2]``,
    ``y = 1[<delta, [a0; a1; a2]> > 0]`` with every sub-vector i.i.d. N(0, 1).

    ``a`` parts are task-relevant, ``b`` parts superfluous; index 0 is shared by
    both modalities, 1 and 2 are specific. ``delta ~ N(0, I)`` is drawn once per
    dataset (from ``seed``). The data are generated float32 straight into the two
    modality tensors (no intermediate copies), so 10^6 samples fit in memory once.
    Ground-truth parts are column slices of ``x1``/``x2``.
    """
    if variant not in SIM_VARIANTS:
        raise DataError(f"unknown SIM variant {variant!r}; expected one of {', '.join(SIM_VARIANTS)}")
    _check_fractions(n_samples, test_fraction, valid_fraction)
    d_a1, d_a2 = SIM_VARIANTS[variant]
    d_a1 = d_a1 if a1_dim is None else int(a1_dim)
    d_a2 = d_a2 if a2_dim is None else int(a2_dim)
    d0, db = int(shared_dim), int(superfluous_dim)
    g = torch.Generator().manual_seed(int(seed))
    delta = torch.randn(d0 + d_a1 + d_a2, generator=g)
    x1 = torch.empty(n_samples, d0 + d0 + d_a1 + db)
    x2 = torch.empty(n_samples, d0 + d0 + d_a2 + db)
    x1.normal_(generator=g)
    x2[:, 2 * d0 :].normal_(generator=g)
    x2[:, : 2 * d0] = x1[:, : 2 * d0]  # a0 and b0 are shared
    a1_start, a2_start = 2 * d0, 2 * d0
    y = torch.empty(n_samples, dtype=torch.long)
    w0, w1, w2 = delta[:d0], delta[d0 : d0 + d_a1], delta[d0 + d_a1 :]
    chunk = 65536
    for s in range(0, n_samples, chunk):
        e = min(s + chunk, n_samples)
        score = x1[s:e, :d0] @ w0 + x1[s:e, a1_start : a1_start + d_a1] @ w1 + x2[s:e, a2_start : a2_start + d_a2] @ w2
        y[s:e] = (score > 0).long()
    slices = {
        "a0": ("x1", 0, d0),
        "b0": ("x1", d0, 2 * d0),
        "a1": ("x1", a1_start, a1_start + d_a1),
        "b1": ("x1", a1_start + d_a1, a1_start + d_a1 + db),
        "a2": ("x2", a2_start, a2_start + d_a2),
        "b2": ("x2", a2_start + d_a2, a2_start + d_a2 + db),
    }
    return MultimodalDataset(
        name=variant,
        features={"x1": x1, "x2": x2},
        y=y,
        task=TaskSpec("binary"),
        splits=split_indices(n_samples, test_fraction, valid_fraction, g),
        ground_truth=GroundTruth(slices=slices, relevant=("a0", "a1", "a2")),
        meta={"generator": "make_sim", "variant": variant, "seed": seed, "delta": delta},
    )


#: Default sizes of the latent parts of ``sim-msa``.
SIM_MSA_DIMS = {
    "modalities": {"text": 128, "audio": 74, "vision": 47},
    "shared_relevant": 8,
    "specific_relevant": {"text": 8, "audio": 4, "vision": 4},
    "shared_superfluous": 8,
    "specific_superfluous": 8,
    "noise": {"text": 0.3, "audio": 1.5, "vision": 1.5},
}


def make_sim_msa(
    n_train: int = 1284,
    n_valid: int = 229,
    n_test: int = 686,
    seed: int = 0,
    seq_len: int | None = None,
    label_scale: float = 0.9,
    noise_text: float = 0.3,
    noise_audio: float = 1.5,
    noise_vision: float = 1.5,
) -> MultimodalDataset:
    """``sim-msa``: a synthetic stand-in for multimodal sentiment regression.

    Three modalities shaped like CMU-MOSI's features: ``text`` (128-d),
    ``audio`` (74-d) and ``vision`` (47-d). Per sample we draw independent
    N(0, 1) latent parts:

    * task-relevant: ``shared`` (8-d, in every modality) and one specific part
      per modality (``text_specific`` 8-d, ``audio_specific`` and
      ``vision_specific`` 4-d each: text carries the most);
    * superfluous: ``shared_superfluous`` (8-d, in every modality) and
      ``<m>_superfluous`` (8-d, specific).

    Modality ``m`` is ``x_m = W_m [shared; m_specific; shared_superfluous;
    m_superfluous] + noise_m * eps`` with a fixed random matrix ``W_m`` (entries
    N(0, 1/k), k the latent width) and Gaussian noise that is small for text
    (0.3) and large for audio and vision (1.5). The label is
    ``y = 3 tanh(label_scale * <w, r> / |w|)`` for the concatenated
    task-relevant parts ``r`` (24-d) and a fixed random unit direction ``w``,
    so ``y`` lies in (-3, 3) with a MOSI-like spread.

    With ``seq_len=L`` each modality becomes a padded sequence ``(N, L, D)``:
    step ``t`` is ``x_m`` plus fresh step noise (half the modality's noise level),
    text has full length, audio and vision have random lengths in [L/2, L]
    (as unaligned MSA features do). Defaults mimic CMU-MOSI's split sizes
    (1284/229/686). The ground-truth parts are kept on the dataset.
    """
    n_valid = int(n_valid)
    if int(n_train) < 2 or n_valid < 0 or int(n_test) < 1:
        raise DataError("sim-msa needs n_train >= 2, n_valid >= 0 and n_test >= 1")
    if seq_len is not None and int(seq_len) < 2:
        raise DataError(f"seq_len must be at least 2, got {seq_len}")
    n = int(n_train) + n_valid + int(n_test)
    g = torch.Generator().manual_seed(int(seed))
    dims = SIM_MSA_DIMS
    noise = {"text": float(noise_text), "audio": float(noise_audio), "vision": float(noise_vision)}
    names = list(dims["modalities"])
    parts: dict[str, torch.Tensor] = {"shared": torch.randn(n, dims["shared_relevant"], generator=g)}
    for m in names:
        parts[f"{m}_specific"] = torch.randn(n, dims["specific_relevant"][m], generator=g)
    parts["shared_superfluous"] = torch.randn(n, dims["shared_superfluous"], generator=g)
    for m in names:
        parts[f"{m}_superfluous"] = torch.randn(n, dims["specific_superfluous"], generator=g)
    relevant = ["shared"] + [f"{m}_specific" for m in names]
    r = torch.cat([parts[k] for k in relevant], dim=1)
    w = torch.randn(r.shape[1], generator=g)
    w = w / w.norm()
    y = 3.0 * torch.tanh(label_scale * (r @ w))
    features: dict[str, torch.Tensor] = {}
    lengths: dict[str, torch.Tensor] = {}
    for m in names:
        latent = torch.cat(
            [parts["shared"], parts[f"{m}_specific"], parts["shared_superfluous"], parts[f"{m}_superfluous"]], dim=1
        )
        mix = torch.randn(latent.shape[1], dims["modalities"][m], generator=g) / math.sqrt(latent.shape[1])
        x = latent @ mix
        x += noise[m] * torch.randn(x.shape, generator=g)
        if seq_len is not None:
            L = int(seq_len)
            x = x.unsqueeze(1) + 0.5 * noise[m] * torch.randn(n, L, x.shape[1], generator=g)
            if m == "text":
                ln = torch.full((n,), L, dtype=torch.long)
            else:
                ln = torch.randint(max(1, L // 2), L + 1, (n,), generator=g)
            x[torch.arange(L).unsqueeze(0) >= ln.unsqueeze(1)] = 0.0
            lengths[m] = ln
        features[m] = x
    order = torch.randperm(n, generator=g)
    splits = {
        "train": order[: int(n_train)].sort().values,
        "valid": order[int(n_train) : int(n_train) + n_valid].sort().values,
        "test": order[int(n_train) + n_valid :].sort().values,
    }
    return MultimodalDataset(
        name="sim-msa",
        features=features,
        y=y,
        task=TaskSpec("regression"),
        splits=splits,
        lengths=lengths or None,
        ground_truth=GroundTruth(arrays=parts, relevant=tuple(relevant)),
        meta={"generator": "make_sim_msa", "seed": seed, "seq_len": seq_len, "direction": w},
    )
