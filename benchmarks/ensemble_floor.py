"""How far K seeds trained together are from their arithmetic floor, beside one seed alone.

Issue 17's target is K = 5 seeds together in at most 2x the wall time of one seed alone. This
script asks whether that is reachable at all on this machine, for each model:

* ``alone``: one seed trained by ``mmib.api.train`` (everything a run does: batches, steps,
  validation, metrics, checkpoints), and ``together``: K seeds by ``mmib.api.train_together``;
* ``one step loop``: the bare training step of one model, as a run alone takes it (its own
  optimizer), over the same number of batches, nothing else;
* ``K-stack step loop``: the ensemble's own vmapped step (its stacked parameters, vmapped
  objective, one fused Adam call over the stacked tensors) over the same batches, nothing else,
  split into forward, backward and optimizer;
* ``matmul floor``: the matrix-product FLOPs of K members' forward and backward
  (``torch.utils.flop_counter``) at the machine's measured single-thread matrix-product peak,
  the time no implementation of the same arithmetic can beat with these threads (inside a real
  run the products take about twice that: ``ensemble_products.py`` measures them there).

* ``traced``: the same K-stack forward and backward (no optimizer) traced once into a graph of
  plain ATen ops (``make_fx`` of ``torch.func.grad`` over the vmapped objective) and run from
  it, against the eager vmapped forward and backward, over the full-size batches: what vmap's
  dispatch costs, i.e. the most that compiling the step without changing its arithmetic could
  save (a measurement only: the engine does not trace, since a trace fixes the batch shape and
  every branch a model takes on a value); with ``--compile`` also that graph compiled by
  ``torch.compile`` (Inductor: fuses the elementwise work), its compile time and its loop.

If the K-stack step loop alone already takes more than 2x the whole run alone, removing every
other cost of the ensemble (batching, validation, checkpoints) cannot reach the target; if the
matmul floor does, no implementation can.

Example::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ensemble_floor.py --models concat,e-mib,c-mib
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _ensemble_cli import ensemble_arguments, parse_ensemble_arguments, peak_gflops, seconds


def _traced_against_eager(torch: Any, stack: Any, step: Any, parts: list[dict[str, Any]], epochs: int,
                          rounds: int, compile_it: bool = False) -> tuple[float, float, tuple[float, float] | None]:
    """Seconds of ``epochs`` passes of the K-stack forward and backward over the full-size batches
    of ``parts``, eager under vmap and traced into plain ATen ops (best of ``rounds`` each), and
    with ``compile_it`` the traced graph's compile seconds under ``torch.compile`` and its loop."""
    from torch.fx.experimental.proxy_tensor import make_fx

    full = [p for p in parts if p["index"].shape[1] == parts[0]["index"].shape[1]]
    params = {n: t.detach() for n, t in stack.params.items()}

    def grads(params: dict[str, Any], buffers: dict[str, Any], batch: dict[str, Any]) -> Any:
        def summed(p: dict[str, Any]) -> Any:
            total, _ = step.vmapped(p, buffers, batch, {})
            return total.sum()

        return torch.func.grad(summed)(params)

    traced = make_fx(grads)(params, stack.buffers, full[0])
    torch.manual_seed(0)  # the same draws both ways: the trace must compute the eager gradients
    expected = grads(params, stack.buffers, full[-1])
    torch.manual_seed(0)
    got = traced(params, stack.buffers, full[-1])
    if not all(torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-6) for n in expected):
        raise SystemExit("the traced step's gradients differ from the eager ones: its timing would mean nothing")

    def eager_loop() -> None:
        for _ in range(epochs):
            for p in full:
                stack.zero_grad()
                step(stack, p, {})[0].sum().backward()

    def loop(graph: Any) -> Any:
        def passes() -> None:
            for _ in range(epochs):
                for p in full:
                    graph(params, stack.buffers, p)

        return passes

    eager_loop(), loop(traced)()
    eager_s = min(seconds(eager_loop) for _ in range(rounds))
    traced_s = min(seconds(loop(traced)) for _ in range(rounds))
    if not compile_it:
        return eager_s, traced_s, None
    compiled = torch.compile(traced)
    compile_s = seconds(lambda: compiled(params, stack.buffers, full[0]))
    return eager_s, traced_s, (compile_s, min(seconds(loop(compiled)) for _ in range(rounds)))


