"""``mmib bound -d DATA``: OMIB's bounds on beta, estimated with MINE on the training split.

Prints ``H(v_i)`` (as ``I(v_i; v_i)``), ``I(v_i; v_j)`` for every pair, and the
bounds ``M_l < M_u`` of the OMIB paper (2 or 3 modalities; see
:mod:`mmib.eval.bounds`). ``omib`` draws its default beta from this range. Each
estimate within 1 nat of the estimator's cap ``log(batch size)`` is marked, with a
note that the range then reflects the estimator, not the data, and how to use
beta instead.
"""

from __future__ import annotations

import argparse

from mmib.commands._common import add_data_args

COMMAND = "bound"
HELP = "estimate OMIB's beta bounds [M_l, M_u] (entropies and MI by MINE) on a dataset's training split"
ORDER = 35


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mmib.eval.bounds import MineSettings

    d = MineSettings()
    add_data_args(p, required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. data.n_samples=3000 (repeatable)")
    p.add_argument("--split", default="train", choices=("train", "valid", "test"), help="split to estimate on")
    p.add_argument("--modalities", help="comma-separated modalities (default: all; 2 or 3 of them)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"MINE training steps per estimate (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"MINE batch size (default {d.batch_size}; entropies saturate near its log)")
    p.add_argument("--samples", type=int, default=d.max_samples, help=f"rows used at most (default {d.max_samples})")
    p.add_argument("--hidden", type=int, default=d.hidden, help=f"statistics network width (default {d.hidden})")
    p.add_argument("--critic", default=d.critic, choices=("separable", "concat"), help="statistics network type")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args: argparse.Namespace) -> int:
    import time

    from mmib.api import dataset_from_config, make_config
    from mmib.errors import ConfigError
    from mmib.eval.bounds import CAP_MARGIN, MineSettings, at_cap, beta_bounds, estimator_cap
    from mmib.eval.tables import markdown_table
    from mmib.train.engine import resolve_device

    for name, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--samples", args.samples),
                        ("--hidden", args.hidden)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    overrides = [o if o.startswith("data.") else f"data.{o}" for o in args.overrides]
    cfg = make_config(data=args.data, data_path=args.data_path, overrides=overrides)
    dataset = dataset_from_config(cfg.data)
    mods = [m.strip() for m in args.modalities.split(",")] if args.modalities else None
    settings = MineSettings(steps=args.steps, batch_size=args.batch_size, hidden=args.hidden,
                            max_samples=args.samples, critic=args.critic, seed=args.seed)
    print(dataset.summary())
    start = time.perf_counter()
    b = beta_bounds(dataset, args.split, settings, mods, device=resolve_device(args.device))
    seconds = time.perf_counter() - start
    first = next(iter(b.details.values()))
    cap = estimator_cap(first.batch_size)
    rows = [[name, est.value, est.std, "yes" if at_cap(est) else "no"] for name, est in b.details.items()]
    print(f"MINE on the {args.split} split ({settings.steps} steps, batch {first.batch_size}, "
          f"{first.samples} samples, {seconds:.1f} s); nats, +- = std over evaluation batches")
    print(markdown_table(["quantity", "estimate", "std", f"at cap (log {first.batch_size} = {cap:.3f})"], rows))
    print(f"M_l = {b.lower:.6g}")
    print(f"M_u = {b.upper:.6g}")
    capped = b.at_cap
    if capped:
        print(
            f"note: {', '.join(capped)} within {CAP_MARGIN:g} nat of the estimator's cap log({first.batch_size}) = "
            f"{cap:.3f}. H(v) = I(v; v) is infinite for continuous v (and I is, for parts shared exactly), and the "
            f"DV bound cannot exceed log(batch size): [M_l, M_u] then reflects the estimator, not the data "
            f"(M_u near 1 / (3 log B) = {1 / (3 * cap):.4g} for two modalities at any data). Treat beta as a "
            "hyperparameter in (0, 1) tuned on validation data; the representation collapses once "
            "beta * min(1, r) >= 1."
        )
    else:
        print("note: H(v) = I(v; v) is infinite for continuous v; its estimate grows with the MINE budget "
              f"(--steps, --batch-size) towards log(batch size) = {cap:.3f}, so compare bounds only at one budget.")
    return 0
