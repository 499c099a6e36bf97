import math

import pytest
import torch

from mmib.errors import ConfigError
from mmib.nn.gated import GatedCrossModalTransformer, SequenceEncoder, group_means, readout


def _pair(b=6, la=7, lb=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ma, mb = torch.randn(b, la, d, generator=g), torch.randn(b, lb, d, generator=g)
    len_a = torch.tensor([7, 3, 1, 7, 5, 2])[:b]
    len_b = torch.tensor([5, 5, 2, 1, 4, 3])[:b]
    return ma, len_a, mb, len_b


def test_gates_lie_in_open_unit_interval_with_shapes():
    torch.manual_seed(0)
    net = GatedCrossModalTransformer(8, layers=3, heads=2, dropout=0.0).eval()
    ma, la, mb, lb = _pair()
    out = net(ma, la, mb, lb)
    assert out.a.shape == ma.shape and out.b.shape == mb.shape
    assert len(out.layers) == 3
    for info in out.layers:
        assert set(info.gates) == {"filter_a", "complementary_a", "filter_b", "complementary_b"}
        for g in info.gates.values():
            assert g.shape == (6, 8)
            assert bool((g > 0).all()) and bool((g < 1).all())
        assert info.x_a.shape == (6, 8) and info.x_b.shape == (6, 8)


def test_gates_stay_inside_unit_interval_for_extreme_inputs():
    torch.manual_seed(0)
    net = GatedCrossModalTransformer(4, layers=1, heads=1, dropout=0.0).eval()
    with torch.no_grad():
        for lin in (net.layers[0].a_from_b.filter_gate, net.layers[0].a_from_b.complementary_gate):
            lin.weight.fill_(0.5)
    ma, la, mb, lb = _pair(d=4)
    out = net(ma * 3, la, mb * 3, lb)
    for g in out.layers[0].gates.values():
        assert bool((g > 0).all()) and bool((g < 1).all())


def test_padding_does_not_change_valid_outputs():
    torch.manual_seed(0)
    net = GatedCrossModalTransformer(8, layers=2, heads=2, dropout=0.0).eval()
    ma, la, mb, lb = _pair()
    base = net(ma, la, mb, lb)
    ma2, mb2 = ma.clone(), mb.clone()
    ma2[torch.arange(ma.shape[1]).unsqueeze(0) >= la.unsqueeze(1)] = 99.0
    mb2[torch.arange(mb.shape[1]).unsqueeze(0) >= lb.unsqueeze(1)] = -99.0
    other = net(ma2, la, mb2, lb)
    valid_a = torch.arange(ma.shape[1]).unsqueeze(0) < la.unsqueeze(1)
    valid_b = torch.arange(mb.shape[1]).unsqueeze(0) < lb.unsqueeze(1)
    torch.testing.assert_close(base.a[valid_a], other.a[valid_a])
    torch.testing.assert_close(base.b[valid_b], other.b[valid_b])
    assert float(other.a[~valid_a].abs().max().detach()) == 0.0  # padding is zeroed after every layer


def test_closed_gates_pass_only_the_normalised_current_stream():
    # filter gate ~ 1 and complementary gate ~ 0: M_bar = LN(M_s), the other modality is ignored.
    torch.manual_seed(0)
    net = GatedCrossModalTransformer(4, layers=1, heads=1, dropout=0.0).eval()
    layer = net.layers[0].a_from_b
    with torch.no_grad():
        layer.filter_gate.weight.zero_()
        layer.filter_gate.bias.fill_(50.0)
        layer.complementary_gate.weight.zero_()
        layer.complementary_gate.bias.fill_(-50.0)
    ma, la, mb, lb = _pair(d=4)
    a1 = net(ma, la, mb, lb).a
    a2 = net(ma, la, torch.randn_like(mb), lb).a
    torch.testing.assert_close(a1, a2)


def test_discriminator_loss_is_bce_and_learns_to_separate_modalities():
    torch.manual_seed(0)
    net = GatedCrossModalTransformer(8, layers=2, heads=2, dropout=0.0)
    ma, la, mb, lb = _pair()
    mb = mb + 2.0  # the two modalities differ in mean
    out = net(ma, la, mb, lb)
    loss0 = net.discriminator_loss(out)
    with torch.no_grad():  # closed form for layer 0: BCE against labels 0 (a) and 1 (b)
        info = out.layers[0]
        logits = torch.cat([net.discriminators[0](info.x_a), net.discriminators[0](info.x_b)]).squeeze(-1)
        target = torch.cat([torch.zeros(6), torch.ones(6)])
        manual0 = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert math.isfinite(float(loss0.detach()))
    # the per-layer discriminators alone learn to tell the two streams' summaries apart
    fixed = net(ma, la, mb, lb)
    for info in fixed.layers:
        info.x_a, info.x_b = info.x_a.detach(), info.x_b.detach()
    opt = torch.optim.Adam(net.discriminators.parameters(), lr=5e-2)
    for _ in range(100):
        opt.zero_grad()
        loss = net.discriminator_loss(fixed)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.1 < float(loss0.detach())
    assert 0.0 < float(manual0)
    grouped = net.discriminator_loss(fixed, group_size=3)  # groups of 3 samples: 2 per modality
    assert math.isfinite(float(grouped.detach()))


def test_group_means_and_readout():
    x = torch.arange(10.0).reshape(5, 2)
    torch.testing.assert_close(group_means(x, 2), torch.tensor([[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]))
    torch.testing.assert_close(group_means(x, 1), x)
    with pytest.raises(ConfigError):
        group_means(x, 0)
    seq = torch.arange(12.0).reshape(2, 3, 2)
    torch.testing.assert_close(readout(seq, torch.tensor([3, 1]), "first"), seq[:, 0])
    torch.testing.assert_close(readout(seq, torch.tensor([2, 1]), "mean"), torch.tensor([[1.0, 2.0], [6.0, 7.0]]))
    with pytest.raises(ConfigError, match="readout"):
        readout(seq, None, "last")


def test_sequence_encoder_vectors_and_sequences():
    enc = SequenceEncoder(5, 6)
    assert enc(torch.randn(4, 5)).shape == (4, 1, 6)
    with torch.no_grad():
        out = enc(torch.randn(4, 7, 5), torch.tensor([7, 2, 0, 3]))
    assert out.shape == (4, 7, 6)
    assert float(out[1, 2:].abs().max()) == 0.0 and float(out[2].abs().max()) == 0.0


def test_bad_widths_are_config_errors():
    with pytest.raises(ConfigError, match="even"):
        GatedCrossModalTransformer(7, heads=1)
    with pytest.raises(ConfigError, match="divisible"):
        GatedCrossModalTransformer(6, heads=4)
    with pytest.raises(ConfigError, match="layers"):
        GatedCrossModalTransformer(8, layers=0)
