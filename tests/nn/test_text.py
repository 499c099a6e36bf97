import sys

import pytest
import torch

from mmib.config import TrainConfig
from mmib.data.dataset import Batch, MultimodalDataset, TaskSpec
from mmib.errors import ConfigError
from mmib.models.registry import build_model

transformers = pytest.importorskip("transformers")

from tiny_bert_config import VOCAB, L

from mmib.nn.text import HFTextEncoder


def _tokens(n: int = 4, seed: int = 0) -> torch.Tensor:
    """(n, 3, L): ids (CLS=1 first), attention mask with padding, segment ids; stored as float like MMSA."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, L), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(L // 2, L + 1, (n,), generator=g)
    mask = (torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids * mask
    return torch.stack([ids, mask, torch.zeros_like(ids)], dim=1).float()


def test_shapes_and_padding_is_ignored(tiny_bert):
    enc = HFTextEncoder(tiny_bert, out_dim=8, pooling="mean").eval()
    tokens = _tokens()
    out = enc(tokens)
    assert out.shape == (4, 8)
    changed = tokens.clone()
    pad = changed[:, 1] == 0
    changed[:, 0][pad] = 7.0  # different ids at padded positions
    torch.testing.assert_close(enc(changed), out, rtol=1e-5, atol=1e-5)


def test_cls_pooling_is_first_hidden_state(tiny_bert):
    enc = HFTextEncoder(tiny_bert, out_dim=8).eval()
    tokens = _tokens()
    ids, mask, seg = tokens.long().unbind(1)
    hidden = enc.backbone(input_ids=ids, attention_mask=mask, token_type_ids=seg).last_hidden_state
    torch.testing.assert_close(enc.pool(tokens), hidden[:, 0])
    assert enc.hidden_size == 16


def test_loads_the_saved_weights(tiny_bert):
    a, b = HFTextEncoder(tiny_bert, 4), HFTextEncoder(tiny_bert, 4)
    pa, pb = dict(a.backbone.named_parameters()), dict(b.backbone.named_parameters())
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    r = HFTextEncoder(tiny_bert, 4, random_init=True)
    assert not torch.equal(r.backbone.embeddings.word_embeddings.weight, pa["embeddings.word_embeddings.weight"])


def test_frozen_and_last_k_layers(tiny_bert):
    frozen = HFTextEncoder(tiny_bert, 8, trainable=False)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.proj.parameters())
    frozen.train()
    assert not frozen.backbone.training and frozen.proj.training
    out = frozen(_tokens())
    out.sum().backward()
    assert frozen.proj.weight.grad is not None

    last = HFTextEncoder(tiny_bert, 8, train_last_k_layers=1)
    trainable = {n for n, p in last.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable)
    last(_tokens()).sum().backward()
    assert last.backbone.encoder.layer[1].output.dense.weight.grad is not None
    assert last.backbone.encoder.layer[0].output.dense.weight.grad is None
    with pytest.raises(ConfigError, match="has 2 layers"):
        HFTextEncoder(tiny_bert, 8, train_last_k_layers=3)


def test_missing_directory_is_a_clear_error_never_a_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):  # any attempt to reach a hub fails the test
        raise AssertionError("network access attempted")

    monkeypatch.setattr("socket.create_connection", no_network)
    with pytest.raises(ConfigError, match="no such directory.*nothing is downloaded"):
        HFTextEncoder(tmp_path / "nope", 8)
    with pytest.raises(ConfigError, match="no such directory"):
        HFTextEncoder("bert-base-uncased", 8)  # a hub name is not a local directory
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot load"):
        HFTextEncoder(tmp_path / "empty", 8)


def test_missing_transformers_is_a_clear_error(tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match="pip install 'mmib\\[text\\]'"):
        HFTextEncoder(tiny_bert, 8)


def test_bad_options(tiny_bert):
    with pytest.raises(ConfigError, match="unknown text_encoder option.*valid: trainable"):
        HFTextEncoder(tiny_bert, 8, cache=True, learning_rate=1)
    with pytest.raises(ConfigError, match="pooling"):
        HFTextEncoder(tiny_bert, 8, pooling="max")


def _text_dataset(n: int = 48) -> MultimodalDataset:
    g = torch.Generator().manual_seed(0)
    tokens = torch.stack([_tokens(1, seed=i)[0] for i in range(n)])
    y = tokens[:, 0, 1] / VOCAB + 0.1 * torch.randn(n, generator=g)
    return MultimodalDataset(
        "tiny-text", {"text": torch.randn(n, 6, generator=g), "audio": torch.randn(n, 5, generator=g)}, y,
        TaskSpec("regression"), {"train": torch.arange(32), "valid": torch.arange(32, 40), "test": torch.arange(40, n)},
        extras={"text_bert": tokens},
    )


def test_models_put_bert_at_text_lr_and_its_projection_at_lr(tiny_bert):
    ds = _text_dataset()
    model = build_model("c-mib", ds.spec, text_model=str(tiny_bert), z_dim=4, ib_hidden=8, hidden=8,
                        text_encoder={"train_last_k_layers": 1})
    enc = model.encoders.encoders["text"]
    assert isinstance(enc, HFTextEncoder) and model.encoders.kinds["text"] == "bert"
    groups = {g.name: g for g in model.param_groups(model.parameters(), TrainConfig(lr=1e-3, text_lr=5e-5))}
    assert groups["text"].lr == 5e-5 and groups["main"].lr == 1e-3
    text_ids = {id(p) for p in groups["text"].params}
    assert text_ids == {id(p) for p in enc.backbone.encoder.layer[1].parameters()}
    assert id(enc.proj.weight) in {id(p) for p in groups["main"].params}
    batch = ds.take(torch.arange(8))
    assert isinstance(batch, Batch)
    model.objective(batch, "main", "main").total.backward()
    assert enc.backbone.encoder.layer[1].attention.self.query.weight.grad is not None


def test_c_mib_trains_with_a_local_bert(tiny_bert):
    from mmib.api import train

    ds = _text_dataset()
    before = HFTextEncoder(tiny_bert, 4).backbone.encoder.layer[1].output.dense.weight.clone()
    result = train(model="c-mib", dataset=ds, epochs=2, batch_size=16, progress=False, text_lr=1e-3,
                   model_options={"text_model": str(tiny_bert), "z_dim": 4, "ib_hidden": 8, "hidden": 8})
    after = result.model.encoders.encoders["text"].backbone.encoder.layer[1].output.dense.weight
    assert not torch.equal(before, after.detach())  # fine-tuned
    assert "task_text" in result.history[-1]["train"]
