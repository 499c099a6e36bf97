"""OMIB training time and memory against the number of samples (OMIB paper, Figure 4; issue 5, req. 6).

For each N (default 10^4, 10^5, 10^6) a fresh process builds SIM-III with N
samples (float32, generated in place), standardises it in place (chunked
statistics), and trains ``omib`` for ``--warmup`` warm-up epochs and
``--main`` main epochs through the engine (batches are ``index_select``-ed
from the in-memory tensors). It prints seconds per epoch for each phase, the
time per training sample (target: the 10^6 figure within 1.2x of the 10^4
figure, i.e. linear), and the peak resident memory of the process above its
footprint before the data were built, against the size of the feature
tensors (the set must never be held twice: that ratio well under 2).

Run: ``python benchmarks/omib_scaling.py [--sizes 10000,100000,1000000] [--threads 1]``.
Beta is fixed (``--beta``, inside SIM-III's MINE bound) so that the bound's
fixed cost does not enter; validation after each epoch is not counted in the
epoch time (the engine times the training batches only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def one_size(n: int, args: argparse.Namespace) -> dict:
    import torch

    from mmib.config import TrainConfig
    from mmib.data.registry import load_dataset
    from mmib.models import build_model
    from mmib.train.engine import Trainer

    torch.set_num_threads(args.threads)
    baseline = _rss_bytes()  # interpreter, torch and mmib, before the data exist
    start = time.perf_counter()
    ds = load_dataset("sim-iii", n_samples=n, seed=0)
    data_bytes = sum(x.numel() * x.element_size() for x in ds.features.values())
    build_seconds = time.perf_counter() - start
    model = build_model("omib", ds.spec, beta=args.beta, warmup_epochs=args.warmup)
    cfg = TrainConfig(epochs=args.main, batch_size=args.batch_size, progress=False, patience=10**6, seed=0,
                      threads=args.threads, checkpoint=False, eval_batch_size=4096)
    load = os.getloadavg()[0]
    result = Trainer(model, ds, cfg).fit()
    n_train = ds.split_size("train")
    per_phase: dict[str, list[float]] = {}
    for row in result.history:
        per_phase.setdefault(row["phase"], []).append(row["seconds"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "n": n, "n_train": n_train, "data_bytes": data_bytes, "peak_bytes": peak, "baseline_bytes": baseline,
        "build_seconds": build_seconds,
        "warmup_epoch_s": sum(per_phase.get("warmup", [0.0])) / max(len(per_phase.get("warmup", [])), 1),
        "main_epoch_s": sum(per_phase.get("main", [0.0])) / max(len(per_phase.get("main", [])), 1),
        "load": (load + os.getloadavg()[0]) / 2, "test_accuracy": result.test.get("accuracy"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated sample counts")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up epochs per size")
    ap.add_argument("--main", type=int, default=1, help="main epochs per size")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--doc", help="also write the table to this Markdown file")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args)))
        return
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    out_lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        out_lines.append(line)

    emit(f"OMIB on SIM-III (900 + 900 features), batch {args.batch_size}, {args.threads} thread(s), "
         f"{args.warmup} warm-up + {args.main} main epoch(s) per size, one process per size")
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--warmup", str(args.warmup), "--main", str(args.main),
               "--batch-size", str(args.batch_size), "--beta", str(args.beta), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(f"  N={n}: done", flush=True)
    base = rows[0]
    emit()
    emit("| N | train samples | warm-up s/epoch | main s/epoch | warm-up us/sample | main us/sample | "
         "main per-sample vs first row | data GB | peak RSS GB | (peak - start) / data | build s | load avg |")
    emit("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        wu = 1e6 * r["warmup_epoch_s"] / r["n_train"]
        mu = 1e6 * r["main_epoch_s"] / r["n_train"]
        ratio = mu / (1e6 * base["main_epoch_s"] / base["n_train"])
        emit(f"| {r['n']:,} | {r['n_train']:,} | {r['warmup_epoch_s']:.1f} | {r['main_epoch_s']:.1f} | {wu:.0f} | "
             f"{mu:.0f} | {ratio:.2f}x | {r['data_bytes'] / 1e9:.2f} | {r['peak_bytes'] / 1e9:.2f} | "
             f"{(r['peak_bytes'] - r['baseline_bytes']) / r['data_bytes']:.2f} | {r['build_seconds']:.1f} | "
             f"{r['load']:.1f} |")
    emit()
    emit("Target: per-sample time at the largest N within 1.2x of the smallest (linear); (peak - start) / data "
         "well under 2 at 10^6 (the set is held once). 'load avg' is the machine's 1-minute load average during "
         "the run (a shared machine: timings move with it).")
    if args.doc:
        cmd = " ".join(["python benchmarks/omib_scaling.py", f"--sizes {args.sizes}", f"--warmup {args.warmup}",
                        f"--main {args.main}", f"--batch-size {args.batch_size}", f"--beta {args.beta}",
                        f"--threads {args.threads}", f"--doc {args.doc}"])
        text = ["# OMIB scaling with the number of samples (SIM-III; paper Figure 4)", "",
                "Generated by `benchmarks/omib_scaling.py` (its docstring says what is measured). Command:", "",
                "```", cmd, "```", "", *out_lines, ""]
        os.makedirs(os.path.dirname(args.doc) or ".", exist_ok=True)
        with open(args.doc, "w") as f:
            f.write("\n".join(text))
        print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
