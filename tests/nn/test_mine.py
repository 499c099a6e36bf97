import math

import pytest
import torch

from mmib.errors import ConfigError, DataError
from mmib.nn.mine import MINE, dv_bound, estimate_mi


def correlated_gaussians(n: int, dim: int, rho: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, dim, generator=g)
    return x, y


def test_mine_estimates_mi_of_correlated_gaussians():
    # I = -dim/2 log(1 - rho^2) = 1.022 nats; tolerance 0.15 nats (DV bound from below, finite budget)
    x, y = correlated_gaussians(6000, 2, 0.8)
    est = estimate_mi(x, y, steps=500, seed=0)
    true = -1.0 * math.log(1 - 0.8**2)
    assert abs(est.value - true) < 0.15, (est.value, true)


def test_mine_gives_about_zero_for_independent_variables():
    x, _ = correlated_gaussians(4000, 2, 0.0, seed=1)
    _, y = correlated_gaussians(4000, 2, 0.0, seed=2)
    est = estimate_mi(x, y, steps=200, seed=0)
    assert abs(est.value) < 0.05


def test_entropy_estimate_saturates_at_log_batch_size():
    # I(v; v) is infinite for continuous v; the all-pairs DV bound cannot exceed log B.
    x, _ = correlated_gaussians(2000, 4, 0.0)
    est = estimate_mi(x, x, steps=200, batch_size=64, seed=0)
    assert est.value <= math.log(64) + 1e-4
    assert est.value > 1.0  # far above any true finite-sample dependence, growing with the budget


def test_dv_bound_closed_form():
    scores = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    expected = 2.0 - math.log((2 * math.exp(2.0) + 2) / 4)
    assert float(dv_bound(scores)) == pytest.approx(expected, rel=1e-6)


def test_moving_average_correction_equals_plain_gradient_at_rate_one():
    # With ema_rate=1 the moving average is the batch mean, so the surrogate's gradient is exactly that of -DV.
    torch.manual_seed(0)
    mine = MINE(3, 2, hidden=8, ema_rate=1.0)
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    loss, value = mine.surrogate_loss(x, y)
    grads = torch.autograd.grad(loss, list(mine.parameters()))
    minus_dv = -dv_bound(mine.T.pairwise(x, y))
    expected = torch.autograd.grad(minus_dv, list(mine.parameters()))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert float(value) == pytest.approx(-float(minus_dv.detach()), rel=1e-5)


def test_moving_average_damps_the_denominator():
    torch.manual_seed(0)
    mine = MINE(2, 2, hidden=8, ema_rate=0.01)
    x, y = torch.randn(32, 2), torch.randn(32, 2)
    mine.surrogate_loss(x, y)
    first = float(mine.log_ema)
    mine.surrogate_loss(x * 3, y * 3)  # a very different batch moves the average only by ~1 %
    with torch.no_grad():
        batch_log = float(torch.logsumexp(mine.T.pairwise(x * 3, y * 3).reshape(-1), 0) - math.log(32 * 32))
    expected = math.log(0.99 * math.exp(first) + 0.01 * math.exp(batch_log))
    assert float(mine.log_ema) == pytest.approx(expected, rel=1e-5)


def test_concat_critic_pairwise_matches_pointwise():
    torch.manual_seed(0)
    mine = MINE(3, 4, hidden=8, critic="concat")
    x, y = torch.randn(5, 3), torch.randn(5, 4)
    pair = mine.T.pairwise(x, y)
    assert pair.shape == (5, 5)
    torch.testing.assert_close(pair[1, 3], mine.T(x[1:2], y[3:4])[0])
    torch.testing.assert_close(pair.diagonal(), mine.T(x, y))


def test_estimate_leaves_global_rng_alone_and_is_reproducible():
    x, y = correlated_gaussians(500, 1, 0.5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = estimate_mi(x, y, steps=20, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = estimate_mi(x, y, steps=20, seed=3)
    assert a.value == b.value


def test_bad_inputs_are_errors():
    with pytest.raises(DataError, match="same number of rows"):
        estimate_mi(torch.randn(10, 2), torch.randn(9, 2))
    with pytest.raises(DataError, match="NaN"):
        estimate_mi(torch.full((10, 2), float("nan")), torch.randn(10, 2))
    with pytest.raises(ConfigError, match="critic"):
        MINE(2, 2, critic="bilinear")
    with pytest.raises(ConfigError, match="ema_rate"):
        MINE(2, 2, ema_rate=0.0)
