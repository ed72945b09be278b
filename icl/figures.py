"""How every figure of `icl eval` and `icl report` looks: one colour per predictor name (``color``),
the y axis chosen from the plotted values (``set_yaxis``: log past two decades, clipped with an
"off scale" mark where one curve explodes), the k = d line, and ``save_figure`` (PNG and PDF)."""

from __future__ import annotations

import dataclasses
import io
import math
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from icl.errors import ICLError  # noqa: E402
from icl.eval_config import YSCALES  # noqa: E402
from icl.fileio import atomic_write  # noqa: E402

DECADES = 2.0  # auto: a log axis when the plotted means span more than this many decades
# A curve above CLIP x the top of the kept curves is off scale; a forced log axis shows more.
CLIP = {"auto": 3.0, "linear": 3.0, "log": 1e4}
LOG_RANGE = 1e6  # a log axis shows at most six decades below its top (exact fits reach ~1e-14)
DPI = 200
VECTOR = "pdf"  # written beside every PNG

# Fixed colours of the predictors by registry name (tab10 and its light shades), the same in every
# figure; other names (checkpoint baselines, runs) get one of EXTRA chosen by a checksum of the name.
PALETTE = {
    "model": "#1f77b4",
    "least_squares": "#ff7f0e",
    "bayes": "#2ca02c",
    "bayes_train": "#98df8a",
    "ridge": "#d62728",
    "lasso": "#9467bd",
    "lasso_cv": "#c5b0d5",
    "averaging": "#8c564b",
    "knn": "#e377c2",
    "zero": "#7f7f7f",
    "quadratic_least_squares": "#bcbd22",
}
EXTRA = ("#17becf", "#aec7e8", "#ffbb78", "#ff9896", "#9edae5", "#dbdb8d", "#c49c94", "#f7b6d2", "#000000")
STYLE = {"least_squares": "--", "bayes": ":", "bayes_train": ":"}  # reference lines drawn beside models


def color(name: str) -> str:
    """The colour of predictor ``name`` in every figure."""
    if name in PALETTE:
        return PALETTE[name]
    return EXTRA[zlib.crc32(name.encode()) % len(EXTRA)]


def line_style(name: str) -> str:
    return STYLE.get(name, "-")


def check_yscale(mode: str, field: str = "yscale") -> str:
    if mode not in YSCALES:
        raise ICLError(f"{field}: got {mode!r}; allowed: {', '.join(YSCALES)}")
    return mode


def configured_yscale(eval_cfg) -> str:
    """The eval config section's ``yscale``."""
    return check_yscale(eval_cfg.yscale, "eval.yscale")


@dataclasses.dataclass
class YAxis:
    """The y axis ``set_yaxis`` chose: scale, limits and the curves that leave it at the top."""

    scale: str  # linear or log
    bottom: float
    top: float
    off_scale: list[str]


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def choose_yaxis(
    curves: dict[str, Sequence[float | None]],
    mode: str = "auto",
    keep: Sequence[str] = (),
    upper: dict[str, Sequence[float | None]] | None = None,
) -> YAxis:
    """The y axis for ``curves`` (name -> plotted values). First the clip: a curve whose maximum
    exceeds CLIP x the top of the ``keep`` curves (default: all; the model's in practice) is off
    scale, so that an exploding baseline cannot flatten the kept curves. Then the scale of the rest:
    ``auto`` is log when their positive values span more than DECADES decades and the kept curves
    themselves more than one (an exact fit falling to ~0 beside a flat model reads best on a
    linear axis), else linear from 0. A log axis ends DECADES below the kept curves' lowest value.
    ``upper`` (name -> the tops of its interval band) raises the axis to show the bands of the
    curves on scale."""
    check_yscale(mode)
    vals = {name: _finite(v) for name, v in curves.items()}
    every = [v for vs in vals.values() for v in vs]
    kept = [v for name in keep if name in vals for v in vals[name]] or every
    ref = max(kept, default=0.0)
    off = [n for n, vs in vals.items() if ref > 0 and vs and max(vs) > CLIP[mode] * ref and n not in keep]
    shown = [v for n, vs in vals.items() if n not in off for v in vs]
    pos, kept_pos = [v for v in shown if v > 0], [v for v in kept if v > 0]
    scale = mode
    if mode == "auto":
        wide = pos and max(pos) > min(pos) * 10**DECADES
        scale = "log" if wide and kept_pos and max(kept_pos) > min(kept_pos) * 10 else "linear"
    if scale == "log":
        top = max(pos or [1.0]) * 1.5
        bottom = max(min(pos or [1.0]) / 1.5, min(kept_pos or pos or [1.0]) / 10**DECADES, top / LOG_RANGE)
        return YAxis("log", bottom, top, off)
    bands = [v for n, vs in (upper or {}).items() if n in vals and n not in off for v in _finite(vs)]
    top = max(shown + bands, default=1.0)
    return YAxis("linear", 0.0, top * 1.05 if top > 0 else 1.0, off)


