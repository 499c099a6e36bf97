"""What the ensemble benchmarks share (``ensemble_floor.py``, ``ensemble_optimizer_step.py``,
``ensemble_products.py``, ``vmap_linear.py``): their command-line arguments (which models, data,
number of seeds, epochs, rounds, threads), the measured matrix-product peak they compare against,
the wall time of one call and the tight-loop timer of one call."""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable


def ensemble_arguments(description: str, rounds: int, rounds_help: str) -> argparse.ArgumentParser:
    """A parser with the arguments every ensemble benchmark takes (``rounds``: its default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default="concat,e-mib,c-mib", help="comma-separated models (default %(default)s)")
    parser.add_argument("--data", default="sim-msa", help="dataset (default %(default)s)")
    parser.add_argument("--k", type=int, default=5, help="seeds trained together (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run, no early stop (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"{rounds_help} (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    return parser


def parse_ensemble_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; exits with a usage error unless k >= 2 and epochs, rounds, threads >= 1."""
    args = parser.parse_args(argv)
    if args.k < 2 or args.epochs < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--k must be >= 2 and --epochs, --rounds, --threads >= 1")
    return args


def seconds(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_gflops(torch: Any) -> float:
    """This process's matrix-product peak at its torch threads: the best of ten 1024^3 products."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = min(seconds(lambda: a @ b) for _ in range(10))
    return 2 * 1024 ** 3 / best / 1e9


def microseconds(fn: Callable[[], Any], repeats: int) -> float:
    """Microseconds per call of ``fn`` in a tight loop of ``repeats`` calls, after a warm-up."""
    for _ in range(max(repeats // 20, 5)):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e6
