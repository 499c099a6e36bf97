"""Paths built from data: ids, file columns and names that must stay inside their folder.

A clip id or a media column of a labels CSV, a study or run name, comes from a
file or a user and becomes part of a path. :func:`safe_relative` refuses the
forms that would leave the folder they are joined to: absolute paths (POSIX or
Windows), ``..`` components and NUL bytes.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from mmib.errors import DataError


def safe_relative(text: str, what: str) -> PurePosixPath:
    """``text`` as a relative path that stays inside the folder it is joined to, else DataError naming ``what``."""
    if "\0" in text:
        raise DataError(f"{what} {text!r}: contains a NUL byte")
    posix = PurePosixPath(text.replace("\\", "/"))
    win = PureWindowsPath(text)
    if posix.is_absolute() or win.drive or win.root:
        raise DataError(f"{what} {text!r}: an absolute path; it must be relative to its folder")
    if any(part == ".." for part in posix.parts):
        raise DataError(f"{what} {text!r}: leaves its folder ('..' is not allowed)")
    return posix
