"""Figure helpers of mmib.experiments.plots."""

from __future__ import annotations

from mmib.experiments.plots import fit_text


def test_a_long_title_is_wrapped_to_the_figure_width():
    title = "Probes at N = 3,000 (SPEC dimensions): R2 of each part's contribution to the label"
    lines = fit_text(title, 5.0, 9).split("\n")
    assert len(lines) == 2 and " ".join(lines) == title
    assert all(len(line) <= int(5.0 * 72 / (0.55 * 9)) for line in lines)
    assert fit_text("short", 5.0, 9) == "short"
