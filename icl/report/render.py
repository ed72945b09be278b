"""How sections write what they show: numbers, Markdown and CSV tables, and the runs' colours (one
per run, in run order); predictors' colours, y axes and saving figures are icl/figures.py's."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from icl.figures import plt
from icl.fileio import atomic_write


def fmt(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def colors(n: int) -> list[Any]:
    """One colour per run, in run order (runs are sorted by their mixture weights)."""
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]
