"""The ``linear`` reference model against scikit-learn fitted on the same pooled arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss

from mmib.api import load_run, train
from mmib.config import TrainConfig
from mmib.data.dataset import MultimodalDataset, TaskSpec
from mmib.errors import ConfigError
from mmib.eval.metrics import compute_metrics
from mmib.models.registry import build_model
from mmib.train.engine import Trainer, predict

ALPHAS = [0.01, 1.0, 100.0]


def _data(task: TaskSpec, n: int = 240, seed: int = 0) -> MultimodalDataset:
    """A vector modality and a padded sequence modality (lengths 0..6) with a linear signal in both."""
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(n, 5)).astype(np.float32)
    seq = rng.normal(size=(n, 6, 3)).astype(np.float32)
    lengths = rng.integers(0, 7, size=n)
    seq[np.arange(6)[None, :] >= lengths[:, None]] = 0.0
    pooled_seq = seq.sum(1) / np.maximum(lengths, 1)[:, None]
    score = vec @ rng.normal(size=5) + 2.0 * pooled_seq @ rng.normal(size=3) + 0.5 * rng.normal(size=n)
    if task.kind == "regression":
        y = score.astype(np.float32)
    elif task.kind == "binary":
        y = (score > 0).astype(np.int64)
    elif task.kind == "multiclass":
        y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(np.int64)
    else:  # multilabel: two labels, the second one constant
        y = np.stack([(score > 0), np.ones(n, dtype=bool)], 1).astype(np.float32)
    order = rng.permutation(n)
    splits = {"train": np.sort(order[:160]), "valid": np.sort(order[160:200]), "test": np.sort(order[200:])}
    return MultimodalDataset("toy", {"v": vec, "s": seq}, y, task, splits, lengths={"s": lengths})


def _pooled(ds: MultimodalDataset, split: str) -> np.ndarray:
    """The pooled features computed independently of the model: vector, then masked mean of the sequence."""
    idx = ds.splits[split].numpy()
    seq = ds.features["s"].numpy()[idx]
    lengths = ds.lengths["s"].numpy()[idx]
    mask = np.arange(seq.shape[1])[None, :] < lengths[:, None]
    mean = (seq * mask[..., None]).sum(1) / np.maximum(mask.sum(1), 1)[:, None]
    return np.concatenate([ds.features["v"].numpy()[idx], mean], axis=1).astype(np.float64)


def _fit(ds: MultimodalDataset, **options) -> torch.nn.Module:
    model = build_model("linear", ds.spec, alphas=ALPHAS, **options)
    Trainer(model, ds, TrainConfig(progress=False)).fit()
    return model


def _standardised(ds: MultimodalDataset) -> dict[str, np.ndarray]:
    train = _pooled(ds, "train")
    mean, std = train.mean(0), train.std(0)
    return {s: (_pooled(ds, s) - mean) / std for s in ("train", "valid", "test")}


def _y(ds: MultimodalDataset, split: str) -> np.ndarray:
    return ds.y.numpy()[ds.splits[split].numpy()]


def test_ridge_matches_sklearn_with_the_penalty_chosen_on_valid():
    ds = _data(TaskSpec("regression"))
    x = _standardised(ds)
    maes = {a: np.abs(Ridge(alpha=a).fit(x["train"], _y(ds, "train")).predict(x["valid"]) - _y(ds, "valid")).mean()
            for a in ALPHAS}
    alpha = min(maes, key=maes.get)
    ref = Ridge(alpha=alpha).fit(x["train"], _y(ds, "train"))
    model = _fit(ds)
    assert float(model.alpha) == alpha
    got = predict(model, ds, "test").prediction.numpy()
    np.testing.assert_allclose(got, ref.predict(x["test"]), rtol=1e-4, atol=1e-4)
    # coefficients on the standardised pooled features
    np.testing.assert_allclose(model.linear.weight.detach().numpy()[0], ref.coef_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_logistic_regression_matches_sklearn(kind):
    task = TaskSpec(kind, num_classes=3 if kind == "multiclass" else None)
    ds = _data(task)
    x = _standardised(ds)
    # the penalty with the lowest validation cross-entropy (the default monitor of classes; ties: the larger)
    nll = {a: log_loss(_y(ds, "valid"), LogisticRegression(C=1 / a, max_iter=2000).fit(x["train"], _y(ds, "train"))
                       .predict_proba(x["valid"]), labels=np.arange(task.output_dim)) for a in ALPHAS}
    alpha = min(sorted(ALPHAS, reverse=True), key=lambda a: nll[a])
    ref = LogisticRegression(C=1 / alpha, max_iter=2000).fit(x["train"], _y(ds, "train"))
    model = _fit(ds)
    assert float(model.alpha) == alpha
    logits = predict(model, ds, "test").prediction
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), ref.predict_proba(x["test"]), atol=1e-4)
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), ref.predict(x["test"]))


def test_multilabel_fits_one_logistic_regression_per_label_and_a_constant_label_stays_constant():
    task = TaskSpec("multilabel", label_names=("pos", "always"))
    ds = _data(task)
    x = _standardised(ds)
    model = _fit(ds, alpha=1.0)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(x["train"], _y(ds, "train")[:, 0])
    logits = predict(model, ds, "test").prediction
    np.testing.assert_allclose(torch.sigmoid(logits[:, 0]).numpy(), ref.predict_proba(x["test"])[:, 1], atol=1e-4)
    assert (logits[:, 1] > 10).all()  # the label is 1 on every training sample


def test_anomaly_score_is_the_mahalanobis_distance_to_the_normal_training_data():
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64)
    test = np.arange(200, 300)
    y[test[:20]] = 1
    x[test[:20]] += 4.0  # anomalies are far from the normal data
    y[np.arange(150, 160)] = 1  # labelled anomalies in valid are not used to fit
    x[np.arange(150, 160)] += 4.0
    splits = {"train": np.arange(150), "valid": np.arange(150, 200), "test": test}
    ds = MultimodalDataset("toy", {"m": x}, y, TaskSpec("anomaly"), splits)
    model = _fit(ds, alpha=0.1)
    xt = x[:150].astype(np.float64)
    mu, sd = xt.mean(0), xt.std(0)
    z = (xt - mu) / sd
    prec = np.linalg.inv(np.cov(z, rowvar=False) + 0.1 * np.eye(4))
    zt = (x[test] - mu) / sd
    expected = np.einsum("nd,de,ne->n", zt, prec, zt)
    got = predict(model, ds, "test").prediction.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    assert compute_metrics(ds.task, torch.as_tensor(got), ds.y[test])["auc"] > 0.99


def test_linear_goes_through_the_run_directory_like_every_model(tmp_path):
    out = tmp_path / "run"
    result = train(model="linear", data="sim-msa", out=out, progress=False,
                   data_options={"n_train": 300, "n_valid": 60, "n_test": 100})
    assert result.results["epochs_run"] == 0 and result.results["train_seconds"] > 0
    assert (out / "metrics.jsonl").read_text() == "" and (out / "config.yaml").is_file()
    run = load_run(out)
    again = predict(run.model, run.dataset(), "test").prediction
    first = predict(result.model, run.dataset(), "test").prediction
    assert torch.allclose(again, first)
    assert result.test["mae"] < 1.2  # the label std of sim-msa is about 1.45: the fit explains much of it


def test_without_a_valid_split_the_penalty_is_chosen_by_cross_validation():
    ds = _data(TaskSpec("regression"))
    ds.splits["train"] = torch.cat([ds.splits["train"], ds.splits["valid"]]).sort().values
    ds.splits["valid"] = torch.zeros(0, dtype=torch.long)
    model = _fit(ds)
    assert float(model.alpha) in ALPHAS


@pytest.mark.parametrize("options", [{"alpha": -1.0}, {"alphas": []}, {"alphas": [1.0, 0.0]}, {"max_iter": 0}])
def test_bad_options_are_errors(options):
    ds = _data(TaskSpec("regression"))
    with pytest.raises(ConfigError, match="linear"):
        build_model("linear", ds.spec, **options)
