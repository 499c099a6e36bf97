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
from mmib.data.oracle import LinearView, gaussian_posterior, probit_log_probs, sign_agreement
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

    Oracle: ``y`` is a deterministic function of parts both modalities together
    expose, so the Bayes-optimal accuracy from the union is 1 and
    ``meta["oracle"]`` holds certain log-probabilities (0 for the class of
    ``sign <delta, [a0; a1; a2]>``, ``LOG_PROB_FLOOR`` for the other).
    ``meta["subset_optimum"]`` gives the closed-form best accuracy from ground-truth
    subsets (``a0``, ``a1;a2``, ``x1``, ``x2``, ``a0;a1;a2``, ``union``): from a
    subset S the best predictor is ``sign <delta_S, part_S>``, right with
    probability ``1/2 + arcsin(rho)/pi``, ``rho = |delta_S| / |delta|`` (the
    correlation of the two Gaussian scores); :func:`sim_subset_oracle` gives its
    per-sample log-probabilities.
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
    score = torch.empty(n_samples)
    w0, w1, w2 = delta[:d0], delta[d0 : d0 + d_a1], delta[d0 + d_a1 :]
    chunk = 65536
    for s in range(0, n_samples, chunk):
        e = min(s + chunk, n_samples)
        score[s:e] = x1[s:e, :d0] @ w0 + x1[s:e, a1_start : a1_start + d_a1] @ w1 + x2[s:e, a2_start : a2_start + d_a2] @ w2
        y[s:e] = (score[s:e] > 0).long()
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
        meta={
            "generator": "make_sim", "variant": variant, "seed": seed, "delta": delta,
            "oracle": probit_log_probs(score, 0.0),
            "oracle_note": "y = 1[<delta, [a0; a1; a2]> > 0] is a function of the union: certain log-probabilities "
                           "of the class of that score (Bayes accuracy 1)",
            "subset_optimum": sim_subset_optimum(delta, d0, d_a1),
        },
    )


#: Ground-truth subsets of SIM with a closed-form optimum, by name: the relevant parts each holds.
SIM_SUBSETS: dict[str, tuple[str, ...]] = {
    "a0": ("a0",),
    "a1;a2": ("a1", "a2"),
    "x1": ("a0", "a1"),
    "x2": ("a0", "a2"),
    "a0;a1;a2": ("a0", "a1", "a2"),
    "union": ("a0", "a1", "a2"),
}


def _sim_weights(delta: torch.Tensor, d0: int, d_a1: int) -> dict[str, torch.Tensor]:
    return {"a0": delta[:d0], "a1": delta[d0 : d0 + d_a1], "a2": delta[d0 + d_a1 :]}


def sim_subset_optimum(delta: torch.Tensor, d0: int, d_a1: int) -> dict[str, float]:
    """Best accuracy from each subset of :data:`SIM_SUBSETS`: ``1/2 + arcsin(|delta_S| / |delta|) / pi``."""
    w = _sim_weights(delta.double(), d0, d_a1)
    total = float(delta.double().norm())
    out = {}
    for name, keep in SIM_SUBSETS.items():
        rho = math.sqrt(sum(float(w[p].pow(2).sum()) for p in keep)) / total
        out[name] = sign_agreement(rho)
    return out


def sim_subset_oracle(dataset: MultimodalDataset, parts: tuple[str, ...] | list[str] | str) -> torch.Tensor:
    """Bayes log-probabilities ``(N, 2)`` of a SIM set's label from ground-truth ``parts`` only.

    ``parts`` names SIM parts (``a0``, ``b1``, ...) or a key of :data:`SIM_SUBSETS`
    (``"x2"``: what modality 2 holds). With ``s_S = <delta_S, part_S>`` over the
    relevant parts in S and ``sd`` the norm of ``delta`` over the rest,
    ``P(y = 1 | S) = Phi(s_S / sd)`` (superfluous parts add nothing).
    """
    gt = dataset.ground_truth
    delta = dataset.meta.get("delta")
    if gt is None or delta is None or dataset.meta.get("generator") not in ("make_sim", "make_sim_n"):
        raise DataError(f"{dataset.name}: sim_subset_oracle needs a SIM dataset (sim-i, sim-ii, sim-iii, sim-n)")
    if isinstance(parts, str):
        if parts not in SIM_SUBSETS:
            raise DataError(f"unknown SIM subset {parts!r}; expected one of {', '.join(SIM_SUBSETS)} or a list of parts")
        parts = SIM_SUBSETS[parts]
    unknown = [p for p in parts if p not in gt.parts]
    if unknown:
        raise DataError(f"unknown SIM parts {unknown}; known: {', '.join(gt.parts)}")
    widths = {p: int(gt.get(dataset, p, raw=False).shape[1]) for p in ("a0", "a1")}
    w = _sim_weights(delta.double(), widths["a0"], widths["a1"])
    score = torch.zeros(len(dataset), dtype=torch.float64)
    rest = 0.0
    for p in ("a0", "a1", "a2"):
        if p in parts:
            score += gt.get(dataset, p).double() @ w[p]
        else:
            rest += float(w[p].pow(2).sum())
    return probit_log_probs(score, math.sqrt(rest))


