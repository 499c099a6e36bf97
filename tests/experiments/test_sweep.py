"""mmib sweep: parameter specs, pruning through the engine's epoch callback, resumption, SQLite workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from mmib.errors import ConfigError  # noqa: E402
from mmib.experiments.sweep import ParamSpec, _train_trial, apply_params, default_storage, prepare, sweep  # noqa: E402


def test_param_specs_parse_every_form():
    p = ParamSpec.parse("beta=loguniform:1e-6:1")
    assert (p.name, p.kind, p.low, p.high, p.log) == ("beta", "loguniform", 1e-6, 1.0, True)
    p = ParamSpec.parse("dropout=uniform:0:0.5")
    assert (p.kind, p.low, p.high, p.log) == ("uniform", 0.0, 0.5, False)
    assert ParamSpec.parse("hidden=int:16:64:16").grid() == [16, 32, 48, 64]
    assert ParamSpec.parse("hidden=int:8:256:log").log is True
    p = ParamSpec.parse("fusion=choice:concat,tensor")
    assert p.choices == ("concat", "tensor") and p.grid() == ["concat", "tensor"]
    assert ParamSpec.parse("model.encoders.audio=choice:lstm,conv1d").name == "model.encoders.audio"
    assert ParamSpec.parse("x=choice:1,0.5,true").choices == (1, 0.5, True)


@pytest.mark.parametrize("text, message", [
    ("beta", "NAME=KIND"),
    ("beta=normal:0:1", "unknown kind"),
    ("beta=loguniform:0:1", "LOW > 0"),
    ("beta=uniform:1:0", "LOW < HIGH"),
    ("beta=uniform:a:1", "numbers"),
    ("h=int:1.5:4", "whole numbers"),
    ("h=int:1:4:0", "STEP"),
    ("f=choice:", "comma-separated"),
    ("f=choice:a,a", "twice"),
])
def test_param_spec_errors_name_the_parameter(text, message):
    with pytest.raises(ConfigError, match=message):
        ParamSpec.parse(text)


def test_grid_needs_discrete_parameters():
    with pytest.raises(ConfigError, match="grid"):
        ParamSpec.parse("beta=loguniform:1e-6:1").grid()


def test_epoch_callback_sees_every_epoch_and_can_stop_a_resumable_run(tmp_path, tiny_msa):
    from mmib.api import train

    class Stop(Exception):
        pass

    seen = []

    def callback(epoch, row):
        seen.append((epoch, row))
        if epoch == 2:
            raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):
        train(model="concat", data="sim-msa", dataset=tiny_msa, out=out, epochs=4, progress=False,
              epoch_callback=callback)
    assert [e for e, _ in seen] == [1, 2]
    assert "mae" in seen[1][1]["valid"] and "loss" in seen[1][1]["train"]
    assert (out / "checkpoint.safetensors").is_file() and not (out / "results.json").exists()
    result = train(out=out, resume=True, dataset=tiny_msa)
    assert result.results["epochs_run"] == 4


class _StubTrial:
    """Enough of an Optuna trial to drive the objective: prunes once two epochs were reported."""

    number = 7

    def __init__(self):
        self.reports, self.attrs = [], {}

    def suggest_float(self, name, low, high, log=False):
        return 3e-3

    def suggest_categorical(self, name, choices):
        return choices[0]

    def set_user_attr(self, key, value):
        self.attrs[key] = value

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= 2


def test_objective_reports_each_epoch_and_prunes(tmp_path, tiny_data, tiny_sets):
    setup, dataset = prepare("late", "sim-msa", ["lr=loguniform:1e-3:1e-2", "head_hidden=choice:8,16"], tmp_path,
                             trials=1, data_options=tiny_data, overrides=tiny_sets, epochs=5)
    trial = _StubTrial()
    with pytest.raises(optuna.TrialPruned):
        _train_trial(trial, setup, {})
    assert [s for s, _ in trial.reports] == [1, 2]
    assert all(v > 0 for _, v in trial.reports)  # validation mae
    run = tmp_path / "trials" / "0007"
    assert trial.attrs["epochs_run"] == 2 and trial.attrs["run_dir"] == str(run)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (run / "checkpoint.safetensors").exists()  # pruned trials are never resumed


def test_invalid_sweeps_fail_before_training(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="no_such_option"):
        prepare("late", "sim-msa", ["no_such_option=uniform:0:1"], tmp_path, data_options=tiny_data)
    with pytest.raises(ConfigError, match="grid"):
        prepare("late", "sim-msa", ["lr=loguniform:1e-4:1e-2"], tmp_path, sampler="grid", data_options=tiny_data)
    with pytest.raises(ConfigError, match="given twice"):
        prepare("late", "sim-msa", ["lr=uniform:0.001:0.01", "lr=uniform:0.001:0.02"], tmp_path)
    setup, _ = prepare("late", "sim-msa", ["head_hidden=choice:8,16", "hidden=int:8:16:8"], tmp_path, sampler="grid",
                       data_options=tiny_data)
    assert setup.trials == 4 and setup.direction == "minimize" and setup.monitor == "mae"
    assert setup.storage == f"sqlite:///{(tmp_path / 'study.db').resolve()}"


PARAMS = ["lr=loguniform:1e-3:1e-2", "head_hidden=choice:8,16,32"]


def _kwargs(tiny_data, tiny_sets):
    return dict(data_options=tiny_data, overrides=tiny_sets, epochs=2, sampler="random", pruner="none", log=None)


def test_sweep_resumes_after_interruption_without_repeating_finished_trials(tmp_path, monkeypatch, tiny_data,
                                                                            tiny_sets):
    import mmib.api

    out = tmp_path / "sweep"
    first = sweep("late", "sim-msa", PARAMS, out, trials=2, **_kwargs(tiny_data, tiny_sets))
    assert [(t["number"], t["state"]) for t in first.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/results.json")}
    assert len(stamps) == 2

    real_train = mmib.api.train

    def interrupted_train(*args, epoch_callback=None, **kwargs):
        def callback(epoch, row):
            epoch_callback(epoch, row)
            raise KeyboardInterrupt  # Ctrl-C during the first epoch of the next trial

        return real_train(*args, epoch_callback=callback, **kwargs)

    monkeypatch.setattr(mmib.api, "train", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        sweep("late", "sim-msa", PARAMS, out, trials=4, **_kwargs(tiny_data, tiny_sets))
    monkeypatch.setattr(mmib.api, "train", real_train)

    lines: list[str] = []
    final = sweep("late", "sim-msa", PARAMS, out, trials=4, **{**_kwargs(tiny_data, tiny_sets), "log": lines.append})
    assert any("queued again the interrupted trial(s) 2" in line for line in lines)
    assert any("2 of 4 trials finished; running 2 more" in line for line in lines)
    by_number = {t["number"]: t for t in final.trials}
    assert by_number[2]["state"] == "FAIL" and by_number[2]["user_attrs"]["interrupted"] is True
    complete = [t for t in final.trials if t["state"] == "COMPLETE"]
    assert len(complete) == 4
    for t in first.trials:  # finished trials are kept as they were, never trained again
        assert by_number[t["number"]]["params"] == t["params"] and by_number[t["number"]]["value"] == t["value"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    retry = next(t for t in final.trials if t["user_attrs"].get("retry_of") == 2)
    assert retry["state"] == "COMPLETE" and retry["params"] == by_number[2]["params"]
    assert len({json.dumps(t["params"], sort_keys=True) for t in complete}) == 4  # no configuration ran twice

    # continuing from the directory alone: the study is complete, nothing runs
    again = sweep(None, None, [], out, log=None)
    assert [t["number"] for t in again.trials] == [t["number"] for t in final.trials]
    assert (out / "sweep.md").read_text().count("| complete") == 4
    assert len((out / "trials.csv").read_text().splitlines()) == 1 + len(final.trials)

    # a different search in the same study is refused
    with pytest.raises(ConfigError, match="other settings"):
        sweep("late", "sim-msa", ["lr=uniform:0.001:0.01"], out, trials=5, **_kwargs(tiny_data, tiny_sets))


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_and_reruns_only_the_killed_trial(tmp_path, tiny_data, tiny_sets):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mmib", "sweep", "-m", "late", "-d", "sim-msa", "--out", str(out), "--trials", "3",
           "--epochs", "150", "--sampler", "random", "--pruner", "none", "--set", "threads=1", "--set", "patience=1000",
           *(f"--param={p}" for p in PARAMS), *(f"--set=data.{k}={v}" for k, v in tiny_data.items()),
           *(f"--set={s}" for s in tiny_sets)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    # 150 epochs keep trial 1 running for a second or more even on a fast machine: the kill lands mid-trial
    second = out / "trials" / "0001" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (second.is_file() and second.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: trial 1 stays RUNNING in the study
    proc.wait()
    first_result = (out / "trials" / "0000" / "results.json").stat().st_mtime_ns
    lines: list[str] = []
    result = sweep(None, None, [], out, log=lines.append)
    assert any("queued again the interrupted trial(s) 1" in line for line in lines)
    states = {t["number"]: t["state"] for t in result.trials}
    assert states[0] == "COMPLETE" and states[1] == "FAIL"
    assert sum(s == "COMPLETE" for s in states.values()) == 3
    assert (out / "trials" / "0000" / "results.json").stat().st_mtime_ns == first_result


@pytest.mark.slow
def test_two_local_workers_share_one_sqlite_study(tmp_path, tiny_data, tiny_sets):
    result = sweep("late", "sim-msa", PARAMS, tmp_path / "two", trials=4, workers=2,
                   **{**_kwargs(tiny_data, tiny_sets), "epochs": 1})
    complete = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert len(complete) == 4
    assert len({t["user_attrs"]["worker"] for t in complete}) == 2  # both processes ran trials


def test_together_reason_names_what_members_would_have_to_share(tmp_path, tiny_data):
    from mmib.experiments.sweep import together_reason

    ok, _ = prepare("e-mib", "sim-msa", ["beta=loguniform:1e-6:1", "lr=loguniform:1e-4:1e-2", "seed=int:0:9"],
                    tmp_path / "a", data_options=tiny_data)
    assert together_reason(ok) is None and ok.together == 4
    shape, _ = prepare("late", "sim-msa", PARAMS, tmp_path / "b", data_options=tiny_data)
    assert "head_hidden" in together_reason(shape)
    declared, _ = prepare("mmim", "sim-msa", ["lr=loguniform:1e-4:1e-2"], tmp_path / "c", data_options=tiny_data)
    assert "memory" in together_reason(declared)
    with pytest.raises(ConfigError, match="--together"):
        prepare("e-mib", "sim-msa", ["lr=loguniform:1e-4:1e-2"], tmp_path / "d", together=0)


def test_sweep_trains_trials_of_the_same_shape_together(tmp_path, tiny_data, tiny_sets):
    """lr and weight decay per member: every trial's objective is that of its config trained alone
    (to float rounding: no dropout), the log says trials ran together, the budget is kept."""
    from mmib.api import train

    lines: list[str] = []
    params = ["lr=loguniform:1e-3:1e-2", "weight_decay=loguniform:1e-6:1e-2"]
    result = sweep("concat", "sim-msa", params, tmp_path / "t", trials=5, together=3,
                   **{**_kwargs(tiny_data, [*tiny_sets, "model.dropout=0.0"]), "log": lines.append})
    assert any("trained 3 at a time as one vectorised ensemble" in line for line in lines)
    complete = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert len(result.trials) == len(complete) == 5
    setup = result.setup
    for t in complete[:2]:
        alone = train(config=apply_params(setup.config, t["params"]))
        assert t["value"] == pytest.approx(alone.valid[setup.monitor], abs=1e-4)
        assert (Path(t["user_attrs"]["run_dir"]) / "results.json").is_file()


def test_trials_together_prune_and_resume_after_ctrl_c(tmp_path, monkeypatch, tiny_data, tiny_sets):
    import mmib.experiments.sweep as sw

    real = sw._reporter

    def pruning(trial, setup, last):
        report = real(trial, setup, last)

        def wrapped(epoch, row):
            report(epoch, row)
            if trial.number == 1:
                raise optuna.TrialPruned("test")
            if trial.number == 4 and interrupt["on"]:
                raise KeyboardInterrupt

        return wrapped

    interrupt = {"on": True}
    monkeypatch.setattr(sw, "_reporter", pruning)
    params = ["beta=loguniform:1e-6:1e-1", "lr=loguniform:1e-3:1e-2"]
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        sweep("e-mib", "sim-msa", params, out, trials=5, together=3, **_kwargs(tiny_data, tiny_sets))
    states = {t.number: t.state.name for t in optuna.load_study(study_name="p", storage=default_storage(out)).trials}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE", 3: "FAIL", 4: "FAIL"}  # 3 and 4: one ensemble
    assert not (out / "trials" / "0001" / "checkpoint.pt").exists()
    interrupt["on"] = False
    lines: list[str] = []
    final = sweep(None, None, [], out, log=lines.append)
    assert any("queued again the interrupted trial(s) 3, 4" in line for line in lines)
    done = [t for t in final.trials if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(done) == 5 and sum(t["state"] == "COMPLETE" for t in final.trials) == 4


# ---------------------------------------------------------------------- storage secrets and the trial budget
SECRET = "hunter2-Secret"


@pytest.mark.parametrize(("url", "password"), [
    (f"postgresql+psycopg2://bob:{SECRET}@db.example:5432/studies", SECRET),
    (f"postgresql://bob@db.example/studies?password={SECRET}", SECRET),
    (f"postgresql://db.example/studies?sslmode=require&PASSWORD={SECRET}", SECRET),
    (f"postgresql://bob:{SECRET}@db.example/studies?password={SECRET}&sslpassword={SECRET}", SECRET),
    ("mysql+pymysql://bob:hunter2%40Secret@db/x", "hunter2@Secret"),
    (f"postgresql://bob:p@ss{SECRET}@db.example/studies", f"p@ss{SECRET}"),
    (f"postgresql://db/x?user=bob;passwd={SECRET}", SECRET),
    (f"postgresql://db/x?token={SECRET}", SECRET),
])
def test_every_form_of_a_password_in_a_storage_url_is_masked(url, password):
    from mmib.experiments.sweep import redact, scrub

    masked = redact(url)
    assert password not in masked and "hunter2" not in masked and "***" in masked
    assert "db" in masked  # the rest stays readable
    message = f"could not connect to {url}: password {password} rejected"
    assert "hunter2" not in scrub(message, url)


def test_a_url_without_a_password_is_shown_as_given():
    from mmib.experiments.sweep import redact

    for url in ("sqlite:////runs/sweep/study.db", "postgresql://bob@db:5432/x?sslmode=require"):
        assert redact(url) == url


def test_the_storage_url_comes_from_the_command_line_a_file_or_the_environment(tmp_path, monkeypatch):
    from mmib.experiments.sweep import STORAGE_ENV, resolve_storage

    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage() is None
    monkeypatch.setenv(STORAGE_ENV, " postgresql://bob@db/x \n")
    assert resolve_storage() == "postgresql://bob@db/x"
    f = tmp_path / "storage.txt"
    f.write_text(f"\npostgresql://bob:{SECRET}@db/x\n")
    assert resolve_storage(storage_file=f) == f"postgresql://bob:{SECRET}@db/x"  # the file wins over the variable
    assert resolve_storage("sqlite:///a.db") == "sqlite:///a.db"
    with pytest.warns(UserWarning, match=r"--storage postgresql://bob:\*\*\*@db/x: a password on the command line is "
                                         r"visible to other users \(ps\); put the URL in \$MMIB_STORAGE"):
        resolve_storage(f"postgresql://bob:{SECRET}@db/x")
    with pytest.raises(ConfigError, match="either --storage or --storage-file"):
        resolve_storage("sqlite:///a.db", f)
    with pytest.raises(ConfigError, match=r"--storage-file .*missing.txt: cannot read \(No such file or directory\)"):
        resolve_storage(storage_file=tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        resolve_storage(storage_file=tmp_path / "empty.txt")


def _sweep_args(out, tiny_data, tiny_sets, trials=1):
    return ["sweep", "-m", "late", "-d", "sim-msa", "--out", str(out), "--trials", str(trials), "--epochs", "1",
            "--sampler", "random", "--pruner", "none", *(f"--param={p}" for p in PARAMS),
            *(f"--set=data.{k}={v}" for k, v in tiny_data.items()), *(f"--set={s}" for s in tiny_sets)]


def _all_text(folder):
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix != ".db"
                   and p.suffix != ".safetensors")


def test_a_password_in_the_storage_url_reaches_no_output_and_no_file(tmp_path, monkeypatch, capsys, tiny_data,
                                                                      tiny_sets):
    from mmib.cli import main
    from mmib.experiments.sweep import STORAGE_ENV

    out = tmp_path / "sweep"
    url = f"sqlite:///{tmp_path / 'study.db'}?password={SECRET}"  # SQLite ignores the parameter (with a warning)
    monkeypatch.setenv(STORAGE_ENV, url)
    assert main(_sweep_args(out, tiny_data, tiny_sets)) == 0
    printed = "".join(capsys.readouterr())
    assert SECRET not in printed and "password=***" in printed
    written = _all_text(out)
    assert SECRET not in written and "password=***" in json.loads((out / "sweep.json").read_text())["storage"]
    for name in ("sweep.md", "trials.json", "sweep.json"):
        assert "password=***" in (out / name).read_text()
    # continuing from the directory needs the URL again (it was never written), and masks it again
    monkeypatch.delenv(STORAGE_ENV)
    assert main(["sweep", "--out", str(out)]) == 2
    assert "has a password, which is never written to a file" in capsys.readouterr().err
    (tmp_path / "url.txt").write_text(url + "\n")
    assert main(["sweep", "--out", str(out), "--storage-file", str(tmp_path / "url.txt")]) == 0
    assert SECRET not in "".join(capsys.readouterr()) and SECRET not in _all_text(out)


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg2://bob@127.0.0.1:1/studies?password={SECRET}",
    f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:1/studies",
    f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:notaport/studies",
    f"nosuchdb://bob:{SECRET}@host/x",
])
def test_the_error_path_masks_the_password_too(tmp_path, capsys, tiny_data, tiny_sets, url):
    pytest.importorskip("psycopg2")
    from mmib.cli import main

    out = tmp_path / "sweep"
    assert main([*_sweep_args(out, tiny_data, tiny_sets), "--storage-file", str(_file(tmp_path, url))]) == 2
    err = capsys.readouterr().err
    assert "mmib sweep: error: --storage " in err and "***" in err and len(err.strip().splitlines()) == 1
    assert SECRET not in err and (not out.exists() or SECRET not in _all_text(out))


def _file(tmp_path, text):
    f = tmp_path / "storage.txt"
    f.write_text(text + "\n")
    return f


def test_a_trial_asked_for_beyond_the_budget_is_surplus_and_never_trains(tmp_path, monkeypatch, tiny_data):
    """Two workers asked for trials 3 and 4 at the same moment, with 3 trials finished and a budget of 4."""
    import mmib.experiments.sweep as sw

    setup, _ = prepare("late", "sim-msa", PARAMS, tmp_path, trials=4, data_options=tiny_data)
    study = optuna.create_study()
    for _ in range(3):
        t = study.ask()
        study.tell(t, 1.0)
    first, second = study.ask(), study.ask()  # both RUNNING, numbered 3 and 4
    trained = []
    monkeypatch.setattr(sw, "_train_trial", lambda trial, s, c: trained.append(trial.number) or 0.5)
    with pytest.raises(sw.SurplusTrial, match="trial 4: the study already has 4 trials"):
        sw._budgeted_trial(second, setup, {})
    assert sw._budgeted_trial(first, setup, {}) == 0.5
    assert trained == [3] and second.user_attrs["surplus"] is True
    study.tell(second, state=optuna.trial.TrialState.FAIL)
    study.tell(first, 0.5)
    assert sw.claimed_trials(study) == 4
    records = sw.trial_records(study)
    assert [r["state"] for r in records] == ["COMPLETE"] * 4 + ["SURPLUS"]


@pytest.mark.slow
def test_two_sweep_processes_on_one_sqlite_study_finish_exactly_the_budget(tmp_path, tiny_data, tiny_sets):
    out = tmp_path / "shared"
    # 8-epoch trials: both processes have a trial running when the 4th finishes (the old code then ran 5)
    cmd = [sys.executable, "-m", "mmib", *_sweep_args(out, tiny_data, tiny_sets, trials=4), "--set", "threads=1",
           "--epochs", "8", "--set", "patience=100"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
             for _ in range(2)]
    errors = [p.communicate(timeout=600)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{(out / 'study.db').resolve()}")
    states = [t.state.name for t in study.trials if not t.user_attrs.get("surplus")]
    assert states.count("COMPLETE") == 4 and len(states) == 4
    assert all("failed" not in e.lower() for e in errors), errors  # surplus trials are not reported as failures


def test_continuing_from_the_directory_never_trusts_pickles(tmp_path, tiny_data):
    setup, _ = prepare("late", "sim-msa", PARAMS, tmp_path, trials=1, data_options=tiny_data)
    saved = setup.public()
    saved["base"]["data"]["trust_pickle"] = True  # as a stranger's sweep.json could say
    (tmp_path / "sweep.json").write_text(json.dumps(saved))
    again, _ = prepare(None, None, [], tmp_path)
    assert again.config.data.trust_pickle is False
    from mmib.experiments._util import comparable_config

    assert comparable_config(again.base) == comparable_config(saved["base"])  # still the same study
