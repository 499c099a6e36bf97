import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mmib.data.oracle import (
    LOG_PROB_FLOOR,
    LinearView,
    binary_log_probs,
    gauss_hermite,
    gaussian_posterior,
    mixture_median,
    probit_log_probs,
    sign_agreement,
)


def _conditional(mixes, variances, obs, u):
    """Brute force: E[u'z | x] and Var[u'z | x] by conditioning the joint Gaussian of (z, x)."""
    a = np.concatenate(mixes, axis=1)  # (k, D)
    noise = np.diag(np.concatenate([np.full(m.shape[1], v) for m, v in zip(mixes, variances)]))
    sxx = a.T @ a + noise
    szx = a  # Cov(z, x) = A
    mean = u @ szx @ np.linalg.solve(sxx, obs)
    var = u @ u - u @ szx @ np.linalg.solve(sxx, szx.T @ u)
    return mean, var


def test_gaussian_posterior_matches_joint_gaussian_conditioning():
    g = torch.Generator().manual_seed(0)
    k, n = 5, 6
    m1, m2 = torch.randn(k, 3, generator=g), torch.randn(k, 4, generator=g)
    m2[0] = 0.0  # the second view does not see latent 0
    z = torch.randn(n, k, generator=g)
    var1 = torch.tensor(0.3, dtype=torch.float64)
    var2 = torch.tensor([0.5, 0.5, 2.0, 2.0, 9.0, 0.1], dtype=torch.float64)  # per sample
    x1 = z @ m1 + var1.sqrt() * torch.randn(n, 3, generator=g)
    x2 = z @ m2 + var2.sqrt().float().unsqueeze(1) * torch.randn(n, 4, generator=g)
    u = torch.randn(k, 2, generator=g, dtype=torch.float64)
    mean, var = gaussian_posterior([LinearView(m1, x1, var1), LinearView(m2, x2, var2)], u, k)
    for i in range(n):
        for j in range(2):
            obs = np.concatenate([x1[i].numpy(), x2[i].numpy()]).astype(np.float64)
            em, ev = _conditional([m1.double().numpy(), m2.double().numpy()], [0.3, float(var2[i])], obs, u[:, j].numpy())
            assert float(mean[i, j]) == pytest.approx(em, rel=1e-8, abs=1e-10)
            assert float(var[i, j]) == pytest.approx(ev, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7, 1.0])
def test_sign_agreement_is_sheppards_formula(rho):
    g = torch.Generator().manual_seed(1)
    u = torch.randn(400_000, generator=g, dtype=torch.float64)
    v = rho * u + math.sqrt(1 - rho**2) * torch.randn(400_000, generator=g, dtype=torch.float64)
    empirical = float(((u > 0) == (v > 0)).double().mean())
    assert sign_agreement(rho) == pytest.approx(empirical, abs=0.003)  # 4 binomial SE at 400k
    assert float(sign_agreement(torch.tensor(rho))) == pytest.approx(sign_agreement(rho))
    assert sign_agreement(0.5) == pytest.approx(2 / 3)


def test_probit_and_binary_log_probs():
    lp = probit_log_probs(torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([1.0, 2.0, 1.0, 0.0]))
    p = lp.double().exp()
    assert torch.allclose(p.sum(1), torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert float(p[0, 1]) == pytest.approx(norm.cdf(1.0), rel=1e-6)
    assert float(p[1, 1]) == pytest.approx(norm.cdf(-1.0), rel=1e-6)
    assert float(p[2, 1]) == pytest.approx(0.5)
    assert float(lp[3, 1]) == 0.0 and float(lp[3, 0]) == LOG_PROB_FLOOR  # certain, and finite
    blp = binary_log_probs(torch.tensor([0.0, 2.0]))
    assert float(blp[1, 1].exp()) == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    bp = binary_log_probs(torch.tensor([1.0, 0.25]), is_probability=True)
    assert float(bp[0, 0]) == LOG_PROB_FLOOR and float(bp[1, 1].exp()) == pytest.approx(0.25)


def test_mixture_median():
    one = mixture_median(torch.ones(2, 1), torch.tensor([[0.7], [-2.0]]), torch.tensor([[3.0], [0.1]]))
    assert torch.allclose(one, torch.tensor([0.7, -2.0], dtype=torch.float64), atol=1e-9)
    w, mu, sd = torch.tensor([[0.2, 0.8]]), torch.tensor([[-3.0, 1.0]]), torch.tensor([[1.0, 0.5]])
    med = float(mixture_median(w, mu, sd)[0])
    assert 0.2 * norm.cdf(med, -3, 1) + 0.8 * norm.cdf(med, 1, 0.5) == pytest.approx(0.5, abs=1e-9)
    # unnormalised weights are normalised
    assert float(mixture_median(5 * w, mu, sd)[0]) == pytest.approx(med, abs=1e-9)


def test_gauss_hermite_moments():
    x, w = gauss_hermite(32)
    assert float(w.sum()) == pytest.approx(1.0)
    assert float((w * x**2).sum()) == pytest.approx(1.0)
    assert float((w * x**4).sum()) == pytest.approx(3.0)
    assert float((w.numpy() * norm.cdf(0.5 * x.numpy() + 0.2)).sum()) == pytest.approx(norm.cdf(0.2 / math.sqrt(1.25)), abs=1e-10)


def test_gaussian_log_likelihood_matches_scipy():
    from scipy.stats import multivariate_normal

    from mmib.data.oracle import gaussian_log_likelihood

    g = torch.Generator().manual_seed(3)
    m1, m2 = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    x1, x2 = torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)
    ll = gaussian_log_likelihood([LinearView(m1, x1, 0.5), LinearView(m2, x2, 2.0)], 4)
    a = torch.cat([m1, m2], 1).numpy()
    cov = a.T @ a + np.diag([0.5] * 3 + [2.0] * 2)
    expected = multivariate_normal(np.zeros(5), cov).logpdf(torch.cat([x1, x2], 1).double().numpy())
    assert np.allclose(ll.numpy(), expected, atol=1e-9)
    with pytest.raises(ValueError, match="scalar noise variance"):
        gaussian_log_likelihood([LinearView(m1, x1, torch.ones(5))], 4)
