"""Errors of the serving layer: a bad request (names the field) and an unusable bundle."""

from __future__ import annotations

from genrec_core.errors import GenrecError


class RequestError(GenrecError):
    """A bad recommendation request; ``field`` names the input to fix (``history``, ``k``, ...).

    The HTTP service answers it with a 4xx and ``{"error": message, "field": field}``; the CLI
    prints it as one line and exits non-zero."""

    def __init__(self, field: str, message: str, status: int = 422):
        self.field = field
        self.status = status
        self.message = message
        super().__init__(f"{field}: {message}")


class BundleError(GenrecError):
    """An exported bundle that cannot be used (missing file, wrong hash, other format version)."""
