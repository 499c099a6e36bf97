"""Paired comparison of runs that live in different ``mmib compare`` directories.

``mmib compare`` tests models against each other within one directory; variants of one
model (``--set ba_form=joint`` against the default) need one directory each. This reads
``DIR/seed*/results.json`` of every ``LABEL=DIR`` (DIR = a compare directory's model folder,
e.g. ``runs/r13/mmim/joint/mmim``) and prints, per label, the test metric's mean ± sample std
over seeds and the mean paired difference to the first label with its paired t-test
(``scipy.stats.ttest_rel`` over the seeds both hold).

    python scripts/paired_compare.py mae new=runs/r13/mmim/stopgrad/mmim old=runs/r13/mmim/joint-wd0/mmim
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import ttest_rel


def seed_values(folder: Path, metric: str, split: str) -> dict[int, float]:
    """``{seed: metric}`` of every finished run under ``folder``."""
    out = {}
    for path in sorted(folder.glob("seed*/results.json")):
        results = json.loads(path.read_text())
        if metric not in results.get(split, {}):
            raise SystemExit(f"{path}: no {split} metric {metric!r}")
        out[int(results["seed"])] = float(results[split][metric])
    if not out:
        raise SystemExit(f"{folder}: no finished runs (seed*/results.json)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metric", help="metric name, e.g. mae, accuracy, auc")
    p.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="the first one is the reference")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    args = p.parse_args()
    items = []
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r}: expected LABEL=DIR")
        items.append((label, seed_values(Path(folder), args.metric, args.split)))
    ref_label, ref = items[0]
    for label, values in items:
        a = np.array([values[s] for s in sorted(values)])
        std = a.std(ddof=1) if a.size > 1 else 0.0
        line = f"{label:28s} n={a.size} {args.metric} {a.mean():.4f} ± {std:.4f}"
        common = sorted(set(values) & set(ref))
        if label != ref_label and len(common) > 1:
            x, y = np.array([values[s] for s in common]), np.array([ref[s] for s in common])
            line += f"   Δ vs {ref_label} {np.mean(x - y):+.4f} (paired p = {ttest_rel(x, y).pvalue:.3f})"
        print(line)


if __name__ == "__main__":
    main()
