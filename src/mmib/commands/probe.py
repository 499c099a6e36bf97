"""``mmib probe RUN_DIR``: linear probes from a run's learned representation to the
ground-truth latent parts of its (synthetic) dataset.

For SIM the parts are ``a0, a1, a2`` (task-relevant) and ``b0, b1, b2``
(superfluous); for ``sim-msa`` the shared and modality-specific parts. The
optimal multimodal bottleneck keeps every relevant part and none of the
superfluous ones; the held-out R^2 per part shows how close a run comes (see
:mod:`mmib.eval.probe` for what the two columns measure).
"""

from __future__ import annotations

import argparse

COMMAND = "probe"
HELP = "held-out R^2 of linear probes from a run's representation to each ground-truth part (sim-* data)"
ORDER = 36


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory written by `mmib train`")
    p.add_argument("--representation", help="probe this named output of the model instead of its joint "
                   "representation (e.g. z_x1)")
    p.add_argument("--fit-split", default="train", choices=("train", "valid", "test"), help="split the probe is fitted on")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split R^2 is measured on")
    p.add_argument("--max-fit", type=int, default=20_000, help="at most this many fitting samples (default 20000)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    from mmib.commands._common import add_trust_arg

    add_trust_arg(p)


def run(args: argparse.Namespace) -> int:
    from mmib.api import load_run
    from mmib.errors import ConfigError
    from mmib.eval.probe import probe_model
    from mmib.eval.tables import markdown_table

    if args.max_fit < 3:
        raise ConfigError(f"--max-fit must be >= 3, got {args.max_fit}")
    run_ = load_run(args.run_dir)
    ds = run_.dataset(trust_pickle=args.trust_pickle)
    results = probe_model(run_.model, ds, args.fit_split, args.split, args.representation, args.max_fit,
                          device=args.device)
    what = args.representation or "joint representation"
    print(f"{run_.config.model.name} on {ds.name}: linear probes of the {what}, "
          f"fitted on {args.fit_split}, held-out R^2 on {args.split}")
    rows = [[r.part, "relevant" if r.relevant else "superfluous", r.dim, r.r2, r.r2_label] for r in results]
    print(markdown_table(["part", "kind", "dim", "R2 (whole part)", "R2 (label direction)"], rows, digits=3))
    return 0
