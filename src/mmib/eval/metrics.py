"""Evaluation metrics, computed as the multimodal sentiment literature does (SPEC.md section 5).

Every function takes numpy arrays or tensors and returns a ``dict`` of plain
Python floats. Undefined values are ``float("nan")``, never an exception:

* ``corr`` is 0.0 when predictions or targets are constant (Pearson's r is
  undefined there; 0 says "no linear relation" and keeps model selection sane).
* ``acc2_non0``/``f1_non0`` are NaN when no target is non-zero.
* per-label ``wacc_<name>`` is NaN when a label has no positive or no negative
  sample, ``auc_<name>`` (and anomaly ``auc``) NaN when only one class occurs;
  the means ``wacc``/``auc`` over labels skip NaN (NaN only if all are).
* anomaly ``f1`` is NaN when there are no anomalies, ``normal_score`` when there
  are no normal samples.

Rounding for ``acc7``/``acc5`` is ``numpy.round`` (halves to even), as in the
MMSA and MulT evaluation code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mmib.data.dataset import TaskSpec
from mmib.errors import ConfigError, DataError

#: Direction of every metric name: "min" (lower is better) or "max".
METRIC_MODES: dict[str, str] = {
    "loss": "min",
    "mae": "min",
    "mse": "min",
    "corr": "max",
    "acc7": "max",
    "acc5": "max",
    "acc2_has0": "max",
    "f1_has0": "max",
    "acc2_non0": "max",
    "f1_non0": "max",
    "accuracy": "max",
    "nll": "min",
    "f1_weighted": "max",
    "f1_macro": "max",
    "f1": "max",
    "wacc": "max",
    "auc": "max",
    "normal_score": "min",
}

#: Prefixes of per-label multilabel metrics (``acc_happy``, ``f1_sad``, ...); all "max".
PER_LABEL_PREFIXES: tuple[str, ...] = ("acc_", "f1_", "wacc_", "auc_")

#: The metric that selects the best epoch per task. Classes: the cross-entropy (smooth; accuracy moves in steps
#: of 1/N on a small validation split and picks epochs by noise). Anomaly detection selects epochs without
#: anomaly labels: by the mean score of the normal samples (on normal validation data, the one-class loss);
#: ``--set monitor=auc`` uses labelled anomalies.
_MONITORS = {"regression": "mae", "binary": "nll", "multiclass": "nll", "multilabel": "f1",
             "anomaly": "normal_score"}


def default_monitor(task: TaskSpec | str) -> str:
    """The metric that selects the best epoch for a task kind."""
    kind = task.kind if isinstance(task, TaskSpec) else task
    if kind not in _MONITORS:
        raise ConfigError(f"unknown task kind {kind!r}; expected one of {', '.join(_MONITORS)}")
    return _MONITORS[kind]


def metric_mode(name: str) -> str:
    """``"min"`` or ``"max"`` for a metric name, including per-label names like ``f1_happy``."""
    if name in METRIC_MODES:
        return METRIC_MODES[name]
    for prefix in PER_LABEL_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return "max"
    raise ConfigError(
        f"unknown metric {name!r}; known: {', '.join(METRIC_MODES)} and per-label acc_<name>, f1_<name>, wacc_<name>, auc_<name>"
    )


# ---------------------------------------------------------------------- input checks
def _array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{what} are not numeric (dtype {a.dtype})")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        raise DataError(f"{what} contain {n_nan} NaN and {int(bad.sum()) - n_nan} inf values")
    return a


def _pair(pred: Any, y: Any, pred_ndim: int, y_ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets as float arrays of the given ranks and equal length."""
    p = _array(pred, "predictions")
    t = _array(y, "targets")
    for a, nd, what in ((p, pred_ndim, "predictions"), (t, y_ndim, "targets")):
        if nd == 1 and a.ndim == 2 and a.shape[1] == 1:
            continue
        if a.ndim != nd:
            raise DataError(f"{what} have shape {a.shape}; expected {nd} dimension(s)")
    if pred_ndim == 1 and p.ndim == 2:
        p = p[:, 0]
    if y_ndim == 1 and t.ndim == 2:
        t = t[:, 0]
    if p.shape[0] != t.shape[0]:
        raise DataError(f"predictions have {p.shape[0]} samples but targets have {t.shape[0]}")
    if p.shape[0] == 0:
        raise DataError("no samples to evaluate")
    return p, t


