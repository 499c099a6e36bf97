"""``linear``: the yardstick every results table carries.

Ridge regression (regression), L2-penalised logistic regression (binary and
multi-class; one model per label for multi-label), fitted in closed form or by
L-BFGS with scikit-learn on the pooled features of all modalities; for anomaly
detection (one-class training data) the Gaussian analogue: the squared
Mahalanobis distance to the training mean under the shrunk covariance
``S + alpha I``. Features:

* each modality is reduced to one vector per sample: vectors as they are,
  padded sequences by the mean over their valid steps (a missing modality,
  length 0, gives zeros);
* the concatenated pooled vector is standardised with the training split's
  mean and standard deviation (kept as buffers, so new inputs are scaled the
  same way);
* the penalty is chosen on the validation split from a log grid (``alphas``;
  ``C = 1 / alpha`` for logistic regression) by the run's monitor metric
  (MAE for regression, accuracy for classes, F1 for multi-label); without a
  validation split, by 5-fold cross-validation on the training split;
  ``alpha=...`` fixes it. For anomaly detection the shrinkage is chosen without
  anomaly labels' help beyond knowing which validation samples are normal: by the
  Gaussian log-likelihood of the normal validation samples (the one-class protocol).

It is an ordinary registered model: the engine calls :meth:`on_fit_start`
(where the fit happens) and runs no gradient epochs (its training plan is a
single phase of zero epochs), then saves, evaluates and writes the run
directory as for every other model. The fitted coefficients are the weights of
one ``nn.Linear``, so the saved weights, ``mmib eval``/``predict``/``robust`` and
parameter counts need nothing special.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from mmib.data.dataset import Batch, DatasetSpec, TaskSpec
from mmib.errors import ConfigError, DataError
from mmib.eval.metrics import compute_metrics, default_monitor, metric_mode
from mmib.models.base import FitContext, ModelOutput, MultimodalModel, Phase
from mmib.models.registry import register_model
from mmib.nn.encoders import masked_mean

if TYPE_CHECKING:
    from mmib.config import TrainConfig
    from mmib.data.dataset import MultimodalDataset

#: The default penalty grid: 10^-3 .. 10^5 in half decades (17 values).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 5, 17))

#: Logit given to a label that is constant in the training split (multi-label).
CONSTANT_LOGIT = 20.0


def pool_batch(batch: Batch, names: tuple[str, ...]) -> Tensor:
    """Concatenate each modality's vector, sequences as the mean over their valid steps: ``(B, sum D)``."""
    parts = []
    for m in names:
        x = batch.features[m]
        if x.dim() == 3:
            x = masked_mean(x, batch.lengths.get(m))
        else:
            presence = batch.lengths.get(m)
            if presence is not None:
                x = x * (presence > 0).unsqueeze(1).to(x.dtype)
        parts.append(x)
    return torch.cat(parts, dim=-1)


def pooled_split(dataset: "MultimodalDataset", split: str, names: tuple[str, ...], batch_size: int = 4096) -> np.ndarray:
    """The pooled features of one split as a float64 array (rows in split order)."""
    chunks = [pool_batch(b, names) for b in dataset.batches(split, batch_size, with_target=False)]
    if not chunks:
        return np.zeros((0, sum(dataset.spec[m].dim for m in names)))
    return torch.cat(chunks).double().numpy()