def main(argv: list[str] | None = None) -> int:
    parser = ensemble_arguments(__doc__.splitlines()[0], rounds=3, rounds_help="repeats; the best is reported")
    parser.add_argument("--compile", action="store_true",
                        help="also the traced step compiled by torch.compile (Inductor; tens of seconds per model)")
    args = parse_ensemble_arguments(parser, argv)

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mmib.api import dataset_from_config, make_config, train, train_together
    from mmib.models.registry import build_model
    from mmib.train import ensemble
    from mmib.train.engine import Trainer, seed_everything

    torch.set_num_threads(args.threads)
    peak = peak_gflops(torch)
    k, epochs = args.k, args.epochs
    print(f"{k} seeds on {args.data}, {epochs} epochs, {args.threads} torch thread(s), best of {args.rounds}; "
          f"matrix-product peak {peak:.0f} GFLOP/s")
    print(f"| model | alone: s | {k} together: s | ratio | one step loop: s | {k}-stack step loop: s "
          f"(forward / backward / Adam) | {k}-stack loop vs alone | matmul floor: s | floor vs alone | "
          "forward + backward, eager / traced: s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        cfgs = [make_config(name, args.data, overrides=[f"train.seed={s}"], progress=False,
                            epochs=epochs, patience=epochs + 1) for s in range(k)]
        ds = dataset_from_config(cfgs[0].data)
        train(config=cfgs[0], dataset=ds, epochs=1)  # warm-up: first kernels
        tmp = Path(tempfile.mkdtemp(prefix="mmib-floor-"))
        alone, together = [], []
        try:
            for r in range(args.rounds):
                alone.append(seconds(lambda: train(config=cfgs[0], dataset=ds, out=tmp / f"a{r}")))
                together.append(seconds(lambda: train_together(cfgs, [tmp / f"t{r}m{i}" for i in range(k)])))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        batch_size = cfgs[0].train.batch_size
        batches = list(ds.batches("train", batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)))
        models = []
        for s in range(k):
            seed_everything(s)
            models.append(build_model(cfgs[0].model.name, ds.spec, **cfgs[0].model.options).train())
        plan = models[0].training_plan(cfgs[0].train)
        phase, stage = plan[0].name, plan[0].stages[0].name

        # the bare step of one model, with the optimizer a run alone uses
        one = copy.deepcopy(models[0])
        trainer = Trainer(one, ds, cfgs[0].train, None, cfgs[0])
        opt = trainer._optimizer(one.training_plan(cfgs[0].train)[0].stages[0])

        def one_loop() -> None:
            for _ in range(epochs):
                for b in batches:
                    opt.zero_grad(set_to_none=True)
                    one.objective(b, phase, stage).total.backward()
                    opt.step()

        one_loop()
        one_s = min(seconds(one_loop) for _ in range(args.rounds))

        with FlopCounterMode(display=False) as counter:
            copy.deepcopy(models[0]).objective(batches[0], phase, stage).total.backward()
        flops_per_step = counter.get_total_flops()  # matrix products (and convolutions) of one member
        floor_s = k * flops_per_step * epochs * len(batches) / (peak * 1e9)

        # the ensemble's own vmapped step over stacked parameters (all trained) and its grouped
        # Adam step over the members' optimizers, nothing else
        trained = {n for n, _ in models[0].named_parameters()}
        member_opts = [Trainer(m, ds, cfgs[0].train, None, cfgs[0])._optimizer(m.training_plan(cfgs[0].train)[0].stages[0])
                       for m in models]
        stack = ensemble._Stack(models, trained)
        step = ensemble._Step(copy.deepcopy(models[0]).train(), phase, stage)
        for o in member_opts:
            ensemble._fuse(o)
        grouped = ensemble._GroupedAdam.build(member_opts, stack.pairs, clipping=False)
        if grouped is None:
            raise SystemExit(f"{name}: its optimizer does not take the grouped Adam step")
        lrs = [g["lr"] for g in member_opts[0].param_groups]
        parts = [ensemble._stack_batches([b] * k) for b in batches]
        split = {"forward": 0.0, "backward": 0.0, "adam": 0.0}

        def stack_loop() -> None:
            for _ in range(epochs):
                for p in parts:
                    stack.zero_grad()
                    t0 = time.perf_counter()
                    total, _ = step(stack, p, {})
                    t1 = time.perf_counter()
                    total.sum().backward()
                    t2 = time.perf_counter()
                    grouped.step(lrs)
                    t3 = time.perf_counter()
                    split["forward"] += t1 - t0
                    split["backward"] += t2 - t1
                    split["adam"] += t3 - t2

        stack_loop()
        best: dict[str, float] | None = None
        for _ in range(args.rounds):
            split.update(forward=0.0, backward=0.0, adam=0.0)
            stack_loop()
            if best is None or sum(split.values()) < sum(best.values()):
                best = dict(split)
        grouped.release()
        eager_s, traced_s, compiled = _traced_against_eager(torch, stack, step, parts, epochs, args.rounds, args.compile)
        stack.release()
        assert best is not None
        stack_s, a, t = sum(best.values()), min(alone), min(together)
        print(f"| {name} | {a:.2f} | {t:.2f} | {t / a:.2f}x | {one_s:.2f} | {stack_s:.2f} ({best['forward']:.2f} / "
              f"{best['backward']:.2f} / {best['adam']:.2f}) | {stack_s / a:.2f}x | {floor_s:.2f} | {floor_s / a:.2f}x | "
              f"{eager_s:.2f} / {traced_s:.2f} ({traced_s / eager_s - 1:+.0%}) |")
        if compiled is not None:
            print(f"{name}: the traced step compiled by torch.compile in {compiled[0]:.1f} s; its loop {compiled[1]:.2f} s "
                  f"({compiled[1] / traced_s - 1:+.0%} vs traced, {compiled[1] / eager_s - 1:+.0%} vs eager)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
