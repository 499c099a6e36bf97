"""``mmib train`` under bad options, bad data, faults and concurrency: every case a one-line error (exit 2)
or a warning line, never a traceback or a silently wrong run directory."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from mmib.cli import main
from mmib.train import rundir

TINY = ["-d", "sim-msa", "--set", "data.n_train=120", "--set", "data.n_valid=40", "--set", "data.n_test=40",
        "--set", "hidden=8", "--set", "head_hidden=8", "-q"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *parts):
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and all(p in lines[0] for p in parts), err


@pytest.mark.parametrize(("setting", "message"), [
    ("lr=-1", "lr must be a finite number > 0, got -1.0"),
    ("weight_decay=-1", "weight_decay must be a finite number >= 0, got -1.0"),
    ("clip_grad=-1", "clip_grad must be a finite number > 0"),
    ("dropout=1.5", "model concat.dropout must lie in [0, 1), got 1.5"),
    ("threads=-1", "threads must be an integer >= 1"),
    ("eval_batch_size=0", "eval_batch_size must be an integer >= 1, got 0"),
])
def test_out_of_range_options_are_one_line_errors_before_any_data_is_made(tmp_path, capsys, setting, message):
    code, out, err = cli(capsys, "train", "-m", "concat", *TINY, "--set", setting, "--out", tmp_path / "r")
    one_line_error(code, err, message)
    assert out == "" and not (tmp_path / "r").exists()


def test_a_finite_explosion_ends_the_run_with_an_error(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "-m", "concat", *TINY, "--epochs", "3", "--set", "lr=1e3", "--set",
                       "optimizer=adam", "--set", "weight_decay=0", "--out", tmp_path / "r")
    one_line_error(code, err, "training diverged: valid predictions reach", "try a smaller lr (now 1000)")
    assert not (tmp_path / "r" / rundir.RESULTS).exists()


def test_output_folders_that_cannot_hold_a_run_fail_before_the_data_are_loaded(tmp_path, capsys, monkeypatch):
    f = tmp_path / "a-file"
    f.write_text("x")
    code, out, err = cli(capsys, "train", "-m", "concat", *TINY, "--out", f)
    one_line_error(code, err, f"{f}: exists and is not a folder")
    assert out == ""

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only)
    code, out, err = cli(capsys, "train", "-m", "concat", *TINY, "--out", tmp_path / "ro")
    one_line_error(code, err, "cannot write (Read-only file system); choose a folder you can write to")
    assert out == ""
    monkeypatch.undo()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir.os, "fsync", full)
    code, out, err = cli(capsys, "train", "-m", "concat", *TINY, "--out", tmp_path / "full")
    one_line_error(code, err, "cannot write (No space left on device); free some space")
    assert out == ""


def test_a_data_file_without_extension_puts_the_run_under_runs(tmp_path, capsys, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    feats = data_dir / "features"
    with open(feats, "wb") as f:  # an .npz without its extension
        np.savez(f, a=rng.normal(size=(60, 3)), y=rng.normal(size=60),
                 split=np.array(["train"] * 40 + ["valid"] * 10 + ["test"] * 10))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = cli(capsys, "train", "-m", "concat", "-d", feats, "--epochs", "1", "-q")
    assert code == 0, err
    assert (work / "runs" / "features-concat-seed0" / rundir.RESULTS).is_file()
    assert sorted(p.name for p in data_dir.iterdir()) == ["features"]


def test_an_edited_config_is_not_resumed_on_other_data(tmp_path, capsys):
    from mmib.api import train

    out = tmp_path / "r"

    def stop(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(model="concat", data="sim-msa", out=out, epochs=3, progress=False, epoch_callback=stop,
              data_options={"n_train": 120, "n_valid": 40, "n_test": 40})
    cfg = yaml.safe_load((out / rundir.CONFIG).read_text())
    cfg["data"]["options"]["n_train"] = 200
    (out / rundir.CONFIG).write_text(yaml.safe_dump(cfg))
    code, _, err = cli(capsys, "train", "--out", out, "--resume")
    one_line_error(code, err, "config.yaml: differs from the configuration the run started with (data.options.n_train",
                   "was 120, now 200")


def test_empty_sequences_and_an_empty_validation_split_are_warned_about(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 60
    split = np.array(["train"] * 50 + ["test"] * 10)
    base = dict(text=rng.normal(size=(n, 5)), audio=rng.normal(size=(n, 4, 3)), audio_lengths=np.zeros(n, dtype=int),
                vision=rng.normal(size=(n, 4, 2)), vision_lengths=np.zeros(n, dtype=int), y=rng.normal(size=n))
    np.savez(tmp_path / "empty.npz", **base, split=split)
    code, out, err = cli(capsys, "train", "-m", "concat", "-d", tmp_path / "empty.npz", "--epochs", "1", "-q",
                         "--out", tmp_path / "r1")
    assert code == 0 and "Traceback" not in err, err
    assert "mmib train: warning: " in err
    assert "modality 'audio' has length 0 in every training sample" in err
    assert "modality 'vision' has length 0 in every training sample" in err
    assert "the validation split is empty, so no best epoch can be selected" in err
    none = {k: v for k, v in base.items() if k != "text"}
    np.savez(tmp_path / "none.npz", **none, split=split)
    code, _, err = cli(capsys, "train", "-m", "mmim", "-d", tmp_path / "none.npz", "--epochs", "1", "-q",
                       "--out", tmp_path / "r2")
    one_line_error(code, err, "no data at all: every modality (audio, vision) has length 0")


def test_an_unreadable_data_file_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros((10, 2)), y=np.zeros(10))
    real_open = Path.open

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    code, _, err = cli(capsys, "train", "-m", "concat", "-d", "file", "--data-path", path, "--out", tmp_path / "r")
    one_line_error(code, err, f"{path}: cannot read (Permission denied)")


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "r"
    out.mkdir()
    (out / rundir.LOCK).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "start": "1",
                                               "since": "2020-01-01 00:00:00"}))
    code, _, err = cli(capsys, "train", "-m", "concat", *TINY, "--epochs", "1", "--out", out)
    assert code == 0, err
    assert f"mmib train: warning: {out}: took over the stale lock of process {dead.pid}" in err
    assert not (out / rundir.LOCK).exists()


def _train_cmd(out, *extra):
    return [sys.executable, "-m", "mmib", "train", "-m", "concat", *TINY, "--out", str(out), *extra]


def test_two_processes_on_one_out_cannot_both_write_it(tmp_path):
    out = tmp_path / "r"
    procs = [subprocess.Popen(_train_cmd(out, "--seed", str(s), "--epochs", "15", "--set", "patience=100"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True) for s in (0, 1)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], results
    loser = results[codes.index(2)][1]
    assert "Traceback" not in loser and len(loser.strip().splitlines()) == 1
    # "in use by process PID on HOST" once the holder has written its note, "in use by another process" if the
    # loser looks in between the holder's lock and its note (seen under load)
    assert "in use by " in loser or "holds a finished run" in loser or "holds an unfinished run" in loser
    winner = codes.index(0)
    config = yaml.safe_load((out / rundir.CONFIG).read_text())
    results_json = json.loads((out / rundir.RESULTS).read_text())
    assert config["train"]["seed"] == results_json["seed"] == winner  # one consistent run


def test_a_closed_stdout_ends_quietly(tmp_path):
    proc = subprocess.Popen(_train_cmd(tmp_path / "r", "--epochs", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert first.startswith(b"sim-msa:")
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert proc.returncode in (0, 141)
    assert (tmp_path / "r" / rundir.RESULTS).is_file()  # training itself was not disturbed


EPOCHS = 40
KILL_TRAIN = ["--epochs", str(EPOCHS), "--set", "patience=100", "--set", "threads=1", "--seed", "4"]


def _kill_during_checkpoint_write(out, epoch):
    """Run `mmib train` in a child that SIGKILLs itself halfway through writing epoch ``epoch``'s checkpoint."""
    code = f"""
import os, signal, sys
from mmib.train import rundir
real = rundir.atomic_write_with
count = {{"n": 0}}
def dying(path, write):
    if path.name == rundir.CHECKPOINT:
        count["n"] += 1
        if count["n"] == {epoch}:
            def half(tmp):
                write(tmp)
                data = tmp.read_bytes()
                tmp.write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, half)
    return real(path, write)
rundir.atomic_write_with = dying
from mmib.cli import main
sys.exit(main(sys.argv[1:]))
"""
    args = ["train", "-m", "concat", *TINY, "--out", str(out), *KILL_TRAIN]
    return subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, timeout=300)


