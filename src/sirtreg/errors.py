"""Exceptions raised for bad input.

Every refusal of user input raises a subclass of :class:`SirtregError` with a
one-line message that says what is wrong and, where possible, how to fix it.
The CLI prints that line and exits with status 2.
"""

from __future__ import annotations

from typing import Any


class SirtregError(Exception):
    """Base class of all errors that the tool reports to its user."""


class InputError(SirtregError, ValueError):
    """An input file or value is missing, malformed or out of range."""


class GeometryMismatchError(SirtregError, ValueError):
    """Two images that must share a grid (or overlap in space) do not."""


class DicomSeriesError(InputError):
    """A DICOM series is incomplete, inconsistent or ambiguous."""


class OutputExistsError(SirtregError, FileExistsError):
    """Writing would overwrite an existing file or one of the inputs."""


class FlaggedLiverError(SirtregError):
    """A CNN liver failed its checks (:mod:`sirtreg.segment.liver_check`) and the plan says to stop."""


def describe(value: Any) -> str:
    """``repr(value)``, cut to 60 characters, for the value a refusal names."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
