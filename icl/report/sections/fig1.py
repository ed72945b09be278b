"""Paper 1 Fig. 1: error at the table k by eval class (groups) and pretraining mixture (bars), with
least squares and the Bayes-optimal predictor as bars beside them and the paper's values beside runs
at its scale."""

from __future__ import annotations

import math

import numpy as np

from icl.figures import color, legend_outside, save_figure, set_yaxis
from icl.report.cache import REFERENCES
from icl.report.context import Report
from icl.report.paper import fig1_value, paper_run
from icl.report.render import colors, fmt, md_table, plt, write_csv
from icl.report.runs import Run


def applies(runs: list[Run]) -> bool:
    return True


def write(report: Report) -> str:
    runs, classes, k = report.runs, report.classes, report.k
    refs_shown = [p for p in REFERENCES if any(p in report.curves(runs[0], c) for c in classes)]
    n_bars = len(runs) + len(refs_shown)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(classes) * n_bars), 4.8), layout="constrained")
    width = 0.8 / n_bars
    offsets = (np.arange(n_bars) - (n_bars - 1) / 2) * width
    header = ["eval class", *[r.label for r in runs], *REFERENCES]
    rows, md_rows, drawn = [], [], {}
    for j, (run, color_j) in enumerate(zip(runs, colors(len(runs)), strict=True)):
        model = [report.curves(run, c)["model"] for c in classes]
        means = [m["mean"][k] for m in model]
        lo, hi = [m["ci_low"][k] for m in model], [m["ci_high"][k] for m in model]
        err = [np.subtract(means, lo), np.subtract(hi, means)]
        xs = np.arange(len(classes)) + offsets[j]
        ax.bar(xs, means, width, yerr=err, color=color_j, label=run.label, capsize=2)
        drawn[run.label] = (xs, hi)  # the axis covers the intervals
    first = {c.name: report.curves(runs[0], c) for c in classes}
    for j, ref in enumerate(refs_shown, start=len(runs)):
        stats = [first[c.name].get(ref) for c in classes]
        means = [s["mean"][k] if s else math.nan for s in stats]
        err = [
            [s["mean"][k] - s["ci_low"][k] if s else 0 for s in stats],
            [s["ci_high"][k] - s["mean"][k] if s else 0 for s in stats],
        ]
        xs = np.arange(len(classes)) + offsets[j]
        ax.bar(xs, means, width, yerr=err, color=color(ref), hatch="//", edgecolor="white", label=ref, capsize=2)
        for x, s in zip(xs, stats, strict=True):
            if s is None:  # no Bayes-optimal predictor for this class
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=6, transform=ax.get_xaxis_transform())
        drawn[ref] = (xs, [s["ci_high"][k] if s else math.nan for s in stats])
    for c in classes:
        ours = [report.curves(r, c)["model"]["mean"][k] for r in runs]
        refs = [first[c.name].get(p, {}).get("mean", [math.nan] * (k + 1))[k] for p in REFERENCES]
        paper = [fig1_value(c.spec, r.cfg, k) for r in runs]
        rows.append([c.title, *ours, *refs, *paper])
        md_rows.append(
            [c.title]
            + [fmt(v) + (f" (paper {p:g})" if p is not None else "") for v, p in zip(ours, paper, strict=True)]
            + [fmt(v) for v in refs]
        )
    axis = set_yaxis(ax, drawn, report.yscale, keep=[r.label for r in runs])
    for ref in refs_shown:  # a reference at ~0 (an exact fit) would be an invisible bar
        for x, s in zip(drawn[ref][0], [first[c.name].get(ref) for c in classes], strict=True):
            v = s["mean"][k] if s else math.nan
            if v == v and v < (axis.bottom if axis.scale == "log" else 0.01 * axis.top):
                ax.text(x, 0.02, "~0", ha="center", va="bottom", fontsize=6, transform=ax.get_xaxis_transform())
    ax.set_xticks(range(len(classes)), [c.title for c in classes], fontsize=8)
    ax.set_xlabel("eval class")
    ax.set_ylabel(f"MSE at k = {k}")
    ax.set_title(f"Fig. 1: error after k = {k} in-context examples (raw MSE, 90% bootstrap intervals)", fontsize=9)
    legend_outside(fig, ax)
    ax.grid(axis="y", alpha=0.25, lw=0.5)
    save_figure(fig, report.out / "fig1.png")
    write_csv(report.out / "fig1.csv", [*header, *[f"paper: {r.label}" for r in runs]], rows)
    note = (
        "Paper 1's Fig. 1 values (d = 20, standard model, k = 16) are shown in brackets where a run matches."
        if any(paper_run(r.cfg) for r in runs)
        else "No run is at paper 1's scale (d = 20, a paper model size), so no published numbers are shown."
    )
    return (
        f"## Fig. 1: error at k = {k} by eval class and pretraining mixture\n\n![fig1](fig1.png)\n\n{note}\n\n"
        + md_table(header, md_rows)
    )
