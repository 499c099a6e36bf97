"""Bayes-optimal predictions for the synthetic datasets (their "oracle").

Every synthetic dataset carries ``meta["oracle"]``: a tensor of per-sample
predictions of the Bayes-optimal predictor given *all* observed inputs, aligned
with the dataset's rows and in the form a model's prediction takes, so that
``mmib.eval.metrics.compute_metrics(ds.task, ds.meta["oracle"][idx], ds.y[idx])``
is the optimum's score on any split:

* regression: the value that minimises the expected absolute error, the
  posterior median of ``y`` (the project's regression monitor is MAE);
* binary / multiclass: ``(N, C)`` class log-probabilities ``log P(y = c | x)``
  (clipped to ``LOG_PROB_FLOOR`` so that a certain class stays finite).

``meta["oracle_note"]`` says in one or two sentences how it was computed.

The helpers here are the closed forms the generators share: the Gaussian
posterior of a linear direction of latent factors seen through linear maps with
Gaussian noise (per-sample noise levels allowed, for sequences of varying length
or corrupted samples), the probability that two correlated Gaussians agree in
sign, and the median of a Gaussian mixture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: Smallest log-probability an oracle reports (a "certain" class gets log 1 = 0, the other this).
LOG_PROB_FLOOR = -50.0


@dataclass(frozen=True)
class LinearView:
    """One noisy linear view of the latent vector ``z ~ N(0, I_k)``: ``obs = z @ mix + sd * eps``.

    ``mix`` is ``(k, D)`` (zero rows for latent parts the view does not see),
    ``obs`` is ``(N, D)`` and ``noise_var`` the per-sample noise variance:
    a scalar, or ``(N,)`` when samples differ (a sequence mean over a varying
    number of steps, a corrupted sample).
    """

    mix: Tensor
    obs: Tensor
    noise_var: Tensor | float


def gaussian_posterior(
    views: Sequence[LinearView], directions: Tensor, latent_dim: int, chunk: int = 4096
) -> tuple[Tensor, Tensor]:
    """Posterior mean ``(N, J)`` and variance ``(N, J)`` of ``z @ directions`` given all views.

    ``directions`` is ``(k, J)``. Exact for ``z ~ N(0, I)`` and independent Gaussian
    noise: precision ``P = I + sum_m mix_m mix_m^T / var_m``, mean
    ``P^-1 sum_m mix_m obs_m / var_m``. Computed in float64; samples whose noise
    variances coincide share one factorisation.
    """
    if not views:
        raise ValueError("gaussian_posterior needs at least one view")
    k = int(latent_dim)
    d = directions.to(torch.float64)
    n = int(views[0].obs.shape[0])
    variances = []
    for v in views:
        var = torch.as_tensor(v.noise_var, dtype=torch.float64)
        variances.append(var.expand(n) if var.dim() == 0 else var.reshape(n))
    keys = torch.stack(variances, dim=1)  # (N, M)
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    grams = [v.mix.to(torch.float64) @ v.mix.to(torch.float64).T for v in views]
    mean = torch.empty(n, d.shape[1], dtype=torch.float64)
    var_out = torch.empty(n, d.shape[1], dtype=torch.float64)
    eye = torch.eye(k, dtype=torch.float64)
    for g in range(unique.shape[0]):
        rows = (inverse == g).nonzero().squeeze(1)
        precision = eye.clone()
        for gram, var in zip(grams, unique[g]):
            precision += gram / var
        chol = torch.linalg.cholesky(precision)
        cov_d = torch.cholesky_solve(d, chol)  # P^-1 directions, (k, J)
        var_out[rows] = (d * cov_d).sum(0)
        for start in range(0, rows.numel(), chunk):
            r = rows[start : start + chunk]
            b = torch.zeros(r.numel(), k, dtype=torch.float64)
            for view, var in zip(views, unique[g]):
                b += view.obs.index_select(0, r).to(torch.float64) @ view.mix.to(torch.float64).T / var
            mean[r] = b @ cov_d
    return mean, var_out


def normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def binary_log_probs(logit_or_p: Tensor, is_probability: bool = False) -> Tensor:
    """``(N, 2)`` log-probabilities ``[log P(y=0), log P(y=1)]`` from a logit or a probability, floored."""
    x = logit_or_p.to(torch.float64)
    if is_probability:
        p = x.clamp(0.0, 1.0)
        out = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
    else:
        out = torch.stack([torch.nn.functional.logsigmoid(-x), torch.nn.functional.logsigmoid(x)], dim=1)
    return out.nan_to_num(neginf=LOG_PROB_FLOOR).clamp_min(LOG_PROB_FLOOR).float()


def probit_log_probs(mean: Tensor, sd: Tensor | float) -> Tensor:
    """Log-probabilities of ``y = 1[s > 0]`` when ``s | x ~ N(mean, sd^2)`` (``sd = 0``: certain)."""
    m = mean.to(torch.float64)
    s = torch.as_tensor(sd, dtype=torch.float64)
    z = m / s.clamp_min(1e-300)
    z = torch.where(s > 0, z, torch.sign(m) * math.inf)
    log_p1 = torch.special.log_ndtr(z)
    log_p0 = torch.special.log_ndtr(-z)
    return torch.stack([log_p0, log_p1], dim=1).nan_to_num(neginf=LOG_PROB_FLOOR).clamp_min(LOG_PROB_FLOOR).float()


def sign_agreement(rho: float | Tensor) -> float | Tensor:
    """``P(sign(u) = sign(v))`` for centred jointly Gaussian ``u, v`` with correlation ``rho``:
    ``1/2 + arcsin(rho) / pi`` (Sheppard's formula)."""
    if isinstance(rho, Tensor):
        return 0.5 + torch.asin(rho.clamp(-1.0, 1.0)) / math.pi
    return 0.5 + math.asin(max(-1.0, min(1.0, float(rho)))) / math.pi


def mixture_median(weights: Tensor, means: Tensor, sds: Tensor, iterations: int = 80) -> Tensor:
    """Per-row median of the Gaussian mixture ``sum_j weights[:, j] N(means[:, j], sds[:, j]^2)``.

    All arguments are ``(N, J)``; weights need not be normalised. Bisection on the
    mixture CDF between the smallest and largest ``mean -/+ 10 sd``.
    """
    w = weights.to(torch.float64)
    w = w / w.sum(1, keepdim=True)
    mu, sd = means.to(torch.float64), sds.to(torch.float64).clamp_min(1e-12)
    lo = (mu - 10 * sd).min(1).values
    hi = (mu + 10 * sd).max(1).values
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        cdf = (w * normal_cdf((mid.unsqueeze(1) - mu) / sd)).sum(1)
        below = cdf < 0.5
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def gauss_hermite(n: int = 64) -> tuple[Tensor, Tensor]:
    """Nodes and weights for ``E[f(Z)]``, ``Z ~ N(0, 1)``: ``sum_i w_i f(x_i)`` (probabilists' Hermite)."""
    import numpy as np

    x, w = np.polynomial.hermite_e.hermegauss(int(n))
    return torch.from_numpy(x), torch.from_numpy(w / w.sum())


def gaussian_log_likelihood(views: Sequence[LinearView], latent_dim: int) -> Tensor:
    """Per-sample ``log p(obs_1, ..., obs_M)`` under ``obs_m = z @ mix_m + sd_m * eps``, ``z ~ N(0, I)``.

    The views' noise variances must be scalars here (one covariance for all rows):
    ``Sigma = mix^T mix + diag(var)`` over the concatenated views.
    """
    mix = torch.cat([v.mix.to(torch.float64) for v in views], dim=1)  # (k, D)
    if mix.shape[0] != int(latent_dim):
        raise ValueError(f"views have {mix.shape[0]} latent rows, expected {latent_dim}")
    diag = []
    for v in views:
        var = torch.as_tensor(v.noise_var, dtype=torch.float64)
        if var.dim() != 0:
            raise ValueError("gaussian_log_likelihood needs one scalar noise variance per view")
        diag.append(var.expand(v.mix.shape[1]))
    cov = mix.T @ mix + torch.diag(torch.cat(diag))
    chol = torch.linalg.cholesky(cov)
    obs = torch.cat([v.obs.to(torch.float64) for v in views], dim=1)
    white = torch.linalg.solve_triangular(chol, obs.T, upper=False)  # (D, N)
    logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
    d = obs.shape[1]
    return -0.5 * (white.pow(2).sum(0) + logdet + d * math.log(2 * math.pi))


def linear_least_squares(cov_x: Tensor, cov_xy: Tensor) -> Tensor:
    """Population least-squares weights ``cov_x^-1 cov_xy`` (the best linear predictor of centred data)."""
    return torch.linalg.solve(cov_x.to(torch.float64), cov_xy.to(torch.float64))
