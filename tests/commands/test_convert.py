"""Old-format runs: no command unpickles them (a hostile model.pt or checkpoint.pt stays inert), and
``mmib convert`` rewrites them in the safe format so that they evaluate and resume as before."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from mmib.cli import main
from mmib.train import rundir

TINY = ["-d", "sim-msa", "--set", "data.n_train=120", "--set", "data.n_valid=40", "--set", "data.n_test=40",
        "--set", "hidden=8", "--set", "head_hidden=8", "-q"]


class RunsCode:
    """Unpickling this writes ``marker`` (any code could run instead)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run in the current format."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "-m", "concat", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _interrupted(out):
    """A run stopped after 2 of 4 epochs (checkpoint present, no results)."""
    from mmib.api import train

    class Stop(Exception):
        pass

    def stop(epoch, row):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(model="concat", data="sim-msa", out=out, epochs=4, progress=False, epoch_callback=stop,
              data_options={"n_train": 120, "n_valid": 40, "n_test": 40}, model_options={"hidden": 8, "head_hidden": 8})
    return out


def _to_legacy(run_dir):
    """Rewrite a run as mmib wrote it before the safe format: pickled payloads in model.pt / checkpoint.pt."""
    for new, old, kind in ((rundir.MODEL, rundir.LEGACY_MODEL, rundir.MODEL_FORMAT),
                           (rundir.CHECKPOINT, rundir.LEGACY_CHECKPOINT, rundir.CHECKPOINT_FORMAT)):
        if (run_dir / new).is_file():
            payload = rundir.read_state(run_dir / new, kind)
            payload.pop("config", None), payload.pop("data", None)
            torch.save({"format": kind, **({"version": 1} if kind == rundir.MODEL_FORMAT else {}), **payload},
                       run_dir / old)
            (run_dir / new).unlink()


def _hostile_legacy_run(tmp_path, finished, marker):
    """A shared run directory as a stranger might send it: config, metrics and results, and pickles that run code."""
    run = tmp_path / "downloaded"
    run.mkdir()
    for name in (rundir.CONFIG, rundir.METRICS, rundir.RESULTS):
        shutil.copy(finished / name, run / name)
    for name in rundir.LEGACY_FILES:
        torch.save({"format": "mmib-model", "payload": RunsCode(marker)}, run / name)
    return run


def test_no_command_unpickles_a_hostile_model_pt_or_checkpoint_pt(tmp_path, finished, capsys):
    marker = tmp_path / "marker"
    run = _hostile_legacy_run(tmp_path, finished, marker)
    npz = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, text=rng.normal(size=(3, 128)), audio=rng.normal(size=(3, 74)), vision=rng.normal(size=(3, 47)))
    convert_hint = f"an old-format run (model.pt is a pickle, which can run code when loaded"
    for args in (["eval", run], ["predict", run, "--input", npz], ["robust", run, "--levels", "0,1"],
                 ["probe", run]):
        code, _, err = cli(capsys, *args)
        assert code == 2 and convert_hint in err and f"mmib convert {run}" in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and not marker.exists(), args
    (run / rundir.RESULTS).unlink()  # an unfinished run: --resume reads the checkpoint
    code, _, err = cli(capsys, "train", "--out", run, "--resume")
    assert code == 2 and "checkpoint.pt is a pickle" in err and f"mmib convert {run}" in err
    shutil.copy(finished / rundir.RESULTS, run / rundir.RESULTS)
    code, out, err = cli(capsys, "report", run, "-o", tmp_path / "report")  # with t-SNE, which loads models
    assert code == 0, err
    assert not marker.exists()


