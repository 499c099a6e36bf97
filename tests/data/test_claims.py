"""The claim sets: registered, seeded, probe-able; each oracle reaches its closed form and a model
that lacks the needed information does not reach the oracle."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mmib.data import list_datasets, load_dataset
from mmib.data.claims import (
    CLAIM_DATASETS,
    make_claim_corrupt,
    make_claim_entangled,
    make_claim_interaction,
    make_claim_shared,
    make_claim_spurious,
    make_sim_n,
)
from mmib.data.synthetic import make_sim, sim_subset_oracle
from mmib.errors import ConfigError, DataError
from mmib.eval.metrics import compute_metrics
from mmib.eval.probe import label_directions, probe_features


# ---------------------------------------------------------------------- helpers
def _x(ds, modalities=None):
    return torch.cat([ds.features[m] for m in (modalities or ds.modalities)], 1).double().numpy()


def _idx(ds, split):
    return ds.splits[split].numpy()


def _logistic_test_accuracy(ds, x):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr, va, te = (_idx(ds, s) for s in ("train", "valid", "test"))
    x = StandardScaler().fit(x[tr]).transform(x)
    y = ds.y.numpy()
    fits = [LogisticRegression(C=c, max_iter=2000).fit(x[tr], y[tr]) for c in (0.01, 0.1, 1.0)]
    return max(fits, key=lambda f: f.score(x[va], y[va])).score(x[te], y[te])


def _ridge_test_mae(ds, x):
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    tr, va, te = (_idx(ds, s) for s in ("train", "valid", "test"))
    x = StandardScaler().fit(x[tr]).transform(x)
    y = ds.y.numpy()
    fits = [Ridge(alpha=a).fit(x[tr], y[tr]) for a in np.logspace(-2, 4, 13)]
    best = min(fits, key=lambda f: float(np.abs(f.predict(x[va]) - y[va]).mean()))
    return float(np.abs(best.predict(x[te]) - y[te]).mean())


def _oracle_accuracy(ds, split="test"):
    idx = ds.splits[split]
    return compute_metrics(ds.task, ds.meta["oracle"][idx], ds.y[idx])["accuracy"]


def _check_binary_oracle_is_calibrated(ds, split="test"):
    """The oracle's accuracy equals what its own probabilities promise, mean max(p, 1 - p), within 4
    standard errors of the sum of independent Bernoulli outcomes."""
    idx = ds.splits[split]
    q = ds.meta["oracle"][idx].double().exp().max(1).values
    expected = float(q.mean())
    se = float((q * (1 - q)).sum().sqrt()) / idx.numel()
    empirical = _oracle_accuracy(ds, split)
    assert abs(empirical - expected) <= 4 * se + 1e-9, (empirical, expected, se)
    return empirical


def _gaussian_abs_dev(mu, sd, m):
    """E|Y - m| for Y ~ N(mu, sd^2): sd (2 phi(z) + z (2 Phi(z) - 1)), z = (mu - m) / sd."""
    z = (mu - m) / sd
    return sd * (2 * norm.pdf(z) + z * (2 * norm.cdf(z) - 1))


# ---------------------------------------------------------------------- registry and seeds
SMALL = {
    "claim-corrupt": {"n_train": 200, "n_valid": 50, "n_test": 50},
    "claim-spurious": {"n_train": 200, "n_valid": 50, "n_test": 50},
    "claim-entangled": {"n_train": 200, "n_valid": 50, "n_test": 50},
    "claim-interaction": {"n_train": 200, "n_valid": 50, "n_test": 50},
    "claim-shared": {"n_train": 200, "n_valid": 50, "n_test": 50},
    "sim-n": {"n_train": 150, "n_valid": 50, "n_test": 50, "shared_dim": 5, "a1_dim": 6, "a2_dim": 3,
              "superfluous_dim": 4},
}


def test_every_claim_set_is_registered_with_oracle_note_and_ground_truth():
    names = {e.name for e in list_datasets()}
    assert set(CLAIM_DATASETS) <= names
    for name in CLAIM_DATASETS:
        ds = load_dataset(name, seed=0, **SMALL[name])
        assert ds.name == name
        assert (ds.split_size("train"), ds.split_size("valid"), ds.split_size("test")) == (
            SMALL[name]["n_train"], 50, 50)
        oracle = ds.meta["oracle"]
        assert oracle.shape[0] == len(ds) and torch.isfinite(oracle).all()
        assert oracle.shape == ((len(ds),) if ds.task.kind == "regression" else (len(ds), 2))
        assert isinstance(ds.meta["oracle_note"], str) and ds.meta["oracle_note"]
        compute_metrics(ds.task, oracle[ds.splits["test"]], ds.y[ds.splits["test"]])  # the model-prediction form
        gt = ds.ground_truth
        assert gt is not None and gt.relevant and all(p in gt.parts for p in gt.relevant)
        for part in gt.parts:
            assert gt.get(ds, part).shape[0] == len(ds)
        # probe-able: the label direction splits over the relevant parts (mmib probe's r2_label)
        assert set(label_directions(ds)) == set(gt.relevant), name
        doc = CLAIM_DATASETS[name][0].__doc__ or ""
        assert "Claim tested" in doc and "Oracle" in doc and "Measured" in doc, name
    with pytest.raises(ConfigError, match="no option"):
        load_dataset("claim-corrupt", n_sample=10)


def test_a_probe_reads_the_relevant_parts_off_linear_features():
    ds = make_claim_interaction(n_train=1500, n_valid=10, n_test=500, seed=0)
    tr, te = ds.splits["train"], ds.splits["test"]
    x = torch.cat([ds.features["x1"], ds.features["x2"]], 1)
    res = {r.part: r for r in probe_features(ds, x[tr], tr, x[te], te)}
    assert res["x1_relevant"].r2_label > 0.8 and res["x2_relevant"].r2_label > 0.8  # s_m is linear in x_m (+ noise)
    only_x1 = {r.part: r for r in probe_features(ds, ds.features["x1"][tr], tr, ds.features["x1"][te], te)}
    assert only_x1["x2_relevant"].r2_label < 0.02


@pytest.mark.parametrize("name", list(CLAIM_DATASETS))
def test_claim_sets_are_reproducible_from_their_seed(name):
    loader = CLAIM_DATASETS[name][0]
    a, b, c = (loader(seed=s, **SMALL[name]) for s in (3, 3, 4))
    for m in a.features:
        assert torch.equal(a.features[m], b.features[m])
        assert not torch.equal(a.features[m], c.features[m])
    assert torch.equal(a.y, b.y) and torch.equal(a.meta["oracle"], b.meta["oracle"])
    for part in a.ground_truth.arrays:
        assert torch.equal(a.ground_truth.arrays[part], b.ground_truth.arrays[part])
    # the fixed structure (label direction) does not depend on the sizes
    bigger = loader(seed=3, **{**SMALL[name], "n_train": 300})
    key = "delta" if name == "sim-n" else "direction"
    assert torch.equal(a.meta[key], bigger.meta[key])


# ---------------------------------------------------------------------- (a) corruption
def test_corrupt_oracle_reaches_its_closed_form_and_linear_models_do_not():
    ds = make_claim_corrupt(n_train=3000, n_valid=500, n_test=4000, seed=1)
    test = ds.splits["test"]
    y, oracle = ds.y[test].double(), ds.meta["oracle"][test].double()
    mae = float((y - oracle).abs().mean())
    post = ds.meta["posterior"]
    w, mu, sd = (post[k][test].double().numpy() for k in ("weights", "means", "sds"))
    per_row = (w * _gaussian_abs_dev(mu, sd, oracle.numpy()[:, None])).sum(1)
    expected, se = float(per_row.mean()), float((y - oracle).abs().std()) / test.numel() ** 0.5
    assert abs(mae - expected) < 4 * se
    # the oracle is the posterior median: the mixture's CDF is 1/2 there
    cdf = (w * norm.cdf((oracle.numpy()[:, None] - mu) / sd)).sum(1)
    assert np.allclose(cdf, 0.5, atol=1e-6)
    # the corruption is easy to detect here: telling the oracle the pattern changes almost nothing
    known = float((y - ds.meta["oracle_known_pattern"][test].double()).abs().mean())
    assert abs(known - mae) < 0.01
    # any linear model must weight the modalities the same for every sample: far behind the oracle
    ridge = _ridge_test_mae(ds, _x(ds))
    population_linear = float((y - ds.meta["linear_oracle"][test].double()).abs().mean())
    assert ridge > mae + 0.2 and population_linear > mae + 0.2
    assert ridge > population_linear - 0.03  # the sample fit is no better than the population's linear optimum
    # pattern probes: the corruption flags are kept and follow the rates
    flags = ds.ground_truth.get(ds, "corrupted")
    assert flags.shape == (len(ds), 3) and abs(float(flags.mean()) - 0.3) < 0.02


def test_corrupt_without_corruption_is_one_gaussian_posterior():
    ds = make_claim_corrupt(n_train=100, n_valid=10, n_test=100, seed=0, corrupt_rates=(0.0, 0.0))
    assert torch.allclose(ds.meta["oracle"], ds.meta["oracle_known_pattern"], atol=1e-5)
    assert ds.modalities == ("x1", "x2") and ds.meta["posterior"]["weights"].shape[1] == 1
    with pytest.raises(DataError, match="corrupt_rates must lie"):
        make_claim_corrupt(corrupt_rates=(0.5, 1.5))
    with pytest.raises(DataError, match="1 to 6 modalities"):
        make_claim_corrupt(corrupt_rates=())
    with pytest.raises(DataError, match="clean_noise"):
        make_claim_corrupt(clean_noise=0.0)


# ---------------------------------------------------------------------- (b) spurious
def test_spurious_factor_predicts_y_in_train_only_and_costs_the_union():
    ds = make_claim_spurious(n_train=4000, n_valid=1000, n_test=4000, seed=0)
    u = ds.ground_truth.get(ds, "spurious")[:, 0]
    sign = 2 * ds.y.float() - 1
    for split, low, high in (("train", 0.85, 0.95), ("valid", -0.1, 0.1), ("test", -0.06, 0.06)):
        idx = ds.splits[split]
        c = float(torch.corrcoef(torch.stack([u[idx], sign[idx]]))[0, 1])
        assert low < c < high, (split, c)
        assert abs(float(u[idx].std()) - 1.0) < 0.08  # same variance everywhere: nothing but the link changes
    oracle = _check_binary_oracle_is_calibrated(ds, "test")
    _check_binary_oracle_is_calibrated(ds, "valid")
    union = _logistic_test_accuracy(ds, _x(ds))
    assert union < oracle - 0.06  # trained where u predicts y, the union model leans on it
    # the same data with u unlinked from y in train as well: only the training rows' u differs
    clean = make_claim_spurious(n_train=4000, n_valid=1000, n_test=4000, seed=0, spurious=0.0)
    assert torch.equal(clean.features["x1"], ds.features["x1"])
    assert torch.equal(clean.features["x2"][ds.splits["test"]], ds.features["x2"][ds.splits["test"]])
    assert union < _logistic_test_accuracy(clean, _x(clean)) - 0.04  # what the spurious link costs
    assert _logistic_test_accuracy(clean, _x(clean)) < oracle


# ---------------------------------------------------------------------- (c) entangled
def test_entangled_oracle_is_exact_and_beyond_a_linear_readout():
    ds = make_claim_entangled(n_train=4000, n_valid=1000, n_test=4000, seed=0)
    oracle = _check_binary_oracle_is_calibrated(ds)
    assert oracle > 0.88
    linear = _logistic_test_accuracy(ds, _x(ds))
    assert linear < oracle - 0.06
    # without the nonlinear term the same readout is nearly optimal: the gap is the entanglement
    flat = make_claim_entangled(n_train=4000, n_valid=1000, n_test=4000, seed=0, strength=0.0)
    assert _logistic_test_accuracy(flat, _x(flat)) > _oracle_accuracy(flat) - 0.03
    # the map is invertible: the features determine the latent parts (here: a least-squares check
    # that x has full rank, as the bijection requires)
    x = torch.cat([ds.features["x1"], ds.features["x2"]], 1).double()
    assert torch.linalg.matrix_rank(x - x.mean(0)) == x.shape[1]
    certain = make_claim_entangled(n_train=100, n_valid=10, n_test=400, seed=0, label_noise=0.0)
    assert _oracle_accuracy(certain) == 1.0


# ---------------------------------------------------------------------- (d) interaction
def test_interaction_needs_both_modalities_and_their_product():
    ds = make_claim_interaction(n_train=4000, n_valid=1000, n_test=4000, seed=0)
    oracle = _check_binary_oracle_is_calibrated(ds)
    assert oracle > 0.8
    se = (0.25 / 4000) ** 0.5
    assert abs(_logistic_test_accuracy(ds, _x(ds)) - 0.5) < 4 * se  # linear on the union: chance
    assert abs(_logistic_test_accuracy(ds, _x(ds, ["x1"])) - 0.5) < 4 * se  # one modality: chance
    products = (ds.features["x1"].unsqueeze(2) * ds.features["x2"].unsqueeze(1)).reshape(len(ds), -1)
    by_products = _logistic_test_accuracy(ds, products.double().numpy())
    assert 0.7 < by_products <= oracle + 4 * se  # the information is in the products
    assert ds.meta["unimodal_optimum"] == 0.5


# ---------------------------------------------------------------------- (e) shared signal
def test_shared_oracle_reaches_its_closed_form_and_fusion_matters():
    from mmib.data.oracle import gauss_hermite

    ds = make_claim_shared(n_train=2000, n_valid=500, n_test=4000, seed=0)
    test = ds.splits["test"]
    y, oracle = ds.y[test].double(), ds.meta["oracle"][test].double()
    mae = float((y - oracle).abs().mean())
    nodes, weights = gauss_hermite(64)
    mu = ds.meta["posterior"]["mean"][test].double().unsqueeze(1)
    sd = ds.meta["posterior"]["sd"][test].double().unsqueeze(1)
    per_row = (3 * torch.tanh(mu + sd * nodes) - oracle.unsqueeze(1)).abs() @ weights
    se = float((y - oracle).abs().std()) / test.numel() ** 0.5
    assert abs(mae - float(per_row.mean())) < 4 * se
    ridge_all = _ridge_test_mae(ds, _x(ds))
    ridge_text = _ridge_test_mae(ds, _x(ds, ["text"]))
    assert mae < ridge_all - 0.05 < ridge_text - 0.1
    # each modality's own nuisance explains most of its variance, the shared signal little
    assert ds.ground_truth.relevant == ("shared",)
    for m in ("text", "audio", "vision"):
        x = ds.features[m].double()
        def r2(part):
            z = ds.ground_truth.get(ds, part).double()
            fit = z @ torch.linalg.lstsq(z, x).solution
            return 1 - float((x - fit).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        assert r2(f"{m}_nuisance") > 0.55 and r2("shared") < 0.15


# ---------------------------------------------------------------------- (f) sim-n
def test_sim_n_nests_training_sets_and_keeps_valid_and_test_fixed():
    small = dict(seed=2, shared_dim=5, a1_dim=6, a2_dim=3, superfluous_dim=4, n_valid=30, n_test=40)
    a = make_sim_n(n_train=1500, **small)
    b = make_sim_n(n_train=2600, **small)
    for m in ("x1", "x2"):
        assert torch.equal(a.features[m][:1500], b.features[m][:1500])  # nested training rows
        assert torch.equal(a.features[m][a.splits["valid"]], b.features[m][b.splits["valid"]])
        assert torch.equal(a.features[m][a.splits["test"]], b.features[m][b.splits["test"]])
    assert torch.equal(a.meta["delta"], b.meta["delta"])
    assert torch.equal(a.features["x1"][:, :10], a.features["x2"][:, :10])  # a0 and b0 shared
    assert torch.equal(a.meta["oracle"].argmax(1), a.y)
    assert a.meta["subset_optimum"] == make_sim("sim-i", 10, seed=2, shared_dim=5, a1_dim=6, a2_dim=3,
                                                 superfluous_dim=4).meta["subset_optimum"]
    # a sample of the same law as make_sim: the subset oracles reach their closed forms
    big = make_sim_n(n_train=100, n_valid=10, n_test=20_000, seed=2, shared_dim=5, a1_dim=6, a2_dim=3,
                     superfluous_dim=4)
    test = big.splits["test"]
    for name, acc in big.meta["subset_optimum"].items():
        empirical = float((sim_subset_oracle(big, name).argmax(1)[test] == big.y[test]).double().mean())
        assert empirical == pytest.approx(acc, abs=3.5 * math.sqrt(acc * (1 - acc) / 20_000) + 1e-9)
    with pytest.raises(DataError, match="unknown SIM variant"):
        make_sim_n("sim-iv")


def test_sim_n_gap_to_the_optimum_shrinks_with_n():
    opts = dict(seed=0, shared_dim=20, a1_dim=50, a2_dim=10, superfluous_dim=20, n_valid=1000, n_test=4000)
    accs = [_logistic_test_accuracy(ds, _x(ds)) for ds in (make_sim_n(n_train=n, **opts) for n in (1000, 8000))]
    se = (0.25 / 4000) ** 0.5
    assert accs[0] + 4 * se < accs[1] < 1.0
