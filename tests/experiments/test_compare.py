"""mmib compare: planning, paired t-tests, aggregation and the end-to-end command."""

from __future__ import annotations

import csv
import math

import pytest
from scipy.stats import ttest_rel

from mmib.cli import main
from mmib.errors import ConfigError, RunError
from mmib.experiments.compare import (
    aggregate,
    compare,
    paired_pvalue,
    parse_seeds,
    plan_runs,
    render_csv,
    render_latex,
    render_markdown,
    shared_overrides_for,
    split_overrides,
    with_reference,
)


def test_paired_pvalue_is_scipys_ttest_rel_over_common_seeds():
    a = {0: 1.0, 1: 2.0, 2: 4.0, 3: float("nan")}
    b = {0: 0.5, 1: 1.7, 2: 3.1, 3: 9.0, 4: 1.0}
    assert paired_pvalue(a, b) == pytest.approx(ttest_rel([1.0, 2.0, 4.0], [0.5, 1.7, 3.1]).pvalue)
    assert paired_pvalue({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}) == 1.0  # identical: no evidence of a difference
    assert paired_pvalue({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0}) == 0.0  # constant non-zero difference
    assert math.isnan(paired_pvalue({0: 1.0}, {0: 2.0}))  # one pair: undefined


def _rows():
    # model a: better mae, model b: better corr; three seeds
    vals = {"a": ([0.70, 0.72, 0.71], [0.50, 0.52, 0.49]), "b": ([0.80, 0.83, 0.79], [0.60, 0.61, 0.63])}
    rows = []
    for model, (maes, corrs) in vals.items():
        for seed, (mae, corr) in enumerate(zip(maes, corrs)):
            rows.append({"model": model, "seed": seed, "path": f"x/{model}/seed{seed}", "metrics": {},
                         "results": {"dataset": "toy", "test": {"mae": mae, "corr": corr}, "params": 100 + seed,
                                     "seconds_per_epoch": 0.5, "peak_rss_mb": 10.0, "peak_gpu_mb": None}})
    return rows


def test_aggregate_marks_best_by_metric_direction_and_tests_against_it():
    c = aggregate(_rows(), "test")
    assert c.metrics == ["mae", "corr"] and c.models == ["a", "b"] and c.seeds == [0, 1, 2]
    assert c.best == {"mae": "a", "corr": "b"}  # mae: lower is better; corr: higher is better
    assert c.mean["a"]["mae"] == pytest.approx(0.71)
    assert c.std["a"]["mae"] == pytest.approx(0.01)  # sample std (ddof=1)
    assert c.pvalue["b"]["mae"] == pytest.approx(ttest_rel([0.80, 0.83, 0.79], [0.70, 0.72, 0.71]).pvalue)
    assert c.pvalue["a"]["corr"] == pytest.approx(ttest_rel([0.50, 0.52, 0.49], [0.60, 0.61, 0.63]).pvalue)
    assert math.isnan(c.pvalue["a"]["mae"])  # the best is not tested against itself
    assert c.efficiency["a"]["params"] == pytest.approx(101.0) and c.efficiency["a"]["peak_gpu_mb"] is None
    md = render_markdown(c)
    assert "**0.7100 ± 0.0100**" in md and "0.8067 ± 0.0208 †" in md  # best bold; b significantly worse on mae
    assert "params" in md and "s/epoch" in md and "peak RSS MB" in md
    tex = render_latex(c)
    assert r"\textbf{0.710 $\pm$ 0.010}" in tex and r"$^\dagger$" in tex and r"\toprule" in tex
    rows = list(csv.DictReader(render_csv(c).splitlines()))
    assert len(rows) == 4
    b_mae = next(r for r in rows if r["model"] == "b" and r["metric"] == "mae")
    assert b_mae["best"] == "0" and float(b_mae["p_vs_best"]) < 0.05 and b_mae["mode"] == "min"


def test_aggregate_restricts_metrics_and_rejects_unknown_ones():
    assert aggregate(_rows(), "test", metrics=["corr"]).metrics == ["corr"]
    with pytest.raises(ConfigError, match="acc7"):
        aggregate(_rows(), "test", metrics=["acc7"])
    with pytest.raises(RunError, match="valid"):
        aggregate(_rows(), "valid")


