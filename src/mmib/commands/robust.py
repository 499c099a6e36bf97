"""``mmib robust``: evaluate a trained run with noisy or missing modalities."""

from __future__ import annotations

import argparse

COMMAND = "robust"
HELP = "evaluate a run under Gaussian noise on each modality and with each modality removed"
DESCRIPTION = (
    "Evaluate a trained run with Gaussian noise of increasing strength added to one modality at a time "
    "(sigma in units of the training standard deviation) and with each modality removed (zeroed, and "
    "masked as missing); prints a table and writes robust.md, robust.csv and robust.png."
)
ORDER = 33


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory written by `mmib train` (or one run of a comparison/sweep)")
    p.add_argument("--levels", default="0,0.25,0.5,1,2,4", help="noise sigmas, comma-separated (default 0,0.25,0.5,1,2,4)")
    p.add_argument("--repeats", type=int, default=1, help="noise draws averaged per level (default 1)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split to evaluate (default test)")
    p.add_argument("--metric", help="metric of the curve and the change column (default: the run's monitor)")
    p.add_argument("--modalities", help="comma-separated subset of modalities (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default 0)")
    p.add_argument("-o", "--out", help="output directory (default RUN_DIR/robust)")
    from mmib.commands._common import add_trust_arg

    add_trust_arg(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmib.api import load_run
    from mmib.experiments._util import parse_floats, parse_list
    from mmib.experiments.robust import render_markdown, robustness, write_outputs

    run_ = load_run(args.run_dir)
    dataset = run_.dataset(trust_pickle=args.trust_pickle)
    result = robustness(run_, parse_floats(args.levels, "--levels"), args.split, args.repeats, args.seed,
                        args.metric, parse_list(args.modalities, "--modalities") if args.modalities else None,
                        dataset=dataset)
    out = Path(args.out) if args.out else Path(args.run_dir) / "robust"
    files = write_outputs(result, out)
    print(render_markdown(result))
    print(f"written: {files['markdown']}, {files['csv']}, {files['figure']}")
    return 0
