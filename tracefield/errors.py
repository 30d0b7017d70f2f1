"""User-facing errors.

A :class:`TracefieldError` carries one line that names the offending file and says how to
fix it. The CLI prints exactly that line and exits non-zero; library callers can catch it.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class TracefieldError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def input_error(path: str | Path, problem: str, fix: str) -> TracefieldError:
    """Build the standard ``<path>: <problem>; <fix>`` message."""
    return TracefieldError(f"{path}: {problem}; {fix}")
