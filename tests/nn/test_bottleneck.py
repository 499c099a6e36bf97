import torch
from torch.distributions import Normal, kl_divergence

from mmib.nn.bottleneck import VariationalBottleneck, gaussian_kl, gaussian_kl_standard


def test_kl_standard_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(16, 7, generator=g)
    std = torch.rand(16, 7, generator=g) + 0.1
    expected = kl_divergence(Normal(mu, std), Normal(torch.zeros_like(mu), torch.ones_like(std))).sum(-1)
    torch.testing.assert_close(gaussian_kl_standard(mu, std), expected, rtol=1e-5, atol=1e-5)


def test_kl_general_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mq, mp = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    sq, sp = torch.rand(5, 3, generator=g) + 0.2, torch.rand(5, 3, generator=g) + 0.2
    expected = kl_divergence(Normal(mq, sq), Normal(mp, sp)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), expected, rtol=1e-4, atol=1e-5)


def test_kl_is_zero_at_the_prior():
    assert float(gaussian_kl_standard(torch.zeros(3, 4), torch.ones(3, 4)).abs().max()) < 1e-6


def test_bottleneck_shapes_kl_and_deterministic_eval():
    torch.manual_seed(0)
    vib = VariationalBottleneck(12, z_dim=5, hidden=16)
    x = torch.randn(8, 12)
    out = vib(x)
    assert out.z.shape == out.mu.shape == out.std.shape == (8, 5)
    expected = kl_divergence(Normal(out.mu, out.std), Normal(0.0, 1.0)).sum(-1).mean()
    torch.testing.assert_close(out.kl, expected, rtol=1e-4, atol=1e-4)
    # std starts small (softplus(. - 5)), so training samples stay close to mu
    assert float(out.std.detach().max()) < 0.05
    vib.eval()
    a, b = vib(x), vib(x)
    assert torch.equal(a.z, b.z) and torch.equal(a.z, a.mu)


def test_bottleneck_samples_in_training():
    torch.manual_seed(0)
    vib = VariationalBottleneck(4, z_dim=3, hidden=None, std_offset=0.0)
    x = torch.randn(6, 4)
    assert not torch.equal(vib(x).z, vib(x).z)
