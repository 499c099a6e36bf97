"""Metrics against values worked out by hand on tiny inputs (SPEC.md section 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmib.data.dataset import TaskSpec
from mmib.errors import ConfigError, DataError
from mmib.eval.metrics import (
    METRIC_MODES,
    anomaly_metrics,
    classification_metrics,
    compute_metrics,
    default_monitor,
    metric_mode,
    multilabel_metrics,
    regression_metrics,
)

PRED = np.array([0.4, -1.2, 2.6, 0.0, -0.2, 1.6])
Y = np.array([1.0, -1.0, 3.0, 0.0, 0.0, -0.5])


def test_regression_by_hand() -> None:
    m = regression_metrics(PRED, Y)
    assert m["mae"] == pytest.approx((0.6 + 0.2 + 0.4 + 0.0 + 0.2 + 2.1) / 6)
    assert m["mse"] == pytest.approx((0.36 + 0.04 + 0.16 + 0.0 + 0.04 + 4.41) / 6)
    # rounded clip(-3, 3): pred 0,-1,3,0,-0,2  y 1,-1,3,0,0,-0 -> samples 1,2,3,4 agree
    assert m["acc7"] == pytest.approx(4 / 6)
    # rounded clip(-2, 2): pred 0,-1,2,0,-0,2  y 1,-1,2,0,0,-0 -> samples 1,2,3,4 agree
    assert m["acc5"] == pytest.approx(4 / 6)
    # has0: pred>=0 T,F,T,T,F,T vs y>=0 T,F,T,T,T,F
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    # class T (support 4): P=R=3/4 -> F1 0.75; class F (support 2): P=R=1/2 -> 0.5
    assert m["f1_has0"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)
    # non0 keeps samples 0,1,2,5: pred>0 T,F,T,T vs y>0 T,F,T,F
    assert m["acc2_non0"] == pytest.approx(3 / 4)
    # class T: TP2 FP1 FN0 -> 0.8; class F: TP1 FP0 FN1 -> 2/3; supports 2 and 2
    assert m["f1_non0"] == pytest.approx((2 * 0.8 + 2 * 2 / 3) / 4)
    assert m["corr"] == pytest.approx(float(np.corrcoef(PRED, Y)[0, 1]))
    assert all(type(v) is float for v in m.values())


def test_regression_corr_exact_and_constant() -> None:
    assert regression_metrics([1, 2, 3], [2, 4, 6])["corr"] == pytest.approx(1.0)
    assert regression_metrics([1, 2, 3], [3, 2, 1])["corr"] == pytest.approx(-1.0)
    assert regression_metrics([1, 1, 1], [3, 2, 1])["corr"] == 0.0
    assert regression_metrics([1, 2, 3], [0.5, 0.5, 0.5])["corr"] == 0.0


def test_regression_rounds_half_to_even_and_all_zero_targets() -> None:
    m = regression_metrics([0.5, 1.5, 2.5, -2.5], [0.0, 2.0, 2.0, -2.0])
    assert m["acc7"] == 1.0  # numpy.round: 0.5->0, 1.5->2, 2.5->2, -2.5->-2
    z = regression_metrics([0.3, -0.3, 0.0], [0.0, 0.0, 0.0])
    assert math.isnan(z["acc2_non0"]) and math.isnan(z["f1_non0"])
    assert z["acc2_has0"] == pytest.approx(2 / 3)  # y >= 0 for all; pred >= 0 for 0.3 and 0.0


def test_classification_by_hand() -> None:
    y = np.array([0, 0, 1, 2])
    logits = np.array([[3.0, 0, 0], [0, 1, 0], [0, 2, 1], [0, 5, 4]])  # argmax 0, 1, 1, 1
    m = classification_metrics(logits, y, 3)
    assert m["accuracy"] == 0.5
    # F1 per class: 0 -> P1 R.5 = 2/3; 1 -> P1/3 R1 = 0.5; 2 -> 0
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert m["f1_weighted"] == pytest.approx((2 * 2 / 3 + 1 * 0.5 + 0) / 4)
    labels_only = classification_metrics(np.array([0, 1, 1, 1]), y, 3)
    assert "nll" not in labels_only and labels_only == {k: v for k, v in m.items() if k != "nll"}
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert m["nll"] == pytest.approx(-np.mean(log_p[np.arange(4), y]))  # mean cross-entropy of the logits
    with pytest.raises(DataError, match="predictions have 2 columns for 3 classes"):
        classification_metrics(logits[:, :2], y, 3)
    with pytest.raises(DataError, match=r"targets out of range: found 0\.\.2, expected 0\.\.1"):
        classification_metrics(logits[:, :2], y, 2)
    with pytest.raises(DataError, match="1-d predictions must be class labels"):
        classification_metrics(np.array([0.2, 0.7, 0.1, 0.9]), y, 3)


def test_multilabel_by_hand() -> None:
    logits = np.array([[2.0, -1.0], [-1.0, -1.0], [0.5, 1.0], [-3.0, -1.0]])
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 0]])
    m = multilabel_metrics(logits, y, ["a", "b"])
    # a: pred 1,0,1,0 vs 1,0,0,0
    assert m["acc_a"] == 0.75
    assert m["f1_a"] == pytest.approx((1 * 2 / 3 + 3 * 0.8) / 4)  # class 1: 2/3, class 0: TP2 FP0 FN1 -> 0.8
    assert m["wacc_a"] == pytest.approx((1 * 3 / 1 + 2) / (2 * 3))  # TP1 N3 P1 TN2
    assert m["auc_a"] == 1.0
    # b: pred 0,0,1,0 vs all 0; no positive -> wacc and auc undefined
    assert m["acc_b"] == 0.75
    assert m["f1_b"] == pytest.approx(6 / 7)  # only class 0 has support: TP3 FP0 FN1
    assert math.isnan(m["wacc_b"]) and math.isnan(m["auc_b"])
    assert m["accuracy"] == 0.75
    assert m["f1"] == pytest.approx(((2 / 3 + 2.4) / 4 + 6 / 7) / 2)
    assert m["wacc"] == pytest.approx(5 / 6)  # NaN skipped
    assert m["auc"] == 1.0


def test_weighted_accuracy_imbalanced() -> None:
    # P = 2, N = 4; TP = 1, TN = 3  ->  (1 * 4/2 + 3) / 8 = 5/8
    y = np.array([[1], [1], [0], [0], [0], [0]])
    logits = np.array([[1.0], [-1.0], [-1.0], [-1.0], [-1.0], [1.0]])
    assert multilabel_metrics(logits, y, ["e"])["wacc_e"] == pytest.approx(5 / 8)


def test_anomaly_f1_at_top_k_with_ties() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.5, 0.2])
    y = np.array([1, 0, 0, 1, 0])
    m = anomaly_metrics(scores, y)
    # pairs (pos, neg): 0.9 beats all 3; 0.5 beats 0.1 and 0.2, ties 0.5 -> (3 + 2.5) / 6
    assert m["auc"] == pytest.approx(5.5 / 6)
    # k = 2: flag sample 0 and, of the tied 2 and 3, the earlier (2) -> TP1 FP1 FN1
    assert m["f1"] == pytest.approx(0.5)
    assert anomaly_metrics(np.array([0.9, 0.1, 0.5, 0.6, 0.2]), y)["f1"] == 1.0
    assert m["normal_score"] == pytest.approx((0.1 + 0.5 + 0.2) / 3)  # the mean score of the normal samples
    none = anomaly_metrics(scores, np.zeros(5))
    assert math.isnan(none["auc"]) and math.isnan(none["f1"])
    # normal data only: no anomaly label is needed for the one-class selection metric
    assert none["normal_score"] == pytest.approx(float(scores.mean()))
    assert math.isnan(anomaly_metrics(scores, np.ones(5))["normal_score"])


def test_compute_metrics_dispatch_and_floats() -> None:
    reg = compute_metrics(TaskSpec("regression"), torch.tensor(PRED).unsqueeze(1), torch.tensor(Y))
    assert reg == regression_metrics(PRED, Y)
    b = compute_metrics(TaskSpec("binary"), torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 3.0]]), torch.tensor([0, 1, 0]))
    assert b["accuracy"] == pytest.approx(2 / 3)
    ml = compute_metrics(TaskSpec("multilabel", label_names=("x",)), np.array([[1.0], [-1.0]]), np.array([[1.0], [0.0]]))
    assert ml["acc_x"] == 1.0 and ml["f1"] == 1.0
    an = compute_metrics(TaskSpec("anomaly"), torch.tensor([0.1, 0.8, 0.3]), torch.tensor([0, 1, 0]))
    assert an == {"auc": 1.0, "f1": 1.0, "normal_score": pytest.approx(0.2)}
    for d in (reg, b, ml, an):
        assert all(type(v) is float for v in d.values())


def test_bad_inputs_name_the_culprit() -> None:
    with pytest.raises(DataError, match="predictions have 3 samples but targets have 4"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(DataError, match="predictions contain 1 NaN and 0 inf values"):
        compute_metrics(TaskSpec("regression"), torch.tensor([1.0, float("nan")]), torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="targets contain 0 NaN and 1 inf values"):
        regression_metrics([1.0, 2.0], [np.inf, 1.0])
    with pytest.raises(DataError, match="no samples to evaluate"):
        regression_metrics([], [])
    with pytest.raises(DataError, match="predictions have 2 and targets 2 columns for 3 label names"):
        multilabel_metrics(np.zeros((2, 2)), np.zeros((2, 2)), ["a", "b", "c"])


def test_metric_modes_and_monitors() -> None:
    assert METRIC_MODES["mae"] == METRIC_MODES["mse"] == "min"
    assert metric_mode("corr") == metric_mode("f1_non0") == metric_mode("auc") == "max"
    assert metric_mode("f1_happy") == metric_mode("wacc_sad") == metric_mode("acc_angry") == "max"
    with pytest.raises(ConfigError, match="unknown metric 'maee'"):
        metric_mode("maee")
    with pytest.raises(ConfigError, match="unknown metric 'f1_'"):
        metric_mode("f1_")
    assert default_monitor(TaskSpec("regression")) == "mae"
    assert default_monitor(TaskSpec("binary")) == default_monitor(TaskSpec("multiclass", num_classes=3)) == "nll"
    assert default_monitor(TaskSpec("multilabel", label_names=("a",))) == "f1"
    assert default_monitor("anomaly") == "normal_score" and metric_mode("normal_score") == "min"
    # every name compute_metrics emits has a direction, and every default monitor is emitted
    outputs = [
        regression_metrics(PRED, Y),
        classification_metrics(np.eye(3), [0, 1, 2], 3),
        multilabel_metrics(np.array([[1.0], [-1.0]]), np.array([[1], [0]]), ["happy"]),
        anomaly_metrics([0.1, 0.9], [0, 1]),
    ]
    for d in outputs:
        for name in d:
            assert metric_mode(name) in ("min", "max")
    assert {"mae", "accuracy", "f1", "auc"} <= set().union(*outputs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_binary_accuracy_and_weighted_f1_equal_scikit_learn(pairs) -> None:
    """The per-epoch fast path gives scikit-learn's numbers (all-one-class and empty-class cases included)."""
    from sklearn.metrics import accuracy_score, f1_score

    from mmib.eval.metrics import _binary_acc, _f1w

    t = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    assert _binary_acc(t, p) == float(accuracy_score(t, p))
    assert _f1w(t, p) == pytest.approx(float(f1_score(t, p, average="weighted", zero_division=0)), abs=1e-15)
