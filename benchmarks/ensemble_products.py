"""The matrix products of K seeds trained together, as the ensemble runs them, beside one seed alone.

``ensemble_floor.py`` prices the members' products at this core's peak (the best of 1024 x 1024
products) and ``vmap_linear.py`` times one layer's products in a tight loop; both are the
products' best case. This script measures them inside real runs instead: one seed trained
alone (``mmib.api.train``) and K seeds together (``mmib.api.train_together``), each under
``torch.profiler`` with the input shapes recorded, and it sums the self CPU time and the FLOPs
of every matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``) of each run. Per model it prints

* both runs' wall seconds without the profiler (median of ``--rounds``) and with it (the
  profiled run with the least self CPU time of ``--profiles``; the profiler slows the Python
  around the ops several times over, but not the products it times: an op's self CPU time is
  measured inside the op);
* each profiled run's self CPU seconds (the time inside ops; Python between them is not in it),
  its products' seconds and their GFLOP/s beside the peak: whether stacking the members into
  batched products raises their rate;
* ``K products vs alone's wall``: the K members' products against the unprofiled wall time of
  one seed alone, and ``the rest``: each run's wall less its products (every other op, on K
  times the data for the ensemble, the Python around them, batches, validation, files), alone
  and together, beside what the target (K = 5 seeds in at most 2x one seed) leaves for the
  ensemble's rest: ``2 x alone - K products``. When that is less than the rest of a run alone,
  no saving outside the products can meet the target; when it is near it, the K members would
  have to do all their other work in the time one member takes for its own.

``--shapes N`` also lists the N costliest product shapes of the K-seed run with their rates and
each call's time in the run beside the same product timed in a tight loop without the profiler.

Example::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ensemble_products.py \
        --models concat,e-mib,c-mib --epochs 10 --shapes 3
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from _ensemble_cli import ensemble_arguments, microseconds, parse_ensemble_arguments, peak_gflops, seconds

PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def product_flops(op: str, shapes: list[list[int]]) -> int:
    """FLOPs of one call of matrix product ``op`` from its recorded input shapes (2 per multiply-add)."""
    if op == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if op == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    if op == "aten::bmm":
        (b, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2 * b * m * k * n
    if op == "aten::baddbmm":
        (b, m, k), (_, _, n) = shapes[1], shapes[2]
        return 2 * b * m * k * n
    raise ValueError(f"not a matrix product: {op}")


def loop_microseconds(torch: Any, op: str, shapes: list[list[int]], repeats: int = 300) -> float:
    """One call of product ``op`` on random tensors of the recorded ``shapes``, timed in a tight loop
    without the profiler (microseconds): the same product at its best, caches warm."""
    call = {"aten::mm": torch.mm, "aten::addmm": torch.addmm,
            "aten::bmm": torch.bmm, "aten::baddbmm": torch.baddbmm}[op]
    tensors = [torch.randn(*shape) for shape in shapes[:3 if op in ("aten::addmm", "aten::baddbmm") else 2]]
    return microseconds(lambda: call(*tensors), repeats)


def profiled(torch: Any, run: Callable[[], Any]) -> dict[str, Any]:
    """Run ``run`` under the profiler: its wall and self CPU seconds, its products' seconds and
    FLOPs, and per product shape (op, shapes, calls, seconds, FLOPs)."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()
    wall = time.perf_counter() - start
    self_us, product_us, flops, shapes = 0.0, 0.0, 0, []
    for event in prof.key_averages(group_by_input_shape=True):
        self_us += event.self_cpu_time_total
        if event.key in PRODUCTS:
            f = product_flops(event.key, event.input_shapes) * event.count
            product_us += event.self_cpu_time_total
            flops += f
            shapes.append((event.key, event.input_shapes, event.count, event.self_cpu_time_total / 1e6, f))
    return {"wall": wall, "self": self_us / 1e6, "products": product_us / 1e6, "flops": flops, "shapes": shapes}