def test_pickles_dropped_into_a_current_run_are_never_read(tmp_path, finished, capsys):
    marker = tmp_path / "marker"
    run = tmp_path / "current"
    shutil.copytree(finished, run)
    for name in rundir.LEGACY_FILES:
        torch.save(RunsCode(marker), run / name)
    code, out, err = cli(capsys, "eval", run)
    assert code == 0 and "| mae " in out, err
    code, out, err = cli(capsys, "robust", run, "--levels", "0,1", "-o", tmp_path / "robust")
    assert code == 0, err
    code, out, err = cli(capsys, "report", run, "-o", tmp_path / "report")
    assert code == 0, err
    assert not marker.exists()


def test_convert_makes_an_old_run_evaluate_and_resume_exactly_as_before(tmp_path, capsys):
    from mmib.api import evaluate, load_run

    reference = tmp_path / "reference"
    _interrupted(reference)
    code, _, err = cli(capsys, "train", "--out", reference, "--resume")
    assert code == 0, err

    old = _interrupted(tmp_path / "old")
    _to_legacy(old)
    assert sorted(p.name for p in old.iterdir()) == sorted([rundir.CONFIG, rundir.METRICS, *rundir.LEGACY_FILES])
    code, _, err = cli(capsys, "train", "--out", old, "--resume")
    assert code == 2 and f"mmib convert {old}" in err
    code, out, err = cli(capsys, "convert", old)
    assert code == 0 and "unpickling" in err and "runs any code" in err
    assert f"converted {old}: checkpoint.pt -> checkpoint.safetensors; model.pt -> model.safetensors" in out
    assert not rundir.legacy_files(old)
    code, _, err = cli(capsys, "train", "--out", old, "--resume")
    assert code == 0, err
    a, b = load_run(reference), load_run(old)
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    assert json.loads((reference / rundir.RESULTS).read_text())["test"] == json.loads((old / rundir.RESULTS).read_text())["test"]
    assert evaluate(b) == evaluate(a)


def test_convert_finds_every_old_run_below_a_folder_and_refuses_folders_without_one(tmp_path, finished, capsys):
    for name in ("cmp/concat/seed0", "cmp/concat/seed1"):
        shutil.copytree(finished, tmp_path / name)
        _to_legacy(tmp_path / name)
    code, out, _ = cli(capsys, "convert", tmp_path / "cmp")
    assert code == 0 and out.count("converted ") == 2
    code, out, err = cli(capsys, "eval", tmp_path / "cmp" / "concat" / "seed1")
    assert code == 0, err
    code, _, err = cli(capsys, "convert", tmp_path / "cmp")
    assert code == 2 and "no old-format run (no model.pt or checkpoint.pt) in it or below it" in err
    code, _, err = cli(capsys, "convert", tmp_path / "missing")
    assert code == 2 and "no such folder" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"something": "else"}, bad / rundir.LEGACY_MODEL)
    code, _, err = cli(capsys, "convert", bad)
    assert code == 2 and "model.pt: not an old-format mmib model file" in err
    assert (bad / rundir.LEGACY_MODEL).is_file() and not (bad / rundir.MODEL).exists()


def test_model_files_with_missing_entries_are_clear_errors(tmp_path, finished, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    payload = rundir.read_state(run / rundir.MODEL, rundir.MODEL_FORMAT)
    for key in ("spec", "state_dict", "options"):
        rundir.write_state(run / rundir.MODEL, rundir.MODEL_FORMAT, {k: v for k, v in payload.items() if k != key})
        code, _, err = cli(capsys, "eval", run)
        assert code == 2 and f"model.safetensors: has no '{key}' (not a complete mmib model file)" in err
    rundir.write_state(run / rundir.MODEL, rundir.MODEL_FORMAT, {**payload, "spec": {"modalities": "x"}})
    code, _, err = cli(capsys, "eval", run)
    assert code == 2 and "model.safetensors: malformed 'spec'" in err
    rundir.write_state(run / rundir.MODEL, rundir.MODEL_FORMAT, {**payload, "model": "no-such-model"})
    code, _, err = cli(capsys, "eval", run)
    assert code == 2 and "model.safetensors: unknown model 'no-such-model'" in err
