import pytest
import torch

from mmib.errors import ConfigError
from mmib.nn.labelgen import (
    CentroidLabelGenerator, evenly_spaced, momentum, relative_distance, shifted_labels, task_weight, weighted_l1,
)


def _generator(n=6, bound=3.0):
    gen = CentroidLabelGenerator({"s_text": 2, "c_text": 2}, reference_dim=2, bound=bound)
    y = torch.tensor([1.0, -1.0, 2.0, 0.5, -2.0, 0.0])[:n]
    gen.allocate(y, torch.arange(n))
    return gen, y


def test_labels_start_at_the_multimodal_labels_and_weights_are_zero():
    gen, y = _generator()
    idx = torch.tensor([0, 2, 4])
    for lab in gen.labels(idx, y[idx]).values():
        torch.testing.assert_close(lab, y[idx])
    for w in gen.weights(idx, y[idx]).values():
        assert float(w.abs().max()) == 0.0
    # first epoch: updates only accumulate centre sums, the labels stay y_m (eq. 31, i = 1)
    gen.update(torch.arange(6), torch.randn(6, 2), {"s_text": torch.randn(6, 2), "c_text": torch.randn(6, 2)})
    torch.testing.assert_close(gen.generated, y.unsqueeze(0).repeat(2, 1))


def test_labels_move_towards_the_side_the_view_sits_on():
    gen, y = _generator()
    gen.end_epoch()  # epoch 1 done: the next update is epoch 2's
    pos, neg = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    for view in (None, "s_text", "c_text"):
        gen.set_centres(view, pos, neg)
    idx = torch.tensor([0, 2])  # y_m = 1 and 2 (positive)
    ref = torch.tensor([[0.5, 0.0], [0.5, 0.0]])  # the fused representation leans positive
    near_neg = torch.tensor([[-0.9, 0.0], [-0.9, 0.0]])  # the text view sits on the negative centre
    near_pos = torch.tensor([[0.9, 0.0], [0.9, 0.0]])  # the cross-modal view sits on the positive centre
    before = gen.generated[:, idx].clone()
    gen.update(idx, ref, {"s_text": near_neg, "c_text": near_pos})
    s_lab, c_lab = gen.generated[0, idx], gen.generated[1, idx]
    assert bool((s_lab < before[0]).all())  # towards the negative side
    assert bool((c_lab > before[1]).all())  # further towards the positive side
    # exact value: eq. 30 then eq. 31 with i = 2
    a_m = relative_distance(ref, pos, neg)
    a_s = relative_distance(near_neg, pos, neg)
    new = (y[idx] + (a_s - a_m) / 2 * (y[idx] + a_m) / a_m).clamp(-3, 3)
    torch.testing.assert_close(s_lab, y[idx] / 3 + 2 * new / 3)
    # the loss weights now follow tanh(|y_gen - y_m|)
    w = gen.weights(idx, y[idx])
    torch.testing.assert_close(w["s_text"], torch.tanh((s_lab - y[idx]).abs()))
    # samples outside the batch are untouched
    others = torch.tensor([1, 3, 4, 5])
    torch.testing.assert_close(gen.generated[:, others], y[others].unsqueeze(0).repeat(2, 1))


def test_a_view_as_positive_as_the_reference_keeps_its_label():
    y = torch.tensor([1.5])
    a = torch.tensor([0.7])
    torch.testing.assert_close(shifted_labels(y, a, a), y)


def test_centres_come_from_last_epochs_representations():
    gen, y = _generator()
    ref = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0], [1.0, 2.0], [-3.0, 0.0], [9.0, 9.0]])
    gen.update(torch.arange(6), ref, {"s_text": ref * 2, "c_text": ref})
    gen.end_epoch()
    pos, neg = gen.centres(None)
    # y > 0: samples 0, 2, 3; y < 0: samples 1, 4; y = 0 (sample 5) in neither
    torch.testing.assert_close(pos, ref[[0, 2, 3]].mean(0))
    torch.testing.assert_close(neg, ref[[1, 4]].mean(0))
    torch.testing.assert_close(gen.centres("s_text")[0], 2 * ref[[0, 2, 3]].mean(0))
    assert int(gen.epoch) == 1


def test_momentum_and_bound():
    torch.testing.assert_close(momentum(torch.tensor(1.0), torch.tensor(4.0), 2), torch.tensor(1 / 3 + 8 / 3))
    torch.testing.assert_close(momentum(torch.tensor(0.0), torch.tensor(3.0), 5), torch.tensor(1.0))
    with pytest.raises(ValueError):
        momentum(torch.tensor(0.0), torch.tensor(1.0), 1)
    out = shifted_labels(torch.tensor([2.9]), torch.tensor([50.0]), torch.tensor([0.1]), bound=3.0)
    assert float(out) == 3.0
    assert float(task_weight(torch.tensor(1.0), torch.tensor(1.0))) == 0.0
    torch.testing.assert_close(weighted_l1(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.5])),
                               torch.tensor(1.0))


def test_bound_defaults_to_largest_training_label():
    gen = CentroidLabelGenerator({"v": 2}, 2)
    gen.allocate(torch.tensor([0.5, -2.5, 9.0]), torch.tensor([0, 1]))
    assert float(gen.bound) == 2.5
    assert gen.is_train.tolist() == [True, True, False]
    assert gen.y_m.tolist() == [0.5, -2.5, 0.0]  # the test sample's target is not stored


def test_state_dict_roundtrip_resizes_per_sample_buffers():
    gen, _ = _generator()
    gen.end_epoch()
    gen.generated[0, 1] = 0.25
    fresh = CentroidLabelGenerator({"s_text": 2, "c_text": 2}, reference_dim=2, bound=3.0)
    assert not fresh.allocated
    fresh.load_state_dict(gen.state_dict())
    assert fresh.allocated and int(fresh.epoch) == 1
    torch.testing.assert_close(fresh.generated, gen.generated)


def test_unallocated_generator_returns_targets_and_errors():
    gen = CentroidLabelGenerator({"v": 2}, 2)
    y = torch.tensor([0.3, -0.2])
    assert torch.equal(gen.labels(torch.arange(2), y)["v"], y)
    gen.update(torch.arange(2), torch.zeros(2, 2), {"v": torch.zeros(2, 2)})  # a no-op
    with pytest.raises(ConfigError):
        CentroidLabelGenerator({}, 2)
    with pytest.raises(ConfigError, match="regression"):
        gen.allocate(torch.tensor([0, 1]), torch.arange(2))
    assert evenly_spaced(torch.arange(10, 20), 3).tolist() == [10, 14, 19]
    assert evenly_spaced(torch.arange(2), 5).tolist() == [0, 1]
