"""One linear layer of K stacked members, five ways: what vmap's batched product costs here.

The ensemble (:mod:`mmib.train.ensemble`) runs K members' layers as one ``torch.func.vmap`` over
stacked weights. This script times, forward and forward + backward, one layer of the built-in
models' size (batch 64, 128 -> 128 by default) as:

* ``one member``: ``F.linear`` of one member (times K gives K runs one after another);
* ``K linears``: K separate ``F.linear`` calls;
* ``vmap F.linear``: the ensemble's way (weights stored transposed per member, as the ensemble
  stores them);
* ``baddbmm``: the same arithmetic as one batched product called directly, no vmap: the cost a
  hand-written grouped layer would pay;
* ``vmap custom rule``: an ``autograd.Function`` whose ``vmap`` staticmethod calls ``baddbmm``
  (a way to keep vmap for the rest of the model and batch the products by hand).

If ``baddbmm`` is much cheaper than ``vmap F.linear``, grouped layers written without vmap would
shrink the ensemble's step; if the custom rule is not, that saving cannot be had inside vmap.

Last, the arithmetic rate of one member's bare product at this shape and of K members' as one
``bmm``, beside this core's peak (the best of 1024 x 1024 products): when a single member's small
product already runs near peak, K members' products cost K times one member's however they are
batched, and batching can only save the overhead around them.

Example::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src python benchmarks/vmap_linear.py
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from _ensemble_cli import microseconds, peak_gflops


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5, help="members (default 5)")
    ap.add_argument("--batch", type=int, default=64, help="rows per batch (default 64)")
    ap.add_argument("--inputs", type=int, default=128, help="input width (default 128)")
    ap.add_argument("--outputs", type=int, default=128, help="output width (default 128)")
    ap.add_argument("--repeats", type=int, default=1000, help="timed calls per figure (default 1000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    for name in ("k", "batch", "inputs", "outputs", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: must be at least 1, got {getattr(args, name)}")

    import torch
    import torch.nn.functional as F

    class _BatchedLinearRule(torch.autograd.Function):
        """``F.linear`` whose vmap rule is one ``baddbmm`` over the stacked weights."""

        generate_vmap_rule = False

        @staticmethod
        def forward(x: Any, w: Any, b: Any) -> Any:
            return F.linear(x, w, b)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            x, w, _ = inputs
            ctx.save_for_backward(x, w)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            x, w = ctx.saved_tensors
            flat = grad.reshape(-1, grad.shape[-1])
            return grad @ w, flat.T @ x.reshape(-1, x.shape[-1]), flat.sum(0)

        @staticmethod
        def vmap(info: Any, in_dims: Any, x: Any, w: Any, b: Any) -> Any:
            k = info.batch_size
            x, w, b = (t.movedim(d, 0) if d is not None else t.expand(k, *t.shape)
                       for t, d in zip((x, w, b), in_dims))
            out = torch.baddbmm(b.unsqueeze(1), x.reshape(k, -1, x.shape[-1]), w.transpose(1, 2))
            return out.reshape(k, *x.shape[1:-1], w.shape[1]), 0

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k, n, i, o = args.k, args.batch, args.inputs, args.outputs
    x = torch.randn(k, n, i)
    w = torch.randn(k, i, o).transpose(1, 2).requires_grad_()  # stored transposed, as the ensemble does
    b = torch.randn(k, o).requires_grad_()
    w1, b1 = w[0].detach().clone().requires_grad_(), b[0].detach().clone().requires_grad_()
    vmapped, custom = torch.func.vmap(F.linear), torch.func.vmap(_BatchedLinearRule.apply)
    ways: dict[str, Callable[[], Any]] = {
        "one member": lambda: F.linear(x[0], w1, b1),
        f"{k} linears": lambda: [F.linear(x[m], w[m], b[m]) for m in range(k)],
        "vmap F.linear": lambda: vmapped(x, w, b),
        "baddbmm": lambda: torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)),
        "vmap custom rule": lambda: custom(x, w, b),
    }
    reference = vmapped(x, w, b).detach()
    print(f"one layer: {k} members, batch {n}, {i} -> {o}, {args.threads} torch thread(s), {args.repeats} calls each")
    print("| way | forward: us | forward + backward: us | vs vmap F.linear (fwd + bwd) | same values |")
    print("|---|---|---|---|---|")
    rows = []
    for name, fn in ways.items():
        def forward() -> None:
            with torch.no_grad():
                fn()

        def both() -> None:
            out = fn()
            total = sum(t.sum() for t in out) if isinstance(out, list) else out.sum()
            total.backward()
            for t in (w, b, w1, b1):
                t.grad = None

        with torch.no_grad():
            got = fn()
        same = "-" if name == "one member" else (
            "yes" if torch.allclose(torch.stack(got) if isinstance(got, list) else got, reference, atol=1e-4)
            else "NO")
        rows.append((name, microseconds(forward, args.repeats), microseconds(both, args.repeats), same))
    base = next(r[2] for r in rows if r[0] == "vmap F.linear")
    for name, fwd, fb, same in rows:
        print(f"| {name} | {fwd:.0f} | {fb:.0f} | {fb / base:.2f}x | {same} |")

    peak = peak_gflops(torch)
    xs, ws = x.detach(), w.detach().transpose(1, 2).contiguous()
    flops = 2 * n * i * o
    one = flops / (min(microseconds(lambda: xs[0] @ ws[0], args.repeats) for _ in range(3)) / 1e6) / 1e9
    many = k * flops / (min(microseconds(lambda: torch.bmm(xs, ws), args.repeats) for _ in range(3)) / 1e6) / 1e9
    print(f"products: one member {n}x{i} @ {i}x{o} at {one:.0f} GFLOP/s ({one / peak:.0%} of this core's peak, "
          f"{peak:.0f} GFLOP/s at 1024^3); {k} members as one bmm at {many:.0f} GFLOP/s ({many / peak:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
