import pytest
import torch
from torch.distributions import Normal

from mmib.errors import ConfigError
from mmib.nn.fusion import (
    FUSIONS, GraphFusion, LowRankFusion, PoEFusion, TensorFusion, build_fusion, pack_posterior, product_of_experts,
)

DIRECT = [f for f in FUSIONS if f != "poe"]


def _inputs(k: int, d: int = 4, b: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g) for _ in range(k)]


@pytest.mark.parametrize("name", DIRECT)
@pytest.mark.parametrize("k", [2, 3, 6])
def test_every_fusion_runs_with_2_3_6_modalities_where_defined(name, k):
    torch.manual_seed(0)
    if name == "tensor" and k > 3:
        with pytest.raises(ConfigError, match="lmf"):
            build_fusion(name, [4] * k)
        return
    f = build_fusion(name, [4] * k)
    xs = [x.requires_grad_() for x in _inputs(k)]
    out = f(xs)
    assert out.shape == (5, f.out_dim)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(x.grad is not None for x in xs)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_poe_runs_with_2_3_6_modalities(k):
    f = PoEFusion([3] * k).eval()
    xs = [pack_posterior(torch.randn(4, 3), torch.rand(4, 3) + 0.1) for _ in range(k)]
    assert f(xs).shape == (4, 3)


def test_output_widths():
    dims = [3, 4, 5]
    assert build_fusion("concat", dims).out_dim == 12
    assert build_fusion("tensor", dims).out_dim == 4 * 5 * 6
    assert build_fusion("lmf", dims, out_dim=7).out_dim == 7
    assert build_fusion("add", [4, 4, 4]).out_dim == 4
    assert build_fusion("graph", [4, 4, 4]).out_dim == 12
    assert build_fusion("graph", [4, 4]).out_dim == 8  # no trimodal nodes with two modalities
    assert build_fusion("add", dims, proj_dim=6).out_dim == 6


def test_known_values_of_simple_fusions():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    assert torch.equal(build_fusion("concat", [2, 2])([a, b]), torch.tensor([[1.0, 2.0, 3.0, -1.0]]))
    assert torch.equal(build_fusion("add", [2, 2])([a, b]), torch.tensor([[4.0, 1.0]]))
    assert torch.equal(build_fusion("mul", [2, 2])([a, b]), torch.tensor([[3.0, -2.0]]))


def test_tensor_fusion_equals_explicit_outer_product():
    a, b, c = _inputs(3, d=3)
    one = torch.ones(a.shape[0], 1)
    expected = torch.einsum(
        "bi,bj,bk->bijk", torch.cat([a, one], 1), torch.cat([b, one], 1), torch.cat([c, one], 1)
    ).flatten(1)
    torch.testing.assert_close(TensorFusion([3, 3, 3])([a, b, c]), expected)
    # the unimodal terms survive: x_a * 1 * 1 sits at [i, 3, 3]
    out = TensorFusion([3, 3, 3])([a, b, c]).view(-1, 4, 4, 4)
    torch.testing.assert_close(out[:, :3, 3, 3], a)


def test_tensor_fusion_refuses_past_size_limit_and_names_lmf():
    with pytest.raises(ConfigError, match="limit 1000.*lmf"):
        TensorFusion([20, 20, 20], max_size=1000)
    with pytest.raises(ConfigError, match="at most|limited to 3"):
        TensorFusion([2, 2, 2, 2])


def test_lmf_equals_tensor_fusion_with_rank_r_weight():
    torch.manual_seed(0)
    dims = [2, 3, 2]
    f = LowRankFusion(dims, out_dim=4, rank=3)
    xs = [torch.randn(6, d) for d in dims]
    tensor = TensorFusion(dims)(xs)  # (B, prod(d+1))
    # full weight: W[o] = sum_r w_r W_1[r,:,o] (x) W_2[r,:,o] (x) W_3[r,:,o]
    w1, w2, w3 = (p.detach() for p in f.factors)
    full = torch.einsum("r,rio,rjo,rko->ijko", f.fusion_weights.detach(), w1, w2, w3).reshape(-1, 4)
    expected = tensor @ full + f.bias.detach()
    torch.testing.assert_close(f(xs), expected, rtol=1e-4, atol=1e-5)


def test_graph_fusion_nodes_and_weights():
    f = GraphFusion([4] * 4)
    # 6 pairs; trimodal nodes join two pairs sharing exactly one modality: 4 * C(3, 2) = 12,
    # and each pair with each of the 2 modalities outside it: 12 more
    assert len(f.pairs) == 6 and len(f.triples) == 12 and len(f.pair_modality) == 12
    assert all(len(set(f.pairs[p]) & set(f.pairs[q])) == 1 for p, q in f.triples)
    assert all(m not in f.pairs[p] for p, m in f.pair_modality)
    names = {n for n, _ in f.named_parameters()}
    assert {"attention.weight", "bimodal_net.0.weight", "trimodal_net.0.weight"} <= names


