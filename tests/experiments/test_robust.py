"""mmib robust: corrupting one modality at a time, and the table/curve it writes."""

from __future__ import annotations

import csv

import pytest
import torch

from mmib.cli import main
from mmib.experiments.robust import perturbed, robustness, write_outputs


def test_perturbed_touches_only_one_modality_on_one_split_and_keeps_padding(tiny_msa_seq):
    ds = tiny_msa_seq
    test, train = ds.splits["test"], ds.splits["train"]
    before = {k: v.clone() for k, v in ds.features.items()}
    lengths = ds.lengths["audio"].clone()
    noisy = perturbed(ds, "audio", "test", sigma=1.0, generator=torch.Generator().manual_seed(0))
    for k, v in ds.features.items():  # the original dataset is untouched
        assert torch.equal(v, before[k])
    assert torch.equal(noisy.features["text"], ds.features["text"])
    assert torch.equal(noisy.features["audio"][train], ds.features["audio"][train])
    a, b = noisy.features["audio"][test], ds.features["audio"][test]
    steps = torch.arange(a.shape[1]).unsqueeze(0) < lengths[test].unsqueeze(1)
    assert (a != b)[steps].all() and torch.equal(a[~steps], b[~steps])  # noise on valid steps only
    assert (lengths[test] < a.shape[1]).any()  # the fixture has padded sequences
    assert torch.std(a[steps] - b[steps]).item() == pytest.approx(1.0, rel=0.1)

    zeroed = perturbed(ds, "vision", "test", zero=True)
    assert zeroed.features["vision"][test].abs().sum() == 0 and torch.equal(zeroed.features["vision"][train],
                                                                            ds.features["vision"][train])
    masked = perturbed(ds, "audio", "test", mask=True)
    assert (masked.lengths["audio"][test] == 0).all() and torch.equal(masked.lengths["audio"][train], lengths[train])
    assert torch.equal(ds.lengths["audio"], lengths)


def test_perturbed_masks_vector_modalities_with_a_presence_flag(tiny_msa):
    masked = perturbed(tiny_msa, "text", "test", mask=True)
    flag = masked.lengths["text"]
    assert flag.shape == (len(tiny_msa),)
    assert (flag[tiny_msa.splits["test"]] == 0).all() and (flag[tiny_msa.splits["train"]] == 1).all()
    assert "text" not in tiny_msa.lengths


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_data, tiny_sets):
    from mmib.api import train

    out = tmp_path_factory.mktemp("robust") / "run"
    # lr 3e-3, 8 epochs: test corr about 0.7, so that corrupting the informative text modality must hurt
    train(model="concat", data="sim-msa", out=out, epochs=8, progress=False, overrides=[*tiny_sets, "lr=3e-3"],
          data_options={**tiny_data, "n_train": 320})
    return out


def test_robustness_has_one_row_per_modality_and_level(trained_run, tmp_path):
    r = robustness(trained_run, levels=[0, 1, 8])
    noise = [(row["modality"], row["level"]) for row in r.rows if row["condition"] == "noise"]
    assert sorted(noise) == sorted((m, s) for m in ("text", "audio", "vision") for s in (0.0, 1.0, 8.0))
    removal = [(row["modality"], row["condition"]) for row in r.rows if row["condition"] != "noise"]
    assert sorted(removal) == sorted((m, c) for m in ("text", "audio", "vision") for c in ("zeroed", "masked"))
    assert r.metric == "mae"
    for row in r.rows:
        if row["level"] == 0.0:
            assert {k: row[k] for k in r.clean} == r.clean
    text8 = next(row for row in r.rows if row["modality"] == "text" and row["level"] == 8.0)
    assert text8["mae"] > r.clean["mae"]  # heavy noise on the most informative modality hurts
    again = robustness(trained_run, levels=[0, 1, 8])
    assert again.rows == r.rows  # seeded noise: the same numbers every time

    files = write_outputs(r, tmp_path / "rob")
    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == 3 * 3 + 3 * 2 and rows[0].keys() >= {"condition", "modality", "sigma", "mae", "corr"}
    assert files["figure"].stat().st_size > 1000
    assert "![mae under noise and removal](robust.png)" in files["markdown"].read_text()


def test_robust_command_and_errors(trained_run, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["robust", str(trained_run), "--levels", "0,2", "--metric", "corr", "--modalities", "text,audio",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Δcorr" in printed and (out / "robust.png").is_file()
    assert len(list(csv.DictReader((out / "robust.csv").open()))) == 2 * 2 + 2 * 2
    assert main(["robust", str(trained_run), "--levels", "-1"]) == 2
    assert main(["robust", str(trained_run), "--metric", "auc"]) == 2
    assert main(["robust", str(trained_run), "--modalities", "smell"]) == 2
    assert "smell" in capsys.readouterr().err
