import numpy as np
import pytest
import torch

from mmib.api import load_run, train
from mmib.cli import main
from mmib.data.synthetic import make_sim_msa
from mmib.errors import DataError
from mmib.eval.probe import label_directions, linear_probe_r2, probe_features, probe_model


def test_linear_probe_r2_known_values():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 5))
    target = z[:, :2] @ np.array([[1.0, -2.0], [0.5, 1.0]])
    assert linear_probe_r2(z[:400], target[:400], z[400:], target[400:]) > 0.999
    noise = rng.normal(size=(600, 3))
    assert abs(linear_probe_r2(z[:400], noise[:400], z[400:], noise[400:])) < 0.05
    # half of a target's variance is in the representation
    half = np.concatenate([z[:, :1], rng.normal(size=(600, 1))], axis=1)
    assert linear_probe_r2(z[:400], half[:400], z[400:], half[400:]) == pytest.approx(0.5, abs=0.08)
    with pytest.raises(DataError):
        linear_probe_r2(z[:400], target[:300], z[400:], target[400:])


def test_probe_features_on_sim_parts(tiny_sim):
    """A 'representation' that is [a0; a1] exactly keeps a0 and a1 and none of the rest."""
    gt = tiny_sim.ground_truth
    rep = torch.cat([gt.get(tiny_sim, "a0"), gt.get(tiny_sim, "a1")], 1)
    fit, ev = tiny_sim.splits["train"], tiny_sim.splits["test"]
    results = {r.part: r for r in probe_features(tiny_sim, rep[fit], fit, rep[ev], ev)}
    assert set(results) == {"a0", "b0", "a1", "b1", "a2", "b2"}
    assert results["a0"].r2 > 0.95 and results["a1"].r2 > 0.95
    assert all(results[p].r2 < 0.1 for p in ("b0", "b1", "a2", "b2"))
    assert results["a0"].relevant and not results["b0"].relevant
    assert results["a1"].r2_label > 0.95 and results["a2"].r2_label < 0.1
    assert results["b1"].r2_label is None
    assert set(label_directions(tiny_sim)) == {"a0", "a1", "a2"}


def test_probe_of_a_trained_run_via_cli(tmp_path, tiny_sim, capsys):
    train(model="concat", dataset=tiny_sim, out=tmp_path / "run", epochs=2, progress=False,
          model_options={"hidden": 16}, data_options={"n_samples": 600, "shared_dim": 10, "superfluous_dim": 10,
                                                      "a1_dim": 20, "a2_dim": 6})
    assert main(["probe", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    for part in ("a0", "b0", "a1", "b1", "a2", "b2"):
        assert f"| {part} " in out
    run = load_run(tmp_path / "run")
    ds = run.dataset()
    named = probe_model(run.model, ds, representation="x1")  # concat exposes per-modality encodings
    assert {r.part for r in named} == {"a0", "b0", "a1", "b1", "a2", "b2"}
    assert main(["probe", str(tmp_path / "run"), "--representation", "nope"]) == 2
    assert "no representation 'nope'" in capsys.readouterr().err


def test_probe_sim_msa_parts_and_errors():
    ds = make_sim_msa(n_train=200, n_valid=50, n_test=100, seed=0)
    ds.standardize()
    assert set(label_directions(ds)) == {"shared", "text_specific", "audio_specific", "vision_specific"}
    rep = ds.features["text"]
    fit, ev = ds.splits["train"], ds.splits["test"]
    results = {r.part: r for r in probe_features(ds, rep[fit], fit, rep[ev], ev)}
    # text carries the shared and text-specific parts (little noise), not the audio-specific one
    assert results["shared"].r2 > 0.5 and results["text_specific"].r2 > 0.5
    assert results["audio_specific"].r2 < 0.1
    ds.ground_truth = None
    with pytest.raises(DataError, match="no ground-truth"):
        probe_features(ds, rep[fit], fit, rep[ev], ev)