def set_yaxis(
    ax,
    curves: dict[str, tuple[Sequence[float], Sequence[float | None]]],
    mode: str = "auto",
    keep=(),
    axis: YAxis | None = None,
) -> YAxis:
    """Apply ``axis`` (default: ``choose_yaxis`` of ``curves``) to ``ax``, where ``curves`` (name ->
    (x, y)) are the lines drawn under those legend labels; each off-scale curve gets an arrow at the
    top of the axis above its peak and "(off scale, max M)" in its legend label."""
    axis = axis or choose_yaxis({n: y for n, (_, y) in curves.items()}, mode, keep)
    ax.set_yscale(axis.scale)
    ax.set_ylim(axis.bottom, axis.top)
    trans = ax.get_xaxis_transform()  # x in data, y in axes fractions
    peaks = {}
    for name in axis.off_scale:
        xs, ys = curves[name]
        peaks[name] = max(
            (float(y), x) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(float(y))
        )
        arrow = {"arrowstyle": "-|>", "color": _artist_color(ax, name), "lw": 1.2}
        ax.annotate("", xy=(peaks[name][1], 1.0), xycoords=trans, xytext=(peaks[name][1], 0.9), arrowprops=arrow)
    for artist in [*ax.get_lines(), *ax.containers]:
        label = artist.get_label()
        if label in peaks:
            artist.set_label(f"{label} (off scale, max {peaks[label][0]:.3g})")
    return axis


def _artist_color(ax, label: str):
    line = next((ln for ln in ax.get_lines() if ln.get_label() == label), None)
    return line.get_color() if line is not None else "black"


def legend_outside(fig, *axes) -> None:
    """The legend of ``axes`` (each line once) below every panel: never over the data or the title,
    however many runs, in up to 3 columns that fit the figure's width. The figure must use
    ``layout="constrained"``."""
    shown = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            shown.setdefault(label, handle)
    column = 0.05 * max(map(len, shown), default=0) + 0.6  # inches: 7-pt text plus the line sample
    ncol = max(1, min(3, len(shown), int(fig.get_figwidth() // column)))
    fig.legend(list(shown.values()), list(shown), loc="outside lower center", ncol=ncol, fontsize=7, frameon=False)


def mark_k_equals_d(ax, d: int) -> None:
    """The dotted vertical line at k = d (where least squares becomes exact), in the legend."""
    ax.axvline(d, color="grey", ls=":", lw=1, label=f"k = d = {d}")


def save_figure(fig, path: Path) -> None:
    """``path`` (a PNG at DPI) and the same figure as a vector file beside it, written atomically."""
    for fmt, target in (("png", path), (VECTOR, path.with_suffix(f".{VECTOR}"))):
        buf = io.BytesIO()
        fig.savefig(buf, dpi=DPI, format=fmt)
        atomic_write(target, buf.getvalue())
    plt.close(fig)
