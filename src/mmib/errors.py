"""User-facing errors.

Everything a user can get wrong (a path, a key, a value, a model name) raises a
subclass of :class:`MMIBError` with a one-line message that names the culprit.
The CLI turns these into one line on stderr and exit status 2; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


class MMIBError(Exception):
    """Base class of every error caused by user input."""


class DataError(MMIBError):
    """A data file or array is missing, malformed or inconsistent."""


class ConfigError(MMIBError):
    """A configuration value, option or name is invalid."""


class RunError(MMIBError):
    """A run directory is missing or unusable."""
