"""The ensemble's optimizer step: one grouped fused-Adam call against each member's own step.

K seeds of one model trained together (``mmib.api.train_together``) in one warm process, twice
per round: with the grouped Adam step (one fused kernel call over the stacked tensors, the
default when the members' optimizers agree) and with it switched off (every member's own
optimizer stepped on its slice, the path members whose optimizers differ take). The two give
bit-identical runs (tests/train/test_ensemble.py); this prints what the grouping saves in wall
time. Rounds alternate the order so that drifting machine load hits both alike.

Example::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ensemble_optimizer_step.py --models concat,c-mib --k 5
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _ensemble_cli import ensemble_arguments, parse_ensemble_arguments


def main(argv: list[str] | None = None) -> int:
    args = parse_ensemble_arguments(
        ensemble_arguments(__doc__.splitlines()[0], rounds=4, rounds_help="alternating rounds"), argv)

    import torch

    from mmib.api import make_config, train, train_together
    from mmib.train import ensemble

    torch.set_num_threads(args.threads)
    grouped_build = ensemble._GroupedAdam.__dict__["build"]  # the classmethod itself
    one_by_one_build = classmethod(lambda cls, *a: None)
    print(f"{args.k} seeds together on {args.data}, {args.epochs} epochs, {args.threads} torch thread(s), "
          f"{args.rounds} alternating rounds")
    print("| model | grouped Adam: wall s (min) | each member's Adam: wall s (min) | saved |")
    print("|---|---|---|---|")
    try:
        for model in args.models.split(","):
            cfgs = [make_config(model, args.data, overrides=[f"train.seed={s}"], progress=False,
                                epochs=args.epochs, patience=args.epochs + 1) for s in range(args.k)]
            train(config=cfgs[0], epochs=1)  # warm-up: imports, data generation, first kernels
            times: dict[str, list[float]] = {"grouped": [], "each": []}
            for r in range(args.rounds):
                for mode in ("grouped", "each") if r % 2 == 0 else ("each", "grouped"):
                    setattr(ensemble._GroupedAdam, "build", grouped_build if mode == "grouped" else one_by_one_build)
                    tmp = Path(tempfile.mkdtemp(prefix="mmib-bench-"))
                    try:
                        start = time.perf_counter()
                        results = train_together(cfgs, [tmp / f"m{i}" for i in range(args.k)])
                        times[mode].append(time.perf_counter() - start)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                    failed = [r for r in results if isinstance(r, Exception)]
                    if failed:
                        raise SystemExit(f"{model}: a member failed: {failed[0]}")
            g, e = min(times["grouped"]), min(times["each"])
            print(f"| {model} | {statistics.median(times['grouped']):.2f} ({g:.2f}) | "
                  f"{statistics.median(times['each']):.2f} ({e:.2f}) | {100 * (e - g) / e:.0f}% |")
    finally:
        setattr(ensemble._GroupedAdam, "build", grouped_build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
