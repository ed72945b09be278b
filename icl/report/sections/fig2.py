"""Paper 1 Fig. 2: error against k, one panel per eval class and one line per run, the paper's
curves as markers beside runs at its scale; a table per class at the usual k's."""

from __future__ import annotations

import math

import numpy as np

from icl.evaluation.report import save_figure
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
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    long_rows = []
    overlaid = False
    for ax, c in zip(axes.flat, classes, strict=False):
        for run, color in zip(runs, colors(len(runs)), strict=True):
            rec = report.curves(run, c)["model"]
            ks = np.arange(len(rec["mean"]))
            ax.plot(ks, rec["mean"], color=color, lw=1.5, label=run.label)
            ax.fill_between(ks, rec["ci_low"], rec["ci_high"], color=color, alpha=0.15)
            paper = paper_curve(paper_class(c.spec, d), paper_run(run.cfg))
            if paper:
                overlaid = True
                ax.plot(list(paper), list(paper.values()), "x", color=color, ms=4)
            for kk in ks:
                stats = [rec["mean"][kk], rec["ci_low"][kk], rec["ci_high"][kk]]
                long_rows.append([c.title, run.label, int(kk), *stats, (paper or {}).get(int(kk), "")])
        first = report.curves(runs[0], c)
        for ref, style in zip(REFERENCES, ("--", ":"), strict=True):
            if ref in first:
                ax.plot(first[ref]["mean"], color="black", ls=style, lw=1, label=ref)
        ax.axvline(d, color="grey", ls=":", lw=0.8)
        ax.set_title(c.title, fontsize=9)
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("MSE")
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    marks = "; crosses: paper 1's published curves" if overlaid else ""
    fig.suptitle(f"Fig. 2: error vs k per pretraining mixture (raw MSE, 90% bootstrap bands{marks})", fontsize=9)
    fig.tight_layout()
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
