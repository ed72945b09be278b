"""Paper 1 Figs. 4-6 as numbers: error at the table k against the convex coefficient a and against
the frequency of a sinusoid (suite paper1_sinusoid), for runs trained on sinusoids at d = 1."""

from __future__ import annotations

import numpy as np

from icl.figures import color, line_style, save_figure, set_yaxis
from icl.report.cache import REFERENCES
from icl.report.context import Report
from icl.report.render import colors, fmt, md_table, plt, write_csv
from icl.report.runs import Run, trained_classes

SUITE = "paper1_sinusoid"
GROUPS = (  # the suite's scenario groups: (group, what is evaluated, x-axis label)
    ("convex", "a f_A + (1 - a) f_B (eval.convex_pair; default a b1 x + (1 - a) b2 cos(2 pi x))", "a"),
    ("frequency", "sinusoids b cos(2 pi w x) at fixed frequencies w", "frequency w"),
)


def applies(runs: list[Run]) -> bool:
    return "sinusoid" in trained_classes(runs) and runs[0].cfg.data.n_dims == 1


def write(report: Report) -> str:
    runs, k, out = report.runs, report.k, report.out
    suites = report.suite(SUITE, REFERENCES)
    text = ""
    for group, what, xlabel in GROUPS:
        first = suites[runs[0].key]
        scen = sorted((r for r in first.values() if r.get("group") == group), key=lambda r: r["value"])
        if not scen:
            continue
        values = [r["value"] for r in scen]
        refs = [p for p in REFERENCES if p in scen[0]["curves"]]
        header = [xlabel, *[r.label for r in runs], *refs]
        prior = frequency_prior(runs) if group == "frequency" else None
        if prior is not None:
            header.append("prior P(W <= w)")
        model = {}  # run directory name -> value -> the model's error at k
        for run in runs:
            recs = [r for r in suites[run.key].values() if r.get("group") == group]
            model[run.key] = {r["value"]: r["curves"]["model"]["mean"][k] for r in recs}
        rows = []
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = {}
        for run, run_color in zip(runs, colors(len(runs)), strict=True):
            drawn[run.label] = (values, [model[run.key][v] for v in values])
            ax.plot(*drawn[run.label], "o-", color=run_color, ms=3, label=run.label)
        for ref in refs:
            drawn[ref] = (values, [r["curves"][ref]["mean"][k] for r in scen])
            ax.plot(*drawn[ref], color=color(ref), ls=line_style(ref), lw=1.2, label=ref)
        for i, v in enumerate(values):
            row = [v] + [model[run.key][v] for run in runs] + [scen[i]["curves"][ref]["mean"][k] for ref in refs]
            if prior is not None:
                row.append(float((prior <= v).mean()))
            rows.append(row)
        if group == "frequency":
            ax.set_xscale("log")
        ax.set_xlabel("a: weight on f_A" if group == "convex" else xlabel)
        ax.set_ylabel(f"MSE at k = {k}")
        set_yaxis(ax, drawn, report.yscale, keep=[r.label for r in runs])
        ax.set_title(f"{what}", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.25, lw=0.5)
        fig.tight_layout()
        save_figure(fig, out / f"{group}.png")
        write_csv(out / f"{group}.csv", header, rows)
        md = [[f"{r[0]:g}"] + [fmt(v) for v in r[1:]] for r in rows]
        text += (
            f"## {group.capitalize()} sweep: {what}, error at k = {k}\n\n![{group}]({group}.png)\n\n"
            + md_table(header, md)
            + "\n"
        )
    return text


def frequency_prior(runs: list[Run]) -> np.ndarray | None:
    """Draws of the training frequency prior (a Gamma), to say where each test frequency lies."""
    for run in runs:
        for c in run.cfg.data.mixture:
            p = dict(c.params)
            if c.name == "sinusoid" and "freq_shape" in p and "freq_scale" in p and p.get("freq") in (None, 0):
                return np.random.default_rng(0).gamma(p["freq_shape"], p["freq_scale"], 200_000)
    return None
