"""Helpers of the experiment modules."""

from __future__ import annotations

import pytest

from mmib.experiments._util import slug


@pytest.mark.parametrize(("text", "expected"), [
    ("c-mib", "c-mib"), ("a b/c", "a-b-c"), ("..", "x"), (".", "x"), ("../../etc", "etc"), (".hidden", "hidden"),
    ("/abs/path", "abs-path"), ("a\0b", "a-b"), ("", "x"), ("v1.2", "v1.2"),
])
def test_slug_is_one_safe_path_component(text, expected):
    out = slug(text)
    assert out == expected and "/" not in out and out not in (".", "..") and not out.startswith(".")
