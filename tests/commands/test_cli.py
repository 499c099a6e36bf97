import csv
import subprocess
import sys

import numpy as np
import pytest

from mmib.cli import main
from mmib.train import rundir


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_eval_predict_round_trip(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "-m", "concat", "-d", "sim-msa", "--epochs", "3", "-q",
                             "--set", "data.n_train=200", "--set", "data.n_valid=50", "--set", "data.n_test=50",
                             "--set", "hidden=16", "--out", str(out_dir))
    assert code == 0, err
    assert "| mae " in out and "run directory" in out
    for name in (rundir.CONFIG, rundir.METRICS, rundir.MODEL, rundir.RESULTS):
        assert (out_dir / name).is_file()

    code, out, err = run_cli(capsys, "eval", str(out_dir), "--split", "valid")
    assert code == 0, err
    assert "split valid (50 samples)" in out and "| acc2_has0" in out

    rng = np.random.default_rng(0)
    npz = tmp_path / "new.npz"
    np.savez(npz, text=rng.normal(size=(4, 128)), audio=rng.normal(size=(4, 74)), vision=rng.normal(size=(4, 47)),
             ids=np.array(["a", "b", "c", "d"]))
    csv_path = tmp_path / "pred.csv"
    code, out, err = run_cli(capsys, "predict", str(out_dir), "--input", str(npz), "-o", str(csv_path))
    assert code == 0, err
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert all(r["class"] in ("positive", "negative") for r in rows)
    assert all(-10 < float(r["prediction"]) < 10 for r in rows)

    # a finished run is not overwritten by accident
    code, _, err = run_cli(capsys, "train", "-m", "concat", "-d", "sim-msa", "--out", str(out_dir), "-q")
    assert code == 2 and "--overwrite" in err

    # wrong input dimensions are a one-line error
    np.savez(npz, text=rng.normal(size=(4, 100)), audio=rng.normal(size=(4, 74)), vision=rng.normal(size=(4, 47)))
    code, _, err = run_cli(capsys, "predict", str(out_dir), "--input", str(npz))
    assert code == 2 and "'text' has shape (4, 100)" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "predict", str(out_dir), "--input", str(npz), "--explain")
    assert code == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "-m", "nope", "-d", "sim-i"], "unknown model 'nope'"),
        (["train", "-m", "concat", "-d", "sim-x"], "unknown dataset 'sim-x'"),
        (["train", "-m", "concat", "-d", "mmsa"], "pass --data-path"),
        (["train", "-m", "concat", "-d", "mmsa", "--data-path", "/no/such.pkl"], "/no/such.pkl"),
        (["train", "-m", "concat", "-d", "sim-i", "--set", "lr=fast"], "--set lr: expected a number"),
        (["train", "-m", "concat", "-d", "sim-i", "--set", "data.n_sample=10"], "no option 'n_sample'"),
        (["train", "-m", "concat"], "choose a dataset"),
        (["train", "--resume"], "--resume needs --out"),
        (["eval", "/no/such/run"], "no such run directory"),
        (["train", "-m", "concat", "-d", "sim-i", "--device", "cuda"], "CUDA is not available"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "r")) if args[0] == "train" and "--resume" not in args else run_cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_subprocess_exit_code_and_debug_traceback(tmp_path):
    cmd = [sys.executable, "-m", "mmib", "eval", str(tmp_path / "missing")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().startswith("mmib eval: error:") and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "mmib", "--debug", "eval", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_models_and_datasets_listings(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "concat" in out and "late" in out
    code, out, _ = run_cli(capsys, "datasets", "-v")
    assert code == 0 and "sim-msa" in out and "seq_len" in out


def test_resume_from_the_cli(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "-m", "concat", "-d", "sim-i", "--epochs", "2", "-q", "--set",
                           "data.n_samples=300", "--set", "hidden=8", "--out", str(out_dir))
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(out_dir))
    assert code == 2 and "already finished" in err


def test_help_and_parser_do_not_import_torch():
    """`mmib --help` (and building the parser for any command line) imports no PyTorch: a fresh
    interpreter's module table and -X importtime's list of imports both say so."""
    code = (
        "import sys\n"
        "from mmib.cli import build_parser\n"
        "for argv in ([], ['--help'], ['train', '-m', 'concat'], ['compare', '--help']):\n"
        "    build_parser(argv)\n"
        "import mmib\n"
        "assert mmib.__version__\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    help_run = subprocess.run([sys.executable, "-X", "importtime", "-m", "mmib", "--help"], capture_output=True,
                              text=True, timeout=120)
    assert help_run.returncode == 0 and "train" in help_run.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in help_run.stderr.splitlines() if "|" in line]
    assert "mmib.cli" in imported and not [m for m in imported if m.split(".")[0] == "torch"]


def test_lazy_package_attributes():
    import mmib

    assert mmib.train.__module__ == "mmib.api" and "train_together" in dir(mmib)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mmib.nope  # noqa: B018


def test_models_params_counts_parameters_against_concat(capsys):
    assert main(["models", "--params", "--models", "concat,e-mib", "--dims", "a=8,b=4"]) == 0
    out = capsys.readouterr().out
    assert "| concat" in out and "| e-mib" in out and "+0.00 %" in out


def test_demo_prints_the_models_beside_linear_and_the_oracle(tmp_path, capsys):
    assert main(["demo", "--models", "linear,concat", "--epochs", "2", "--data", "sim-msa", "--out",
                 str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"linear", "concat", "oracle"} <= set(rows)
    mae = {name: float(rows[name].split("|")[2]) for name in ("linear", "oracle")}
    assert mae["oracle"] < mae["linear"]  # the generator's Bayes predictor is the floor
