"""The helpers the ensemble benchmarks share (benchmarks/_ensemble_cli.py): timers and argument checks."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _ensemble_cli  # noqa: E402


def test_seconds_times_one_call_and_makes_it_once() -> None:
    calls: list[int] = []

    def sleep() -> None:
        calls.append(1)
        time.sleep(0.02)

    assert _ensemble_cli.seconds(sleep) >= 0.02
    assert calls == [1]


def test_microseconds_is_per_call_after_a_warm_up() -> None:
    calls: list[int] = []
    assert _ensemble_cli.microseconds(lambda: calls.append(1), repeats=100) > 0
    assert len(calls) == 100 + 5  # at least 5 warm-up calls, then the timed ones


@pytest.mark.parametrize("argv", [["--k", "1"], ["--epochs", "0"], ["--rounds", "0"], ["--threads", "0"]])
def test_out_of_range_arguments_are_usage_errors(argv: list[str]) -> None:
    parser = _ensemble_cli.ensemble_arguments("test", rounds=1, rounds_help="rounds")
    with pytest.raises(SystemExit) as exc:
        _ensemble_cli.parse_ensemble_arguments(parser, argv)
    assert exc.value.code == 2