def test_seeds_and_per_model_overrides():
    assert parse_seeds(3) == [0, 1, 2] and parse_seeds("2") == [0, 1] and parse_seeds("4,7") == [4, 7]
    for bad in ("0", "a", "1,1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    common, per = split_overrides(["lr=0.01", "late:head_hidden=8"], ["concat", "late"])
    assert common == ["lr=0.01"] and per == {"concat": [], "late": ["head_hidden=8"]}
    with pytest.raises(ConfigError, match="not one of the compared models"):
        split_overrides(["mmim:beta=1"], ["concat"])


def test_plan_runs_validates_before_training(tmp_path, tiny_data):
    runs = plan_runs(["concat", "late"], "sim-msa", 2, tmp_path, data_options=tiny_data, jobs=2,
                     overrides=["late:head_hidden=8"])
    assert [(r.model, r.seed) for r in runs] == [("concat", 0), ("concat", 1), ("late", 0), ("late", 1)]
    assert runs[3].path == tmp_path / "late" / "seed1" and runs[3].config.train.seed == 1
    assert runs[2].config.model.options["head_hidden"] == 8 and "head_hidden" not in runs[0].config.model.options
    assert all(r.config.train.threads >= 1 and r.config.train.progress is False for r in runs)
    with pytest.raises(ConfigError, match="unknown model"):
        plan_runs(["concat", "nope"], "sim-msa", 1, tmp_path)
    with pytest.raises(ConfigError, match="no_such_option"):
        plan_runs(["concat"], "sim-msa", 1, tmp_path, overrides=["no_such_option=3"])


def test_common_options_reach_the_models_that_have_them_and_the_reference_is_added_once(tmp_path, tiny_data):
    common = ["lr=0.01", "hidden=16", "data.seed=3", "model.fusion=add"]
    assert shared_overrides_for("linear", common, ["concat", "linear"]) == ["lr=0.01", "data.seed=3", "model.fusion=add"]
    assert shared_overrides_for("concat", common, ["concat", "e-mib"]) == ["lr=0.01", "hidden=16", "data.seed=3"]
    assert shared_overrides_for("e-mib", common, ["concat", "e-mib"]) == common
    assert with_reference(["concat"]) == ["concat", "linear"] and with_reference(["linear", "c-mib"]) == ["linear", "c-mib"]
    runs = plan_runs(with_reference(["concat"]), "sim-msa", 1, tmp_path, data_options=tiny_data, overrides=["hidden=16"])
    assert runs[0].config.model.options["hidden"] == 16 and "hidden" not in runs[1].config.model.options
    with pytest.raises(ConfigError, match="hiden"):  # an option no compared model has is still a typo
        plan_runs(["concat", "linear"], "sim-msa", 1, tmp_path, overrides=["hiden=16"])


def test_no_reference_drops_the_linear_row(tmp_path, tiny_data):
    out = tmp_path / "cmp"
    args = ["compare", "-m", "linear", "-d", "sim-msa", "--seeds", "1", "--out", str(out), "--no-reference",
            *(f"--set=data.{k}={v}" for k, v in tiny_data.items())]
    assert main(args) == 0
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["linear"]
    out2 = tmp_path / "cmp2"
    assert main(["compare", "-m", "concat", "-d", "sim-msa", "--seeds", "1", "--epochs", "1", "--out", str(out2),
                 "--no-reference", *(f"--set=data.{k}={v}" for k, v in tiny_data.items())]) == 0
    assert not (out2 / "linear").exists() and "linear" not in (out2 / "compare.md").read_text()


def test_compare_two_models_two_seeds_writes_tables_and_skips_finished_runs(tmp_path, tiny_data, tiny_sets, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "-m", "concat,late", "-d", "sim-msa", "--seeds", "2", "--jobs", "2", "--epochs", "2",
            "--out", str(out), *(f"--set=data.{k}={v}" for k, v in tiny_data.items()),
            *(f"--set={s}" for s in tiny_sets)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| concat" in printed and "| late" in printed and "mae ↓" in printed and "corr ↑" in printed
    assert "| linear" in printed  # the reference row is added by default
    for model in ("concat", "late", "linear"):
        for seed in (0, 1):
            assert (out / model / f"seed{seed}" / "results.json").is_file()
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert {r["model"] for r in rows} == {"concat", "late", "linear"} and len(rows) == 3 * 9  # 9 regression metrics
    mae = {r["model"]: r for r in rows if r["metric"] == "mae"}
    best = next(m for m, r in mae.items() if r["best"] == "1")
    other = next(m for m in mae if m != best)
    assert mae[other]["p_vs_best"] != "" and 0.0 <= float(mae[other]["p_vs_best"]) <= 1.0  # a real t-test value
    assert mae[best]["p_vs_best"] == "" and int(mae[best]["n"]) == 2
    assert r"\begin{tabular}" in (out / "compare.tex").read_text()
    runs_csv = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs_csv) == 6 and all(float(r["params"]) > 0 and float(r["seconds_per_epoch"]) > 0 for r in runs_csv)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/results.json")}

    # rerun (in-process): every run is finished, nothing is retrained, the tables are rewritten identically
    lines: list[str] = []
    c = compare(["concat", "late"], "sim-msa", 2, out, data_options=tiny_data, overrides=tiny_sets, epochs=2,
                log=lines.append)
    assert lines[0].startswith("6 runs: 6 already finished, 0 to train")
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/results.json")} == stamps
    assert c.best["mae"] == best

    # the same directory with other settings is refused rather than mixed
    with pytest.raises(RunError, match="different configuration"):
        compare(["concat"], "sim-msa", 1, out, data_options=tiny_data, overrides=tiny_sets, epochs=3, log=None)


def test_group_runs_groups_seeds_splits_for_processes_and_keeps_unsupported_models_apart(tmp_path, tiny_data):
    from mmib.experiments.compare import group_runs

    runs = plan_runs(["concat", "mmim"], "sim-msa", 4, tmp_path, data_options=tiny_data)
    data_seed = plan_runs(["concat"], "sim-msa", 2, tmp_path / "d1", data_options=tiny_data, overrides=["data.seed=1"])
    pending = [(r, "new") for r in runs + data_seed]
    lines: list[str] = []
    tasks = group_runs(pending, jobs=1, log=lines.append)
    sizes = [(t[0][0].model, len(t)) for t in tasks]
    assert sizes[0] == ("concat", 6)  # seeds 0-3 of data seed 0 and seeds 0-1 of data seed 1: one ensemble
    assert sizes.count(("mmim", 1)) == 4 and len(tasks) == 5
    assert any("mmim: 4 runs one at a time" in line and "memory" in line for line in lines)
    concat_only = [(r, "new") for r in runs if r.model == "concat"]
    assert sorted(len(t) for t in group_runs(concat_only, jobs=3)) == [1, 1, 2]
    assert [len(t) for t in group_runs(concat_only, jobs=1, max_together=3)] == [3, 1]
    assert [len(t) for t in group_runs(concat_only, jobs=1, together=False)] == [1, 1, 1, 1]


def test_compare_trains_seeds_together_and_says_so(tmp_path, tiny_data, tiny_sets):
    """The grouped path gives each seed the result of its run alone (to float rounding; no dropout)."""
    sets = [*tiny_sets, "model.dropout=0.0"]
    lines: list[str] = []
    together = compare(["concat"], "sim-msa", 3, tmp_path / "t", data_options=tiny_data, overrides=sets, epochs=3,
                       log=lines.append)
    assert any("seeds 0,1,2: training 3 runs of concat together" in line for line in lines)
    alone = compare(["concat"], "sim-msa", 3, tmp_path / "a", data_options=tiny_data, overrides=sets, epochs=3,
                    log=None, together=False)
    for s in range(3):
        assert together.values["concat"]["mae"][s] == pytest.approx(alone.values["concat"]["mae"][s], abs=1e-4)


@pytest.mark.slow
def test_compare_jobs_gives_unsupported_groups_back_as_single_runs(tmp_path, tiny_sets):
    """An LSTM over sequences fails the vmap trial in its worker: its seeds come back as one task each."""
    lines: list[str] = []
    data = {"n_train": 64, "n_valid": 16, "n_test": 16, "seq_len": 5}
    c = compare(["concat"], "sim-msa", 4, tmp_path / "s", jobs=2, data_options=data, overrides=[*tiny_sets, "model.encoder=lstm"], epochs=1,
                reference=False,
                log=lines.append)
    assert any("one at a time (concat does not run under torch.func.vmap" in line for line in lines)
    assert not c.failed and len(c.runs) == 4
