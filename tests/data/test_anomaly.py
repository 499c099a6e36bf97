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
