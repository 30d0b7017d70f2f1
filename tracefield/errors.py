"""User-facing errors.

A :class:`TracefieldError` carries one line that names the offending file and says how to
fix it. The CLI prints exactly that line and exits non-zero; library callers can catch it.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class TracefieldError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def short_reason(exc: BaseException, limit: Optional[int] = None, sentence: bool = False, typed: bool = False) -> str:
    """An exception's first non-empty line (its type's name if it has none), cut to ``limit`` characters.

    Libraries' messages run over many lines; a one-line error quotes only the first, and
    with ``sentence`` only that line's first sentence (some append long advice). ``typed``
    prefixes the type's name ("KeyError: 'preds'"), where the message alone says too little.
    """
    name = type(exc).__name__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else ""
    if sentence:
        reason = reason.split(". ")[0].rstrip(".")
    reason = f"{name}: {reason}" if typed and reason else reason or name
    return reason if limit is None or len(reason) <= limit else reason[: limit - 3] + "..."


def input_error(path: str | Path, problem: str, fix: str) -> TracefieldError:
    """Build the standard ``<path>: <problem>; <fix>`` message."""
    return TracefieldError(f"{path}: {problem}; {fix}")
