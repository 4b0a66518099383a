"""Errors a user can act on.

Every stage turns bad input into exactly one of these, and the CLI prints its message and exits
non-zero without a traceback. The message always names the thing to fix: a file and line, or a
param's dotted path.
"""

from __future__ import annotations

from pathlib import Path


class GenrecError(Exception):
    """Base class of user-facing errors (the CLI prints them and exits with status 2)."""


class ParamError(GenrecError):
    """An impossible or unknown parameter, named by its dotted path (e.g. ``data.max_items``)."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(f"param {param}: {message}")


class InputFormatError(GenrecError):
    """A malformed input file; ``line`` is 1-based (None when the problem is the whole file)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


class MissingInputError(GenrecError):
    """A required input file or directory does not exist."""

    def __init__(self, path: str | Path, hint: str = ""):
        self.path = str(path)
        super().__init__(f"{path}: file not found" + (f" ({hint})" if hint else ""))


class EmptyResultError(GenrecError):
    """A processing step left nothing to work with (e.g. five-core filtering removed every user)."""
