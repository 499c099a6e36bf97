"""mmib report: every figure it names exists; curves, KL, parameter curves, t-SNE and paper numbers."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("optuna")

from mmib.cli import main  # noqa: E402
from mmib.eval.metrics import metric_mode  # noqa: E402
from mmib.experiments import papers, plots  # noqa: E402
from mmib.models.registry import list_models  # noqa: E402

IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def test_kl_terms_follow_the_kl_modality_convention():
    history = [{"epoch": 1, "train": {"loss": 1.0, "kl": 0.5, "kl_text": 0.2, "kl_audio": 0.1, "s1/kl_vision": 0.3,
                                      "klass": 9.0, "task_kl_text": 1.0}}]
    assert plots.kl_terms(history) == {"joint": "kl", "text": "kl_text", "audio": "kl_audio",
                                       "s1/vision": "s1/kl_vision"}


def test_paper_results_are_consistent_data_with_their_source():
    data = papers.paper_results()
    assert "paper_results.md" in data["source"]
    known_models = {m.name for m in list_models()} | {"b-mib", "e-mib", "l-mib", "c-mib", "mmim", "omib", "mcer"}
    for t in data["tables"]:
        assert t["dataset"] in papers.PAPER_DATASETS
        for row in t["rows"]:
            assert row["model"] is None or row["model"] in known_models
            for k, v in row.items():
                if k in ("name", "model", "options", "acc2", "f1", "params"):
                    continue
                metric_mode(k)  # every other key is one of our metric names
                assert (0 < v <= 100) if t["scale"] == "percent" and papers.is_percent_metric(k) else v < 100
    table1 = next(t for t in data["tables"] if t["id"] == "mib-table1")
    assert next(r for r in table1["rows"] if r["model"] == "c-mib")["mae"] == 0.728
    (curve,) = papers.curves_for("mosi", "beta", "acc2")
    assert len(curve["xy"]) == 8 and (1e-5, pytest.approx(0.857)) in curve["xy"]  # percent -> fraction
    assert papers.curves_for("sim-msa", "beta", "mae") == []


@pytest.mark.parametrize("config, key", [
    ({"name": "mosi"}, "mosi"), ({"name": "sim-i"}, "sim-i"), ({"name": "sim-msa"}, None),
    ({"name": "mmsa", "path": "/data/MOSEI/aligned_50.pkl"}, "mosei"), ({"name": "file", "path": "mosi_data.pkl"}, "mosi"),
    ({"name": "mult", "path": "iemocap_data.pkl"}, "iemocap"), ({"name": "npz", "path": "x.npz"}, None),
])
def test_dataset_key_matches_runs_to_the_papers_datasets(config, key):
    assert papers.dataset_key(config) == key


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_data, tiny_sets):
    """A comparison (with c-mib when registered, for KL terms), a 2-trial sweep and a SIM-I run."""
    from mmib.api import train
    from mmib.experiments.compare import compare
    from mmib.experiments.sweep import sweep

    base = tmp_path_factory.mktemp("inputs")
    models = ["concat", "late"] + (["c-mib"] if "c-mib" in {m.name for m in list_models()} else [])
    sets = ["hidden=16", "batch_size=32", "concat:head_hidden=16", "late:head_hidden=16"]
    if "c-mib" in models:
        sets += ["c-mib:ib_hidden=16", "c-mib:z_dim=8"]
    compare(models, "sim-msa", 1, base / "cmp", data_options=tiny_data, overrides=sets, epochs=2, log=None)
    sweep("late", "sim-msa", ["lr=loguniform:1e-3:1e-2", "head_hidden=choice:8,16"], base / "sw", trials=2,
          data_options=tiny_data, overrides=tiny_sets, epochs=2, sampler="random", pruner="none", log=None)
    train(model="concat", data="sim-i", out=base / "simi", epochs=2, progress=False, overrides=tiny_sets,
          data_options={"n_samples": 300, "a1_dim": 12, "a2_dim": 6, "shared_dim": 6, "superfluous_dim": 6})
    return base, models


def test_report_names_only_figures_it_wrote_and_has_every_section(inputs, tmp_path):
    from mmib.experiments.report import report

    base, models = inputs
    out = tmp_path / "report"
    path = report([base / "cmp", base / "sw", base / "simi"], out, tsne_samples=40, log=None)
    md = path.read_text()
    named = IMAGE.findall(md)
    assert named and all((out / n).is_file() and (out / n).stat().st_size > 1000 for n in named)
    assert {p.relative_to(out).as_posix() for p in (out / "figures").glob("*.png")} == set(named)
    for model in models:
        assert any(f"curves-{model}" in n for n in named)  # loss terms and validation metrics per model
    assert sum("tsne" in n for n in named) == 3  # comparison, sweep's best trial, the SIM-I run
    assert any(n.endswith("params.png") for n in named)  # metric against the swept parameters
    assert ("KL per modality" in md) == ("c-mib" in models) and (any("kl" in n for n in named) == ("c-mib" in models))
    assert "Paired t-test p-values" in md and "Best: trial" in md and "| complete" in md
    assert "No paper reports numbers on sim-msa" in md
    # SIM-I: OMIB's Table 2 beside our concat run, on the same (fraction) scale
    import json

    acc = json.loads((base / "simi" / "results.json").read_text())["test"]["accuracy"]
    assert "OMIB (002), Table 2 on sim-i" in md and "OMIB-generated MIB (paper)" in md
    assert re.search(rf"concat \(ours, 1 run\)\s*\|\s*{acc:.3f}", md)


def test_report_command_and_errors(inputs, tmp_path, capsys):
    base, _ = inputs
    out = tmp_path / "r"
    assert main(["report", str(base / "simi"), "-o", str(out), "--no-tsne", "--title", "SIM-I check"]) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# SIM-I check") and "tsne" not in md and "curves-concat" in md
    assert main(["report", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "no such directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "-o", str(out)]) == 2


def test_metric_vs_params_draws_numeric_categorical_and_paper_points(tmp_path):
    trials = [{"state": "COMPLETE", "value": 0.9 - 0.01 * i, "params": {"beta": b, "fusion": f},
               "user_attrs": {"test": {"mae": 0.8 + 0.01 * i}}}
              for i, (b, f) in enumerate([(1e-4, "concat"), (1e-2, "tensor"), (1.0, "concat")])]
    trials.append({"state": "PRUNED", "value": 2.0, "params": {"beta": 0.5, "fusion": "tensor"}, "user_attrs": {}})
    (curve,) = papers.curves_for("mosi", "beta", "mae")
    paper = {"beta": [(x, y, "MIB Table IX") for x, y in curve["xy"] if x > 0]}
    path = plots.metric_vs_params([("beta", True, False), ("fusion", False, True)], trials, "mae",
                                  tmp_path / "p.png", "beta curve", paper)
    assert path.is_file() and path.stat().st_size > 1000