def _binary_acc(t: np.ndarray, p: np.ndarray) -> float:
    """Accuracy of boolean predictions (scikit-learn's ``accuracy_score``)."""
    return float(np.mean(t == p))


def _f1w(t: np.ndarray, p: np.ndarray) -> float:
    """Support-weighted F1 of boolean labels over the classes present in ``t`` or ``p``, with
    ``zero_division=0``: scikit-learn's ``f1_score(t, p, average="weighted", zero_division=0)``,
    the same formula (2 tp / (true + predicted), then ``np.average`` weighted by true counts),
    computed from the two classes' counts. It runs after every epoch; sklearn's input checks
    made it 5 ms a call there, more than validating the model."""
    t, p = np.asarray(t, dtype=bool), np.asarray(p, dtype=bool)
    scores, support = [], []
    for cls_t, cls_p in ((~t, ~p), (t, p)):
        true, pred = int(cls_t.sum()), int(cls_p.sum())
        if true == 0 and pred == 0:
            continue  # the class occurs nowhere: not one of the labels
        tp = int((cls_t & cls_p).sum())
        scores.append(2.0 * tp / (true + pred))
        support.append(true)
    return float(np.average(np.array(scores), weights=np.array(support, dtype=np.float64))) if sum(support) else 0.0


# ---------------------------------------------------------------------- metrics
def regression_metrics(pred: Any, y: Any) -> dict[str, float]:
    """MAE, MSE, Pearson ``corr``, ``acc7``, ``acc5`` and the has0/non0 binary accuracies and weighted F1s."""
    p, t = _pair(pred, y, 1, 1)
    out = {"mae": float(np.mean(np.abs(p - t))), "mse": float(np.mean((p - t) ** 2))}
    if np.ptp(p) == 0 or np.ptp(t) == 0 or p.shape[0] < 2:
        out["corr"] = 0.0
    else:
        out["corr"] = float(pearsonr(p, t).statistic)
    out["acc7"] = float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(t, -3, 3))))
    out["acc5"] = float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(t, -2, 2))))
    ph, th = p >= 0, t >= 0
    out["acc2_has0"] = _binary_acc(th, ph)
    out["f1_has0"] = _f1w(th, ph)
    nz = t != 0
    if nz.any():
        pn, tn = p[nz] > 0, t[nz] > 0
        out["acc2_non0"] = _binary_acc(tn, pn)
        out["f1_non0"] = _f1w(tn, pn)
    else:
        out["acc2_non0"] = out["f1_non0"] = float("nan")
    return out


