"""``mmib predict``: predictions of a trained run as CSV, for raw clips or an .npz of feature arrays.

* ``mmib predict RUN_DIR CLIP_OR_FOLDER [--transcript TEXT]``: extracts each clip
  with the extractor settings stored in the run (those that built its training
  data with ``mmib extract``), then predicts;
* ``mmib predict RUN_DIR --input FILE.npz``: one array per modality.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from mmib.errors import ConfigError, DataError

COMMAND = "predict"
HELP = "predict with a trained run for raw clips (video/audio/transcript) or an .npz of features"
ORDER = 22


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory written by `mmib train`")
    p.add_argument("path", nargs="?", help="a clip (video, audio or .txt transcript) or a folder of clips; "
                   "needs a run trained on `mmib extract` features")
    p.add_argument("--transcript", help="transcript of a single clip (default: X.txt beside clip X)")
    p.add_argument("--labels", help="CSV with id and text columns giving the transcripts of the clips in a folder")
    p.add_argument("-j", "--jobs", type=int, default=1, help="parallel extraction workers for a folder (default: 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--input", help=".npz with one array per modality (and optional <m>_lengths, ids)")
    p.add_argument("-o", "--output", help="CSV to write (default: print to stdout)")
    p.add_argument("--explain", action="store_true",
                   help="add the model's per-sample interpretability scores (outputs named score_*) as columns")


def read_npz(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise DataError(f"{p}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def prediction_rows(task, prediction, ids) -> tuple[list[str], list[list]]:  # type: ignore[no-untyped-def]
    """CSV header and rows for a task's predictions: score/class, class probabilities or label probabilities."""
    import torch

    pred = prediction.float()
    if task.kind == "regression":
        return ["id", "prediction", "class"], [
            [i, float(v), "positive" if v >= 0 else "negative"] for i, v in zip(ids, pred.tolist())
        ]
    if task.kind == "anomaly":
        return ["id", "score"], [[i, float(v)] for i, v in zip(ids, pred.tolist())]
    if task.kind == "multilabel":
        probs = torch.sigmoid(pred)
        header = ["id"] + [f"p_{n}" for n in task.label_names] + ["labels"]
        rows = []
        for i, row in zip(ids, probs.tolist()):
            on = [n for n, pr in zip(task.label_names, row) if pr >= 0.5]
            rows.append([i, *row, ";".join(on)])
        return header, rows
    probs = torch.softmax(pred, dim=-1)
    header = ["id", "class"] + [f"p_{c}" for c in range(probs.shape[1])]
    return header, [[i, int(r.argmax()), *r.tolist()] for i, r in zip(ids, probs)]


def _npz_inputs(run_, path: str):  # type: ignore[no-untyped-def]
    arrays = read_npz(path)
    names = run_.spec.names
    features = {k: arrays[k] for k in names if k in arrays}
    lengths = {k: arrays[f"{k}_lengths"] for k in names if f"{k}_lengths" in arrays}
    extras = {k: arrays[k] for k in ("text_bert",) if k in arrays}
    ids = [str(i) for i in arrays["ids"]] if "ids" in arrays else None
    return features, lengths, extras, ids, []


def run_extractor_settings(run_):  # type: ignore[no-untyped-def]
    """The extractor settings stored in a run (ConfigError if it was not trained on `mmib extract` features)."""
    from mmib.features.settings import ExtractorSettings

    stored = run_.meta.get("extractor")
    if not stored:
        raise ConfigError(
            f"{run_.path}: this run was not trained on features written by `mmib extract`, so it cannot extract "
            "raw clips the same way; predict from features with --input FILE.npz"
        )
    return ExtractorSettings.from_dict(stored)


def _clip_inputs(run_, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from mmib.features.clips import discover_clips, read_labels
    from mmib.features.extract import extract_clips
    from mmib.features.mmsa import arrays_for_run

    settings = run_extractor_settings(run_)
    if args.labels:
        if args.transcript is not None:
            raise ConfigError("give either --transcript (one clip) or --labels (a folder), not both")
        clips, _ = read_labels(args.labels, args.path)
    else:
        clips = discover_clips(args.path, args.transcript)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    results = extract_clips(clips, settings, jobs=args.jobs, cache_dir=None, progress=not args.quiet and len(clips) > 1)
    ok = [r for r in results if r.ok]
    failed = [f"{r.id}: {r.error}" for r in results if not r.ok]
    if not ok:
        raise DataError(f"{args.path}: no clip could be extracted ({'; '.join(failed[:2])})")
    text_key = str(run_.config.data.options.get("text", "text"))
    transcripts = {c.id: c.transcript for c in clips}
    features, lengths, extras = arrays_for_run(ok, settings, run_.spec.names, text_key,
                                               [transcripts.get(r.id) for r in ok])
    if run_.spec.text_tokens is None:
        extras = {}
    notes = ["; ".join(r.notes) for r in ok]
    return features, lengths, extras, [r.id for r in ok], (notes, failed)


def run(args: argparse.Namespace) -> int:
    import sys

    from mmib.api import load_run, predict_arrays
    from mmib.train.rundir import atomic_write_text

    if (args.path is None) == (args.input is None):
        raise ConfigError("give a clip or folder (PATH) or --input FILE.npz, one of the two")
    if args.input is not None and (args.transcript is not None or args.labels):
        raise ConfigError("--transcript and --labels go with a clip PATH, not with --input")
    run_ = load_run(args.run_dir)
    if args.input is not None:
        features, lengths, extras, ids, extra = _npz_inputs(run_, args.input)
        source = args.input
    else:
        features, lengths, extras, ids, extra = _clip_inputs(run_, args)
        source = args.path
    prediction, named = predict_arrays(run_, features, lengths, extras, source=source)
    n = prediction.shape[0]
    ids = ids if ids is not None else [str(i) for i in range(n)]
    if len(ids) != n:
        raise DataError(f"{args.input}: {len(ids)} ids for {n} samples")
    header, rows = prediction_rows(run_.spec.task, prediction, ids)
    if args.explain:
        scores = {k: v for k, v in named.items() if k.startswith("score_") and v.dim() == 1}
        if not scores:
            raise ConfigError(f"model {run_.config.model.name!r} has no interpretability scores for --explain")
        header += list(scores)
        rows = [row + [float(scores[k][i]) for k in scores] for i, row in enumerate(rows)]
    if extra:
        notes, failed = extra
        header.append("notes")
        rows = [row + [note] for row, note in zip(rows, notes)]
        if failed:
            print(f"{len(failed)} clips failed (no prediction):", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    if args.output:
        atomic_write_text(args.output, buf.getvalue())
        print(f"wrote {n} predictions to {args.output}")
    else:
        print(buf.getvalue(), end="")
    return 0
