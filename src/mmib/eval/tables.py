"""Plain-text and Markdown tables for metrics (CLI output and reports)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def format_value(value: Any, digits: int = 4) -> str:
    """Numbers to fixed significant digits; NaN/None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A Markdown table whose columns are padded to line up in a terminal too."""
    cells = [[str(h) for h in headers]] + [[format_value(v, digits) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(lines)


def metrics_table(columns: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """Metrics as rows and ``columns`` (e.g. valid, test) as columns."""
    names: list[str] = []
    for col in columns.values():
        names.extend(k for k in col if k not in names)
    rows = [[n] + [col.get(n) for col in columns.values()] for n in names]
    return markdown_table(["metric", *columns], rows, digits)
