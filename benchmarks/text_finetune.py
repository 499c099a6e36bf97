"""Fine-tuning the packaged MiniLM on a small sentiment set against its precomputed features.

On ``sim-text`` (1,300 / 230 / 690 templated sentences whose sentiment is set by the
words, negations and contrasts chosen; see :mod:`mmib.data.text`) every configuration
trains in its own ``mmib train`` process and reports test metrics, seconds per epoch
(first epoch apart: it fills the feature caches) and peak RSS:

* ``linear``: ridge on the mean-pooled, precomputed MiniLM token features (the yardstick);
* ``mlp``: ``concat`` with an MLP on the same pooled features (a learned model, no fine-tuning);
* ``finetune``: ``concat`` with ``text_model=minilm`` fine-tuned from the token ids (all 6 layers);
* ``finetune-bf16``: the same under bf16 autocast;
* ``last2``: only the last 2 layers trained (the frozen prefix cached per sample);
* ``frozen``: the encoder frozen, its pooled features cached per sample, the projection and head trained.

    python benchmarks/text_finetune.py                      # all configurations, 1 seed
    python benchmarks/text_finetune.py --configs linear,finetune --seeds 0,1,2 --epochs 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMON = ["--set", "threads=2", "-q"]
FINETUNE = ["--set", "model.text_model=minilm", "--set", "optimizer=adamw", "--set", "weight_decay=0.01",
            "--set", "warmup_epochs=0.5", "--set", "dropout=0.1"]
CONFIGS: dict[str, list[str]] = {
    "linear": ["-m", "linear"],
    "mlp": ["-m", "concat", "--set", "model.encoder=mlp", "--set", "dropout=0.3", "--set", "optimizer=adamw",
            "--set", "weight_decay=0.01", "--set", "lr=3e-4"],
    "finetune": ["-m", "concat", *FINETUNE],
    "finetune-bf16": ["-m", "concat", *FINETUNE, "--set", "precision=bf16"],
    "last2": ["-m", "concat", *FINETUNE, "--set", "model.text_encoder.train_last_k_layers=2"],
    "frozen": ["-m", "concat", *FINETUNE, "--set", "model.text_encoder.trainable=false"],
}
METRICS = ("mae", "corr", "acc2_non0", "f1_non0")


def run_one(name: str, seed: int, epochs: int, text_lr: float, out: Path) -> dict:
    """Train one configuration in its own process; its results, epoch times and wall time."""
    run_dir = out / f"{name}-seed{seed}"
    cmd = [sys.executable, "-m", "mmib", "train", "-d", "sim-text", *CONFIGS[name], "--seed", str(seed),
           "--epochs", str(epochs), "--set", f"text_lr={text_lr}", "--set", "patience=3", *COMMON,
           "--out", str(run_dir)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed:\n{done.stderr[-2000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    epochs_log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [row["seconds"] for row in epochs_log]
    return {"results": results, "seconds": seconds, "wall": wall}


def summarize(rows: dict[str, list[dict]]) -> str:
    """A Markdown table: mean (± std over seeds) of the test metrics, epoch times and peak RSS."""
    header = ["config", *METRICS, "first epoch s", "later epochs s", "peak RSS GiB", "epochs", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in rows.items():
        cells = [name]
        for m in METRICS:
            vals = [r["results"]["test"][m] for r in runs]
            mu = statistics.mean(vals)
            cells.append(f"{mu:.3f}" + (f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else ""))
        firsts = [r["seconds"][0] for r in runs if r["seconds"]]
        later = [s for r in runs for s in r["seconds"][1:]]
        cells.append(f"{statistics.mean(firsts):.1f}" if firsts else "-")
        cells.append(f"{statistics.mean(later):.1f}" if later else "-")
        cells.append(f"{max(r['results']['peak_rss_mb'] for r in runs) / 1024:.2f}")
        cells.append(f"{statistics.mean(r['results']['epochs_run'] for r in runs):.1f}")
        cells.append(f"{statistics.mean(r['wall'] for r in runs):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6)")
    p.add_argument("--text-lr", type=float, default=5e-5, help="learning rate of the MiniLM layers (default 5e-5)")
    p.add_argument("--out", help="where the run directories go (default: a temporary directory)")
    p.add_argument("--json", help="also write every run's figures to this file")
    args = p.parse_args()
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mmib-text-finetune-"))
    print(f"sim-text, {args.epochs} epochs, text_lr {args.text_lr:g}, seeds {seeds}, torch threads 2, runs in {out}")
    rows: dict[str, list[dict]] = {}
    for name in names:
        for seed in seeds:
            r = run_one(name, seed, args.epochs, args.text_lr, out)
            rows.setdefault(name, []).append(r)
            print(f"  {name} seed {seed}: test MAE {r['results']['test']['mae']:.3f}, "
                  f"{len(r['seconds'])} epochs, {r['wall']:.0f} s", flush=True)
    print()
    print(summarize(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