@register_model(
    "linear",
    "reference: ridge / L2 logistic regression on mean-pooled, standardised features, penalty chosen on valid",
    tasks=("regression", "binary", "multiclass", "multilabel", "anomaly"),
)
class LinearReference(MultimodalModel):
    """Ridge or logistic regression on pooled features (see the module docstring)."""

    ensemble_unsupported = "it is fitted in closed form when training starts (no epochs to share)"

    @dataclass
    class Options:
        """``alphas``: the penalty grid searched on the validation split (ridge alpha; logistic
        ``C = 1 / alpha``). ``alpha``: a fixed penalty instead of the search. ``max_iter``:
        L-BFGS iterations of each logistic fit."""

        alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
        alpha: float | None = None
        max_iter: int = 2000

    def __init__(self, spec: DatasetSpec, options: "LinearReference.Options") -> None:
        super().__init__(spec, options)
        if options.alpha is not None and not (options.alpha > 0 and math.isfinite(options.alpha)):
            raise ConfigError(f"linear: alpha must be a positive number, got {options.alpha}")
        if options.alpha is None and (not options.alphas or any(not (a > 0 and math.isfinite(a)) for a in options.alphas)):
            raise ConfigError(f"linear: alphas must be a non-empty list of positive numbers, got {options.alphas}")
        if options.max_iter < 1:
            raise ConfigError(f"linear: max_iter must be >= 1, got {options.max_iter}")
        width = sum(m.dim for m in spec.modalities)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("alpha", torch.tensor(float("nan"), dtype=torch.float64))  # the chosen penalty, saved with the weights
        self.linear = nn.Linear(width, spec.task.output_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if spec.task.kind == "anomaly":  # the Mahalanobis reference: centre and precision of the normal data
            self.register_buffer("precision", torch.eye(width))

    # ------------------------------------------------------------------ inference
    def forward(self, batch: Batch) -> ModelOutput:
        pooled = (pool_batch(batch, self.spec.names) - self.mean) / self.scale
        if self.task.kind == "anomaly":
            return ModelOutput(((pooled @ self.precision) * pooled).sum(-1), pooled)
        raw = self.linear(pooled)
        prediction = raw.squeeze(-1) if self.task.kind == "regression" else raw
        return ModelOutput(prediction, pooled)

    # ------------------------------------------------------------------ fitting
    def training_plan(self, config: "TrainConfig") -> list[Phase]:
        """No gradient epochs: the fit happens in :meth:`on_fit_start`."""
        return [Phase("fit", [], epochs=0)]

    def on_fit_start(self, context: FitContext) -> None:
        ds = context.dataset
        names = self.spec.names
        x_train = pooled_split(ds, "train", names)
        y_train = ds.y.index_select(0, ds.splits["train"]).numpy()
        mean = x_train.mean(0)
        scale = x_train.std(0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        standardise = lambda x: (x - mean) / scale  # noqa: E731
        xs = standardise(x_train)
        has_valid = ds.split_size("valid") > 0
        if self.task.kind == "anomaly":
            self._fit_gaussian(ds, xs, mean, scale, standardise, has_valid)
            return
        monitor = context.config.monitor or default_monitor(self.task)
        if self.options.alpha is not None:
            alpha = float(self.options.alpha)
        elif has_valid:
            x_valid = standardise(pooled_split(ds, "valid", names))
            y_valid = ds.y.index_select(0, ds.splits["valid"])
            alpha = self._select_alpha(xs, y_train, x_valid, y_valid, monitor)
        else:
            alpha = self._select_alpha_cv(xs, y_train, monitor)
        weight, bias = fit_linear(self.task, xs, y_train, alpha, self.options.max_iter)
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            self.alpha.fill_(alpha)
            self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def _fit_gaussian(self, ds: "MultimodalDataset", xs: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                      standardise: object, has_valid: bool) -> None:
        """Anomaly task: precision ``(S + alpha I)^-1`` of the (normal) training data, alpha chosen by the
        Gaussian log-likelihood of the normal validation samples (or fixed / 1.0 without them)."""
        y_train = ds.y.index_select(0, ds.splits["train"]).numpy()
        normal = xs[y_train == 0] if (y_train == 0).any() else xs
        centre = normal.mean(0)
        cov = np.cov(normal - centre, rowvar=False).reshape(xs.shape[1], xs.shape[1])
        alpha = self.options.alpha
        if alpha is None:
            alpha = 1.0
            if has_valid:
                x_valid = standardise(pooled_split(ds, "valid", self.spec.names))  # type: ignore[operator]
                y_valid = ds.y.index_select(0, ds.splits["valid"]).numpy()
                held = x_valid[y_valid == 0] - centre
                if held.shape[0]:
                    alpha = max(self.options.alphas, key=lambda a: _gaussian_loglik(cov, a, held))
        precision = np.linalg.inv(cov + float(alpha) * np.eye(cov.shape[0]))
        with torch.no_grad():
            # the centre is folded into the standardisation: forward computes (x - mean) / scale - 0
            self.mean.copy_(torch.as_tensor(mean + scale * centre, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            self.alpha.fill_(float(alpha))
            self.precision.copy_(torch.as_tensor(precision, dtype=torch.float32))

    def _score(self, weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: Tensor, monitor: str) -> float:
        raw = torch.as_tensor(x @ weight.T + bias, dtype=torch.float32)
        prediction = raw.squeeze(-1) if self.task.kind == "regression" else raw
        metrics = compute_metrics(self.task, prediction, y)
        if monitor not in metrics:
            raise ConfigError(f"monitor {monitor!r} is not a metric of this task; available: {', '.join(metrics)}")
        value = metrics[monitor]
        return value if metric_mode(monitor) == "max" else -value

    def _select_alpha(self, xs: np.ndarray, y: np.ndarray, x_valid: np.ndarray, y_valid: Tensor, monitor: str) -> float:
        """The grid value with the best validation monitor (the larger penalty on ties)."""
        best, best_alpha = -math.inf, None
        for alpha in sorted(self.options.alphas, reverse=True):
            w, b = fit_linear(self.task, xs, y, alpha, self.options.max_iter)
            score = self._score(w, b, x_valid, y_valid, monitor)
            if math.isfinite(score) and score > best:
                best, best_alpha = score, alpha
        if best_alpha is None:
            raise DataError("linear: no penalty of the grid gave a finite validation score")
        return float(best_alpha)

    def _select_alpha_cv(self, xs: np.ndarray, y: np.ndarray, monitor: str, folds: int = 5) -> float:
        """Without a validation split: the grid value with the best mean score over K folds of train."""
        from sklearn.model_selection import KFold

        n = xs.shape[0]
        if n < 2 * folds:
            return 1.0
        splits = list(KFold(folds, shuffle=True, random_state=0).split(xs))
        best, best_alpha = -math.inf, 1.0
        for alpha in sorted(self.options.alphas, reverse=True):
            scores = []
            for tr, va in splits:
                w, b = fit_linear(self.task, xs[tr], y[tr], alpha, self.options.max_iter)
                scores.append(self._score(w, b, xs[va], torch.as_tensor(y[va]), monitor))
            score = float(np.mean(scores))
            if math.isfinite(score) and score > best:
                best, best_alpha = score, alpha
        return float(best_alpha)


def _gaussian_loglik(cov: np.ndarray, alpha: float, held: np.ndarray) -> float:
    """Mean log-density (up to a constant) of centred samples ``held`` under N(0, cov + alpha I)."""
    sign, logdet = np.linalg.slogdet(cov + alpha * np.eye(cov.shape[0]))
    if sign <= 0:
        return -math.inf
    solved = np.linalg.solve(cov + alpha * np.eye(cov.shape[0]), held.T)
    return float(-0.5 * (logdet + np.mean(np.sum(held.T * solved, axis=0))))


def fit_linear(task: TaskSpec, x: np.ndarray, y: np.ndarray, alpha: float, max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Fit the task's linear model on standardised ``x``; returns ``(weight (out, D), bias (out,))``
    shaped like an ``nn.Linear`` whose outputs are mmib predictions (regression values, class
    logits, per-label logits)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    d = x.shape[1]
    if task.kind == "regression":
        ridge = Ridge(alpha=alpha).fit(x, y)
        return ridge.coef_.reshape(1, d), np.atleast_1d(ridge.intercept_).astype(np.float64)
    if task.kind not in ("binary", "multiclass", "multilabel"):
        raise ConfigError(f"linear: {task.kind} tasks are not supported")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task.kind == "multilabel":
            weights, biases = [], []
            for j in range(y.shape[1]):
                w, b = _binary_logit(x, y[:, j].astype(np.int64), alpha, max_iter)
                weights.append(w)
                biases.append(b)
            return np.stack(weights), np.array(biases)
        k = task.output_dim
        present = np.unique(y)
        if len(present) == 1:  # one class in train: predict it
            weight = np.zeros((k, d))
            bias = np.full(k, -CONSTANT_LOGIT)
            bias[int(present[0])] = CONSTANT_LOGIT
            return weight, bias
        clf = LogisticRegression(C=1.0 / alpha, max_iter=max_iter).fit(x, y)
        weight = np.zeros((k, d))
        bias = np.full(k, -CONSTANT_LOGIT)  # classes absent from train get a very low logit
        classes = clf.classes_.astype(np.int64)
        if len(classes) == 2:  # sklearn keeps one row for two classes: logit(second) - logit(first)
            weight[classes[1]], bias[classes[1]] = clf.coef_[0], clf.intercept_[0]
            weight[classes[0]], bias[classes[0]] = 0.0, 0.0
        else:
            weight[classes], bias[classes] = clf.coef_, clf.intercept_
        return weight, bias


def _binary_logit(x: np.ndarray, y: np.ndarray, alpha: float, max_iter: int) -> tuple[np.ndarray, float]:
    """One label's logistic regression as (weight, bias) of its logit; a constant label gets a constant logit."""
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():
        return np.zeros(x.shape[1]), CONSTANT_LOGIT if y[0] == 1 else -CONSTANT_LOGIT
    clf = LogisticRegression(C=1.0 / alpha, max_iter=max_iter).fit(x, y)
    return clf.coef_[0], float(clf.intercept_[0])