def main(argv: list[str] | None = None) -> int:
    parser = ensemble_arguments(__doc__.splitlines()[0], rounds=3,
                                rounds_help="unprofiled runs of each kind; the median is reported")
    parser.set_defaults(epochs=10)
    parser.add_argument("--profiles", type=int, default=2,
                        help="profiled runs of each kind; the one with the least self CPU time is reported "
                             "(default %(default)s)")
    parser.add_argument("--shapes", type=int, default=0, help="list the N costliest product shapes of the K-seed run")
    args = parse_ensemble_arguments(parser, argv)
    if args.shapes < 0 or args.profiles < 1:
        parser.error("--shapes must be >= 0 and --profiles >= 1")

    import torch

    from mmib.api import make_config, train, train_together
    from mmib.train.ensemble import EnsembleUnsupported

    torch.set_num_threads(args.threads)
    peak = peak_gflops(torch)
    k = args.k
    print(f"{args.data}, {args.epochs} epochs per run (no early stop), K = {k}, {args.threads} torch thread(s); "
          f"matrix-product peak {peak:.1f} GFLOP/s")
    rows, listings = [], []
    tmp = Path(tempfile.mkdtemp(prefix="mmib-products-"))
    try:
        for model in args.models.split(","):
            cfgs = [make_config(model, args.data, overrides=[f"train.seed={s}"], progress=False, epochs=args.epochs,
                                patience=args.epochs + 1, device="cpu") for s in range(k)]
            count = itertools.count()

            def alone() -> None:
                train(config=cfgs[0], out=tmp / model / f"a{next(count)}")

            def together() -> None:
                n = next(count)
                try:  # a model that cannot stack would train one seed at a time: not what this measures
                    results = train_together(cfgs, [tmp / model / f"t{n}-{i}" for i in range(k)], fallback=False)
                except EnsembleUnsupported as exc:
                    raise SystemExit(f"{model}: does not train together ({exc})") from None
                failed = [r for r in results if isinstance(r, Exception)]
                if failed:
                    raise SystemExit(f"{model}: {len(failed)} of the {k} runs failed: {failed[0]}")

            alone(), together()  # warm-up: imports, allocator, the ensemble's first trial step
            if not rows:  # and the profiler's: the first model's profiled ensemble ran 3x slower without it
                profiled(torch, together)
            walls: dict[str, list[float]] = {"alone": [], "together": []}
            for _ in range(args.rounds):
                for name, fn in (("alone", alone), ("together", together)):
                    walls[name].append(seconds(fn))
            # this machine's speed drifts within minutes: the least disturbed of a few profiles
            one = min((profiled(torch, alone) for _ in range(args.profiles)), key=lambda p: p["self"])
            many = min((profiled(torch, together) for _ in range(args.profiles)), key=lambda p: p["self"])
            rows.append((model, statistics.median(walls["alone"]), statistics.median(walls["together"]), one, many))
            listings.append((model, many["shapes"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n| model | wall s, alone / {k} together (profiled) | self CPU s, alone / {k} together | "
          f"products s, alone / {k} together | GFLOP/s, alone / {k} together | products' share, alone / {k} together | "
          f"{k} products vs alone's wall | the rest, alone / {k} together: s | the rest 2x allows: s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, wa, wt, one, many in rows:
        rest_alone, rest_together, allowed = wa - one["products"], wt - many["products"], 2 * wa - many["products"]
        print(f"| {model} | {wa:.2f} / {wt:.2f} ({one['wall']:.2f} / {many['wall']:.2f}) | "
              f"{one['self']:.2f} / {many['self']:.2f} | {one['products']:.2f} / {many['products']:.2f} | "
              f"{one['flops'] / one['products'] / 1e9:.1f} / {many['flops'] / many['products'] / 1e9:.1f} | "
              f"{one['products'] / one['self']:.0%} / {many['products'] / many['self']:.0%} | "
              f"{many['products'] / wa:.2f}x | "
              f"{rest_alone:.2f} / {rest_together:.2f} ({rest_together / rest_alone:.2f}x) | "
              f"{allowed:.2f} ({allowed / rest_alone:.2f}x) |")
    if args.shapes:
        for model, shapes in listings:
            print(f"\n{model}, {k} together: the {args.shapes} costliest product shapes")
            print("| op | input shapes | calls | s | GFLOP/s | us per call, in the run / in a tight loop |")
            print("|---|---|---|---|---|---|")
            for op, shp, calls, spent, flops in sorted(shapes, key=lambda s: -s[3])[:args.shapes]:
                print(f"| {op} | {shp} | {calls} | {spent:.3f} | {flops / spent / 1e9:.1f} | "
                      f"{spent / calls * 1e6:.0f} / {loop_microseconds(torch, op, shp):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
