"""``mmib demo``: the main job on the built-in benchmark, as ``make demo`` runs it.

Trains every demo model on SIM-I with the same split, seed and budget, and
prints one results table (test metrics, parameters, training time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

COMMAND = "demo"
HELP = "train the demo models on SIM-I and print a results table"
ORDER = 90

#: Models in the demo, with per-model option overrides (``--set`` style).
DEMO_MODELS: dict[str, list[str]] = {
    "linear": [],  # the yardstick: logistic regression on the pooled features
    "concat": [],
    "late": [],
    "c-mib": [],
    "mmim": [],
    # beta drawn from the MINE bound (200 steps on 4,096 rows, about 10 s); 5 warm-up epochs on top
    "omib": [],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="sim-i", help="built-in dataset (default sim-i)")
    p.add_argument("--models", help="comma-separated subset of: " + ", ".join(DEMO_MODELS))
    p.add_argument("--epochs", type=int, default=20, help="epochs per model (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per model (default 1)")
    p.add_argument("--out", default="runs/demo", help="where the runs are written (default runs/demo)")


def run(args: argparse.Namespace) -> int:
    from mmib.api import dataset_from_config, make_config, train
    from mmib.errors import ConfigError
    from mmib.eval.tables import markdown_table

    names = [m.strip() for m in args.models.split(",")] if args.models else list(DEMO_MODELS)
    unknown = [m for m in names if m not in DEMO_MODELS]
    if unknown:
        raise ConfigError(f"--models: not in the demo: {', '.join(unknown)} (choose from {', '.join(DEMO_MODELS)})")
    # one intra-op thread: these models are small, and two threads thrash when anything else runs
    base = make_config(data=args.data, seed=args.seed, epochs=args.epochs, progress=False, patience=5,
                       threads=args.threads)
    dataset = dataset_from_config(base.data)
    print(dataset.summary())
    rows = []
    for name in names:
        cfg = make_config(name, config=base, overrides=DEMO_MODELS[name])
        start = time.perf_counter()
        result = train(config=cfg, out=Path(args.out) / name, dataset=dataset)
        seconds = time.perf_counter() - start
        metric_names = list(result.test)[:4]
        rows.append((name, result.test, result.results["params"], result.best_epoch, seconds, metric_names))
        print(f"  {name}: done in {seconds:.1f} s")
    metric_names = rows[0][5]
    table = [[n, *[t.get(m) for m in metric_names], p, e, f"{s:.1f}"] for n, t, p, e, s, _ in rows]
    oracle = dataset.meta.get("oracle")
    if oracle is not None:  # the Bayes-optimal predictions the generator knows
        from mmib.eval.metrics import compute_metrics

        test = dataset.splits["test"]
        scores = compute_metrics(dataset.task, oracle[test], dataset.y[test])
        # + 0.0 prints a certain oracle's log-loss of -0.0 as 0
        table.append(["oracle", *[None if scores.get(m) is None else scores[m] + 0.0 for m in metric_names],
                      "-", "-", "-"])
    print()
    print(f"Test results on {dataset.name} (seed {args.seed}, up to {args.epochs} epochs, best epoch by validation)")
    print(markdown_table(["model", *metric_names, "params", "best epoch", "seconds"], table))
    return 0