def classification_metrics(prediction: Any, y: Any, num_classes: int) -> dict[str, float]:
    """``accuracy``, ``f1_weighted`` and ``f1_macro`` (``zero_division=0``), and for ``(N, C)`` logits
    ``nll``, the mean cross-entropy (a smooth score: on a small validation split it selects epochs
    with less noise than accuracy, which moves in steps of 1/N).

    ``prediction`` is ``(N, C)`` logits (argmax is taken) or ``(N,)`` class labels. Macro F1
    averages over the classes that occur in the targets or the predictions (scikit-learn's default).
    """
    p = _array(prediction, "predictions")
    if p.ndim == 2:
        if p.shape[1] != num_classes:
            raise DataError(f"predictions have {p.shape[1]} columns for {num_classes} classes")
        labels = p.argmax(1)
    elif p.ndim == 1:
        if not np.array_equal(p, np.round(p)):
            raise DataError("1-d predictions must be class labels (whole numbers); pass (N, C) logits otherwise")
        labels = p.astype(np.int64)
    else:
        raise DataError(f"predictions have shape {p.shape}; expected (N, C) or (N,)")
    _, t = _pair(labels, y, 1, 1)
    t = t.astype(np.int64)
    if (t < 0).any() or (t >= num_classes).any():
        raise DataError(f"targets out of range: found {int(t.min())}..{int(t.max())}, expected 0..{num_classes - 1}")
    out = {
        "accuracy": float(accuracy_score(t, labels)),
        "f1_weighted": float(f1_score(t, labels, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(t, labels, average="macro", zero_division=0)),
    }
    if p.ndim == 2:
        from scipy.special import log_softmax

        out["nll"] = float(-log_softmax(p.astype(np.float64), axis=1)[np.arange(t.shape[0]), t].mean())
    return out


def _weighted_accuracy(t: np.ndarray, p: np.ndarray) -> float:
    """``(TP * N / P + TN) / (2N)`` with P positives and N negatives in ``t``; NaN if either is 0."""
    pos, neg = float(t.sum()), float((~t).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    tp = float((t & p).sum())
    tn = float((~t & ~p).sum())
    return (tp * neg / pos + tn) / (2 * neg)


def _nanmean(values: Sequence[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    return float(np.mean(a[~np.isnan(a)])) if (~np.isnan(a)).any() else float("nan")


def multilabel_metrics(logits: Any, y: Any, label_names: Sequence[str]) -> dict[str, float]:
    """Per label (a label is predicted when its logit > 0): ``acc_<name>``,
    ``f1_<name>`` (weighted binary F1, as MulT reports for IEMOCAP),
    ``wacc_<name>`` and ``auc_<name>``; plus the means ``accuracy``, ``f1``,
    ``wacc`` and ``auc`` over labels."""
    p, t = _pair(logits, y, 2, 2)
    names = list(label_names)
    if p.shape[1] != len(names) or t.shape[1] != len(names):
        raise DataError(f"predictions have {p.shape[1]} and targets {t.shape[1]} columns for {len(names)} label names")
    if not np.isin(t, (0.0, 1.0)).all():
        raise DataError("multilabel targets must hold only 0 and 1")
    out: dict[str, float] = {}
    per: dict[str, list[float]] = {"acc": [], "f1": [], "wacc": [], "auc": []}
    for k, name in enumerate(names):
        tk, pk = t[:, k] > 0.5, p[:, k] > 0
        vals = {
            "acc": _binary_acc(tk, pk),
            "f1": _f1w(tk, pk),
            "wacc": _weighted_accuracy(tk, pk),
            "auc": float(roc_auc_score(tk, p[:, k])) if 0 < tk.sum() < tk.size else float("nan"),
        }
        for m, v in vals.items():
            out[f"{m}_{name}"] = v
            per[m].append(v)
    out["accuracy"] = float(np.mean(per["acc"]))
    out["f1"] = float(np.mean(per["f1"]))
    out["wacc"] = _nanmean(per["wacc"])
    out["auc"] = _nanmean(per["auc"])
    return out


def anomaly_metrics(scores: Any, y: Any) -> dict[str, float]:
    """``auc`` of the scores (higher = more anomalous), ``f1`` when the k
    highest-scoring samples are flagged, k = number of true anomalies, and
    ``normal_score``, the mean score of the normal samples (NaN without any): on a
    validation split of normal data only it needs no anomaly label, and for a
    one-class model (Deep SVDD) it is the one-class loss on held-out normal data.

    Ties at the threshold are broken by sample order: a stable sort on the
    negated score flags the earlier of two equal-scoring samples first.
    """
    s, t = _pair(scores, y, 1, 1)
    if not np.isin(t, (0.0, 1.0)).all():
        raise DataError("anomaly targets must hold only 0 (normal) and 1 (anomaly)")
    truth = t > 0.5
    k = int(truth.sum())
    auc = float(roc_auc_score(truth, s)) if 0 < k < truth.size else float("nan")
    normal = float(s[~truth].mean()) if k < truth.size else float("nan")
    if k == 0:
        return {"auc": auc, "f1": float("nan"), "normal_score": normal}
    flagged = np.zeros_like(truth)
    flagged[np.argsort(-s, kind="stable")[:k]] = True
    return {"auc": auc, "f1": float(f1_score(truth, flagged, zero_division=0)), "normal_score": normal}


def compute_metrics(task: TaskSpec, prediction: Any, y: Any) -> dict[str, float]:
    """All metrics of ``task.kind`` for a model's outputs.

    ``prediction``: regression ``(N,)`` (or ``(N, 1)``) values; binary/multiclass
    ``(N, C)`` logits; multilabel ``(N, L)`` logits (threshold 0); anomaly ``(N,)``
    scores.
    """
    if task.kind == "regression":
        return regression_metrics(prediction, y)
    if task.kind in ("binary", "multiclass"):
        assert task.num_classes is not None
        return classification_metrics(prediction, y, task.num_classes)
    if task.kind == "multilabel":
        return multilabel_metrics(prediction, y, task.label_names)
    if task.kind == "anomaly":
        return anomaly_metrics(prediction, y)
    raise ConfigError(f"unknown task kind {task.kind!r}")


def format_metrics(metrics: Mapping[str, float], digits: int = 4) -> str:
    """One line ``name=value`` per metric, for logs."""
    return " ".join(f"{k}={v:.{digits}f}" for k, v in metrics.items())
