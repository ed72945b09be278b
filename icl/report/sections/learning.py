"""Learning curves from the periodic evaluation in each run's metrics.csv: the model's error and the
fraction of the least-squares-to-Bayes gap it closes against the training step, per eval class, at
k = d/2 (where model selection shows first) and the table k; what a recipe search decides on."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from icl.evaluation.gap import BAYES, FLOOR, LS, MIN_GAP
from icl.figures import color as predictor_color
from icl.figures import legend_outside, save_figure
from icl.report.context import Report
from icl.report.render import colors, md_table, plt, write_csv
from icl.report.runs import Run

COLUMN = re.compile(r"^eval/(?P<scenario>[^/]+)/(?P<predictor>[^/]+)/mse@(?P<k>\d+)$")

Curves = dict[str, dict[str, dict[int, list[tuple[int, float]]]]]  # scenario -> predictor -> k -> [(step, mse)]


def read_curves(path: Path) -> Curves:
    """The periodic evaluation's values in a metrics.csv: scenario -> predictor -> k -> [(step, mse)]."""
    curves: Curves = {}
    if not path.is_file():
        return curves
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                m = COLUMN.match(key or "")
                if m and value not in (None, ""):
                    by_k = curves.setdefault(m["scenario"], {}).setdefault(m["predictor"], {})
                    by_k.setdefault(int(m["k"]), []).append((int(row["step"]), float(value)))
    return curves


def gap_from_means(model: float, ls: float, bayes: float, ls0: float | None) -> float | None:
    """``icl.evaluation.gap``'s point estimate from mean errors, undefined by the same rules."""
    den = ls - bayes
    if den <= MIN_GAP * abs(ls) or (ls0 is not None and den <= FLOOR * abs(ls0)):
        return None
    return (ls - model) / den


def gap_series(curves: Curves, scenario: str, k: int) -> list[tuple[int, float | None]]:
    """[(step, gap closed by the model at k)] where the model, least squares and Bayes were logged."""
    preds = curves.get(scenario, {})
    if not all(k in preds.get(p, {}) for p in ("model", LS, BAYES)):
        return []
    ls0 = dict(preds[LS].get(0, []))
    ls, bayes = dict(preds[LS][k]), dict(preds[BAYES][k])
    return [
        (step, gap_from_means(v, ls[step], bayes[step], ls0.get(step)))
        for step, v in preds["model"][k]
        if step in ls and step in bayes
    ]


def shown_ks(report: Report) -> list[int]:
    return sorted({max(1, report.d // 2), report.k} & set(range(1, report.n_points)))


def applies(runs: list[Run]) -> bool:
    return any(read_curves(r.path / "metrics.csv") for r in runs)


def write(report: Report) -> str:
    runs, out = report.runs, report.out
    data = {r.key: read_curves(r.path / "metrics.csv") for r in runs}
    scenarios = sorted({s for c in data.values() for s in c})
    ks = shown_ks(report)
    size = (4.2 * len(scenarios), 6.4 + 0.15 * len(runs))
    fig, axes = plt.subplots(2, len(scenarios), figsize=size, squeeze=False, sharex=True, layout="constrained")
    rows = []
    for col, scenario in enumerate(scenarios):
        ax_err, ax_gap = axes[0][col], axes[1][col]
        for run, color in zip(runs, colors(len(runs)), strict=True):
            curves = data[run.key]
            for k, style in zip(ks, ("-", "--"), strict=False):
                model = curves.get(scenario, {}).get("model", {}).get(k, [])
                if model:
                    ax_err.plot(*zip(*model, strict=True), style, color=color, lw=1.2, label=f"{run.label}, k={k}")
                gaps = [(s, g) for s, g in gap_series(curves, scenario, k) if g is not None]
                if gaps:
                    ax_gap.plot(*zip(*gaps, strict=True), style, color=color, lw=1.2, label=f"{run.label}, k={k}")
            for k in ks:
                series = gap_series(curves, scenario, k)
                model = dict(curves.get(scenario, {}).get("model", {}).get(k, []))
                ls = dict(curves.get(scenario, {}).get(LS, {}).get(k, []))
                for step, gap in series or [(s, None) for s in sorted(model)]:
                    rows.append([run.key, scenario, k, step, model.get(step), ls.get(step), gap])
        first = next((data[r.key][scenario] for r in runs if scenario in data[r.key]), {})
        for k, style in zip(ks, ("-", "--"), strict=False):
            for name in (LS, BAYES):
                ref = first.get(name, {}).get(k, [])
                if ref:  # the same prompts at every evaluation: the references barely move
                    ax_err.axhline(ref[-1][1], color=predictor_color(name), ls=style, lw=0.9, label=f"{name}, k={k}")
        ax_err.set_title(scenario, fontsize=9)
        ax_err.set_ylim(bottom=0.0)  # linear: Bayes can be ~1e-15 where least squares is ~0.5
        ax_gap.axhline(0.0, color=predictor_color(LS), lw=0.8)
        ax_gap.axhline(1.0, color=predictor_color(BAYES), lw=0.8)
        ax_gap.set_xlabel("training step")
        if not ax_gap.get_lines()[2:]:
            ax_gap.text(0.5, 0.5, "undefined (least squares is Bayes here)", ha="center", transform=ax_gap.transAxes)
    axes[0][0].set_ylabel("MSE")
    axes[1][0].set_ylabel("gap closed (0 = LS, 1 = Bayes)")
    legend_outside(fig, *axes[0])  # every panel's lines: not every run is evaluated on every scenario
    save_figure(fig, out / "learning_curves.png")
    header = ["run", "scenario", "k", "step", "model", "least_squares", "gap_closed"]
    write_csv(out / "learning_curves.csv", header, rows)
    return (
        "## Learning curves (periodic evaluation)\n\n"
        f"The model's MSE and the fraction of the least-squares-to-Bayes gap it closes (from mean errors) "
        f"against the training step, at k = {', '.join(map(str, ks))}, from every run's metrics.csv "
        "(`eval.every`, `eval.periodic_n_prompts` prompts). Last evaluation of each run:\n\n"
        + md_table(["run", "scenario", "k", "step", "model", "least squares", "gap closed"], _last(rows))
        + "\n![learning curves](learning_curves.png)\n"
    )


def _last(rows: list[list]) -> list[list[str]]:
    last: dict[tuple, list] = {}
    for row in rows:
        key = tuple(row[:3])
        if key not in last or row[3] >= last[key][3]:
            last[key] = row
    return [
        [str(r[0]), str(r[1]), str(r[2]), str(r[3])] + ["-" if v is None else f"{v:.3f}" for v in r[4:]]
        for r in last.values()
    ]