#: Default sizes of the latent parts of ``sim-msa``.
SIM_MSA_DIMS = {
    "modalities": {"text": 128, "audio": 74, "vision": 47},
    "shared_relevant": 8,
    "specific_relevant": {"text": 8, "audio": 4, "vision": 4},
    "shared_superfluous": 8,
    "specific_superfluous": 8,
    "noise": {"text": 0.3, "audio": 1.5, "vision": 1.5},
}


MSA_MODALITIES: tuple[str, ...] = ("text", "audio", "vision")


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
    text_dim: int = 128,
    audio_dim: int = 74,
    vision_dim: int = 47,
    noise_only: tuple[str, ...] = (),
    text_min_len: int | None = None,
    label_noise: float = 0.0,
    step_noise: float = 0.5,
) -> MultimodalDataset:
    """``sim-msa``: a synthetic stand-in for multimodal sentiment regression.

    Three modalities shaped like CMU-MOSI's features: ``text`` (128-d),
    ``audio`` (74-d) and ``vision`` (47-d) by default (``*_dim`` change them).
    Per sample we draw independent N(0, 1) latent parts:

    * task-relevant: ``shared`` (8-d, in every modality) and one specific part
      per modality (``text_specific`` 8-d, ``audio_specific`` and
      ``vision_specific`` 4-d each: text carries the most);
    * superfluous: ``shared_superfluous`` (8-d, in every modality) and
      ``<m>_superfluous`` (8-d, specific).

    Modality ``m`` is ``x_m = W_m [shared; m_specific; shared_superfluous;
    m_superfluous] + noise_m * eps`` with a fixed random matrix ``W_m`` (entries
    N(0, 1/k), k the latent width) and Gaussian noise that is small for text
    (0.3) and large for audio and vision (1.5). The label is
    ``y = 3 tanh(label_scale * (<w, r> + label_noise * e))`` for the concatenated
    task-relevant parts ``r`` (24-d), a fixed random unit direction ``w`` and
    ``e ~ N(0, 1)`` (``label_noise`` 0 by default), so ``y`` lies in (-3, 3)
    with a MOSI-like spread.

    A modality named in ``noise_only`` carries no latent part at all: it is pure
    Gaussian noise of its ``noise_*`` level, and has no specific parts (so the
    label has none from it either).

    With ``seq_len=L`` each modality becomes a padded sequence ``(N, L, D)``:
    step ``t`` is ``x_m`` plus fresh step noise (``step_noise`` times the
    modality's noise level; half by default).
    Audio and vision have random lengths in [L/2, L] (as unaligned MSA features
    do); text has full length unless ``text_min_len`` is set, then lengths in
    [text_min_len, L]. Defaults mimic CMU-MOSI's split sizes (1284/229/686).
    The ground-truth parts are kept on the dataset.

    Oracle (``meta["oracle"]``): the model is linear-Gaussian in the latent parts,
    so the posterior of ``<w, r>`` given every modality is Gaussian, ``N(mu(x), v(x))``;
    for sequences the per-sample mean over the valid steps is a sufficient
    statistic (step noise is i.i.d.), with noise variance ``noise_m^2 (1 + step_noise^2 / len)``.
    ``label_noise`` only widens that posterior, and ``y`` is a monotone function of
    ``<w, r> + label_noise * e``, so the posterior median of ``y`` (the MAE-optimal
    prediction) is ``3 tanh(label_scale * mu(x))``. ``meta["posterior"]`` keeps
    ``mean`` = mu(x) and ``sd`` = sqrt(v(x) + label_noise^2), the posterior of the
    label's tanh argument.
    """
    return _sim_msa(
        "sim-msa", n_train, n_valid, n_test, seed, seq_len, label_scale,
        {"text": noise_text, "audio": noise_audio, "vision": noise_vision},
        {"text": text_dim, "audio": audio_dim, "vision": vision_dim},
        noise_only, text_min_len, label_noise, step_noise,
    )


