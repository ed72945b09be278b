"""Writing error curves: a JSON with the numbers (mean and 90% bootstrap interval per k, the
fraction of the least-squares-to-Bayes gap closed where both references were evaluated, and what
produced them: checkpoint and settings), a CSV of the same numbers and a plot (PNG and PDF, styled
by icl/figures.py). Files are written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from icl.evaluation.curves import CurveResult
from icl.evaluation.gap import DEFINITION, gap_closed_all
from icl.evaluation.provenance import CHECKPOINT, SETTINGS
from icl.figures import (
    check_yscale,
    choose_yaxis,
    color,
    legend_outside,
    line_style,
    mark_k_equals_d,
    plt,
    save_figure,
    set_yaxis,
)
from icl.fileio import atomic_write

CONVENTIONS = {
    "mse": "raw MSE (paper 1; unit-variance functions, the zero predictor scores about 1)",
    "mse_over_d": "MSE divided by the input dimension d (paper 2)",
}
# A scenario's metric other than mse (its classes' declaration, icl.tasks.metric_of): the record's
# "curves" are in it, and "curves_mse" keeps the MSE in the convention.
METRIC_TEXT = {"zero_one": "0/1 error of sign(prediction) (classification; the zero predictor scores 1)"}
METRIC_LABEL = {"zero_one": "0/1 error"}


def write_curves(
    result: CurveResult,
    out_dir: Path,
    name: str,
    title: str,
    convention: str = "mse",
    extra: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    yscale: str = "auto",
) -> dict[str, Any]:
    """Write ``name.json``, ``name.csv``, ``name.png`` and ``name.pdf`` in ``out_dir``; return the JSON
    record. ``checkpoint`` and ``settings`` (icl.evaluation.provenance) say what produced the curves;
    ``yscale``: auto, linear or log (icl.figures.choose_yaxis)."""
    check_yscale(yscale)
    scale = 1.0 / result.n_dims if convention == "mse_over_d" else 1.0
    summary = result.summary(metric="mse")
    for stats in summary.values():
        for key in stats:
            stats[key] = [v * scale for v in stats[key]]
    mse_curves, summary = (summary, result.summary()) if result.metric != "mse" else (None, summary)
    gaps = gap_closed_all(result.sq_errors)  # a ratio: the same in either convention
    record = {
        "scenario": name,
        "title": title,
        "convention": convention,
        "convention_text": CONVENTIONS[convention],
        "metric": result.metric,
        "n_prompts": int(next(iter(result.sq_errors.values())).shape[0]),
        "n_dims": result.n_dims,
        "k": list(range(len(next(iter(summary.values()))["mean"]))),
        "interval": "90% percentile bootstrap over prompts",
        "curves": summary,
        **(extra or {}),
        CHECKPOINT: checkpoint,
        SETTINGS: settings,
    }
    if mse_curves is not None:
        record["metric_text"] = METRIC_TEXT[result.metric]
        record["curves_mse"] = mse_curves
    if gaps:
        record["gap_closed"] = gaps
        record["gap_closed_text"] = DEFINITION
    atomic_write(out_dir / f"{name}.json", json.dumps(record, indent=1))
    atomic_write(out_dir / f"{name}.csv", curves_csv(record))
    plot_curves(record, out_dir / f"{name}.png", yscale)
    return record


def curves_csv(record: dict[str, Any]) -> str:
    """One row per k and predictor: its error (metric = the convention; for a scenario with another
    metric, e.g. zero_one, rows in it and then MSE rows in the convention) and, where least squares and
    Bayes were evaluated, the fraction of their gap it closes (metric gap_closed; empty where undefined)."""
    rows = ["k,predictor,mean,ci_low,ci_high,metric"]
    metric = record.get("metric", "mse")
    parts = [(record["curves"], record["convention"] if metric == "mse" else metric)]
    parts += [(record["curves_mse"], record["convention"])] if "curves_mse" in record else []
    for curves, name in parts:
        for pred_name, stats in curves.items():
            rows += [
                f"{k},{pred_name},{m:.6g},{lo:.6g},{hi:.6g},{name}"
                for k, m, lo, hi in zip(record["k"], stats["mean"], stats["ci_low"], stats["ci_high"], strict=True)
            ]
    for pred_name, stats in record.get("gap_closed", {}).items():
        rows += [
            f"{k},{pred_name}," + ",".join("" if v is None else f"{v:.6g}" for v in (m, lo, hi)) + ",gap_closed"
            for k, m, lo, hi in zip(record["k"], stats["mean"], stats["ci_low"], stats["ci_high"], strict=True)
        ]
    return "\n".join(rows) + "\n"


def plot_curves(record: dict[str, Any], path: Path, yscale: str = "auto") -> None:
    """Error vs k of every predictor in ``record`` with its 90% band, the k = d line, and a y axis
    that keeps the model readable (icl.figures.set_yaxis)."""
    ks, convention = record["k"], record["convention"]
    drawn = {p: (ks, s["mean"]) for p, s in record["curves"].items()}
    upper = {p: s["ci_high"] for p, s in record["curves"].items()}
    axis = choose_yaxis({p: y for p, (_, y) in drawn.items()}, yscale, keep=("model",), upper=upper)
    fig, ax = plt.subplots(figsize=(6, 4))
    for pred_name, stats in record["curves"].items():
        c, main = color(pred_name), pred_name == "model"
        style = {"lw": 2.2, "zorder": 3} if main else {"lw": 1.3, "ls": line_style(pred_name), "zorder": 2}
        ax.plot(ks, stats["mean"], color=c, label=pred_name, **style)
        if pred_name not in axis.off_scale:  # an off-scale curve's band would cover the axis
            ax.fill_between(ks, stats["ci_low"], stats["ci_high"], color=c, alpha=0.18, lw=0)
    if record["n_dims"] < len(ks):
        mark_k_equals_d(ax, record["n_dims"])
    set_yaxis(ax, drawn, axis=axis)
    ax.set_xlabel("in-context examples k")
    metric = record.get("metric", "mse")
    ax.set_ylabel(METRIC_LABEL.get(metric) or ("MSE / d" if convention == "mse_over_d" else "MSE"))
    step = (record.get(CHECKPOINT) or {}).get("global_step")
    at = f", step {step}" if step is not None else ""
    what = (METRIC_TEXT.get(metric) or CONVENTIONS[convention]).split(" (")[0]
    ax.set_title(f"{record['title']}\n({what}, {record['n_prompts']} prompts{at})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.25, lw=0.5)
    fig.tight_layout()
    save_figure(fig, path)


def write_prediction_sweep(grid, curves: dict[str, Any], truth, ctx_x, ctx_y, path: Path, title: str) -> None:
    """Paper 1 Figs. 4-6: predictions vs x_query over a grid, for fixed in-context examples
    (one panel per prompt). ``curves[name]`` and ``truth`` are (P, G); ctx_* are (P, k)."""
    P = truth.shape[0]
    fig, axes = plt.subplots(1, P, figsize=(3.2 * P, 3.6), squeeze=False, layout="constrained")
    for p, ax in enumerate(axes[0]):
        ax.plot(grid, truth[p], color="black", lw=2, label="true f")
        for name, pred in curves.items():
            ax.plot(grid, pred[p], color=color(name), ls=line_style(name), lw=1.5 if name == "model" else 1, label=name)
        ax.scatter(ctx_x[p], ctx_y[p], color="red", s=12, zorder=5, label="context")
        ax.set_xlabel("x query")
        ax.set_ylabel("f(x query), prediction")
        low, high = truth[p].min(), truth[p].max()  # exploding baselines must not flatten f
        pad = 0.5 * max(high - low, 1.0)
        ax.set_ylim(low - pad, high + pad)
    legend_outside(fig, axes[0][0])
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
