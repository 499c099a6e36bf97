"""MI estimators: Barber-Agakov with a Gaussian predictor, GMM entropy with memory, InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmib.errors import ConfigError
from mmib.nn.mi import (
    LOG_2PI_E, BarberAgakov, ContrastivePredictor, GaussianConditional, GMMEntropy, RandomProjection,
    gaussian_entropy, info_nce, info_nce_bound, polarity_components, regularized_covariance, stable_logdet,
)

#: Requirement 7's tolerance: |BA estimate - true MI| per dimension, in nats.
BA_TOLERANCE_PER_DIM = 0.03


def correlated_gaussians(n: int, dim: int, rho: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """X ~ N(0, I), Y = rho X + sqrt(1 - rho^2) E: unit-variance pairs with correlation rho per dimension."""
    x = torch.randn(n, dim, generator=generator)
    y = rho * x + math.sqrt(1.0 - rho**2) * torch.randn(n, dim, generator=generator)
    return x, y


def train_predictor(ba: BarberAgakov, dim: int, rho: float, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(ba.parameters(), lr=1e-2)
    for _ in range(steps):
        x, y = correlated_gaussians(256, dim, rho, g)
        loss = -ba.log_likelihood(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()


# --------------------------------------------------------------------- Barber-Agakov
@pytest.mark.parametrize("rho", [0.5, 0.8, 0.95])
def test_ba_recovers_mi_of_correlated_gaussians(rho):
    """Requirement 7: after training q, E log q(y|x) + H(Y) ~ -0.5 log(1 - rho^2) per dimension.

    H(Y) is the closed-form entropy of Y ~ N(0, I_d), 0.5 d log(2 pi e); the
    estimate is taken on 20,000 fresh samples.
    """
    torch.manual_seed(0)
    dim = 4
    ba = BarberAgakov(dim, dim, hidden=32)
    train_predictor(ba, dim, rho, steps=500, seed=1)
    x, y = correlated_gaussians(20_000, dim, rho, torch.Generator().manual_seed(2))
    with torch.no_grad():
        est = ba(x, y, entropy=gaussian_entropy(dim, 0.0))
    true = -0.5 * dim * math.log(1.0 - rho**2)
    assert est.entropy is not None and est.entropy.item() == pytest.approx(0.5 * dim * LOG_2PI_E)
    assert abs(est.bound.item() - true) / dim < BA_TOLERANCE_PER_DIM, (est.bound.item(), true)


def test_ba_is_a_lower_bound_for_any_predictor():
    """E log q <= -H(Y|X) for every q (Gibbs): an untrained predictor underestimates the MI."""
    torch.manual_seed(0)
    dim, rho = 3, 0.7
    x, y = correlated_gaussians(20_000, dim, rho, torch.Generator().manual_seed(3))
    true = -0.5 * dim * math.log(1.0 - rho**2)
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            est = BarberAgakov(dim, dim)(x, y, entropy=gaussian_entropy(dim, 0.0))
        assert est.bound.item() < true + 0.02


def test_gaussian_conditional_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    q = GaussianConditional(5, 3, hidden=8)
    x, y = torch.randn(7, 5), torch.randn(7, 3)
    mu, logvar = q(x)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(y).sum(-1)
    torch.testing.assert_close(q.log_prob(x, y), ref)
    # smoothing noise adds noise_var / var inside the square term
    smoothed = q.log_prob(x, y, noise_var=0.1)
    torch.testing.assert_close(smoothed, ref - 0.5 * (0.1 * torch.exp(-logvar)).sum(-1))


def test_gaussian_conditional_isotropic_and_bounds():
    q = GaussianConditional(4, 6, hidden=0, isotropic=True, logvar_bound=2.0)
    with torch.no_grad():
        q.logvar.bias.fill_(1e6)
    mu, logvar = q(torch.randn(3, 4))
    assert mu.shape == (3, 6) and logvar.shape == (3, 1)
    assert torch.all(logvar <= 2.0)
    assert torch.isfinite(q.log_prob(torch.randn(3, 4), torch.randn(3, 6))).all()
    with pytest.raises(ValueError, match="width"):
        q.log_prob(torch.randn(3, 4), torch.randn(3, 5))


def test_ba_smoothing_makes_a_constant_target_worth_zero():
    """With noise_var = the entropy jitter, a constant Y gives a BA value of ~0, not a reward."""
    eps = 1e-3
    ba = BarberAgakov(2, 3, noise_var=eps)
    opt = torch.optim.Adam(ba.parameters(), lr=3e-2)
    x = torch.randn(256, 2)
    y = torch.full((256, 3), 0.7)
    for _ in range(300):
        loss = -ba.log_likelihood(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ent = GMMEntropy(3, num_components=1, memory_batches=0, eps=eps).estimate(y, torch.zeros(256)).entropy
    with torch.no_grad():
        value = ba(x, y, entropy=ent).bound.item()
    assert abs(value) < 0.05


# --------------------------------------------------------------------- log-determinant and covariance
def test_stable_logdet_matches_logdet_and_is_finite_when_singular():
    torch.manual_seed(0)
    a = torch.randn(6, 6)
    pd = a @ a.T + 0.1 * torch.eye(6)
    torch.testing.assert_close(stable_logdet(pd), torch.logdet(pd), rtol=1e-5, atol=1e-5)
    for singular in (torch.zeros(4, 4), torch.ones(4, 4), torch.diag(torch.tensor([1.0, 0.0, 2.0]))):
        singular = singular.clone().requires_grad_(True)
        value = stable_logdet(singular)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(singular.grad).all()
    batch = torch.stack([pd, 2 * pd])
    torch.testing.assert_close(stable_logdet(batch), torch.logdet(batch), rtol=1e-5, atol=1e-5)


def test_regularized_covariance():
    torch.manual_seed(0)
    x = torch.randn(500, 3) * torch.tensor([1.0, 2.0, 3.0])
    cov = regularized_covariance(x, shrinkage=0.0, eps=0.0)
    ref = torch.cov(x.T, correction=0)
    torch.testing.assert_close(cov, ref)
    shrunk = regularized_covariance(x, shrinkage=1.0, eps=0.0)
    torch.testing.assert_close(shrunk, torch.eye(3) * ref.diagonal().mean())
    const = regularized_covariance(torch.ones(5, 3), eps=1e-4)
    torch.testing.assert_close(const, 1e-4 * torch.eye(3))


# --------------------------------------------------------------------- GMM entropy and memory
def test_gmm_entropy_single_gaussian_matches_closed_form():
    torch.manual_seed(0)
    sd = torch.tensor([0.5, 1.0, 2.0, 3.0])
    y = torch.randn(40_000, 4) * sd
    est = GMMEntropy(4, num_components=1, memory_batches=0, eps=0.0).estimate(y, torch.zeros(40_000))
    true = gaussian_entropy(4, 2 * sd.log().sum())
    assert est.entropy is not None and abs(est.entropy.item() - true.item()) < 0.02


def test_gmm_entropy_two_components_is_the_mean_of_component_entropies():
    """Eqs. 7-8: equal-weight lower bound; -1 labels (sentiment 0) belong to no component."""
    torch.manual_seed(0)
    n = 20_000
    pos = torch.randn(n, 2) * 0.5 + 3.0
    neg = torch.randn(n, 2) * 2.0 - 3.0
    junk = torch.randn(50, 2) * 100.0
    y = torch.cat([pos, neg, junk])
    labels = torch.cat([torch.zeros(n), torch.ones(n), -torch.ones(50)]).long()
    est = GMMEntropy(2, num_components=2, memory_batches=0, eps=0.0).estimate(y, labels)
    expected = 0.5 * (gaussian_entropy(2, 2 * 2 * math.log(0.5)) + gaussian_entropy(2, 2 * 2 * math.log(2.0)))
    assert est.components == [0, 1] and est.counts == [n, n]
    assert est.entropy is not None and abs(est.entropy.item() - expected.item()) < 0.03
    # eq. 8 is the same up to the dimension constant
    no_const = GMMEntropy(2, 2, 0, eps=0.0, include_constant=False).estimate(y, labels).entropy
    assert no_const is not None and abs(no_const.item() - (expected.item() - LOG_2PI_E)) < 0.03


def test_gmm_memory_is_a_fifo_of_batches_and_feeds_the_estimate():
    gmm = GMMEntropy(2, num_components=2, memory_batches=2, eps=0.0)
    batches = [torch.full((3, 2), float(i)) + 0.01 * torch.randn(3, 2) for i in range(3)]
    labels = torch.tensor([0, 1, 0])
    assert not gmm.memory_full
    for b in batches:
        gmm(b, labels, update=True)
    assert gmm.memory_full and int(gmm.memory_count) == 2
    held = {round(float(gmm.memory[s, :3].mean())) for s in range(2)}
    assert held == {1, 2}  # batch 0 was dropped
    # the estimate pools memory and batch: 2 + 2 + 2 samples in component 0
    est = gmm.estimate(torch.randn(3, 2), labels)
    assert est.counts == [6, 3]
    # estimating never changes the memory
    before = gmm.memory.clone()
    gmm.estimate(torch.randn(3, 2), labels)
    assert torch.equal(before, gmm.memory)


def test_gmm_memory_grows_for_larger_batches_and_pads_smaller_ones():
    gmm = GMMEntropy(3, num_components=2, memory_batches=1)
    gmm.push(torch.randn(2, 3), torch.tensor([0, 1]))
    gmm.push(torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))
    assert gmm.memory.shape == (1, 5, 3)
    gmm.push(torch.randn(1, 3), torch.tensor([1]))
    assert gmm.memory_labels[0].tolist() == [1, -1, -1, -1, -1]


def test_gmm_memory_survives_state_dict_round_trip():
    torch.manual_seed(0)
    gmm = GMMEntropy(4, num_components=2, memory_batches=3)
    for _ in range(2):
        gmm.push(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    fresh = GMMEntropy(4, num_components=2, memory_batches=3)
    fresh.load_state_dict(gmm.state_dict())
    for name in ("memory", "memory_labels", "memory_next", "memory_count"):
        assert torch.equal(getattr(fresh, name), getattr(gmm, name)), name
    y, labels = torch.randn(8, 4), torch.randint(0, 2, (8,))
    torch.testing.assert_close(fresh.estimate(y, labels).entropy, gmm.estimate(y, labels).entropy)


def test_gmm_without_memory_uses_the_batch_only_and_skips_small_components():
    gmm = GMMEntropy(2, num_components=2, memory_batches=0)
    gmm.push(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]))
    assert gmm.memory.numel() == 0 and gmm.memory_full
    est = gmm.estimate(torch.randn(4, 2), torch.tensor([0, 0, 0, 1]))
    assert est.components == [0] and est.counts == [3, 1]
    none = gmm.estimate(torch.randn(2, 2), torch.tensor([0, 1]))
    assert none.entropy is None and none.components == []


@pytest.mark.parametrize(
    "y,labels",
    [
        (torch.ones(2, 3), torch.tensor([0, 0])),  # batch of 2, constant
        (torch.zeros(16, 3), torch.randint(0, 2, (16,))),  # constant features
        (torch.randn(16, 3), torch.zeros(16, dtype=torch.long)),  # one class only
        (torch.randn(3, 3) * 1e-9, torch.tensor([1, 1, 1])),  # nearly constant
    ],
)
def test_gmm_entropy_is_finite_with_degenerate_batches(y, labels):
    gmm = GMMEntropy(3, num_components=2, memory_batches=1)
    y = y.clone().requires_grad_(True)
    est = gmm(y, labels, update=True)
    assert est.entropy is not None and torch.isfinite(est.entropy)
    est.entropy.backward()
    assert torch.isfinite(y.grad).all()
    est2 = gmm(y.detach(), labels, update=True)
    assert est2.entropy is not None and torch.isfinite(est2.entropy)


def test_gmm_entropy_rejects_bad_input():
    with pytest.raises(ConfigError, match="memory_batches"):
        GMMEntropy(3, memory_batches=-1)
    with pytest.raises(ConfigError, match="min_samples"):
        GMMEntropy(3, min_samples=1)
    gmm = GMMEntropy(3, num_components=2)
    with pytest.raises(ValueError, match="num_components"):
        gmm.estimate(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="expects"):
        gmm.estimate(torch.randn(4, 2), torch.zeros(4))


def test_polarity_components():
    y = torch.tensor([-2.0, 0.0, 0.5, 3.0, -0.1])
    assert polarity_components(y).tolist() == [1, -1, 0, 0, 1]


def test_random_projection_is_fixed_and_bounded():
    proj = RandomProjection(16, 4)
    assert list(proj.parameters()) == [] and set(dict(proj.named_buffers())) == {"weight", "bias"}
    out = proj(torch.randn(10, 16) * 100)
    assert out.shape == (10, 4) and out.abs().max() <= 1.0


# --------------------------------------------------------------------- InfoNCE / CPC
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 24),
    d=st.integers(1, 8),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 10_000),
    aligned=st.booleans(),
)
def test_infonce_bound_never_exceeds_log_batch_size(n, d, scale, seed, aligned):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, d, generator=g) * scale
    prediction = target.clone() if aligned else torch.randn(n, d, generator=g) * scale
    loss = info_nce(prediction, target)
    bound = info_nce_bound(loss, n)
    assert torch.isfinite(loss) and loss.item() >= 0.0
    assert bound.item() <= math.log(n) + 1e-6


def test_infonce_closed_form_for_orthonormal_pairs():
    """Unit, mutually orthogonal targets predicted exactly: loss = -log(e / (e + N - 1))."""
    n = 5
    eye = torch.eye(n)
    loss = info_nce(eye * 3.0, eye)  # the prediction's norm does not matter
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + n - 1)), rel=1e-6)
    swapped = info_nce(torch.roll(eye, 1, 0), eye)  # every row's positive is a mismatch
    assert swapped.item() == pytest.approx(-math.log(1.0 / (math.e + n - 1)), rel=1e-6)


def test_infonce_zero_vectors_are_finite():
    loss = info_nce(torch.zeros(4, 3, requires_grad=True), torch.zeros(4, 3))
    assert loss.item() == pytest.approx(math.log(4))
    loss.backward()


def test_contrastive_predictor_scores_and_training():
    torch.manual_seed(0)
    cpc = ContrastivePredictor(6, 4)
    z = torch.randn(32, 6)
    h = z[:, :4] @ torch.randn(4, 4)
    s = cpc.score(z, h)
    assert s.shape == (32,) and torch.all(s >= math.exp(-1) - 1e-6) and torch.all(s <= math.e + 1e-6)
    opt = torch.optim.Adam(cpc.parameters(), lr=1e-2)
    start = cpc(z, h).item()
    for _ in range(200):
        loss = cpc(z, h)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < start - 0.3
    assert cpc.score(z, h).mean() > s.mean()


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        info_nce(torch.randn(4, 3), torch.randn(4, 2))