def make_sim_msa_small(
    n_train: int = 1300,
    n_valid: int = 230,
    n_test: int = 690,
    seed: int = 0,
    seq_len: int = 50,
    label_scale: float = 1.2,
    noise_text: float = 0.3,
    text_dim: int = 384,
    audio_dim: int = 25,
    vision_dim: int = 20,
    text_min_len: int = 8,
    label_noise: float = 0.5,
    step_noise: float = 5.0,
) -> MultimodalDataset:
    """``sim-msa-small``: ``sim-msa`` shaped like a small real sentiment file.

    1,300 / 230 / 690 samples; ``text`` as 50-step, 384-d token sequences (the
    width of MiniLM sentence-transformer token features) with per-sample lengths
    in [8, 50]; every step carries the same sentence-level latent mix (noise 0.3)
    plus fresh token noise five times as large (sd 1.5 per feature against a
    sentence signal of variance 1), so one token says little and the sentence's
    mean says much, more for long sentences than for short ones. ``audio`` (25-d) and ``vision`` (20-d) are 50-step sequences of
    pure noise (lengths in [25, 50]): they carry nothing about the label, as in
    the real file this stands in for. The label is ``3 tanh(label_scale *
    (<w, [shared; text_specific]> + label_noise * e))``; ``label_noise`` plays
    the annotators' disagreement, so no model can reach MAE 0. See
    :func:`make_sim_msa` for the latent parts and the oracle (the posterior
    median, exact).

    The aim is a set on which a linear model on masked-mean-pooled features is a
    strong but beatable yardstick (the tanh is the nonlinearity a small MLP can
    use) and on which an LSTM over 50 x 384 steps memorises 1,300 samples.
    Measured on data seeds 0-2 (test MAE; ridge with alpha chosen on valid, on the
    standardised masked means; a 2-layer 64-unit MLP on the same features, AdamW
    lr 3e-4, weight decay 1, dropout 0.3, L1 loss, early stopping on valid):
    oracle 0.767 / 0.744 / 0.741, ridge 0.977 / 0.939 / 0.958, MLP 0.923 / 0.880 /
    0.887 (the real file: ridge 0.960, good MLPs 0.894, fine-tuned MiniLM 0.752).
    ``concat`` at its defaults (LSTM encoders) on data seed 0: training loss 0.26
    after 12 epochs against validation MAE 0.86-0.92, test MAE 0.897 at the best
    epoch: it memorises, but still beats ridge here (on the real file it did not).
    docs/results/claims_data.md (data seeds 0-2): oracle 0.751 ± 0.014, ridge
    0.965 ± 0.013, the check's 2-layer MLP (dropout 0.1, weight decay 1e-4) 0.926 ± 0.027.
    """
    return _sim_msa(
        "sim-msa-small", n_train, n_valid, n_test, seed, seq_len, label_scale,
        {"text": noise_text, "audio": 1.0, "vision": 1.0},
        {"text": text_dim, "audio": audio_dim, "vision": vision_dim},
        ("audio", "vision"), text_min_len, label_noise, step_noise,
    )


