"""The FLOP count and arguments of benchmarks/ensemble_products.py (the figures it prints rest on them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ensemble_products  # noqa: E402


@pytest.mark.parametrize(
    ("op", "shapes", "expected"),
    [
        ("aten::mm", [[64, 128], [128, 32]], 2 * 64 * 128 * 32),
        ("aten::addmm", [[32], [64, 128], [128, 32], [], []], 2 * 64 * 128 * 32),
        ("aten::bmm", [[5, 64, 128], [5, 128, 32]], 2 * 5 * 64 * 128 * 32),
        ("aten::baddbmm", [[5, 64, 32], [5, 64, 128], [5, 128, 32], [], []], 2 * 5 * 64 * 128 * 32),
    ],
)
def test_product_flops_are_two_per_multiply_add(op: str, shapes: list[list[int]], expected: int) -> None:
    assert ensemble_products.product_flops(op, shapes) == expected


def test_product_flops_match_torch_flop_counter() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    a, b = torch.randn(5, 7, 11), torch.randn(5, 11, 3)
    with FlopCounterMode(display=False) as counter:
        torch.bmm(a, b)
    assert ensemble_products.product_flops("aten::bmm", [list(a.shape), list(b.shape)]) == counter.get_total_flops()


def test_product_flops_refuses_other_ops() -> None:
    with pytest.raises(ValueError, match="aten::mul"):
        ensemble_products.product_flops("aten::mul", [[3], [3]])


@pytest.mark.parametrize("argv", [["--k", "1"], ["--shapes", "-1"], ["--profiles", "0"]])
def test_bad_arguments_exit_with_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ensemble_products.main(argv)
    assert exc.value.code == 2


@pytest.mark.slow
def test_one_epoch_prints_the_products_table_with_sane_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert ensemble_products.main(["--models", "concat", "--k", "5", "--epochs", "1", "--rounds", "1",
                                   "--profiles", "1", "--shapes", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| concat |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    products_alone, products_together = (float(x) for x in cells[3].split(" / "))
    assert 0 < products_alone < products_together  # five members do five times the arithmetic of one
    rate_alone, rate_together = (float(x) for x in cells[4].split(" / "))
    assert 0 < rate_alone and 0 < rate_together
    assert "| aten::" in out  # the costliest shape's listing
