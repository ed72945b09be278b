"""Paper 1 Fig. 1: error at the table k by eval class (groups) and pretraining mixture (bars), with
the paper's values beside runs at its scale."""

from __future__ import annotations

import math

import numpy as np

from icl.evaluation.report import save_figure
from icl.report.cache import REFERENCES
from icl.report.context import Report
from icl.report.paper import fig1_value, paper_run
from icl.report.render import colors, fmt, md_table, plt, write_csv
from icl.report.runs import Run


def applies(runs: list[Run]) -> bool:
    return True


def write(report: Report) -> str:
    runs, classes, k = report.runs, report.classes, report.k
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(classes) * max(1, len(runs)) / 3), 4))
    width = 0.8 / len(runs)
    header = ["eval class", *[r.label for r in runs], *REFERENCES]
    rows, md_rows = [], []
    for j, (run, color) in enumerate(zip(runs, colors(len(runs)), strict=True)):
        model = [report.curves(run, c)["model"] for c in classes]
        means = [m["mean"][k] for m in model]
        lo, hi = [m["ci_low"][k] for m in model], [m["ci_high"][k] for m in model]
        err = [np.subtract(means, lo), np.subtract(hi, means)]
        xs = np.arange(len(classes)) + (j - (len(runs) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=err, color=color, label=run.label, capsize=2)
    for i, c in enumerate(classes):
        ours = [report.curves(r, c)["model"]["mean"][k] for r in runs]
        first = report.curves(runs[0], c)
        refs = [first.get(p, {}).get("mean", [math.nan] * (k + 1))[k] for p in REFERENCES]
        paper = [fig1_value(c.spec, r.cfg, k) for r in runs]
        rows.append([c.title, *ours, *refs, *paper])
        md_rows.append(
            [c.title]
            + [fmt(v) + (f" (paper {p:g})" if p is not None else "") for v, p in zip(ours, paper, strict=True)]
            + [fmt(v) for v in refs]
        )
        ax.plot(
            [i - 0.45, i + 0.45], [refs[0]] * 2, color="black", ls="--", lw=1, label="least squares" if i == 0 else None
        )
    ax.set_xticks(range(len(classes)), [c.title for c in classes], fontsize=8)
    ax.set_ylabel(f"MSE at k = {k}")
    ax.set_title(f"Fig. 1: error after k = {k} in-context examples (raw MSE, 90% bootstrap intervals)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
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
