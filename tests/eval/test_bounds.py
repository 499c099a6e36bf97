import math
import re

import pytest
import torch

from mmib.cli import main
from mmib.errors import ConfigError, DataError
from mmib.eval.bounds import BetaBounds, MineSettings, beta_bounds, bounds_from_information


def test_two_modality_formulas():
    lower, upper = bounds_from_information({"a": 2.0, "b": 3.0}, {("a", "b"): 1.0})
    assert lower == pytest.approx(1 / (3 * 5.0))
    assert upper == pytest.approx(1 / (3 * 4.0))


def test_three_modality_formulas():
    h = {"a": 1.0, "b": 2.0, "c": 3.0}
    i = {("a", "b"): 0.5, ("a", "c"): 0.25, ("b", "c"): 0.75}
    lower, upper = bounds_from_information(h, i)
    assert lower == pytest.approx(1 / (5 * 6.0))
    assert upper == pytest.approx(1 / (5 * (6.0 - (2 / 3) * 1.5)))


def test_negative_mi_estimates_count_as_zero_and_four_modalities_are_refused():
    lower, upper = bounds_from_information({"a": 2.0, "b": 2.0}, {("a", "b"): -0.1})
    assert lower == upper == pytest.approx(1 / 12)
    with pytest.raises(ConfigError, match="2 or 3 modalities"):
        bounds_from_information({k: 1.0 for k in "abcd"}, {})
    with pytest.raises(DataError, match="non-positive"):
        bounds_from_information({"a": 0.0, "b": 0.0}, {("a", "b"): 0.0})


def test_estimates_at_the_dv_cap_are_named():
    from mmib.eval.bounds import at_cap, estimator_cap
    from mmib.nn.mine import MIEstimate

    assert estimator_cap(256) == pytest.approx(math.log(256))
    saturated = MIEstimate(math.log(256) - 0.5, 0.01, 200, 4096, 256)
    informative = MIEstimate(1.2, 0.01, 200, 4096, 256)
    assert at_cap(saturated) and not at_cap(informative)
    b = BetaBounds({"a": 5.0, "b": 1.2}, {("a", "b"): 1.0}, 0.1, 0.2,
                   details={"H(a)": saturated, "H(b)": informative, "I(a;b)": informative})
    assert b.at_cap == ["H(a)"]


def test_draw_stays_in_the_interval():
    b = BetaBounds({"a": 1.0, "b": 1.0}, {("a", "b"): 0.5}, 0.1, 0.3)
    g = torch.Generator().manual_seed(0)
    draws = [b.draw(g) for _ in range(50)]
    assert all(0.1 <= d <= 0.3 for d in draws) and max(draws) - min(draws) > 0.1
    assert b.draw(quantile=0.0) == pytest.approx(0.1) and b.draw(quantile=1.0) == pytest.approx(0.3)
    with pytest.raises(ConfigError):
        b.draw(quantile=1.5)


def test_beta_bounds_on_tiny_sim_orders_the_bounds(tiny_sim):
    b = beta_bounds(tiny_sim, settings=MineSettings(steps=60, batch_size=64, max_samples=400))
    assert set(b.entropy) == {"x1", "x2"} and ("x1", "x2") in b.mutual_information
    # x1 and x2 share a0 and b0 exactly, so their MI is clearly positive
    assert b.mutual_information[("x1", "x2")] > 0.5
    assert 0 < b.lower < b.upper
    assert b.entropy["x1"] <= math.log(64) + 1e-4


def test_cli_bound_on_sim_i_prints_ml_below_mu(capsys):
    code = main(["bound", "-d", "sim-i", "--set", "n_samples=2000", "--steps", "300", "--batch-size", "64",
                 "--samples", "1500"])
    assert code == 0
    out = capsys.readouterr().out
    for name in ("H(x1)", "H(x2)", "I(x1;x2)"):
        assert name in out
    ml = float(re.search(r"M_l = (\S+)", out).group(1))
    mu = float(re.search(r"M_u = (\S+)", out).group(1))
    assert 0 < ml < mu
    # SIM's entropies and shared parts saturate the DV bound at log 64 = 4.159: reported, with what it means
    assert "at cap (log 64 = 4.159)" in out
    assert re.search(r"\| H\(x1\) +\| [0-9.]+ +\| [0-9.]+ +\| yes", out)
    assert "reflects the estimator, not the data" in out and "beta * min(1, r) >= 1" in out


def test_cli_bound_errors(capsys):
    assert main(["bound", "-d", "sim-i", "--set", "n_samples=200", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["bound", "-d", "sim-i", "--set", "n_samples=200", "--modalities", "x1,zz"]) == 2
    assert "zz" in capsys.readouterr().err
