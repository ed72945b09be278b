"""Paper 1 Fig. 2: error against k, one panel per eval class and one line per run, the paper's
curves as markers beside runs at its scale; a table per class at the usual k's."""

from __future__ import annotations

import math

import numpy as np

from icl.figures import (
    choose_yaxis,
    color,
    legend_outside,
    line_style,
    mark_k_equals_d,
    save_figure,
    set_yaxis,
)
from icl.report.cache import REFERENCES
from icl.report.context import Report
from icl.report.paper import paper_class, paper_curve, paper_run
from icl.report.render import colors, fmt, md_table, plt, write_csv
from icl.report.runs import Run


def applies(runs: list[Run]) -> bool:
    return True


def write(report: Report) -> str:
    runs, classes, d = report.runs, report.classes, report.d
    cols = min(3, len(classes))
    nrows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows + 1), squeeze=False, layout="constrained")
    long_rows = []
    overlaid = False
    for ax, c in zip(axes.flat, classes, strict=False):
        drawn, upper = {}, {}
        for run, run_color in zip(runs, colors(len(runs)), strict=True):
            rec = report.curves(run, c)["model"]
            ks = np.arange(len(rec["mean"]))
            ax.plot(ks, rec["mean"], color=run_color, lw=1.5, label=run.label)
            ax.fill_between(ks, rec["ci_low"], rec["ci_high"], color=run_color, alpha=0.15, lw=0)
            drawn[run.label], upper[run.label] = (ks, rec["mean"]), rec["ci_high"]
            paper = paper_curve(paper_class(c.spec, d), paper_run(run.cfg))
            if paper:
                overlaid = True
                ax.plot(list(paper), list(paper.values()), "x", color=run_color, ms=4)
            for kk in ks:
                stats = [rec["mean"][kk], rec["ci_low"][kk], rec["ci_high"][kk]]
                long_rows.append([c.title, run.label, int(kk), *stats, (paper or {}).get(int(kk), "")])
        first = report.curves(runs[0], c)
        for ref in REFERENCES:
            if ref in first:
                ks = np.arange(len(first[ref]["mean"]))
                ax.plot(ks, first[ref]["mean"], color=color(ref), ls=line_style(ref), lw=1.2, label=ref)
                drawn[ref] = (ks, first[ref]["mean"])
        if d < report.n_points:
            mark_k_equals_d(ax, d)
        keep = [r.label for r in runs]
        axis = choose_yaxis({n: y for n, (_, y) in drawn.items()}, report.yscale, keep, upper)
        set_yaxis(ax, drawn, axis=axis)
        ax.set_title(c.title, fontsize=9)
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("MSE")
        ax.grid(alpha=0.25, lw=0.5)
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    legend_outside(fig, axes.flat[0])
    marks = "; crosses: paper 1's published curves" if overlaid else ""
    fig.suptitle(f"Fig. 2: error vs k per pretraining mixture (raw MSE, 90% bootstrap bands{marks})", fontsize=9)
    save_figure(fig, report.out / "fig2.png")
    write_csv(report.out / "fig2.csv", ["eval class", "run", "k", "mean", "ci_low", "ci_high", "paper"], long_rows)
    show = report.shown_ks()
    text = "## Fig. 2: error vs number of in-context examples\n\n![fig2](fig2.png)\n\n"
    text += "Crosses: paper 1's published curves (raw MSE, d = 20) for runs at paper scale.\n\n" if overlaid else ""
    for c in classes:
        first = report.curves(runs[0], c)
        rows = [[r.label] + [fmt(report.curves(r, c)["model"]["mean"][kk]) for kk in show] for r in runs]
        rows += [[ref] + [fmt(first[ref]["mean"][kk]) for kk in show] for ref in REFERENCES if ref in first]
        text += f"### {c.title}\n\n" + md_table(["model", *[f"k={kk}" for kk in show]], rows) + "\n"
    return text
