"""``mmib predict``: predictions of a trained run for new feature arrays (.npz) as CSV."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from mmib.errors import ConfigError, DataError

COMMAND = "predict"
HELP = "predict with a trained run from an .npz of features"
ORDER = 22


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory written by `mmib train`")
    p.add_argument("--input", required=True, help=".npz with one array per modality (and optional <m>_lengths, ids)")
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


def run(args: argparse.Namespace) -> int:
    from mmib.api import load_run, predict_arrays
    from mmib.train.rundir import atomic_write_text

    run_ = load_run(args.run_dir)
    arrays = read_npz(args.input)
    names = run_.spec.names
    features = {k: arrays[k] for k in names if k in arrays}
    lengths = {k: arrays[f"{k}_lengths"] for k in names if f"{k}_lengths" in arrays}
    extras = {k: arrays[k] for k in ("text_bert",) if k in arrays}
    prediction, named = predict_arrays(run_, features, lengths, extras, source=args.input)
    n = prediction.shape[0]
    ids = [str(i) for i in arrays["ids"]] if "ids" in arrays else [str(i) for i in range(n)]
    if len(ids) != n:
        raise DataError(f"{args.input}: {len(ids)} ids for {n} samples")
    header, rows = prediction_rows(run_.spec.task, prediction, ids)
    if args.explain:
        scores = {k: v for k, v in named.items() if k.startswith("score_") and v.dim() == 1}
        if not scores:
            raise ConfigError(f"model {run_.config.model.name!r} has no interpretability scores for --explain")
        header += list(scores)
        rows = [row + [float(scores[k][i]) for k in scores] for i, row in enumerate(rows)]
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
