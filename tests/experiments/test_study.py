"""mmib study: the schema, the paired statistics and verdicts, the work queue, and studies end to end."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmib.cli import main
from mmib.errors import ConfigError
from mmib.experiments.study import builtin_studies, load_study, run_study
from mmib.experiments.study import stats
from mmib.experiments.study.spec import parse_study
from mmib.train import rundir

pytest.importorskip("sqlalchemy")

TINY = {"n_train": 160, "n_valid": 48, "n_test": 64}
SMALL = {"hidden": 16, "head_hidden": 16}


def write(tmp_path: Path, study: dict, name: str = "tiny.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(study, sort_keys=False))
    return p


def tiny_study(**changes) -> dict:
    """Two models, two seeds, one claim, on a tiny sim-msa (a run takes about a second)."""
    d = {
        "name": "tiny", "title": "Two models on a tiny sim-msa", "protocol": "fixed", "seeds": 2,
        "train": {"epochs": 2, "batch_size": 32, "threads": 1},
        "datasets": {"msa": {"name": "sim-msa", "options": TINY}},
        "rows": {"concat": {"options": SMALL}, "late": {"options": SMALL}},
        "references": [],
        "sections": [{"heading": "Results",
                      "table": {"name": "main", "data": "msa", "rows": ["concat", "late"],
                                "columns": ["mae", "corr", "results.params"]},
                      "claims": [{"better": "concat", "than": "late", "metric": "mae", "data": "msa"}]}],
    }
    d.update(changes)
    return d


# ----------------------------------------------------------------------------- schema
def parse(tmp_path: Path, d: dict):
    return parse_study(d, tmp_path / "s.yaml")


@pytest.mark.parametrize("change, message", [
    ({"datasets": {}}, "s.yaml: a study needs at least one entry under datasets"),
    ({"colour": 1}, "s.yaml: unknown key 'colour'"),
    ({"protocol": "loose"}, "s.yaml: protocol: 'loose'"),
    ({"seeds": 0}, "s.yaml: seeds: must be >= 1"),
    ({"train": {"epoch": 3}}, "s.yaml: train: unknown training option 'epoch' (did you mean 'epochs'?)"),
    ({"rows": {"concat": {"optoins": {}}}}, "s.yaml: rows.concat: unknown key 'optoins' (did you mean 'options'?)"),
    ({"sections": [{"table": {"data": "msa", "rows": ["concatt"], "columns": ["mae"]}}]},
     "sections[0].table.rows[0] x columns[0]: unknown row 'concatt' (did you mean 'concat'?)"),
    ({"sections": [{"table": {"data": "mmsa", "rows": ["concat"], "columns": ["mae"]}}]},
     "unknown dataset 'mmsa' (did you mean 'msa'?)"),
    ({"sections": [{"table": {"data": "msa", "rows": ["concat"], "columns": ["results.speed"]}}]},
     "results.speed: choose one of"),
    ({"sections": [{"claims": [{"better": "concat", "metric": "mae", "data": "msa"}]}]},
     "sections[0].claims[0]: a claim compares with at least one other row: than"),
    ({"sections": [{"claims": [{"better": "concat", "than": "late", "metric": "mae", "data": "msa", "test": "z"}]}]},
     "sections[0].claims[0].test: 'z'"),
    ({"sections": [{"figure": {"kind": "pie", "rows": ["concat"], "data": ["msa"]}}]}, "figure.kind: 'pie'"),
    ({"rows": {"concat": {}, "late": {}, "c-mib b={beta}": {"model": "c-mib"}}}, None),  # no grid: just a name
    ({"rows": {"c-mib": {"model": "c-mib", "grid": {"beta": [0, 1]}}}}, "must contain {beta}"),
    ({"sections": [{"file": "../../etc/passwd"}]}, "sections[0].file: '../../etc/passwd': a .md or .txt file name"),
    ({"sections": [{"table": {"name": "a/b", "data": "msa", "rows": ["concat"], "columns": ["mae"]}}]},
     "table.name: 'a/b'"),
])
def test_schema_errors_are_one_line_and_name_the_file_and_key(tmp_path, change, message):
    d = tiny_study(**change)
    if message is None:
        parse(tmp_path, d)
        return
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, d)
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("s.yaml")


def test_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_study(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: a study file is a mapping"):
        load_study(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="unknown study 'omibb' \\(did you mean 'omib'\\?\\)"):
        load_study("omibb")
    assert main(["study", str(tmp_path / "bad.yaml"), "--dry-run"]) == 2


def test_a_data_option_typo_fails_the_dry_run_with_the_row_and_the_valid_options(tmp_path, capsys):
    d = tiny_study(datasets={"msa": {"name": "sim-msa", "options": {**TINY, "n_trian": 10}}})
    assert main(["study", str(write(tmp_path, d)), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tiny.yaml: rows.concat on msa: dataset 'sim-msa' has no option 'n_trian'" in err
    assert "did you mean 'n_train'" in err and "\n" not in err
    d = tiny_study(rows={"concat": {"options": SMALL, "data": {"noise": "loud"}}, "late": {"options": SMALL}})
    assert main(["study", str(write(tmp_path, d)), "--dry-run"]) == 2
    assert "rows.concat on msa: dataset 'sim-msa' has no option 'noise'" in capsys.readouterr().err


def test_the_review13_record_is_a_valid_study(capsys):
    review = Path(__file__).resolve().parents[2] / "docs" / "reviews" / "review13.yaml"
    assert main(["study", str(review), "--dry-run"]) == 0
    assert "study 'review13'" in capsys.readouterr().out


def test_grids_globs_mean_rows_and_table_templates_expand(tmp_path):
    d = tiny_study(rows={
        "{model}/{fusion}": {"grid": {"model": ["e-mib", "c-mib"], "fusion": ["concat", "add"]}},
        "c-mib beta={beta}": {"model": "c-mib", "grid": {"beta": ["1e-6", 1e-3]}},
        "e-mib avg": {"mean": ["e-mib/*"]},
        "head [a0]": {"model": "feature-head", "select": ["a0"]},
    }, sections=[{"table": {"data": "msa", "metric": "mae", "row": "{variant}/{fusion}",
                            "rows": [{"for": {"fusion": ["concat", "add"]}, "label": "{fusion}"}],
                            "columns": [{"for": {"variant": ["e-mib", "c-mib"]}, "label": "{variant}"}]}}])
    st = parse(tmp_path, d)
    assert list(st.rows)[:4] == ["e-mib/concat", "e-mib/add", "c-mib/concat", "c-mib/add"]
    assert st.rows["c-mib/add"].model == "c-mib" and st.rows["c-mib/add"].options == {"fusion": "add"}
    assert st.rows["c-mib beta=1e-06"].options == {"beta": 1e-6}  # YAML's "1e-6" string is the number
    assert st.rows["e-mib avg"].members == ["e-mib/concat", "e-mib/add"]
    assert st.rows["head [a0]"].select == ["a0"]
    t = st.tables[0]
    assert t.headers == ["e-mib", "c-mib"] and [line.labels for line in t.lines] == [["concat"], ["add"]]
    assert t.lines[1].cells[1].row == "c-mib/add" and t.lines[1].cells[1].metric == "mae"


def test_linear_and_the_oracle_are_the_default_reference_rows(tmp_path):
    d = tiny_study()
    del d["references"]
    st = parse(tmp_path, d)
    assert st.references == ["linear", "oracle"]
    assert st.rows["linear"].model == "linear" and st.rows["oracle"].kind == "oracle"
    lines = st.tables[0].lines
    assert [line.labels[0] for line in lines] == ["concat", "late", "linear", "oracle"]
    assert [line.reference for line in lines] == [False, False, True, True]


def test_an_oracle_row_limited_to_some_datasets_is_measured_only_there(tmp_path):
    from mmib.experiments.study.engine import used_cells

    d = tiny_study(datasets={"msa": {"name": "sim-msa", "options": TINY}, "mfeat": {"name": "uci-mfeat"}})
    d["rows"]["oracle"] = {"oracle": True, "datasets": ["msa"]}
    d["references"] = ["oracle"]
    d["sections"][0]["claims"].append({"better": "concat", "than": "late", "metric": "mae", "data": "mfeat"})
    _, measures = used_cells(parse(tmp_path, d))
    assert measures == {("msa", "oracle")}


def test_a_mean_row_limited_to_some_datasets_trains_its_members_only_there(tmp_path):
    from mmib.experiments.study.engine import used_cells

    d = tiny_study(datasets={"msa": {"name": "sim-msa", "options": TINY}, "mfeat": {"name": "uci-mfeat"}})
    d["rows"]["e-mib"] = {"model": "e-mib", "options": SMALL}
    d["rows"]["e-mib avg"] = {"mean": ["e-mib"], "datasets": ["msa"]}
    d["sections"][0]["claims"].append({"better": "e-mib avg", "than": "late", "metric": "mae", "data": "msa"})
    d["sections"][0]["claims"].append({"better": "concat", "than": "late", "metric": "mae", "data": "mfeat"})
    cells, _ = used_cells(parse(tmp_path, d))
    assert ("e-mib", "msa") in cells and ("e-mib", "mfeat") not in cells and ("late", "mfeat") in cells
    d["sections"][0]["claims"][-1]["better"] = "e-mib avg"  # a claim cannot name it where it is not run
    with pytest.raises(ConfigError, match="row 'e-mib avg' is not run on dataset 'mfeat' \\(its datasets: msa\\)"):
        parse(tmp_path, d)


def test_the_fair_protocol_is_the_default_for_claims(tmp_path):
    d = tiny_study()
    del d["protocol"]
    with pytest.raises(ConfigError, match="protocol: fair .* is not met: 2 training seeds .*no tuning budget"):
        parse(tmp_path, d)
    d.update(seeds=5, data_seeds=2, tuning={"trials": 3})
    st = parse(tmp_path, d)
    assert st.protocol == "fair" and len(st.pairs) == 10 and st.tuning.trials == 3
    d["rows"]["late"]["tune"] = False
    with pytest.raises(ConfigError, match="row 'late' has tune: false"):
        parse(tmp_path, d)


def test_every_builtin_study_parses_and_dry_runs(capsys):
    found = builtin_studies()
    assert {"omib", "mib", "mcer", "mmim", "example"} <= set(found)
    for name in found:
        capsys.readouterr()
        assert main(["study", name, "--dry-run"]) == 0, name
        out = capsys.readouterr().out
        assert f"study {name!r}" in out and " runs (" in out and "| row" in out
    assert main(["study", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in found)


# ----------------------------------------------------------------------------- statistics
def test_paired_effect_ci_and_dz_match_closed_forms():
    from scipy import stats as ss

    a = {(s, 0): v for s, v in enumerate([0.70, 0.72, 0.69, 0.71])}
    b = {(s, 0): v for s, v in enumerate([0.75, 0.74, 0.76, 0.73])}
    e = stats.compare("a", "b", a, b, "min")  # lower is better: improvement = b - a
    d = np.array([0.05, 0.02, 0.07, 0.02])
    assert e.n == 4 and e.mean == pytest.approx(d.mean())
    half = ss.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert e.ci == pytest.approx((d.mean() - half, d.mean() + half))
    assert e.p == pytest.approx(ss.ttest_rel([0.70, 0.72, 0.69, 0.71], [0.75, 0.74, 0.76, 0.73]).pvalue)
    assert e.dz == pytest.approx(d.mean() / d.std(ddof=1))
    lo, hi = e.dz_ci  # the interval inverts the noncentral t: its ends give the observed t the tail masses
    t_obs = e.dz * 2
    assert ss.nct.cdf(t_obs, 3, lo * 2) == pytest.approx(0.975, abs=1e-6)
    assert ss.nct.cdf(t_obs, 3, hi * 2) == pytest.approx(0.025, abs=1e-6)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize("n, dz", [(10, -7.65), (10, -2.81), (10, -1.44), (10, 1.05), (10, 2.24), (10, 7.65),
                                   (3, 8.12), (3, -9.14), (3, 17.0), (5, 0.1)])
def test_dz_interval_is_finite_and_mirrors_for_negative_effects(n, dz):
    from scipy import stats as ss

    rng = np.random.default_rng(0)
    e = rng.normal(size=n)
    e = (e - e.mean()) / e.std(ddof=1)  # mean 0, sd 1: d = e + dz has d_z = dz exactly
    value, (lo, hi) = stats.dz_ci(e + dz)
    assert value == pytest.approx(dz) and math.isfinite(lo) and math.isfinite(hi) and lo < dz < hi
    _, (mlo, mhi) = stats.dz_ci(-(e + dz))
    assert (mlo, mhi) == pytest.approx((-hi, -lo))
    t_abs = abs(dz) * math.sqrt(n)  # the ends give |t| the tail masses (on |d_z|'s side)
    ends = (lo, hi) if dz > 0 else (-hi, -lo)
    assert ss.nct.cdf(t_abs, n - 1, ends[0] * math.sqrt(n)) == pytest.approx(0.975, abs=1e-6)
    assert ss.nct.cdf(t_abs, n - 1, ends[1] * math.sqrt(n)) == pytest.approx(0.025, abs=1e-6)


def _values(xs):
    return {(i % 5, i // 5): float(v) for i, v in enumerate(xs)}


def test_a_claims_verdict_flips_when_the_data_say_the_other_thing():
    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.02, 10)
    better = base + 0.03 + rng.normal(0, 0.005, 10)  # clearly higher accuracy
    for a, b, verdict in [(better, base, stats.HOLDS), (base, better, stats.DOES_NOT_HOLD)]:
        e = stats.compare("A", "B", _values(a), _values(b), "max")
        assert stats.decide([e], 0.05) == verdict
    noisy = base + rng.normal(0, 0.02, 10)
    e = stats.compare("A", "B", _values(noisy), _values(base), "max")
    assert stats.decide([e], 0.05) == stats.INCONCLUSIVE
    # with a minimal effect of 0.05, an interval that excludes it is a "does not hold" even without significance
    e = stats.compare("A", "B", _values(base + rng.normal(0, 0.002, 10)), _values(base), "max")
    assert stats.decide([e], 0.05, min_effect=0.05) == stats.DOES_NOT_HOLD
    # non-inferiority: A within 0.02 of B holds when A is 0.005 worse; fails when A is 0.05 worse
    e = stats.compare("A", "B", _values(base - 0.005 + rng.normal(0, 0.002, 10)), _values(base), "max")
    assert stats.decide([e], 0.05, margin=0.02) == stats.HOLDS
    e = stats.compare("A", "B", _values(base - 0.05 + rng.normal(0, 0.002, 10)), _values(base), "max")
    assert stats.decide([e], 0.05, margin=0.02) == stats.DOES_NOT_HOLD
    # one of two comparisons significant the other way: the claim does not hold
    e1 = stats.compare("A", "B", _values(better), _values(base), "max")
    e2 = stats.compare("A", "C", _values(base), _values(better), "max")
    assert stats.decide([e1, e2], 0.05) == stats.DOES_NOT_HOLD and e1.verdict == stats.HOLDS
    # too few pairs to test
    e = stats.compare("A", "B", {(0, 0): 1.0}, {(0, 0): 0.5}, "max")
    assert stats.decide([e], 0.05) == stats.INCONCLUSIVE and e.n == 1


def test_failure_claims_use_fishers_exact_test():
    e = stats.failure_effect("no-memory", "full", 8, 10, 0, 10)
    assert stats.decide_failures([e], 0.05) == stats.HOLDS
    e = stats.failure_effect("no-memory", "full", 0, 10, 0, 10)
    assert stats.decide_failures([e], 0.05) == stats.INCONCLUSIVE
    e = stats.failure_effect("no-memory", "full", 0, 10, 0, 10)
    assert stats.decide_failures([e], 0.05, min_effect=0.5) == stats.DOES_NOT_HOLD  # CI of 0/10: [0, 0.31]


# ----------------------------------------------------------------------------- the queue
def test_two_workers_claim_disjoint_runs_and_dead_or_stale_claims_come_back(tmp_path):
    from mmib.experiments.study.queue import RunStore

    url = f"sqlite:///{tmp_path / 'q.db'}"
    a, b = RunStore(url, "s", grace_s=0.5), RunStore(url, "s", grace_s=0.5)
    entries = [(f"k{i}", f"g{i // 2}", i, "cfg", f"/runs/{i}") for i in range(6)]
    assert a.register(entries) == 6 and b.register(entries) == 0
    keys = [e[0] for e in entries]
    first = a.claim(keys, 1, "hostA:1:x", "hostA")
    second = b.claim(keys, 3, "hostB:2:y", "hostB")
    assert first == ["k0", "k1"]  # a whole group (the runs that differ only in their seed)
    assert set(second) == {"k2", "k3", "k4", "k5"} and not set(first) & set(second)
    assert a.claim(keys, 1, "hostA:1:x", "hostA") == []
    a.finish("k0", "hostA:1:x", results={"test": {"mae": 1.0}}, history=[{"epoch": 1}], error=None)
    time.sleep(0.6)  # k1 and hostB's runs have no heartbeat for longer than the grace period
    b.beat(["k2", "k3", "k4", "k5"], "hostB:2:y")
    assert a.claim(keys, 1, "hostA:1:x", "hostA") == ["k1"]
    # a run held by a dead process of this host comes back at once
    assert a.recover(lambda tag: False, "hostB") == ["k2", "k3", "k4", "k5"]
    rows = a.rows()
    assert rows["k0"].state == "done" and rows["k0"].results == {"test": {"mae": 1.0}}
    assert rows["k2"].state == "pending" and rows["k1"].attempts == 2


# ----------------------------------------------------------------------------- end to end
def _results(out: Path) -> dict[str, dict]:
    found = {}
    for p in (out / "runs").iterdir():
        if (p / "results.json").is_file():
            found[p.name] = json.loads((p / "results.json").read_text())
    return found


def test_tiny_study_end_to_end_traces_every_cell_to_its_runs(tmp_path, capsys):
    study = tiny_study(sections=tiny_study()["sections"] + [
        {"heading": "Curves", "figure": {"kind": "curves", "name": "curves", "rows": ["concat"], "data": ["msa"]}}])
    path = write(tmp_path, study)
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out)]) == 0
    res = _results(out)
    assert len(res) == 4  # 2 models x 2 seeds
    data = json.loads((out / "study.json").read_text())
    cell = data["tables"][0]["lines"][0]["cells"][0]
    assert cell["row"] == "concat" and cell["metric"] == "mae" and cell["n"] == 2
    traced = []
    for pair, dirs in cell["runs"].items():
        cfg = yaml.safe_load((Path(dirs[0]) / "config.yaml").read_text())
        seed, data_seed = map(int, pair.split(","))
        assert cfg["model"]["name"] == "concat" and cfg["train"]["seed"] == seed and cfg["data"]["seed"] == data_seed
        traced.append(json.loads((Path(dirs[0]) / "results.json").read_text())["test"]["mae"])
        assert cell["values"][pair] == pytest.approx(traced[-1])
    assert cell["mean"] == pytest.approx(np.mean(traced)) and cell["std"] == pytest.approx(np.std(traced, ddof=1))
    md = (out / "study.md").read_text()
    assert f"{np.mean(traced):.3f} ± {np.std(traced, ddof=1):.3f}" in md
    assert "concat is better than late on mae [msa]" in md
    assert "![curves-concat](figures/curves-concat.png)" in md and (out / "figures" / "curves-concat.png").is_file()
    assert (out / "tables" / "main.csv").read_text().startswith("model,mae mean,mae std,mae n")
    assert r"\toprule" in (out / "tables" / "main.tex").read_text()
    claim = data["claims"][0]
    assert claim["verdict"] in (stats.HOLDS, stats.DOES_NOT_HOLD, stats.INCONCLUSIVE) and claim["effects"][0]["n"] == 2
    assert f"**{claim['verdict']}**" in md
    # a rerun trains nothing; a changed option makes new runs instead of reusing the old ones
    stamps = {p: (out / "runs" / p / "results.json").stat().st_mtime_ns for p in res}
    capsys.readouterr()
    assert main(["study", str(path), "--out", str(out)]) == 0
    assert "4 runs (4 finished, 0 to train)" in capsys.readouterr().out
    assert {p: (out / "runs" / p / "results.json").stat().st_mtime_ns for p in res} == stamps
    study["rows"]["late"]["options"] = {**SMALL, "dropout": 0.2}
    write(tmp_path, study)
    assert main(["study", str(path), "--out", str(out)]) == 0
    assert len(_results(out)) == 6


def _oracle_dataset(n_samples: int = 400, seed: int = 0):
    """Two modalities; the label is a noisy threshold of x1's first column; meta["oracle"] is its Bayes logit."""
    import torch

    from mmib.data.dataset import GroundTruth, MultimodalDataset, TaskSpec

    g = np.random.default_rng(seed)
    x1, x2 = g.normal(size=(n_samples, 4)), g.normal(size=(n_samples, 3))
    score = 2.0 * x1[:, 0]
    y = (score + g.logistic(size=n_samples) > 0).astype(np.int64)  # P(y = 1 | x) = sigmoid(score)
    oracle = torch.tensor(np.stack([np.zeros(n_samples), score], 1), dtype=torch.float32)
    idx = g.permutation(n_samples)
    splits = {"train": idx[: n_samples // 2], "valid": idx[n_samples // 2: 3 * n_samples // 4],
              "test": idx[3 * n_samples // 4:]}
    return MultimodalDataset("oracle-toy", {"x1": x1, "x2": x2}, y, TaskSpec("binary"), splits,
                             ground_truth=GroundTruth(slices={"s": ("x1", 0, 1), "n": ("x2", 0, 3)}, relevant=("s",)),
                             meta={"oracle": oracle, "flipped": oracle.flip(1), "note": "not predictions"})


@pytest.fixture
def oracle_toy(monkeypatch):
    import mmib.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "EXTRA_DATASETS",
                        {"oracle-toy": (lambda seed=0, n_samples=400: _oracle_dataset(n_samples, seed), "test set")},
                        raising=False)


def test_oracle_rows_ground_truth_heads_and_a_claim_that_flips_with_the_data(tmp_path, oracle_toy):
    from mmib.eval.metrics import compute_metrics

    study = {
        "name": "oracle", "protocol": "fixed", "seeds": 2, "data_seeds": [0, 1],
        "train": {"epochs": 15, "batch_size": 32, "threads": 1, "lr": 1e-2},
        "datasets": {"toy": {"name": "oracle-toy"}},
        "rows": {"head [s]": {"model": "feature-head", "select": ["s"], "options": {"head_hidden": 8}},
                 "head x2": {"model": "feature-head", "select": ["x2"], "options": {"head_hidden": 8}},
                 "oracle, classes swapped": {"oracle": "flipped"}},
        "references": ["oracle"],
        "sections": [{"table": {"name": "t", "data": "toy", "rows": ["head [s]", "head x2", "oracle, classes swapped"],
                                "columns": ["accuracy"]},
                      "claims": [{"id": "oracle wins", "better": "oracle", "than": "head x2", "metric": "accuracy",
                                  "data": "toy"},
                                 {"id": "x2 wins", "better": "head x2", "than": "oracle", "metric": "accuracy",
                                  "data": "toy"},
                                 {"id": "s wins", "better": "head [s]", "than": "head x2", "metric": "accuracy",
                                  "data": "toy", "why": "the label is a function of s; x2 is noise"}]}],
    }
    out = tmp_path / "out"
    outcome = run_study(write(tmp_path, study), out=out, log=None)
    assert outcome.done == 8 and outcome.failed == 0
    data = json.loads((out / "study.json").read_text())
    lines = {tuple(line["labels"]): line["cells"][0] for line in data["tables"][0]["lines"]}
    for ds_seed in (0, 1):  # the oracle row is compute_metrics of meta["oracle"] on the test split
        ds = _oracle_dataset(400, ds_seed)
        idx = ds.splits["test"]
        expected = compute_metrics(ds.task, ds.meta["oracle"][idx], ds.y[idx])["accuracy"]
        assert lines[("oracle",)]["values"][f"0,{ds_seed}"] == pytest.approx(expected)
        # oracle: KEY scores another meta entry's predictions: the classes swapped get 1 - the oracle's accuracy
        assert lines[("oracle, classes swapped",)]["values"][f"0,{ds_seed}"] == pytest.approx(1 - expected)
    # the head on the relevant part beats the head on pure noise
    assert lines[("head [s]",)]["mean"] > lines[("head x2",)]["mean"] + 0.1
    verdicts = {c["id"]: c["verdict"] for c in data["claims"]}
    assert verdicts == {"oracle wins": stats.HOLDS, "x2 wins": stats.DOES_NOT_HOLD, "s wins": stats.HOLDS}
    # a claim shows its rows' means beside the references (here the oracle), and says why its data can show it
    means = {m["row"]: m for m in data["claims"][2]["means"]}
    assert list(means) == ["head [s]", "head x2", "oracle"] and means["oracle"]["reference"]
    assert means["oracle"]["mean"] == pytest.approx(lines[("oracle",)]["mean"])
    assert means["head x2"]["mean"] == pytest.approx(lines[("head x2",)]["mean"]) and not means["head x2"]["reference"]
    assert "Why these data:\n\n- toy: the label is a function of s; x2 is noise" in \
        (out / "study.md").read_text()
    study["rows"]["bad oracle"] = {"oracle": "note"}
    study["sections"][0]["table"]["rows"].append("bad oracle")
    run_study(write(tmp_path, study), out=out, log=None)
    bad = [m for m in json.loads((out / "study.json").read_text())["measures"] if m["kind"] == "oracle:note"]
    assert bad and "meta['note'] is not an array of per-sample predictions" in bad[0]["value"]["error"]
    cfg = yaml.safe_load(Path(lines[("head [s]",)]["runs"]["0,0"][0], "config.yaml").read_text())
    assert cfg["data"]["options"]["select"] == ["s"] and cfg["model"]["name"] == "feature-head"


def test_tuning_gives_every_model_the_same_budget_and_runs_the_best_configuration(tmp_path):
    pytest.importorskip("optuna")
    space = {"lr": "loguniform:1e-3:1e-2", "dropout": "uniform:0:0.5"}
    study = tiny_study(tuning={"trials": 2, "sampler": "random", "pruner": "none",
                               "spaces": {"concat": space, "late": space}})
    study["rows"]["late"]["options"] = {**SMALL, "dropout": 0.3}  # what the row is about: not tuned
    out = tmp_path / "out"
    outcome = run_study(write(tmp_path, study), out=out, log=None)
    assert outcome.done == 4
    data = json.loads((out / "study.json").read_text())
    assert sorted(t["cell"][0] for t in data["tuning"]) == ["concat", "late"]
    best = {t["cell"][0]: t["best"] for t in data["tuning"]}
    assert set(best["concat"]) == {"lr", "dropout"} and set(best["late"]) == {"lr"}
    for r in data["runs"].values():
        if r["row"] == "late":
            assert yaml.safe_load(Path(r["config"]).read_text())["model"]["options"]["dropout"] == 0.3
    for t in data["tuning"]:
        assert t["trials"] == 2 and t["best"] is not None
        trials = json.loads((Path(t["out"]) / "trials.json").read_text())["trials"]
        assert sum(x["state"] == "COMPLETE" for x in trials) == 2
        best_lr = t["best"]["lr"]
        runs = [r for r in data["runs"].values() if r["row"] == t["cell"][0]]
        assert len(runs) == 2
        for r in runs:  # every seed of the row runs the best trial's configuration
            assert yaml.safe_load(Path(r["config"]).read_text())["train"]["lr"] == pytest.approx(best_lr)
    assert "Tuning (valid split; the same number of trials for every model)" in (out / "study.md").read_text()


def test_a_collection_runs_its_studies_and_tabulates_every_claim(tmp_path, capsys):
    from mmib.experiments.study.collection import effect_text, parse_collection

    for name, which in (("tiny-a", "better"), ("tiny-b", "worse")):  # tiny-b: concat is worse than late
        d = tiny_study(name=name, doc=str(tmp_path / "docs" / f"{name}.md"))
        d["sections"][0]["claims"] = [{which: "concat", "than": "late", "metric": "mae", "data": "msa",
                                       "why": f"why {name}"}]
        write(tmp_path, d, f"{name}.yaml")
    coll = write(tmp_path, {"name": "both", "title": "Both claims", "doc": str(tmp_path / "docs" / "both.md"),
                            "collect": ["tiny-a.yaml", "tiny-b.yaml"]}, "both.yaml")
    capsys.readouterr()
    assert main(["study", str(coll), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study 'both'") and "collects 2 studies" in out and "8 runs in all" in out
    assert "study 'tiny-a'" in out and "study 'tiny-b'" in out
    outcome = run_study(coll, out=tmp_path / "out", doc=True, log=None)
    assert outcome.runs == 8 and outcome.done == 8 and len(outcome.claims) == 2
    assert (tmp_path / "out" / "tiny-a" / "study.md").is_file() and (tmp_path / "docs" / "tiny-b.md").is_file()
    doc = (tmp_path / "docs" / "both.md").read_text()
    assert doc.startswith(f"> Generated by `mmib study {coll} --doc` from the collection `both`")
    a, b = outcome.claims  # the two claims are opposite: their effects are the negatives of each other
    assert a.effects[0].mean == pytest.approx(-b.effects[0].mean)
    rows = [line for line in doc.splitlines() if line.startswith(("| concat is better", "| concat is worse"))]
    assert len(rows) == 2 and "| msa: why tiny-a " in rows[0] and "([tiny-a.md](tiny-a.md))" in rows[0]
    assert f"**{a.verdict}**" in rows[0] and effect_text(a) in rows[0] and "vs late: " in effect_text(a)
    assert f"concat: {a.means[0]['text']}<br>late: " in rows[0] and "late vs concat: " in effect_text(b)
    saved = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [c["study"] for c in saved["claims"]] == [str(tmp_path / "tiny-a.yaml"), str(tmp_path / "tiny-b.yaml")]
    for bad, message in ((["nope"], "collect[0]: unknown study 'nope'"), (["both.yaml"], "cannot collect itself"),
                         ([], "list at least one study")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_collection({"name": "both", "collect": bad}, coll)
    with pytest.raises(ConfigError, match="a collection of studies"):
        load_study(coll)


@pytest.mark.slow
def test_a_study_killed_mid_run_reruns_only_the_killed_run(tmp_path):
    study = tiny_study(train={"epochs": 30, "patience": 1000, "batch_size": 32, "threads": 1})
    path = write(tmp_path, study)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmib", "study", str(path), "--out", str(out)]
    import mmib

    env = {**os.environ, "PYTHONPATH": str(Path(mmib.__file__).resolve().parents[1])}  # this tree's mmib
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
                            start_new_session=True)
    deadline = time.time() + 300
    victim = None
    while time.time() < deadline and proc.poll() is None:  # wait for one finished run and a second one mid-way
        runs = list((out / "runs").iterdir()) if (out / "runs").is_dir() else []
        done = [p for p in runs if (p / "results.json").is_file()]
        going = [p for p in runs if (p / rundir.CHECKPOINT).is_file() and not (p / "results.json").is_file()]
        if done and going:
            victim = going[0]
            break
        time.sleep(0.02)
    assert proc.poll() is None and victim is not None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: (p / "results.json").stat().st_mtime_ns for p in (out / "runs").iterdir()
                if (p / "results.json").is_file()}
    before = [json.loads(x) for x in (victim / "metrics.jsonl").read_text().splitlines()]
    assert before and victim.name not in finished
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    after = {p.name: (p / "results.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert len(after) == 4 and all(after[k] == v for k, v in finished.items())
    assert "whose process died" in result.stdout
    history = [json.loads(x) for x in (victim / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 30 and [h["epoch"] for h in history] == list(range(1, 31))
    assert history[0]["seconds"] == before[0]["seconds"]  # resumed from its checkpoint, not started again


@pytest.mark.slow
def test_the_same_study_on_sqlite_and_postgresql_gives_the_same_table(tmp_path, postgres_url):
    import uuid

    study = tiny_study(name=f"mmib-test-{uuid.uuid4().hex[:8]}")
    path = write(tmp_path, study)
    a = run_study(path, out=tmp_path / "sqlite", log=None)
    b = run_study(path, out=tmp_path / "pg", storage=postgres_url, log=None)
    assert a.done == b.done == 4
    table = lambda out: (out / "tables" / "main.csv").read_text()  # noqa: E731
    assert table(tmp_path / "sqlite") == table(tmp_path / "pg")
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        n = conn.execute(sa.text("select count(*) from mmib_study_runs where study = :s and state = 'done'"),
                         {"s": study["name"]}).scalar()
        conn.execute(sa.text("delete from mmib_study_runs where study = :s"), {"s": study["name"]})
    engine.dispose()
    assert n == 4
