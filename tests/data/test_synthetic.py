import pytest
import torch

from mmib.data.synthetic import SIM_VARIANTS, make_sim, make_sim_msa
from mmib.errors import DataError


@pytest.mark.parametrize("variant", list(SIM_VARIANTS))
def test_sim_layout_labels_and_ground_truth(variant):
    ds = make_sim(variant, n_samples=500, seed=3)
    a1, a2 = SIM_VARIANTS[variant]
    assert ds.features["x1"].shape == (500, 200 + 200 + a1 + 200)
    assert ds.features["x2"].shape == (500, 200 + 200 + a2 + 200)
    gt = ds.ground_truth
    assert set(gt.parts) == {"a0", "b0", "a1", "b1", "a2", "b2"}
    assert gt.relevant == ("a0", "a1", "a2")
    assert gt.get(ds, "a1").shape == (500, a1) and gt.get(ds, "a2").shape == (500, a2)
    # shared parts are identical in both modalities
    assert torch.equal(ds.features["x1"][:, :400], ds.features["x2"][:, :400])
    # y = 1[<delta, [a0; a1; a2]> > 0]
    r = torch.cat([gt.get(ds, "a0"), gt.get(ds, "a1"), gt.get(ds, "a2")], dim=1)
    assert torch.equal(ds.y, (r @ ds.meta["delta"] > 0).long())
    assert 0.35 < ds.y.float().mean() < 0.65
    # 9:1 train/test, validation carved from train
    assert ds.split_size("test") == 50 and ds.split_size("valid") == 45 and ds.split_size("train") == 405


def test_sim_is_seeded():
    a, b, c = make_sim("sim-iii", 100, seed=1), make_sim("sim-iii", 100, seed=1), make_sim("sim-iii", 100, seed=2)
    assert torch.equal(a.features["x1"], b.features["x1"]) and torch.equal(a.y, b.y)
    assert not torch.equal(a.features["x1"], c.features["x1"])
    assert torch.equal(a.splits["test"], b.splits["test"])


def test_sim_bad_arguments():
    with pytest.raises(DataError, match="unknown SIM variant"):
        make_sim("sim-iv", 100)
    with pytest.raises(DataError, match="n_samples"):
        make_sim("sim-i", 3)


def test_sim_msa_defaults_mimic_mosi():
    ds = make_sim_msa(seed=0)
    assert {m: x.shape[1] for m, x in ds.features.items()} == {"text": 128, "audio": 74, "vision": 47}
    assert (ds.split_size("train"), ds.split_size("valid"), ds.split_size("test")) == (1284, 229, 686)
    assert ds.task.kind == "regression"
    assert float(ds.y.abs().max()) < 3.0
    assert 1.0 < float(ds.y.std()) < 2.2
    parts = ds.ground_truth.parts
    for m in ("text", "audio", "vision"):
        assert f"{m}_specific" in parts and f"{m}_superfluous" in parts
    assert ds.ground_truth.relevant[0] == "shared"
    # text carries the largest specific part
    sizes = {m: ds.ground_truth.get(ds, f"{m}_specific").shape[1] for m in ("text", "audio", "vision")}
    assert sizes["text"] > sizes["audio"] and sizes["text"] > sizes["vision"]


def test_sim_msa_label_is_a_function_of_the_relevant_parts():
    ds = make_sim_msa(n_train=200, n_valid=0, n_test=100, seed=5)
    r = torch.cat([ds.ground_truth.get(ds, k) for k in ds.ground_truth.relevant], dim=1)
    target = torch.atanh(ds.y / 3.0)
    coef = torch.linalg.lstsq(r, target.unsqueeze(1)).solution
    assert float((r @ coef).squeeze(1).sub(target).abs().max()) < 1e-3
    # text is the least noisy modality: a linear fit from text explains y best
    def r2(x):
        x1 = torch.cat([x, torch.ones(len(x), 1)], 1)
        res = target - (x1 @ torch.linalg.lstsq(x1, target.unsqueeze(1)).solution).squeeze(1)
        return 1 - float(res.var() / target.var())
    assert r2(ds.features["text"]) > r2(ds.features["audio"]) and r2(ds.features["text"]) > r2(ds.features["vision"])


def test_sim_msa_sequences_have_lengths_and_zero_padding():
    ds = make_sim_msa(n_train=50, n_valid=10, n_test=10, seed=0, seq_len=12)
    assert ds.features["audio"].shape == (70, 12, 74)
    assert (ds.lengths["text"] == 12).all()
    for m in ("audio", "vision"):
        ln = ds.lengths[m]
        assert int(ln.min()) >= 6 and int(ln.max()) <= 12
        i = int(ln.argmin())
        assert float(ds.features[m][i, int(ln[i]):].abs().sum()) == 0.0
    with pytest.raises(DataError, match="seq_len"):
        make_sim_msa(seq_len=1)
