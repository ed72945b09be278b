"""The fraction of the least-squares-to-Bayes gap each run's model closes, against k: a table per eval
class at the usual k's and a figure (one panel per class, one line and 90% bootstrap band per run)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import MaxNLocator

from icl.evaluation.gap import DEFINITION, fmt_gap
from icl.figures import color, legend_outside, line_style, mark_k_equals_d, save_figure
from icl.report.context import Report
from icl.report.render import colors, md_table, plt, write_csv
from icl.report.runs import Run

FLOOR = -2.0  # lowest gap closed shown: twice the least-squares-to-Bayes gap worse than least squares


def applies(runs: list[Run]) -> bool:
    return True  # which classes have a Bayes predictor is known once evaluated; write() says so


def write(report: Report) -> str:
    runs, show, d = report.runs, report.shown_ks(), report.d
    classes = [c for c in report.classes if all(report.gap_closed(r, c) is not None for r in runs)]
    missing = [c.title for c in report.classes if c not in classes]
    text = "## Gap closed: least squares to Bayes\n\n"
    text += f"The {DEFINITION}. Point [90% bootstrap interval]; - where undefined.\n\n"
    if missing:
        text += f"No Bayes-optimal predictor for: {', '.join(missing)} (no gap-closed numbers there).\n\n"
    if not classes:
        return text
    cols = min(3, len(classes))
    nrows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows + 1), squeeze=False, layout="constrained")
    long_rows = []
    for ax, c in zip(axes.flat, classes, strict=False):
        for run, run_color in zip(runs, colors(len(runs)), strict=True):
            g = report.gap_closed(run, c)
            ks = np.arange(len(g["mean"]))
            mean, lo, hi = (
                np.array([math.nan if v is None else v for v in g[key]]) for key in ("mean", "ci_low", "ci_high")
            )
            ax.plot(ks, mean, "o-", color=run_color, ms=3, lw=1.5, label=run.label)
            ax.fill_between(ks, lo, hi, color=run_color, alpha=0.15, lw=0)
            long_rows += [[c.title, run.label, int(k), g["mean"][k], g["ci_low"][k], g["ci_high"][k]] for k in ks]
        if all(v is None for r in runs for v in report.gap_closed(r, c)["mean"]):
            ax.text(0.5, 0.5, "undefined at every k:\nleast squares ~ Bayes here", ha="center", transform=ax.transAxes)
        ax.axhline(0, color=color("least_squares"), ls=line_style("least_squares"), lw=1, label="least squares (0)")
        ax.axhline(1, color=color("bayes"), ls=line_style("bayes"), lw=1, label="Bayes-optimal (1)")
        mark_k_equals_d(ax, d)
        means = [v for r in runs for v in report.gap_closed(r, c)["mean"] if v is not None]
        low = min([0.0, *means])
        # 0..1 is the story; a model far worse than least squares is cut at FLOOR and said so.
        ax.set_ylim(max(FLOOR, low - 0.25), max(1.25, max(means, default=1.0) + 0.1))
        if low < FLOOR:
            ax.text(0.02, 0.02, f"lowest {low:.3g}: below the axis", transform=ax.transAxes, fontsize=7)
        ax.set_xlim(-0.3, report.n_points - 0.7)  # every k, defined or not
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(c.title, fontsize=9)
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("fraction of LS-to-Bayes gap closed")
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    legend_outside(fig, axes.flat[0])
    fig.suptitle("Gap closed vs k: (MSE_LS - MSE_model) / (MSE_LS - MSE_Bayes), 90% bootstrap bands", fontsize=9)
    save_figure(fig, report.out / "gap_closed.png")
    header = ["eval class", "run", "k", "gap_closed", "ci_low", "ci_high"]
    write_csv(
        report.out / "gap_closed.csv", header, [[*r[:3], *("" if v is None else v for v in r[3:])] for r in long_rows]
    )
    text += "![gap closed](gap_closed.png)\n\n"
    for c in classes:
        rows = [[r.label] + [fmt_gap(report.gap_closed(r, c), kk) for kk in show] for r in runs]
        text += f"### {c.title}\n\n" + md_table(["model", *[f"k={kk}" for kk in show]], rows) + "\n"
    return text
