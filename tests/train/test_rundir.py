"""Run-directory files: the safe state format, atomic writes and their failures, the lock, the checks
before a run starts, and old-format runs."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmib.errors import RunError
from mmib.train import rundir


def test_pack_round_trips_every_admitted_kind_exactly(tmp_path):
    rng_state = random.Random(5).getstate()
    np_state = np.random.RandomState(3).get_state()
    obj = {
        "weights": {"a.weight": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "empty": torch.zeros(2, 0)},
        "half": torch.randn(4, dtype=torch.bfloat16),
        "python_rng": rng_state,
        "numpy_rng": np_state,
        "optim": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}}, "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "params": [0], "foreach": None}]},
        "floats": [math.nan, math.inf, -math.inf, 0.1 + 0.2, 1e-300],
        "nested": {"__dunder": 1, "t": (1, "x", None, True)},
        "scalar": np.float32(2.5),
    }
    rundir.write_state(tmp_path / "s.safetensors", "mmib-test", obj)
    back = rundir.read_state(tmp_path / "s.safetensors", "mmib-test")
    for k, v in obj["weights"].items():
        assert torch.equal(back["weights"][k], v) and back["weights"][k].dtype == v.dtype
    assert torch.equal(back["half"], obj["half"]) and back["half"].dtype == torch.bfloat16
    assert back["python_rng"] == rng_state  # tuples stay tuples: random.setstate accepts it
    random.Random().setstate(back["python_rng"])
    assert back["numpy_rng"][0] == "MT19937" and back["numpy_rng"][1].dtype == np.uint32
    assert np.array_equal(back["numpy_rng"][1], np_state[1]) and back["numpy_rng"][2:] == np_state[2:]
    assert list(back["optim"]["state"]) == [0]  # int keys stay ints
    assert back["optim"]["param_groups"][0]["betas"] == (0.9, 0.999)
    f = back["floats"]
    assert math.isnan(f[0]) and f[1:] == [math.inf, -math.inf, 0.1 + 0.2, 1e-300]
    assert back["nested"] == {"__dunder": 1, "t": (1, "x", None, True)}
    assert back["scalar"] == 2.5


@pytest.mark.parametrize("large", [False, True], ids=["numpy writer", "torch writer"])
def test_state_files_are_the_bytes_safetensors_torch_writes(tmp_path, monkeypatch, large):
    """Both writers of :func:`rundir.write_state` (NumPy for small files, torch for large ones or
    dtypes NumPy lacks) give byte for byte the file ``safetensors.torch.save_file`` writes."""
    from safetensors.torch import save_file

    if large:
        monkeypatch.setattr(rundir, "_NUMPY_WRITE_MAX_BYTES", 0)
    obj = {"w": torch.randn(3, 4), "t": torch.randn(4, 3).t(), "i": torch.arange(5), "b": torch.tensor([True, False]),
           "h": torch.randn(2, dtype=torch.float16), "d": torch.randn(2, dtype=torch.float64),
           "u": torch.arange(3, dtype=torch.uint8), "empty": torch.zeros(2, 0), "n": 3}
    rundir.write_state(tmp_path / "ours.safetensors", "k", obj)
    tree, tensors = rundir.pack(obj)
    header = json.dumps({"format": "k", "version": rundir.STATE_VERSION, "payload": tree})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "torch.safetensors"),
              metadata={"mmib": header})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "torch.safetensors").read_bytes()
    back = rundir.read_state(tmp_path / "ours.safetensors", "k")
    assert all(torch.equal(back[k], obj[k]) and back[k].dtype == obj[k].dtype for k in obj if k != "n")
    # a dtype NumPy lacks goes through the torch writer whatever the size
    rundir.write_state(tmp_path / "bf16.safetensors", "k", {"x": torch.randn(3, dtype=torch.bfloat16)})
    assert rundir.read_state(tmp_path / "bf16.safetensors", "k")["x"].dtype == torch.bfloat16


def test_shared_and_strided_tensors_are_stored(tmp_path):
    w = torch.randn(4, 4)
    rundir.write_state(tmp_path / "s.safetensors", "k", {"a": w, "tied": w, "t": w.t()})
    back = rundir.read_state(tmp_path / "s.safetensors", "k")
    assert torch.equal(back["a"], w) and torch.equal(back["tied"], w) and torch.equal(back["t"], w.t())


def test_objects_that_are_not_plain_data_are_refused():
    with pytest.raises(TypeError, match="a object cannot be stored"):
        rundir.pack({"x": object()})
    with pytest.raises(TypeError, match="NumPy arrays of object"):
        rundir.pack({"x": np.array(["a", 1], dtype=object)})


def test_reading_a_state_file_checks_format_and_names_the_file(tmp_path):
    p = tmp_path / "m.safetensors"
    with pytest.raises(RunError, match=rf"^{p}: no such file$"):
        rundir.read_state(p, "mmib-model")
    rundir.write_state(p, "mmib-checkpoint", {"a": 1})
    with pytest.raises(RunError, match=r"format 'mmib-checkpoint', expected 'mmib-model'"):
        rundir.read_state(p, "mmib-model")
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(RunError, match=rf"^{p}: not a readable run file"):
        rundir.read_state(p, "mmib-checkpoint")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(p))
    with pytest.raises(RunError, match="no mmib header"):
        rundir.read_state(p, "mmib-model")
    header = json.dumps({"format": "mmib-model", "version": rundir.STATE_VERSION + 1, "payload": {}})
    save_file({"x": torch.zeros(1)}, str(p), metadata={"mmib": header})
    with pytest.raises(RunError, match="written by a newer mmib"):
        rundir.read_state(p, "mmib-model")


def test_a_pickle_named_like_a_state_file_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    p = tmp_path / rundir.MODEL
    p.write_bytes(pickle.dumps(_Hostile(str(marker))))
    with pytest.raises(RunError, match="not a readable"):
        rundir.read_state(p, rundir.MODEL_FORMAT)
    assert not marker.exists()


class _Hostile:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_a_run_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old\n")
    monkeypatch.setattr(rundir.os, "fsync", _enospc)
    with pytest.raises(RunError, match=rf"^{target}: cannot write \(No space left on device\); free some space"):
        rundir.atomic_write_json(target, {"a": 1})
    assert target.read_text() == "old\n"  # the previous file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_prepare_dir_refuses_files_read_only_folders_and_full_disks(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunError, match=rf"^{f}: exists and is not a folder"):
        rundir.prepare_dir(f)
    with pytest.raises(RunError, match="a part of the path is a file, not a folder"):
        rundir.prepare_dir(f / "below")
    assert rundir.prepare_dir(tmp_path / "new" / "run").is_dir()
    with pytest.raises(RunError, match=r"MiB free on its disk; the run needs about"):
        rundir.prepare_dir(tmp_path / "new" / "run", need_bytes=2**62)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only)
    with pytest.raises(RunError, match=r"cannot write \(Read-only file system\); choose a folder you can write to"):
        rundir.prepare_dir(tmp_path / "new" / "run")
    monkeypatch.undo()
    monkeypatch.setattr(rundir.os, "fsync", _enospc)
    with pytest.raises(RunError, match="No space left on device"):
        rundir.prepare_dir(tmp_path / "new" / "run")
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the probe is removed


def test_stale_temporary_files_are_removed(tmp_path):
    for name in (".checkpoint.safetensors.abc123.tmp", ".metrics.jsonl.x.tmp", "keep.tmp", ".keep"):
        (tmp_path / name).write_text("x")
    assert rundir.remove_stale_temps(tmp_path) == [".checkpoint.safetensors.abc123.tmp", ".metrics.jsonl.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "keep.tmp"]


def test_the_lock_holds_the_pid_refuses_a_second_holder_and_is_removed(tmp_path):
    with rundir.RunLock(tmp_path) as lock:
        assert lock.note is None
        held = json.loads((tmp_path / rundir.LOCK).read_text())
        assert held["pid"] == os.getpid()
        with pytest.raises(RunError, match=rf"^{tmp_path}: in use by process {os.getpid()} on .* \(lock .*run.lock\); "
                                           "wait for it to finish or stop it$"):
            rundir.RunLock(tmp_path).acquire()
    assert not (tmp_path / rundir.LOCK).exists()
    with rundir.RunLock(tmp_path) as again:  # free again
        assert again.note is None


def test_a_lock_held_by_another_process_is_refused_and_a_dead_ones_is_taken_over(tmp_path):
    code = ("import sys, time; from mmib.train.rundir import RunLock; l = RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"in use by process {proc.pid} "):
            rundir.RunLock(tmp_path).acquire()
    finally:
        proc.kill()  # SIGKILL: the lock file stays, with the dead process's pid in it
        proc.wait()
    assert json.loads((tmp_path / rundir.LOCK).read_text())["pid"] == proc.pid
    with rundir.RunLock(tmp_path) as lock:
        assert lock.note is not None and f"took over the stale lock of process {proc.pid}" in lock.note


def test_old_format_runs_point_to_mmib_convert(tmp_path):
    (tmp_path / rundir.LEGACY_MODEL).write_bytes(b"not read")
    message = rf"^{tmp_path}: an old-format run \(model.pt is a pickle.*convert it once with: mmib convert {tmp_path}$"
    with pytest.raises(RunError, match=message):
        rundir.check_run_dir(tmp_path)
    with pytest.raises(RunError, match=message):
        rundir.model_path(tmp_path)


def test_the_check_before_data_loading_creates_nothing(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "run"
    assert rundir.prepare_dir(target, create=False) == target
    assert list(tmp_path.iterdir()) == []  # no folder, no probe left
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunError, match=r"cannot create it \(.*/f is a file, not a folder\)"):
        rundir.prepare_dir(tmp_path / "f" / "run", create=False)
    monkeypatch.setattr(rundir.os, "fsync", _enospc)
    with pytest.raises(RunError, match="No space left on device"):
        rundir.prepare_dir(target, create=False)


def test_the_only_code_that_unpickles_is_the_two_explicit_opt_ins():
    """Plain unpickling happens in exactly two places: ``mmib convert`` (rundir.load_legacy_pickle) and
    ``trust_pickle`` (files.read_feature_pickle); every np.load refuses pickles."""
    import re
    from pathlib import Path

    import mmib

    calls = []
    for f in sorted(Path(mmib.__file__).parent.rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if "``" in code or code.strip().startswith(('"', "'")):
                continue  # docstrings and help texts
            if re.search(r"weights_only\s*=\s*False|pickle\.loads?\(|torch\.load\(|allow_pickle\s*=\s*True", code):
                calls.append(f"{f.name}:{code.strip()}")
            if "np.load(" in code:
                assert "allow_pickle=False" in code, f"{f}:{i}"
    assert calls == ["files.py:return pickle.load(f, **kw)",
                     'rundir.py:return torch.load(p, map_location="cpu", weights_only=False)'], calls
