"""``mmib predict --input``: malformed feature files are one-line errors naming the array."""

from __future__ import annotations

import numpy as np
import pytest

from mmib.cli import main

L = 6


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "seq"
    args = ["train", "-m", "concat", "-d", "sim-msa", "--set", f"data.seq_len={L}", "--set", "data.n_train=120",
            "--set", "data.n_valid=40", "--set", "data.n_test=40", "--set", "hidden=8", "--set", "head_hidden=8",
            "--set", "model.encoders.audio=lstm", "--epochs", "1", "-q", "--out", str(out)]
    assert main(args) == 0
    return out


def _inputs(n, **extra):
    rng = np.random.default_rng(0)
    return {"text": rng.normal(size=(n, L, 128)), "audio": rng.normal(size=(n, L, 74)),
            "vision": rng.normal(size=(n, L, 47)), **extra}


@pytest.mark.parametrize(("arrays", "message"), [
    (_inputs(0), "no samples (every modality array has 0 rows)"),
    (_inputs(3, audio_lengths=np.array([2, L + 1, 1])), f"'audio_lengths' must hold whole numbers in [0, {L}] (found 1..{L + 1})"),
    (_inputs(3, audio_lengths=np.array([2, -1, 1])), f"'audio_lengths' must hold whole numbers in [0, {L}] (found -1..2)"),
    (_inputs(3, audio_lengths=np.array([[2, 1, 1]])), "'audio_lengths' has shape (1, 3); expected (3,), one length per sample"),
    (_inputs(3, audio_lengths=np.array([1.5, 1, 1])), "'audio_lengths' must hold whole numbers"),
    (_inputs(3, vision_lengths=np.array(["a", "b", "c"])), "'vision_lengths' is not numeric"),
])
def test_bad_inputs_are_one_line_errors(seq_run, tmp_path, capsys, arrays, message):
    npz = tmp_path / "in.npz"
    np.savez(npz, **arrays)
    code = main(["predict", str(seq_run), "--input", str(npz), "-o", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{npz}: " in err and message in err, err
    assert not (tmp_path / "p.csv").exists()


def test_valid_lengths_predict(seq_run, tmp_path, capsys):
    npz = tmp_path / "in.npz"
    np.savez(npz, **_inputs(3, audio_lengths=np.array([0, L, 2]), vision_lengths=np.array([1, 1, 1])))
    assert main(["predict", str(seq_run), "--input", str(npz)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
