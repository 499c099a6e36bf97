"""Synthetic sets built for named claims of the four papers, each with its Bayes optimum.

On SIM and ``sim-msa`` no claim can show itself: a linear model is (nearly) the
optimum there, so every deep model is only an estimation error away from it.
Each set here is built so that one named claim *could* hold, and carries the
score no model can beat (``meta["oracle"]``, see :mod:`mmib.data.oracle`):

* ``claim-corrupt`` (:func:`make_claim_corrupt`): per-sample modality corruption,
  for per-sample uncertainty (a bottleneck's sigma(x), product of experts);
* ``claim-spurious`` (:func:`make_claim_spurious`): a superfluous factor that
  predicts the label in train only, for minimal representations;
* ``claim-entangled`` (:func:`make_claim_entangled`): relevant and superfluous
  parts mixed through a random invertible nonlinear map;
* ``claim-interaction`` (:func:`make_claim_interaction`): a label that is a
  product across modalities, for tensor and graph fusion;
* ``claim-shared`` (:func:`make_claim_shared`): a shared signal under strong
  modality-specific nuisance, MMIM's setting for inter-modality MI;
* ``sim-n`` (:func:`make_sim_n`): SIM with a chosen number of training samples
  (nested training sets, one fixed validation and test set) for the N sweep.

Every generator is a pure function of its seed (one stream for the fixed structure, the
mixing matrices and label direction, and one for the samples, so a larger ``n_train``
keeps the same data-generating process), keeps its latent parts as
:class:`~mmib.data.dataset.GroundTruth` arrays (so ``mmib probe`` works) and the
label direction in ``meta["direction"]``. Rows are in split order: train, then
valid, then test. Sizes are chosen so that one training run of a small model
takes seconds on one CPU thread. Each docstring says what was measured on it:
a linear model (ridge / logistic regression on the standardised features,
penalty chosen on valid), a small MLP (two hidden layers of 64, dropout 0.1,
AdamW, early stopping on valid) and the oracle, on test (measured by the former
``benchmarks/claims_check.py``; ``mmib study claims-data --doc`` regenerates the
table in docs/results/claims_data.md with OMIB's OMF head as the small MLP, and
``mmib study claims`` tests each claim on these sets).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mmib.data.dataset import GroundTruth, MultimodalDataset, TaskSpec
from mmib.data.oracle import (
    LOG_PROB_FLOOR,
    LinearView,
    gaussian_log_likelihood,
    gaussian_posterior,
    linear_least_squares,
    mixture_median,
    probit_log_probs,
)
from mmib.data.synthetic import SIM_SHARED_DIM, SIM_SUPERFLUOUS_DIM, SIM_VARIANTS, sim_subset_optimum
from mmib.errors import DataError


# ---------------------------------------------------------------------- shared pieces
def _check_sizes(name: str, n_train: int, n_valid: int, n_test: int) -> None:
    if int(n_train) < 2 or int(n_valid) < 0 or int(n_test) < 1:
        raise DataError(f"{name} needs n_train >= 2, n_valid >= 0 and n_test >= 1")


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not float(value) > 0 or not math.isfinite(float(value)):
            raise DataError(f"{key} must be a positive number, got {value}")


def _check_nonnegative(**values: float) -> None:
    for key, value in values.items():
        if not float(value) >= 0 or not math.isfinite(float(value)):
            raise DataError(f"{key} must be a finite number >= 0, got {value}")


def _check_dims(**values: int) -> None:
    for key, value in values.items():
        if int(value) < 1:
            raise DataError(f"{key} must be at least 1, got {value}")


def _splits(n_train: int, n_valid: int, n_test: int) -> dict[str, Tensor]:
    a, b = int(n_train), int(n_train) + int(n_valid)
    return {"train": torch.arange(0, a), "valid": torch.arange(a, b), "test": torch.arange(b, b + int(n_test))}


class _Latents:
    """Named independent N(0, I) latent parts of every sample, laid out in one latent vector."""

    def __init__(self, n: int, dims: Mapping[str, int], g: torch.Generator) -> None:
        self.parts: dict[str, Tensor] = {}
        self.offsets: dict[str, tuple[int, int]] = {}
        k = 0
        for name, d in dims.items():
            self.parts[name] = torch.randn(n, int(d), generator=g)
            self.offsets[name] = (k, k + int(d))
            k += int(d)
        self.dim = k

    def view(
        self, keys: Sequence[str], width: int, g: torch.Generator, scale: Mapping[str, float] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``latent[keys] @ mix`` for a random ``mix`` (entries N(0, 1/k)), and ``mix`` laid out over all parts."""
        k = sum(self.parts[key].shape[1] for key in keys)
        mix = torch.randn(k, int(width), generator=g) / math.sqrt(k)
        full = torch.zeros(self.dim, int(width))
        row = 0
        for key in keys:
            a, b = self.offsets[key]
            full[a:b] = mix[row : row + b - a] * (scale or {}).get(key, 1.0)
            row += b - a
        clean = torch.cat([self.parts[key] for key in keys], dim=1) @ full[torch.cat(
            [torch.arange(*self.offsets[key]) for key in keys])]
        return clean, full

    def direction(self, weights: Mapping[str, Tensor]) -> Tensor:
        """A ``(k, 1)`` direction in the latent vector with ``weights[part]`` on each named part."""
        d = torch.zeros(self.dim, 1, dtype=torch.float64)
        for key, w in weights.items():
            a, b = self.offsets[key]
            d[a:b, 0] = w.double()
        return d


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Two streams from one seed: the set's fixed structure (mixing matrices, label direction) and
    its samples. The structure does not depend on the sizes, so changing ``n_train`` keeps the
    same data-generating process."""
    data_seed = int(np.random.SeedSequence([int(seed), 2]).generate_state(1)[0])
    return torch.Generator().manual_seed(int(seed)), torch.Generator().manual_seed(data_seed)


def _unit(d: int, g: torch.Generator) -> Tensor:
    w = torch.randn(int(d), generator=g)
    return w / w.norm()


# ---------------------------------------------------------------------- (a) corruption
def make_claim_corrupt(
    n_train: int = 4000,
    n_valid: int = 1000,
    n_test: int = 2000,
    seed: int = 0,
    dim: int = 24,
    latent_dim: int = 8,
    superfluous_dim: int = 4,
    corrupt_rates: tuple[float, ...] = (0.3, 0.3, 0.3),
    clean_noise: float = 0.5,
    corrupt_noise: float = 4.0,
    label_noise: float = 0.3,
) -> MultimodalDataset:
    """``claim-corrupt``: every sample's modalities are clean or heavily corrupted at random.

    Claim tested: a model that estimates per-sample uncertainty (the bottleneck's
    sigma(x), a product of experts over modalities) can down-weight the corrupted
    modality of each sample (MIB's PoE, the uncertainty argument of
    variational fusion).

    Data: a relevant latent ``shared`` (``latent_dim``) seen by every modality
    ``x1 .. xM`` (M = ``len(corrupt_rates)``), each also carrying its own
    superfluous part (``superfluous_dim``): ``x_m = W_m [shared; x_m_superfluous]
    + sd_m,i eps``, ``dim`` features, where ``sd_m,i`` is ``corrupt_noise`` with
    probability ``corrupt_rates[m]`` (independently per sample and modality) and
    ``clean_noise`` otherwise. Regression: ``y = <w, shared> + label_noise e``,
    ``w`` a unit vector. Why the claim should hold: each modality alone is enough
    when clean, so the best predictor weights the modalities per sample; a fixed
    weighting (any linear model) must average over the corruption patterns.

    Oracle (exact): the posterior of ``<w, shared>`` given ``x`` and a corruption
    pattern c is Gaussian ``N(mu_c(x), v_c)``; the pattern's posterior is
    ``p(c) N(x; 0, Sigma_c)`` normalised over the 2^M patterns. ``y``'s posterior
    is the mixture of ``N(mu_c, v_c + label_noise^2)``, and the oracle is its
    median (bisection). ``meta["oracle_known_pattern"]`` is the predictor told the
    true pattern, ``meta["linear_oracle"]`` the population least-squares linear
    predictor (what a linear model tends to with infinite data), and
    ``meta["posterior"]`` the mixture (``weights``, ``means``, ``sds``, one column
    per pattern with nonzero prior).
    Ground truth: ``shared`` (relevant), ``x<m>_superfluous`` and ``corrupted``
    (the ``(N, M)`` 0/1 pattern, for probing whether a representation knows it).

    Measured (data seeds 0-2, test MAE, mean ± std; docs/results/claims_data.md):
    oracle 0.350 ± 0.007 (told the pattern: the same, detection is easy here), ridge
    0.601 ± 0.010 (the population least-squares linear predictor 0.595 ± 0.006), the
    small MLP 0.553 ± 0.020 (on x1 alone 0.583 ± 0.022), and a linear model on each
    modality gated by a norm-based corruption flag 0.414 ± 0.002: per-sample
    weighting is what closes the gap, and a plain MLP does not find it at this N.
    """
    _check_sizes("claim-corrupt", n_train, n_valid, n_test)
    _check_dims(dim=dim, latent_dim=latent_dim, superfluous_dim=superfluous_dim)
    _check_positive(clean_noise=clean_noise, corrupt_noise=corrupt_noise)
    _check_nonnegative(label_noise=label_noise)
    rates = tuple(float(r) for r in corrupt_rates)
    if not 1 <= len(rates) <= 6:
        raise DataError(f"corrupt_rates must name 1 to 6 modalities, got {len(rates)}")
    if any(not 0.0 <= r <= 1.0 for r in rates):
        raise DataError(f"corrupt_rates must lie in [0, 1], got {list(rates)}")
    n = int(n_train) + int(n_valid) + int(n_test)
    names = [f"x{i + 1}" for i in range(len(rates))]
    gs, gd = _generators(seed)
    dims = {"shared": int(latent_dim), **{f"{m}_superfluous": int(superfluous_dim) for m in names}}
    lat = _Latents(n, dims, gd)
    w = _unit(latent_dim, gs)
    corrupted = torch.rand(n, len(rates), generator=gd) < torch.tensor(rates)
    features: dict[str, Tensor] = {}
    mixes: list[Tensor] = []
    for i, m in enumerate(names):
        clean, full = lat.view(["shared", f"{m}_superfluous"], dim, gs)
        sd = torch.where(corrupted[:, i], float(corrupt_noise), float(clean_noise)).unsqueeze(1)
        features[m] = clean + sd * torch.randn(n, int(dim), generator=gd)
        mixes.append(full)
    score = lat.parts["shared"] @ w
    y = score + float(label_noise) * torch.randn(n, generator=gd)
    direction = lat.direction({"shared": w})
    # mixture over corruption patterns
    means, sds, log_weights = [], [], []
    for pattern in itertools.product((False, True), repeat=len(rates)):
        log_prior = sum(math.log(r if c else 1.0 - r) if (r if c else 1.0 - r) > 0 else -math.inf
                        for r, c in zip(rates, pattern))
        if log_prior == -math.inf:
            continue
        views = [LinearView(mix, features[m], (corrupt_noise if c else clean_noise) ** 2)
                 for m, mix, c in zip(names, mixes, pattern)]
        mu, var = gaussian_posterior(views, direction, lat.dim)
        means.append(mu[:, 0])
        sds.append((var[:, 0] + float(label_noise) ** 2).sqrt())
        log_weights.append(log_prior + gaussian_log_likelihood(views, lat.dim))
    weights = torch.softmax(torch.stack(log_weights, 1), dim=1)
    means_t, sds_t = torch.stack(means, 1), torch.stack(sds, 1)
    oracle = mixture_median(weights, means_t, sds_t).float()
    # the genie told the pattern, and the population least-squares linear predictor
    known = torch.empty(n, dtype=torch.float64)
    for pattern in torch.unique(corrupted, dim=0):
        rows = (corrupted == pattern).all(1).nonzero().squeeze(1)
        views = [LinearView(mix, features[m][rows], (corrupt_noise if bool(c) else clean_noise) ** 2)
                 for m, mix, c in zip(names, mixes, pattern)]
        known[rows] = gaussian_posterior(views, direction, lat.dim)[0][:, 0]
    mix_all = torch.cat(mixes, 1).double()
    noise_var = torch.cat([torch.full((int(dim),), (1 - r) * clean_noise**2 + r * corrupt_noise**2,
                                      dtype=torch.float64) for r in rates])
    beta = linear_least_squares(mix_all.T @ mix_all + torch.diag(noise_var), mix_all.T @ direction)
    linear = (torch.cat([features[m] for m in names], 1).double() @ beta)[:, 0]
    gt = {**lat.parts, "corrupted": corrupted.float()}
    return MultimodalDataset(
        name="claim-corrupt",
        features=features,
        y=y,
        task=TaskSpec("regression"),
        splits=_splits(n_train, n_valid, n_test),
        ground_truth=GroundTruth(arrays=gt, relevant=("shared",)),
        meta={
            "generator": "make_claim_corrupt", "seed": seed, "direction": w, "corrupt_rates": rates,
            "claim": "per-sample uncertainty (sigma(x), product of experts) down-weights a corrupted modality",
            "oracle": oracle,
            "oracle_note": "median of y's posterior, a mixture over the 2^M corruption patterns of Gaussian "
                           "posteriors of <w, shared>, each weighted by the pattern's posterior probability",
            "oracle_known_pattern": known.float(),
            "linear_oracle": linear.float(),
            "posterior": {"weights": weights.float(), "means": means_t.float(), "sds": sds_t.float()},
        },
    )


# ---------------------------------------------------------------------- (b) spurious nuisance
def make_claim_spurious(
    n_train: int = 4000,
    n_valid: int = 1000,
    n_test: int = 2000,
    seed: int = 0,
    dim: int = 24,
    latent_dim: int = 8,
    superfluous_dim: int = 4,
    noise: float = 1.0,
    spurious: float = 0.9,
) -> MultimodalDataset:
    """``claim-spurious``: a superfluous factor that predicts the label in train only.

    Claim tested: a minimal representation (an information bottleneck, a
    representation of what the modalities share) drops a superfluous factor that a
    flexible model exploits, and so generalises when that factor's link to the
    label breaks (the MIB and OMIB argument for compressing superfluous parts).

    Data: two modalities see a relevant latent ``shared`` (``latent_dim``) and
    each its own superfluous part (``superfluous_dim``):
    ``x_m = W_m [shared; x_m_superfluous] + noise eps`` (``dim`` features),
    ``y = 1[<w, shared> > 0]``. The first coordinate of ``x2_superfluous``,
    ``u`` (kept as the part ``spurious``), is ``spurious * (2y - 1) +
    sqrt(1 - spurious^2) xi`` in the training rows and plain ``xi`` in the
    validation and test rows (``xi ~ N(0, 1)``; its variance is 1 in both). So ``u``
    predicts y in train (with ``spurious`` 0.9 alone about 98 % right), and is
    independent of it where the model is judged. Why the claim could hold: ``u``
    lives in one modality only, and the label's information is shared by both.

    Oracle (exact on valid and test): there every latent part is independent
    N(0, 1), so the posterior of ``<w, shared>`` given both modalities is Gaussian,
    ``N(mu, v)``, and ``P(y = 1 | x) = Phi(mu / sqrt(v))``. The same predictor is
    stored for the training rows (it is not the Bayes predictor of the training
    distribution, where ``u`` carries label information).

    Measured (data seeds 0-2, test accuracy): oracle 0.844 ± 0.021; trained on these
    data, logistic regression 0.753 ± 0.037 and the small MLP 0.756 ± 0.037; trained on
    the same data without the link (``spurious=0``, everything else identical)
    0.838 ± 0.019 and 0.832 ± 0.021. The link costs both about 0.08.
    """
    _check_sizes("claim-spurious", n_train, n_valid, n_test)
    _check_dims(dim=dim, latent_dim=latent_dim, superfluous_dim=superfluous_dim)
    _check_positive(noise=noise)
    if not 0.0 <= float(spurious) < 1.0:
        raise DataError(f"spurious must lie in [0, 1), got {spurious}")
    n = int(n_train) + int(n_valid) + int(n_test)
    gs, gd = _generators(seed)
    lat = _Latents(n, {"shared": int(latent_dim), "x1_superfluous": int(superfluous_dim),
                       "x2_superfluous": int(superfluous_dim)}, gd)
    w = _unit(latent_dim, gs)
    score = lat.parts["shared"] @ w
    y = (score > 0).long()
    train = torch.arange(int(n_train))
    u = lat.parts["x2_superfluous"][:, 0]
    u[train] = float(spurious) * (2.0 * y[train].float() - 1.0) + math.sqrt(1.0 - float(spurious) ** 2) * u[train]
    features: dict[str, Tensor] = {}
    views = []
    for m in ("x1", "x2"):
        clean, full = lat.view(["shared", f"{m}_superfluous"], dim, gs)
        features[m] = clean + float(noise) * torch.randn(n, int(dim), generator=gd)
        views.append(LinearView(full, features[m], float(noise) ** 2))
    mu, var = gaussian_posterior(views, lat.direction({"shared": w}), lat.dim)
    gt = {**lat.parts, "spurious": lat.parts["x2_superfluous"][:, :1].clone()}
    return MultimodalDataset(
        name="claim-spurious",
        features=features,
        y=y,
        task=TaskSpec("binary"),
        splits=_splits(n_train, n_valid, n_test),
        ground_truth=GroundTruth(arrays=gt, relevant=("shared",)),
        meta={
            "generator": "make_claim_spurious", "seed": seed, "direction": w, "spurious": float(spurious),
            "claim": "a minimal representation drops a superfluous factor that predicts y in train only",
            "oracle": probit_log_probs(mu[:, 0], var[:, 0].sqrt()),
            "oracle_note": "Phi(mu / sqrt(v)) for the Gaussian posterior N(mu, v) of <w, shared> under the "
                           "valid/test distribution (the spurious factor independent of y); the same on train rows",
        },
    )


# ---------------------------------------------------------------------- (c) nonlinear entanglement
def _entangle(
    relevant: Tensor, nuisance: Tensor, strength: float, g: torch.Generator
) -> Tensor:
    """``Q [N n; A r + strength * C tanh(B n + c)]`` for random ``N``, ``A``, ``B``, ``C``, ``c`` and rotation ``Q``.

    An additive coupling: invertible (``n = N^-1 (top)``, then ``r = A^-1 (bottom - G(n))``),
    and after the rotation every feature carries signal, nuisance and a nonlinear
    function of the nuisance that no linear read-out can remove.
    """
    dr, dn = relevant.shape[1], nuisance.shape[1]
    hidden = 2 * dn
    top = nuisance @ (torch.randn(dn, dn, generator=g) / math.sqrt(dn))
    b = torch.randn(dn, hidden, generator=g) * (1.5 / math.sqrt(dn))
    c = 0.5 * torch.randn(hidden, generator=g)
    cm = torch.randn(hidden, dr, generator=g) / math.sqrt(hidden)
    bottom = relevant @ (torch.randn(dr, dr, generator=g) / math.sqrt(dr)) + float(strength) * torch.tanh(nuisance @ b + c) @ cm
    q, _ = torch.linalg.qr(torch.randn(dr + dn, dr + dn, generator=g))
    return torch.cat([top, bottom], dim=1) @ q


def make_claim_entangled(
    n_train: int = 20000,
    n_valid: int = 2000,
    n_test: int = 4000,
    seed: int = 0,
    relevant_dim: int = 4,
    specific_dim: int = 4,
    nuisance_dim: int = 4,
    strength: float = 2.0,
    label_noise: float = 0.3,
) -> MultimodalDataset:
    """``claim-entangled``: relevant and superfluous parts mixed through a random nonlinear map.

    Claim tested: an information bottleneck removes superfluous information that
    a linear read-out cannot null (MIB's and OMIB's compression argument, where the
    nuisance is entangled with the signal rather than in separate coordinates).

    Data: modality ``x_m`` (m = 1, 2) is ``F_m(l_m)`` of its latent vector
    ``l_m = [shared; x_m_specific; shared_nuisance; x_m_nuisance]`` (``relevant_dim``,
    ``specific_dim``, ``nuisance_dim``, ``nuisance_dim``), where ``F_m`` is a random
    invertible map: with ``r`` the relevant and ``n`` the nuisance half,
    ``F(l) = Q [N n; A r + strength * C tanh(B n + c)]`` for random matrices ``N``,
    ``A``, ``B``, ``C``, offsets ``c`` and a random rotation ``Q`` (an additive
    coupling; the features have the latent's width). ``y = 1[<w, [shared;
    x1_specific; x2_specific]> + label_noise e > 0]``. Why the claim could hold:
    after the rotation every feature holds signal, nuisance and a nonlinear
    function of the nuisance (``strength`` sets its size) that no linear read-out
    can null, while a one-hidden-layer tanh network of the features can remove it
    exactly.

    Oracle (exact): ``F_m`` is a bijection, so ``x`` determines every latent part
    and ``P(y = 1 | x) = Phi(<w, r> / label_noise)`` (certain when ``label_noise``
    is 0), computed from the latent parts the generator keeps.

    Measured (data seeds 0-2, test accuracy): oracle 0.908 ± 0.002, logistic
    regression 0.799 ± 0.036, the small MLP 0.840 ± 0.019 (on x1 alone 0.735 ± 0.080);
    with ``strength=0`` logistic regression comes within 0.03 of the oracle. At 4,000
    training samples the MLP was no better than the linear model (0.80 against 0.81,
    seed 0), hence the 20,000 here (about 80 s for the MLP on one thread).
    """
    _check_sizes("claim-entangled", n_train, n_valid, n_test)
    _check_dims(relevant_dim=relevant_dim, specific_dim=specific_dim, nuisance_dim=nuisance_dim)
    _check_nonnegative(strength=strength, label_noise=label_noise)
    n = int(n_train) + int(n_valid) + int(n_test)
    gs, gd = _generators(seed)
    dims = {"shared": int(relevant_dim), "x1_specific": int(specific_dim), "x2_specific": int(specific_dim),
            "shared_nuisance": int(nuisance_dim), "x1_nuisance": int(nuisance_dim), "x2_nuisance": int(nuisance_dim)}
    lat = _Latents(n, dims, gd)
    relevant = ("shared", "x1_specific", "x2_specific")
    w = _unit(sum(dims[p] for p in relevant), gs)
    features = {}
    for m in ("x1", "x2"):
        r = torch.cat([lat.parts["shared"], lat.parts[f"{m}_specific"]], 1)
        nuisance = torch.cat([lat.parts["shared_nuisance"], lat.parts[f"{m}_nuisance"]], 1)
        features[m] = _entangle(r, nuisance, strength, gs)
    score = torch.cat([lat.parts[p] for p in relevant], 1) @ w
    y = (score + float(label_noise) * torch.randn(n, generator=gd) > 0).long()
    return MultimodalDataset(
        name="claim-entangled",
        features=features,
        y=y,
        task=TaskSpec("binary"),
        splits=_splits(n_train, n_valid, n_test),
        ground_truth=GroundTruth(arrays=lat.parts, relevant=relevant),
        meta={
            "generator": "make_claim_entangled", "seed": seed, "direction": w,
            "claim": "a bottleneck removes superfluous parts entangled with the signal by a nonlinear map",
            "oracle": probit_log_probs(score, float(label_noise)),
            "oracle_note": "Phi(<w, r> / label_noise): x determines the latent parts (the map is a bijection)",
        },
    )


# ---------------------------------------------------------------------- (d) cross-modal interaction
def make_claim_interaction(
    n_train: int = 4000,
    n_valid: int = 1000,
    n_test: int = 2000,
    seed: int = 0,
    dim: int = 16,
    latent_dim: int = 4,
    superfluous_dim: int = 4,
    noise: float = 0.3,
) -> MultimodalDataset:
    """``claim-interaction``: the label is a product across modalities.

    Claim tested: fusion that forms cross-modal products (tensor fusion, graph
    fusion) beats additive fusion (concatenation) when the label depends on an
    interaction (MIB's Table VI).

    Data: modality ``x_m`` (m = 1, 2) is ``W_m [x_m_relevant; x_m_superfluous] +
    noise eps`` (``latent_dim`` + ``superfluous_dim`` latent, ``dim`` features);
    ``s_m = <u_m, x_m_relevant>`` for unit ``u_m``; ``y = 1[s1 * s2 > 0]`` (the two
    signs agree). Each modality alone says nothing: ``P(y = 1 | x_m) = 1/2``
    exactly, so any model of one modality, and any linear model of both, is at
    chance; the union's optimum is far above it.

    Oracle (exact): the modalities' latents are independent, so ``s_m | x_m ~
    N(mu_m, v_m)`` independently and ``P(y = 1 | x) = Phi(a1) Phi(a2) +
    Phi(-a1) Phi(-a2)``, ``a_m = mu_m / sqrt(v_m)``.

    Measured (data seeds 0-2, test accuracy): oracle 0.857 ± 0.008, logistic
    regression 0.505 ± 0.010, the small MLP 0.841 ± 0.018 (on x1 alone 0.495 ± 0.012),
    logistic regression on the 256 products ``x1_i x2_j`` 0.830 ± 0.028.
    """
    _check_sizes("claim-interaction", n_train, n_valid, n_test)
    _check_dims(dim=dim, latent_dim=latent_dim, superfluous_dim=superfluous_dim)
    _check_positive(noise=noise)
    n = int(n_train) + int(n_valid) + int(n_test)
    gs, gd = _generators(seed)
    lat = _Latents(n, {"x1_relevant": int(latent_dim), "x2_relevant": int(latent_dim),
                       "x1_superfluous": int(superfluous_dim), "x2_superfluous": int(superfluous_dim)}, gd)
    u = {m: _unit(latent_dim, gs) for m in ("x1", "x2")}
    features, log_cdf = {}, {}
    for m in ("x1", "x2"):
        clean, full = lat.view([f"{m}_relevant", f"{m}_superfluous"], dim, gs)
        features[m] = clean + float(noise) * torch.randn(n, int(dim), generator=gd)
        mu, var = gaussian_posterior([LinearView(full, features[m], float(noise) ** 2)],
                                     lat.direction({f"{m}_relevant": u[m]}), lat.dim)
        a = mu[:, 0] / var[:, 0].sqrt()
        log_cdf[m] = (torch.special.log_ndtr(a), torch.special.log_ndtr(-a))
    s1, s2 = lat.parts["x1_relevant"] @ u["x1"], lat.parts["x2_relevant"] @ u["x2"]
    y = (s1 * s2 > 0).long()
    (p1, n1), (p2, n2) = log_cdf["x1"], log_cdf["x2"]
    log_p1 = torch.logaddexp(p1 + p2, n1 + n2)
    log_p0 = torch.logaddexp(p1 + n2, n1 + p2)
    oracle = torch.stack([log_p0, log_p1], 1).clamp_min(LOG_PROB_FLOOR).float()
    return MultimodalDataset(
        name="claim-interaction",
        features=features,
        y=y,
        task=TaskSpec("binary"),
        splits=_splits(n_train, n_valid, n_test),
        ground_truth=GroundTruth(arrays=lat.parts, relevant=("x1_relevant", "x2_relevant")),
        meta={
            "generator": "make_claim_interaction", "seed": seed, "direction": torch.cat([u["x1"], u["x2"]]),
            "claim": "tensor / graph fusion beats additive fusion when y is a cross-modal product",
            "oracle": oracle,
            "oracle_note": "P(y=1|x) = Phi(a1) Phi(a2) + Phi(-a1) Phi(-a2), a_m = mu_m / sqrt(v_m) from each "
                           "modality's Gaussian posterior of s_m (exact; one modality alone gives 1/2)",
            "unimodal_optimum": 0.5,
        },
    )


# ---------------------------------------------------------------------- (e) shared signal, specific nuisance
def make_claim_shared(
    n_train: int = 2000,
    n_valid: int = 500,
    n_test: int = 1000,
    seed: int = 0,
    text_dim: int = 32,
    audio_dim: int = 16,
    vision_dim: int = 16,
    shared_dim: int = 4,
    nuisance_dim: int = 8,
    nuisance_scale: float = 2.0,
    noise_text: float = 1.0,
    noise_audio: float = 1.0,
    noise_vision: float = 1.0,
    label_scale: float = 1.0,
    label_noise: float = 0.3,
) -> MultimodalDataset:
    """``claim-shared``: one shared signal under strong modality-specific nuisance (MMIM's setting).

    Claim tested: maximising inter-modality mutual information (MMIM's BA terms)
    and fusion-level MI (CPC) helps: what the modalities share is exactly what
    predicts the label, and each modality's own variation is nuisance.

    Data: three modalities named like MSA features, ``x_m = W_m [shared;
    nuisance_scale * m_nuisance] + noise_m eps``: the relevant latent ``shared``
    (``shared_dim``) is in every modality, each modality has its own nuisance
    (``nuisance_dim``, ``nuisance_scale`` times larger, so it dominates the
    features' variance). Regression, ``y = 3 tanh(label_scale (<w, shared> +
    label_noise e))``. Why the claim could hold: the nuisance is the only thing a
    modality does not share, so agreement between modalities isolates the signal.

    Oracle (exact): linear-Gaussian, so ``<w, shared> | x ~ N(mu, v)`` and the
    posterior median of y is ``3 tanh(label_scale mu)`` (``y`` is monotone in its
    tanh argument, whose posterior is ``N(mu, v + label_noise^2)``).

    Measured (data seeds 0-2, test MAE): oracle 0.790 ± 0.091, ridge 0.908 ± 0.078,
    the small MLP 0.898 ± 0.080; from text alone ridge 0.999 ± 0.091, MLP 0.982 ± 0.094.
    """
    _check_sizes("claim-shared", n_train, n_valid, n_test)
    widths = {"text": int(text_dim), "audio": int(audio_dim), "vision": int(vision_dim)}
    _check_dims(text_dim=text_dim, audio_dim=audio_dim, vision_dim=vision_dim, shared_dim=shared_dim,
                nuisance_dim=nuisance_dim)
    noise = {"text": float(noise_text), "audio": float(noise_audio), "vision": float(noise_vision)}
    _check_positive(noise_text=noise_text, noise_audio=noise_audio, noise_vision=noise_vision, label_scale=label_scale)
    _check_nonnegative(nuisance_scale=nuisance_scale, label_noise=label_noise)
    n = int(n_train) + int(n_valid) + int(n_test)
    gs, gd = _generators(seed)
    lat = _Latents(n, {"shared": int(shared_dim), **{f"{m}_nuisance": int(nuisance_dim) for m in widths}}, gd)
    w = _unit(shared_dim, gs)
    features, views = {}, []
    for m, width in widths.items():
        clean, full = lat.view(["shared", f"{m}_nuisance"], width, gs, scale={f"{m}_nuisance": float(nuisance_scale)})
        features[m] = clean + noise[m] * torch.randn(n, width, generator=gd)
        views.append(LinearView(full, features[m], noise[m] ** 2))
    arg = lat.parts["shared"] @ w + float(label_noise) * torch.randn(n, generator=gd)
    y = 3.0 * torch.tanh(float(label_scale) * arg)
    mu, var = gaussian_posterior(views, lat.direction({"shared": w}), lat.dim)
    return MultimodalDataset(
        name="claim-shared",
        features=features,
        y=y,
        task=TaskSpec("regression"),
        splits=_splits(n_train, n_valid, n_test),
        ground_truth=GroundTruth(arrays=lat.parts, relevant=("shared",)),
        meta={
            "generator": "make_claim_shared", "seed": seed, "direction": w,
            "claim": "inter-modality MI (BA) and fusion-level MI (CPC) isolate a signal the modalities share",
            "oracle": (3.0 * torch.tanh(float(label_scale) * mu[:, 0])).float(),
            "oracle_note": "posterior median of y: 3 tanh(label_scale * E[<w, shared> | x]), the Gaussian "
                           "posterior given all three modalities",
            "posterior": {"mean": mu[:, 0].float(), "sd": (var[:, 0] + float(label_noise) ** 2).sqrt().float()},
        },
    )


# ---------------------------------------------------------------------- (f) SIM with N training samples
SIM_N_BLOCK = 1000


def _fill_sim_rows(x1: Tensor, x2: Tensor, d0: int, g: torch.Generator) -> None:
    """Draw SIM rows in place (the same order of draws as :func:`mmib.data.synthetic.make_sim`)."""
    x1.normal_(generator=g)
    x2[:, 2 * d0 :].normal_(generator=g)
    x2[:, : 2 * d0] = x1[:, : 2 * d0]


def make_sim_n(
    variant: str = "sim-i",
    n_train: int = 1000,
    n_valid: int = 1000,
    n_test: int = 5000,
    seed: int = 0,
    a1_dim: int | None = None,
    a2_dim: int | None = None,
    shared_dim: int = SIM_SHARED_DIM,
    superfluous_dim: int = SIM_SUPERFLUOUS_DIM,
) -> MultimodalDataset:
    """``sim-n``: SIM-I/II/III with ``n_train`` training samples and one fixed validation and test set.

    Claim tested: where the gap between learned models and the linear optimum
    on SIM comes from. If it is estimation error, it shrinks as ``n_train`` grows
    from 1,000 to 100,000; and a bottleneck that drops the superfluous parts
    (OMIB's optimal MIB) can only beat the union by estimating less.

    Data: exactly SIM (:func:`mmib.data.synthetic.make_sim`): ``x1 = [a0; b0; a1; b1]``,
    ``x2 = [a0; b0; a2; b2]``, ``y = 1[<delta, [a0; a1; a2]> > 0]``. ``delta`` and
    the validation and test rows depend on ``seed`` only, never on ``n_train``;
    the training rows are drawn in blocks of 1,000 from per-block seeds, so the
    training set of a smaller ``n_train`` is a prefix of that of a larger one
    (nested samples: an N sweep measures the effect of N alone).
    Rows are train, then valid, then test.

    Oracle: as SIM's (certain log-probabilities from the union, Bayes accuracy 1;
    ``meta["subset_optimum"]`` the closed-form optima of ground-truth subsets).

    Measured on SIM-I (data seeds 0-2, test accuracy, logistic regression / the small
    MLP on the union): N = 1,000: 0.697 / 0.682; 10,000: 0.935 / 0.887; 30,000:
    0.977 / 0.925; the oracle is 1 and the closed-form optimum from x1 alone 0.894.
    """
    if variant not in SIM_VARIANTS:
        raise DataError(f"unknown SIM variant {variant!r}; expected one of {', '.join(SIM_VARIANTS)}")
    _check_sizes("sim-n", n_train, n_valid, n_test)
    d_a1, d_a2 = SIM_VARIANTS[variant]
    d_a1 = d_a1 if a1_dim is None else int(a1_dim)
    d_a2 = d_a2 if a2_dim is None else int(a2_dim)
    d0, db = int(shared_dim), int(superfluous_dim)
    _check_dims(a1_dim=d_a1, a2_dim=d_a2, shared_dim=d0, superfluous_dim=db)
    n_tr, n_held = int(n_train), int(n_valid) + int(n_test)
    n = n_tr + n_held
    try:
        x1 = torch.empty(n, 2 * d0 + d_a1 + db)
        x2 = torch.empty(n, 2 * d0 + d_a2 + db)
    except RuntimeError as exc:  # allocation failure
        raise DataError(f"sim-n: cannot allocate {n} samples ({exc})") from None
    g = torch.Generator().manual_seed(int(seed))
    delta = torch.randn(d0 + d_a1 + d_a2, generator=g)
    _fill_sim_rows(x1[n_tr:], x2[n_tr:], d0, g)
    for b, start in enumerate(range(0, n_tr, SIM_N_BLOCK)):
        stop = min(start + SIM_N_BLOCK, n_tr)
        block_seed = int(np.random.SeedSequence([int(seed), 1, b]).generate_state(1)[0])
        gb = torch.Generator().manual_seed(block_seed)
        if stop - start == SIM_N_BLOCK:
            _fill_sim_rows(x1[start:stop], x2[start:stop], d0, gb)
        else:  # a partial last block: the prefix of the full block it would be
            f1, f2 = torch.empty(SIM_N_BLOCK, x1.shape[1]), torch.empty(SIM_N_BLOCK, x2.shape[1])
            _fill_sim_rows(f1, f2, d0, gb)
            x1[start:stop], x2[start:stop] = f1[: stop - start], f2[: stop - start]
    w0, w1, w2 = delta[:d0], delta[d0 : d0 + d_a1], delta[d0 + d_a1 :]
    a_start = 2 * d0
    score = torch.empty(n)
    for s in range(0, n, 65536):
        e = min(s + 65536, n)
        score[s:e] = x1[s:e, :d0] @ w0 + x1[s:e, a_start : a_start + d_a1] @ w1 + x2[s:e, a_start : a_start + d_a2] @ w2
    y = (score > 0).long()
    slices = {
        "a0": ("x1", 0, d0),
        "b0": ("x1", d0, 2 * d0),
        "a1": ("x1", a_start, a_start + d_a1),
        "b1": ("x1", a_start + d_a1, a_start + d_a1 + db),
        "a2": ("x2", a_start, a_start + d_a2),
        "b2": ("x2", a_start + d_a2, a_start + d_a2 + db),
    }
    splits = {"train": torch.arange(0, n_tr), "valid": torch.arange(n_tr, n_tr + int(n_valid)),
              "test": torch.arange(n_tr + int(n_valid), n)}
    return MultimodalDataset(
        name="sim-n",
        features={"x1": x1, "x2": x2},
        y=y,
        task=TaskSpec("binary"),
        splits=splits,
        ground_truth=GroundTruth(slices=slices, relevant=("a0", "a1", "a2")),
        meta={
            "generator": "make_sim_n", "variant": variant, "seed": seed,
            "delta": delta,
            "claim": "the gap between learned models and SIM's optimum is estimation error that shrinks with N",
            "oracle": probit_log_probs(score, 0.0),
            "oracle_note": "y = 1[<delta, [a0; a1; a2]> > 0] is a function of the union: certain log-probabilities "
                           "of the class of that score (Bayes accuracy 1)",
            "subset_optimum": sim_subset_optimum(delta, d0, d_a1),
        },
    )


#: The claim sets by registered name: (loader, one-line description for ``mmib datasets``).
CLAIM_DATASETS = {
    "claim-corrupt": (make_claim_corrupt, "3 modalities, each clean or heavily corrupted per sample; regression"),
    "claim-spurious": (make_claim_spurious, "a superfluous factor predicts y in train only; binary"),
    "claim-entangled": (make_claim_entangled, "signal and nuisance mixed by a random invertible nonlinear map; binary"),
    "claim-interaction": (make_claim_interaction, "y = 1[s1 * s2 > 0], a product across 2 modalities; binary"),
    "claim-shared": (make_claim_shared, "shared signal under strong modality-specific nuisance (MMIM); regression"),
    "sim-n": (make_sim_n, "SIM with n_train training samples (nested), fixed valid/test; for the N sweep"),
}
