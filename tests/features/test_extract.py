"""The clip loop (failures, notes, cache, workers), the MMSA writer and models on masked modalities."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from feature_media import needs_features

from mmib.features.settings import ExtractorSettings

pytestmark = needs_features


def test_failure_summary_and_masked_modalities(extracted):
    from mmib.features.extract import summary_lines

    res = extracted["results"]
    failed = {k: r.error for k, r in res.items() if not r.ok}
    assert set(failed) == {"broken", "cut", "ghost"}
    assert "undecodable or truncated" in failed["broken"]
    assert "truncated audio" in failed["cut"]
    assert "no media file and no transcript" in failed["ghost"]
    assert all(not res[k].features for k in failed)
    # full clip: audio from inside the MP4, a face in every frame
    happy = res["happy"].features
    assert set(happy) == {"text", "text_tokens", "text_sentence", "audio", "audio_functionals", "vision", "vision_mask"}
    assert happy["audio"].shape == (20, 25) and happy["vision"].shape == (10, 13) and happy["vision_mask"].all()
    assert res["happy"].notes == []
    # separate audio file beside a silent video
    assert res["sad"].present("audio") and res["sad"].present("vision")
    # video-only: no audio stream, no face -> both masked; text remains
    assert set(res["blank"].features) == {"text", "text_tokens", "text_sentence"}
    assert any("no audio stream" in n for n in res["blank"].notes)
    assert any("no face in any" in n for n in res["blank"].notes)
    # audio-only and text-only
    assert res["voice"].present("audio") and not res["voice"].present("vision") and res["voice"].present("text")
    assert set(res["textonly"].features) == {"text", "text_tokens", "text_sentence"}
    # clip without a transcript: written, text masked, noted
    assert not res["notext"].present("text") and res["notext"].present("audio")
    assert res["notext"].notes == ["text: missing transcript (masked)"]
    lines = summary_lines(list(res.values()))
    assert lines[0] == "3 of 9 clips failed (not written):"
    assert any(line.startswith("  notext: text: missing transcript") for line in lines)


def test_cache_skips_finished_clips_and_resumes(extracted, extractors, opencv_settings, tmp_path):
    from mmib.features.extract import cache_key, extract_clips, load_cached

    clips, cache = extracted["clips"], extracted["cache"]
    again = extract_clips(clips, opencv_settings, cache_dir=cache, progress=False, extractors=extractors)
    ok = [r for r in again if r.ok]
    assert ok and all(r.cached for r in ok)  # nothing re-extracted
    assert all(not r.cached for r in again if not r.ok)  # failures are retried, never cached
    for r in ok:
        first = extracted["results"][r.id]
        assert r.notes == first.notes and set(r.features) == set(first.features)
        for k, v in r.features.items():
            np.testing.assert_array_equal(v, first.features[k])
    # an "interrupted" run: only some clips in the cache, the rest is extracted
    partial = tmp_path / "partial"
    happy = next(c for c in clips if c.id == "happy")
    extract_clips([happy], opencv_settings, cache_dir=partial, progress=False, extractors=extractors)
    seen = []
    out = extract_clips(clips[:4], opencv_settings, cache_dir=partial, progress=False, extractors=extractors,
                        on_result=lambda r: seen.append(r.id))
    assert [r.cached for r in out] == [True, False, False, False] and "happy" not in seen
    # a different setting or a changed transcript is a different cache entry
    other = ExtractorSettings(**{**opencv_settings.to_dict(), "modalities": ("text", "audio", "vision"), "audio_fps": 5.0})
    assert cache_key(other, happy) != cache_key(opencv_settings, happy)
    happy2 = type(happy)(**{**happy.__dict__, "transcript": "changed"})
    assert load_cached(partial, cache_key(opencv_settings, happy2), "happy") is None


def test_require_fails_clips_without_that_modality(extracted, extractors, opencv_settings):
    from mmib.features.extract import extract_clips

    clips = [c for c in extracted["clips"] if c.id in ("notext", "happy")]
    res = {r.id: r for r in extract_clips(clips, opencv_settings, require=("text",), progress=False,
                                          extractors=extractors)}
    assert res["happy"].ok and not res["notext"].ok and "required modality text missing" in res["notext"].error


def test_written_file_loads_as_mmsa(extracted, opencv_settings, tmp_path):
    from mmib.data.files import load_mmsa_pickle
    from mmib.features.clips import assign_splits
    from mmib.features.mmsa import build_mmsa, write_pickle

    clips = extracted["clips"]
    results = [extracted["results"][i] for i in extracted["order"]]
    splits = assign_splits(clips, (0.5, 0.25, 0.25), seed=0)
    obj = build_mmsa(results, splits, opencv_settings, {c.id: c.label for c in clips},
                     {c.id: c.transcript for c in clips}, {"rule": "seeded"})
    path = tmp_path / "features.pkl"
    write_pickle(path, obj)
    written = [r.id for r in results if r.ok]
    assert sorted(sum((obj[s]["id"] for s in ("train", "valid", "test")), [])) == sorted(written)
    assert obj["meta"]["failed"].keys() == {"broken", "cut", "ghost"}
    assert obj["meta"]["extractor"] == opencv_settings.resolved().to_dict()
    tr = obj["train"]
    n = len(tr["id"])
    assert tr["text"].shape == (n, 16, 384) and tr["text_bert"].shape == (n, 3, 16)
    assert tr["audio"].shape == (n, 40, 25) and tr["vision"].shape == (n, 20, 13) and tr["vision_mask"].shape == (n, 20)
    ds = load_mmsa_pickle(path)
    assert ds.meta["extractor"] == opencv_settings.resolved().to_dict()
    assert ds.ids is not None and len(ds) == len(written)
    at = {i: k for k, i in enumerate(ds.ids)}
    lengths = {m: ds.lengths[m] for m in ("text", "audio", "vision")}
    assert lengths["text"][at["notext"]] == 0 and lengths["text"][at["happy"]] > 2
    assert lengths["audio"][at["blank"]] == 0 and lengths["audio"][at["textonly"]] == 0
    assert lengths["audio"][at["happy"]] == 20 and lengths["vision"][at["happy"]] == 10
    assert lengths["vision"][at["blank"]] == 0 and lengths["vision"][at["voice"]] == 0
    assert float(ds.features["vision"][at["blank"]].abs().sum()) == 0.0  # missing = zeros
    y = {c.id: c.label for c in clips}
    assert [float(v) for v in ds.y] == [pytest.approx(y[i]) for i in ds.ids]
    cls = dict(zip(sum((obj[s]["id"] for s in ("train", "valid", "test")), []),
                   np.concatenate([obj[s]["classification_labels"] for s in ("train", "valid", "test")])))
    assert cls["happy"] == 2 and cls["sad"] == 0 and cls["blank"] == 1
    sentence = load_mmsa_pickle(path, text="text_sentence")  # the sentence vector as the text modality
    assert sentence.features["text"].shape == (len(written), 384)


def test_empty_split_and_disabled_modality():
    from mmib.features.extract import ClipResult
    from mmib.features.mmsa import build_mmsa, feature_dims, split_block

    s = ExtractorSettings(modalities=("audio",), audio_max_len=8, vision_backend="opencv")
    r = ClipResult("a", {"audio": np.ones((5, 25), np.float32), "audio_functionals": np.ones(88, np.float32)})
    dims = feature_dims(s, [r])
    assert dims["text"] == 1 and dims["vision"] == 1 and dims["audio"] == 25
    block = split_block([r], s, dims, [0.5])
    assert block["text"].shape == (1, 1, 1) and block["text_bert"][:, 1].sum() == 0  # text length 0
    assert block["audio"].shape == (1, 8, 25) and block["audio_lengths"].tolist() == [5]
    assert block["audio"][0, 5:].sum() == 0
    empty = split_block([], s, dims)
    assert empty["audio"].shape == (0, 8, 25) and empty["regression_labels"].shape == (0,)
    obj = build_mmsa([r], {"a": "train"}, s, {"a": 0.5}, {"a": None}, {"rule": "column"})
    assert len(obj["valid"]["id"]) == 0 and obj["train"]["annotations"] == ["Positive"]


@pytest.mark.parametrize("model, encoder", [("concat", "auto"), ("concat", "mlp"), ("concat", "conv1d"),
                                            ("concat", "transformer"), ("late", "auto")])
def test_models_accept_zero_length_modalities(model, encoder):
    """Samples whose text, audio or vision has length 0 give finite outputs and gradients."""
    from mmib.data.dataset import MultimodalDataset, TaskSpec
    from mmib.models.registry import build_model

    g = torch.Generator().manual_seed(0)
    n, lens = 12, {"text": [0, 5, 5, 5], "audio": [7, 0, 7, 7], "vision": [4, 4, 0, 0]}
    feats = {"text": torch.randn(n, 6, 8, generator=g), "audio": torch.randn(n, 7, 5, generator=g),
             "vision": torch.randn(n, 4, 3, generator=g)}
    lengths = {m: torch.tensor(v * (n // 4)) for m, v in lens.items()}
    for m, x in feats.items():
        pad = torch.arange(x.shape[1])[None, :] >= lengths[m][:, None]
        x[pad] = 0.0
    ds = MultimodalDataset("masked", feats, torch.randn(n, generator=g), TaskSpec("regression"),
                           {"train": torch.arange(n)}, lengths=lengths)
    opts = {"hidden": 8} if encoder == "auto" else {"hidden": 8, "encoder": encoder}
    net = build_model(model, ds.spec, **opts)
    batch = ds.take(torch.arange(n))
    out = net(batch)
    assert out.prediction.shape == (n,) and torch.isfinite(out.prediction).all()
    obj = net.objective(batch, "main", "main")
    obj.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    if encoder == "auto":  # lstm for sequences: a missing modality encodes to exactly zero
        net.eval()
        h = net.encoders(batch)
        assert torch.count_nonzero(h["text"][lengths["text"] == 0]) == 0
        assert torch.count_nonzero(h["vision"][lengths["vision"] == 0]) == 0


@pytest.mark.slow
def test_two_workers_match_one(extracted, opencv_settings, tmp_path):
    """jobs=2 (spawned worker processes, each loading its own extractors) gives the same features."""
    from mmib.features.extract import extract_clips

    clips = [c for c in extracted["clips"] if c.id in ("happy", "sad", "broken", "textonly")]
    res = {r.id: r for r in extract_clips(clips, opencv_settings, jobs=2, cache_dir=tmp_path / "c", progress=False)}
    assert [r.id for r in res.values()] == [c.id for c in clips]
    assert not res["broken"].ok
    for cid in ("happy", "sad", "textonly"):
        first = extracted["results"][cid]
        assert set(res[cid].features) == set(first.features)
        for k, v in res[cid].features.items():
            np.testing.assert_allclose(v, first.features[k], atol=1e-4)
    assert len(list((tmp_path / "c").rglob("*.npz"))) == 3  # workers wrote the cache


def test_pickle_is_plain_data(extracted, opencv_settings, tmp_path):
    """The written pickle holds only builtins and numpy arrays (readable without mmib)."""
    from mmib.features.mmsa import build_mmsa

    results = [extracted["results"][i] for i in extracted["order"]]
    obj = build_mmsa(results, {r.id: "train" for r in results}, opencv_settings, {}, {}, {"rule": "column"})
    blob = pickle.dumps(obj)
    assert b"mmib" not in blob.replace(b"mmib-extract", b"")
