"""``mmib report``: a Markdown report with figures from run, comparison and sweep directories."""

from __future__ import annotations

import argparse

COMMAND = "report"
HELP = "write a Markdown report with figures (curves, KL per modality, beta curves, t-SNE, paper numbers)"
DESCRIPTION = (
    "Write OUT/report.md and OUT/figures/*.png from run directories, `mmib compare` directories, "
    "`mmib sweep` directories or folders of runs: result tables, curves of every logged loss term and "
    "validation metric, KL per modality over training (terms named kl_<modality>), the objective against "
    "every swept parameter, t-SNE of the learned test representations coloured by label, and the papers' "
    "own numbers beside ours where the dataset matches."
)
ORDER = 32


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="run, comparison or sweep directories")
    p.add_argument("-o", "--out", required=True, help="report directory (report.md and figures/)")
    p.add_argument("--title", help="report title")
    p.add_argument("--no-tsne", action="store_true", help="skip the t-SNE figures (they load and run each model)")
    p.add_argument("--tsne-samples", type=int, default=1000, help="test samples per t-SNE panel (default 1000)")


def run(args: argparse.Namespace) -> int:
    from mmib.experiments.report import command_line, report

    report(args.inputs, args.out, title=args.title, tsne_plot=not args.no_tsne, tsne_samples=args.tsne_samples,
           command=command_line())
    return 0
