import pytest
import torch

from mmib.data import load_dataset
from mmib.data.anomaly import make_sim_anomaly
from mmib.errors import DataError

SMALL = {"n_samples": 2000, "shared_dim": 8, "superfluous_dim": 8, "a1_dim": 12, "a2_dim": 4}


@pytest.mark.parametrize("mode", ["scale", "mismatch", "class"])
def test_splits_hold_normals_in_train_and_valid_and_the_fraction_in_test(mode):
    ds = make_sim_anomaly(mode=mode, anomaly_fraction=0.2, **SMALL)
    assert ds.task.kind == "anomaly"
    # one-class protocol: training and validation data are normal; only the test split has anomalies
    assert int(ds.y[ds.splits["train"]].sum()) == 0 and int(ds.y[ds.splits["valid"]].sum()) == 0
    assert float(ds.y[ds.splits["test"]].float().mean()) == pytest.approx(0.2, abs=0.02)
    old = make_sim_anomaly(mode=mode, anomaly_fraction=0.2, valid_anomaly_fraction=0.1, **SMALL)  # earlier protocol
    assert float(old.y[old.splits["valid"]].float().mean()) == pytest.approx(0.1, abs=0.02)
    assert float(old.y[old.splits["test"]].float().mean()) == pytest.approx(0.2, abs=0.02)
    with pytest.raises(DataError, match="valid_anomaly_fraction"):
        make_sim_anomaly(mode=mode, valid_anomaly_fraction=1.0, **SMALL)


def test_mismatch_breaks_only_the_shared_parts():
    ds = make_sim_anomaly(mode="mismatch", **SMALL)
    x1, x2, y = ds.features["x1"], ds.features["x2"], ds.y
    shared = slice(0, 16)
    same = (x1[:, shared] == x2[:, shared]).all(1)
    assert bool(same[y == 0].all()) and not bool(same[y == 1].any())
    # each modality alone keeps its N(0, 1) marginals
    assert float(x2[y == 1][:, shared].std()) == pytest.approx(1.0, abs=0.15)


def test_scale_inflates_the_relevant_parts_only():
    ds = make_sim_anomaly(mode="scale", anomaly_scale=3.0, **SMALL)
    gt, y = ds.ground_truth, ds.y
    assert float(gt.get(ds, "a1")[y == 1].std()) == pytest.approx(3.0, rel=0.15)
    assert float(gt.get(ds, "b1")[y == 1].std()) == pytest.approx(1.0, rel=0.15)
    assert torch.equal(ds.features["x1"][:, :8], ds.features["x2"][:, :8])  # a0 stays shared
    assert gt.relevant == ("a0", "a1", "a2")


def test_registered_and_validated():
    ds = load_dataset("sim-anomaly", **SMALL)
    assert ds.name == "sim-anomaly" and ds.standardizer is not None
    with pytest.raises(DataError, match="mode"):
        make_sim_anomaly(mode="odd", **SMALL)
    with pytest.raises(DataError, match="anomaly_fraction"):
        make_sim_anomaly(anomaly_fraction=1.0, **SMALL)


def test_sim_anomaly_oracle():
    from scipy.stats import f as f_dist

    from mmib.eval.metrics import compute_metrics

    for mode in ("mismatch", "class"):
        ds = make_sim_anomaly(3000, mode=mode, seed=2)
        test = ds.splits["test"]
        assert compute_metrics(ds.task, ds.meta["oracle"][test], ds.y[test])["auc"] == 1.0
    # scale: |a|^2 is chi^2_d for normal rows and s^2 chi^2_d for anomalies, so the oracle's AUC is
    # P(Y / X < s^2) for independent chi^2_d X, Y: the F(d, d) CDF at s^2.
    ds = make_sim_anomaly(20_000, mode="scale", anomaly_scale=1.06, seed=3, shared_dim=20, a1_dim=20, a2_dim=20,
                          anomaly_fraction=0.3)
    rows = torch.cat([ds.splits["valid"], ds.splits["test"]])
    auc = compute_metrics(ds.task, ds.meta["oracle"][rows], ds.y[rows])["auc"]
    assert auc == pytest.approx(f_dist.cdf(1.06**2, 60, 60), abs=0.015)
    assert 0.6 < auc < 0.75
