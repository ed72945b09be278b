"""Progress lines of evaluations, reports and sweeps: one flushed line on stderr per finished piece
of work, and durations as H:MM:SS. Imports nothing heavy, so the evaluation layer can use it."""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """One progress line on stderr, flushed at once (a pipe would otherwise hold it to the end)."""
    print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """H:MM:SS."""
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
