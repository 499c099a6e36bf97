import pytest
import torch

from mmib.data.dataset import DatasetSpec, ModalitySpec, TaskSpec
from mmib.errors import ConfigError
from mmib.nn.encoders import ModalityEncoders, build_encoder, masked_mean


def test_masked_mean_ignores_padding_and_gives_zero_for_empty():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[7.0], [7.0], [7.0]]])
    out = masked_mean(x, torch.tensor([2, 0]))
    assert out.tolist() == [[2.0], [0.0]]


@pytest.mark.parametrize("kind", ["mlp", "lstm", "conv1d", "transformer"])
def test_sequence_encoders_shapes_and_padding_invariance(kind):
    torch.manual_seed(0)
    enc = build_encoder(kind, ModalitySpec("s", 5, True, 6), out_dim=8, hidden=8, dropout=0.0).eval()
    x = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 3, 1])
    out = enc(x, lengths)
    assert out.shape == (3, 8)
    x2 = x.clone()
    x2[1, 3:] = 50.0  # garbage in the padding must not change the output
    x2[2, 1:] = -9.0
    torch.testing.assert_close(enc(x2, lengths), out, rtol=1e-4, atol=1e-5)


def test_missing_sequence_gives_zero_lstm_output():
    enc = build_encoder("lstm", ModalitySpec("s", 4, True, 5), out_dim=3).eval()
    out = enc(torch.randn(2, 5, 4), torch.tensor([5, 0]))
    assert torch.equal(out[1], torch.zeros(3))


def test_build_encoder_errors():
    with pytest.raises(ConfigError, match="needs a sequence modality"):
        build_encoder("lstm", ModalitySpec("v", 4), 8)
    with pytest.raises(ConfigError, match="unknown encoder 'lstn'.*did you mean 'lstm'"):
        build_encoder("lstn", ModalitySpec("s", 4, True, 5), 8)
    with pytest.raises(ConfigError, match="divisible"):
        build_encoder("transformer", ModalitySpec("s", 4, True, 5), 6, heads=4)


def test_modality_encoders_from_spec():
    spec = DatasetSpec((ModalitySpec("v", 4), ModalitySpec("s", 3, True, 5)), TaskSpec("regression"))
    enc = ModalityEncoders(spec, 6, kinds={"s": "conv1d"})
    assert enc.kinds == {"v": "mlp", "s": "conv1d"}
    with pytest.raises(ConfigError, match="unknown modalities"):
        ModalityEncoders(spec, 6, kinds={"audio": "lstm"})
    with pytest.raises(ConfigError, match="needs token ids"):
        ModalityEncoders(spec, 6, kinds={"s": "bert"}, text_model="/nowhere")
