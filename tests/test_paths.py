"""Paths built from data stay inside their folder."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from mmib.errors import DataError
from mmib.paths import safe_relative


@pytest.mark.parametrize("text", ["a", "a/b.wav", "./a", "a..b", "..a", "a/..b/c"])
def test_relative_names_inside_the_folder_pass(text):
    assert safe_relative(text, "id") == PurePosixPath(text)


@pytest.mark.parametrize(("text", "match"), [
    ("..", "leaves its folder"),
    ("../x", "leaves its folder"),
    ("a/../../x", "leaves its folder"),
    ("a\\..\\..\\x", "leaves its folder"),
    ("/etc/passwd", "an absolute path"),
    ("C:\\Windows", "an absolute path"),
    ("C:x", "an absolute path"),
    ("\\\\server\\share", "an absolute path"),
    ("a\0b", "contains a NUL byte"),
])
def test_escapes_are_refused_naming_the_value(text, match):
    with pytest.raises(DataError, match=f"^clip id {text!r}: ".replace("\\", "\\\\").replace("(", "\\(") + ".*" + match):
        safe_relative(text, "clip id")