def test_graph_fusion_matches_the_reference_structure_for_three_modalities():
    """Separate 2d -> 64 -> d networks for bimodal and trimodal nodes, 3 + 3 = 6 trimodal nodes
    (bimodal x bimodal, bimodal x the third modality), and the tanh output network 3d -> 50 -> 50 -> 50."""
    torch.manual_seed(0)
    f = GraphFusion([50] * 3, hidden=50, out_dim=50)
    assert len(f.triples) + len(f.pair_modality) == 6
    assert f.pair_modality == [(0, 2), (1, 1), (2, 0)]  # (a, v) with l, (a, l) with v, (v, l) with a
    assert f.bimodal_net[0].weight.shape == (64, 100) and f.bimodal_net[2].weight.shape == (50, 64)
    assert f.trimodal_net is not None and f.trimodal_net[0].weight.data_ptr() != f.bimodal_net[0].weight.data_ptr()
    assert [m.weight.shape for m in f.post if isinstance(m, torch.nn.Linear)] == [(50, 150), (50, 50), (50, 50)]
    xs = _inputs(3, d=50)
    out = f(xs)
    assert out.shape == (5, 50) and out.abs().max() < 1  # the tanh output layer
    raw = GraphFusion([50] * 3)  # hidden=0: the fused vector itself
    assert raw(xs).shape == (5, 150) and raw.post is None
    # two modalities have no trimodal nodes and no trimodal network
    two = GraphFusion([4, 4])
    assert two.trimodal_net is None and two(_inputs(2)).shape == (5, 8)


def test_tensor_fusion_post_fusion_network_has_the_reference_sizes():
    f = TensorFusion([50] * 3, hidden=50, out_dim=50, dropout=0.5)
    assert f.size == 51 ** 3 == 132_651
    linears = [m for m in f.post if isinstance(m, torch.nn.Linear)]
    assert [m.weight.shape for m in linears] == [(50, 132_651), (50, 50), (50, 50)]
    f.eval()
    xs = _inputs(3, d=50, b=2)
    torch.testing.assert_close(f(xs), f.post(f.product(xs)))
    assert f.out_dim == 50 and TensorFusion([3, 3]).out_dim == 16  # hidden=0: the product itself


def test_poe_is_precision_weighted_mean_with_prior_expert():
    g = torch.Generator().manual_seed(3)
    mus = [torch.randn(5, 4, generator=g) for _ in range(3)]
    stds = [torch.rand(5, 4, generator=g) + 0.2 for _ in range(3)]
    mu, std = product_of_experts(mus, stds)
    # explicit: experts N(0, 1) (prior) and N(mu_m, std_m^2); precision-weighted mean
    precisions = [torch.ones(5, 4)] + [1 / s**2 for s in stds]
    means = [torch.zeros(5, 4)] + mus
    total = sum(precisions)
    torch.testing.assert_close(mu, sum(p * m for p, m in zip(precisions, means)) / total)
    torch.testing.assert_close(std, total.rsqrt())
    # the product density is proportional to the product of the expert densities
    z = torch.randn(5, 4, generator=g)
    logp = Normal(0.0, 1.0).log_prob(z) + sum(Normal(m, s).log_prob(z) for m, s in zip(mus, stds))
    z2 = torch.randn(5, 4, generator=g)
    logp2 = Normal(0.0, 1.0).log_prob(z2) + sum(Normal(m, s).log_prob(z2) for m, s in zip(mus, stds))
    torch.testing.assert_close(
        logp - logp2, Normal(mu, std).log_prob(z) - Normal(mu, std).log_prob(z2), rtol=1e-4, atol=1e-4
    )


def test_poe_single_confident_expert_dominates_and_eval_is_mean():
    mu_a, mu_b = torch.full((2, 3), 2.0), torch.full((2, 3), -2.0)
    f = PoEFusion([3, 3])
    confident = f.eval()([pack_posterior(mu_a, torch.full((2, 3), 1e-3)), pack_posterior(mu_b, torch.full((2, 3), 10.0))])
    torch.testing.assert_close(confident, mu_a, atol=1e-3, rtol=1e-3)
    f.train()
    xs = [pack_posterior(mu_a, torch.ones(2, 3)), pack_posterior(mu_b, torch.ones(2, 3))]
    assert not torch.equal(f(xs), f(xs))


def test_unequal_widths_need_projection():
    with pytest.raises(ConfigError, match="equal width"):
        build_fusion("add", [3, 4])
    with pytest.raises(ConfigError, match="equal width"):
        build_fusion("graph", [3, 4])
    f = build_fusion("graph", [3, 4], proj_dim=5)
    assert f([torch.randn(2, 3), torch.randn(2, 4)]).shape == (2, 10)


def test_bad_names_and_inputs():
    with pytest.raises(ConfigError, match="did you mean 'concat'"):
        build_fusion("concatt", [2, 2])
    assert type(build_fusion("TFN", [2, 2])) is TensorFusion
    with pytest.raises(ConfigError, match="at least 2"):
        build_fusion("graph", [4])
    f = build_fusion("concat", [2, 3])
    with pytest.raises(ValueError, match="expected \\(B, 3\\)"):
        f([torch.randn(2, 2), torch.randn(2, 2)])
    with pytest.raises(ValueError, match="2 inputs"):
        f([torch.randn(2, 2)])


@pytest.mark.parametrize("name", DIRECT)
def test_parameters_are_registered_and_follow_the_module(name):
    f = build_fusion(name, [4, 4, 4], proj_dim=3)
    n_params = sum(p.numel() for p in f.parameters())
    assert n_params >= 3 * (4 * 3 + 3)  # at least the projections are registered
    f = f.to(torch.float64)
    out = f([x.double() for x in _inputs(3)])
    assert out.dtype == torch.float64

