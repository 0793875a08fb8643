"""Progress reporting: library functions take ``progress(step, fraction)`` callbacks; the CLI draws them."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float], None]


def no_progress(step: str, fraction: float) -> None:
    """The callback used when the caller passes none: ignores ``step`` (text) and ``fraction`` (0 to 1)."""
    del step, fraction