def _epochs(out):
    return [r["epoch"] for r in rundir.read_jsonl(out / rundir.METRICS)]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_loses_at_most_one_epoch_and_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference, *KILL_TRAIN), env=ENV, check=True, capture_output=True, timeout=300)
    ref_rows = _strip(rundir.read_jsonl(reference / rundir.METRICS))
    ref_results = json.loads((reference / rundir.RESULTS).read_text())

    # killed in the middle of a checkpoint write: the torn temporary file is left behind
    out = tmp_path / "torn"
    proc = _kill_during_checkpoint_write(out, epoch=5)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in out.glob(".checkpoint.safetensors.*.tmp")]
    assert rundir.read_state_header(out / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT)["state"]["epoch"] == 4
    assert _epochs(out) == [1, 2, 3, 4, 5]  # metrics are written before the checkpoint
    runs = [out]

    # killed at arbitrary moments: a few milliseconds after the k-th epoch's metrics appear (mid-epoch,
    # during evaluation, or during one of the writes)
    for i, (k, delay) in enumerate(((2, 0.0), (6, 0.004), (11, 0.011), (17, 0.023), (25, 0.037))):
        d = tmp_path / f"timer{i}"
        p = subprocess.Popen(_train_cmd(d, *KILL_TRAIN), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while p.poll() is None and time.time() < deadline:
            try:
                if len((d / rundir.METRICS).read_text().splitlines()) >= k:
                    break
            except OSError:
                pass
            time.sleep(0.002)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if (d / rundir.CHECKPOINT).is_file() and not (d / rundir.RESULTS).is_file():
            runs.append(d)
    assert len(runs) >= 4
    for d in runs:
        saved = rundir.read_state_header(d / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT)["state"]["epoch"]
        assert _epochs(d) in (list(range(1, saved + 1)), list(range(1, saved + 2)))  # at most the running epoch
        done = subprocess.run([sys.executable, "-m", "mmib", "train", "--out", str(d), "--resume"], env=ENV,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        if d.name.startswith("timer"):
            assert "took over the stale lock" in done.stderr
        assert not list(d.glob(".*.tmp")) and not (d / rundir.CHECKPOINT).exists()
        assert _epochs(d) == list(range(1, EPOCHS + 1))  # no epoch missing or twice
        assert _strip(rundir.read_jsonl(d / rundir.METRICS)) == ref_rows  # the same numbers, epoch by epoch
        results = json.loads((d / rundir.RESULTS).read_text())
        assert results["test"] == ref_results["test"] and results["best_epoch"] == ref_results["best_epoch"]


def test_a_data_error_leaves_no_empty_run_directory(tmp_path, capsys):
    bad = tmp_path / "nan.npz"
    np.savez(bad, a=np.full((10, 2), np.nan), y=np.zeros(10), split=np.array(["train"] * 8 + ["test"] * 2))
    code, _, err = cli(capsys, "train", "-m", "concat", "-d", bad, "--out", tmp_path / "r")
    one_line_error(code, err, "NaN")
    assert not (tmp_path / "r").exists()
