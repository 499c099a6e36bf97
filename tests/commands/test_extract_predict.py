"""`mmib extract` -> `mmib train -d mmsa` -> `mmib predict RUN CLIP` end to end, through the CLI."""

from __future__ import annotations

import csv
import io
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
from feature_media import make_media, needs_features  # noqa: E402

from mmib.cli import main  # noqa: E402

pytestmark = needs_features

SMALL = ["--vision", "opencv", "--text-max-len", "16", "--audio-max-len", "40", "--vision-max-len", "20", "-q"]


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    labels = make_media(root / "clips")
    return root, labels


def test_extract_cli_writes_mmsa_file_and_summary(workdir, capsys):
    root, labels = workdir
    out = root / "features.pkl"
    assert main(["extract", str(labels.parent), "--labels", str(labels), "-o", str(out), "--split", "0.6,0.2,0.2",
                 *SMALL]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: 6 clips" in text and "seeded split" in text
    assert "3 of 9 clips failed (not written):" in text
    assert "  broken: broken.mp4" in text and "  ghost: no media file" in text and "  cut: cut.wav" in text
    assert "  notext: text: missing transcript (masked)" in text
    obj = pickle.loads(out.read_bytes())
    assert obj["meta"]["extractor"]["vision_backend"] == "opencv" and obj["meta"]["split"]["rule"] == "seeded"
    # rerun: every finished clip comes from the cache
    assert main(["extract", str(labels.parent), "--labels", str(labels), "-o", str(out), "--split", "0.6,0.2,0.2",
                 *SMALL]) == 0
    assert "6 from cache" in capsys.readouterr().out


def test_extract_cli_errors(workdir, capsys):
    root, labels = workdir
    assert main(["extract", str(labels.parent), "--labels", str(labels), "-o", str(root / "x.pkl"), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert main(["extract", str(labels.parent), "--labels", str(labels), "-o", str(root / "x.pkl"),
                 "--modalities", "text", "--require", "audio"]) == 2
    assert "--require audio" in capsys.readouterr().err
    assert main(["extract", str(root / "nowhere"), "-o", str(root / "x.pkl")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


@pytest.mark.slow
def test_extract_train_predict_end_to_end(workdir, tmp_path, capsys):
    root, labels = workdir
    clips = labels.parent
    feats = tmp_path / "features.pkl"
    assert main(["extract", str(clips), "--labels", str(labels), "-o", str(feats), "--no-cache", *SMALL]) == 0
    run = tmp_path / "run"
    assert main(["train", "-m", "concat", "-d", "mmsa", "--data-path", str(feats), "--epochs", "2", "--out", str(run),
                 "-q", "--set", "threads=1", "--set", "batch_size=4"]) == 0
    capsys.readouterr()
    # a folder: every decodable clip gets a score and a class; failures go to stderr
    assert main(["predict", str(run), str(clips), "-q"]) == 0
    captured = capsys.readouterr()
    rows = {r["id"]: r for r in _rows(captured.out)}
    assert {"happy", "sad", "voice", "notext"} <= set(rows)
    assert "broken" not in rows and "broken: broken.mp4" in captured.err
    assert "blank: nothing to extract" in captured.err  # no transcript file, no audio, no face
    for r in rows.values():
        assert np.isfinite(float(r["prediction"])) and r["class"] in ("positive", "negative")
    # folder transcripts are X.txt files; without them text is masked and noted
    assert "missing transcript" in rows["happy"]["notes"]
    # a single clip with a transcript, written to a CSV
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(clips / "happy.mp4"), "--transcript", "I really loved this movie",
                 "-o", str(out_csv)]) == 0
    assert capsys.readouterr().out == f"wrote 1 predictions to {out_csv}\n"
    (single,) = _rows(out_csv.read_text())
    assert single["id"] == "happy" and single["notes"] == ""
    # the same clip and transcript as in training give the prediction the run gives on its own data
    from mmib.api import load_run, predict

    run_ = load_run(run)
    ds = run_.dataset()
    preds = {}
    for split in ("train", "valid", "test"):
        if ds.split_size(split):
            p = predict(run_, ds, split)
            preds.update({ds.ids[i]: float(v) for i, v in zip(p.index.tolist(), p.prediction.tolist())})
    assert float(single["prediction"]) == pytest.approx(preds["happy"], abs=1e-4)
    # labels CSV for a folder supplies the transcripts
    assert main(["predict", str(run), str(clips), "--labels", str(labels), "-q"]) == 0
    rows2 = {r["id"]: r for r in _rows(capsys.readouterr().out)}
    assert "blank" in rows2 and "textonly" in rows2  # their transcripts come from the CSV
    assert rows2["happy"]["notes"] == "" and float(rows2["happy"]["prediction"]) == pytest.approx(preds["happy"], abs=1e-4)
    # the npz form still works on the same run
    npz = tmp_path / "x.npz"
    obj = pickle.loads(feats.read_bytes())
    tr = obj["train"]
    np.savez(npz, text=tr["text"], audio=tr["audio"], vision=tr["vision"], text_bert=tr["text_bert"],
             text_lengths=tr["text_lengths"], audio_lengths=tr["audio_lengths"], vision_lengths=tr["vision_lengths"],
             ids=np.array(tr["id"]))
    assert main(["predict", str(run), "--input", str(npz)]) == 0
    assert len(_rows(capsys.readouterr().out)) == len(tr["id"])
    # misuse
    assert main(["predict", str(run), str(clips), "--input", str(npz)]) == 2
    assert "one of the two" in capsys.readouterr().err
    assert main(["predict", str(run), str(clips), "--transcript", "x"]) == 2
    assert "--transcript goes with a single clip" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_from_clips_needs_an_extract_run(tmp_path, capsys, workdir):
    _, labels = workdir
    run = tmp_path / "sim"
    assert main(["train", "-m", "concat", "-d", "sim-msa", "--epochs", "1", "--out", str(run), "-q",
                 "--set", "threads=1"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(labels.parent / "happy.mp4")]) == 2
    assert "not trained on features written by `mmib extract`" in capsys.readouterr().err