def _sim_msa(
    name: str,
    n_train: int,
    n_valid: int,
    n_test: int,
    seed: int,
    seq_len: int | None,
    label_scale: float,
    noise: dict[str, float],
    widths: dict[str, int],
    noise_only: tuple[str, ...] | list[str],
    text_min_len: int | None,
    label_noise: float,
    step_noise: float,
) -> MultimodalDataset:
    n_valid = int(n_valid)
    if int(n_train) < 2 or n_valid < 0 or int(n_test) < 1:
        raise DataError(f"{name} needs n_train >= 2, n_valid >= 0 and n_test >= 1")
    if seq_len is not None and int(seq_len) < 2:
        raise DataError(f"seq_len must be at least 2, got {seq_len}")
    for m, width in widths.items():
        if int(width) < 1:
            raise DataError(f"{m}_dim must be at least 1, got {width}")
    for m, level in noise.items():
        if not float(level) > 0 or not math.isfinite(float(level)):
            raise DataError(f"noise_{m} must be a positive number, got {level}")
    noise_only = tuple(noise_only)
    bad = [m for m in noise_only if m not in MSA_MODALITIES]
    if bad:
        raise DataError(f"noise_only names unknown modalities {bad}; expected some of {', '.join(MSA_MODALITIES)}")
    if "text" in noise_only:
        raise DataError("noise_only cannot include text: the label needs one modality that carries it")
    if text_min_len is not None:
        if seq_len is None:
            raise DataError("text_min_len needs seq_len (text lengths exist only for sequences)")
        if not 1 <= int(text_min_len) <= int(seq_len):
            raise DataError(f"text_min_len must lie in [1, seq_len={seq_len}], got {text_min_len}")
    for key, value in (("label_noise", label_noise), ("step_noise", step_noise)):
        if not float(value) >= 0 or not math.isfinite(float(value)):
            raise DataError(f"{key} must be a finite number >= 0, got {value}")
    n = int(n_train) + n_valid + int(n_test)
    g = torch.Generator().manual_seed(int(seed))
    dims = SIM_MSA_DIMS
    names = list(MSA_MODALITIES)
    carriers = [m for m in names if m not in noise_only]
    parts: dict[str, torch.Tensor] = {"shared": torch.randn(n, dims["shared_relevant"], generator=g)}
    for m in carriers:
        parts[f"{m}_specific"] = torch.randn(n, dims["specific_relevant"][m], generator=g)
    parts["shared_superfluous"] = torch.randn(n, dims["shared_superfluous"], generator=g)
    for m in carriers:
        parts[f"{m}_superfluous"] = torch.randn(n, dims["specific_superfluous"], generator=g)
    relevant = ["shared"] + [f"{m}_specific" for m in carriers]
    r = torch.cat([parts[k] for k in relevant], dim=1)
    w = torch.randn(r.shape[1], generator=g)
    w = w / w.norm()
    offsets, k = {}, 0
    for key, value in parts.items():
        offsets[key] = (k, k + value.shape[1])
        k += value.shape[1]
    features: dict[str, torch.Tensor] = {}
    lengths: dict[str, torch.Tensor] = {}
    views: list[LinearView] = []
    for m in names:
        width = int(widths[m])
        if m in carriers:
            keys = ["shared", f"{m}_specific", "shared_superfluous", f"{m}_superfluous"]
            latent = torch.cat([parts[key] for key in keys], dim=1)
            mix = torch.randn(latent.shape[1], width, generator=g) / math.sqrt(latent.shape[1])
            x = latent @ mix
            x += noise[m] * torch.randn(x.shape, generator=g)
            full_mix = torch.zeros(k, width)
            row = 0
            for key in keys:
                a, b = offsets[key]
                full_mix[a:b] = mix[row : row + b - a]
                row += b - a
        else:
            x = noise[m] * torch.randn(n, width, generator=g)
        obs, var = x, torch.tensor(float(noise[m]) ** 2)
        if seq_len is not None:
            L = int(seq_len)
            x = x.unsqueeze(1) + float(step_noise) * noise[m] * torch.randn(n, L, width, generator=g)
            if m == "text" and text_min_len is None:
                ln = torch.full((n,), L, dtype=torch.long)
            elif m == "text":
                ln = torch.randint(int(text_min_len), L + 1, (n,), generator=g)
            else:
                ln = torch.randint(max(1, L // 2), L + 1, (n,), generator=g)
            x[torch.arange(L).unsqueeze(0) >= ln.unsqueeze(1)] = 0.0
            lengths[m] = ln
            obs = x.sum(1) / ln.unsqueeze(1)
            var = float(noise[m]) ** 2 * (1.0 + float(step_noise) ** 2 / ln.double())
        if m in carriers:
            views.append(LinearView(full_mix, obs, var))
        features[m] = x
    score = r @ w
    if float(label_noise) > 0:
        score = score + float(label_noise) * torch.randn(n, generator=g)
    y = 3.0 * torch.tanh(label_scale * score)
    order = torch.randperm(n, generator=g)
    splits = {
        "train": order[: int(n_train)].sort().values,
        "valid": order[int(n_train) : int(n_train) + n_valid].sort().values,
        "test": order[int(n_train) + n_valid :].sort().values,
    }
    direction = torch.zeros(k, 1, dtype=torch.float64)
    start = 0
    for key in relevant:
        a, b = offsets[key]
        direction[a:b, 0] = w[start : start + b - a].double()
        start += b - a
    post_mean, post_var = gaussian_posterior(views, direction, k)
    score_sd = (post_var[:, 0] + float(label_noise) ** 2).sqrt().float()
    oracle = (3.0 * torch.tanh(label_scale * post_mean[:, 0])).float()
    note = (
        "posterior median of y: 3 tanh(label_scale * E[<w, r> | x]), the Gaussian posterior of the relevant "
        "direction given every modality (sequences: their masked step means, a sufficient statistic)"
    )
    return MultimodalDataset(
        name=name,
        features=features,
        y=y,
        task=TaskSpec("regression"),
        splits=splits,
        lengths=lengths or None,
        ground_truth=GroundTruth(arrays=parts, relevant=tuple(relevant)),
        meta={"generator": "make_sim_msa", "seed": seed, "seq_len": seq_len, "direction": w,
              "noise_only": noise_only, "label_noise": float(label_noise),
              "oracle": oracle, "oracle_note": note,
              "posterior": {"mean": post_mean[:, 0].float(), "sd": score_sd}},
    )
