"""Writing error curves: a JSON with the numbers (mean and 90% bootstrap interval per k, the
fraction of the least-squares-to-Bayes gap closed where both references were evaluated, and what
produced them: checkpoint and settings), a CSV of the same numbers and a PNG plot, paper style.
Files are written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from icl.evaluation.curves import CurveResult  # noqa: E402
from icl.evaluation.gap import DEFINITION, gap_closed_all  # noqa: E402
from icl.evaluation.provenance import CHECKPOINT, SETTINGS  # noqa: E402
from icl.fileio import atomic_write  # noqa: E402

CONVENTIONS = {
    "mse": "raw MSE (paper 1; unit-variance functions, the zero predictor scores about 1)",
    "mse_over_d": "MSE divided by the input dimension d (paper 2)",
}


def write_curves(
    result: CurveResult,
    out_dir: Path,
    name: str,
    title: str,
    convention: str = "mse",
    extra: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``name.json``, ``name.csv`` and ``name.png`` in ``out_dir``; return the JSON record.
    ``checkpoint`` and ``settings`` (icl.evaluation.provenance) say what produced the curves."""
    scale = 1.0 / result.n_dims if convention == "mse_over_d" else 1.0
    summary = result.summary()
    for stats in summary.values():
        for key in stats:
            stats[key] = [v * scale for v in stats[key]]
    gaps = gap_closed_all(result.sq_errors)  # a ratio: the same in either convention
    record = {
        "scenario": name,
        "title": title,
        "convention": convention,
        "convention_text": CONVENTIONS[convention],
        "n_prompts": int(next(iter(result.sq_errors.values())).shape[0]),
        "n_dims": result.n_dims,
        "k": list(range(len(next(iter(summary.values()))["mean"]))),
        "interval": "90% percentile bootstrap over prompts",
        "curves": summary,
        **(extra or {}),
        CHECKPOINT: checkpoint,
        SETTINGS: settings,
    }
    if gaps:
        record["gap_closed"] = gaps
        record["gap_closed_text"] = DEFINITION
    atomic_write(out_dir / f"{name}.json", json.dumps(record, indent=1))
    atomic_write(out_dir / f"{name}.csv", curves_csv(record))
    fig, ax = plt.subplots(figsize=(6, 4))
    for pred_name, stats in summary.items():
        ax.plot(record["k"], stats["mean"], label=pred_name, lw=2 if pred_name == "model" else 1.3)
        ax.fill_between(record["k"], stats["ci_low"], stats["ci_high"], alpha=0.2)
    ax.axvline(result.n_dims, color="grey", ls=":", lw=1)
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("MSE / d" if convention == "mse_over_d" else "MSE")
    ax.set_ylim(bottom=0)
    step = (checkpoint or {}).get("global_step")
    at = f", step {step}" if step is not None else ""
    ax.set_title(f"{title}\n({CONVENTIONS[convention].split(' (')[0]}, {record['n_prompts']} prompts{at})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / f"{name}.png")
    return record


def curves_csv(record: dict[str, Any]) -> str:
    """One row per k and predictor: its error (metric = the convention) and, where least squares and
    Bayes were evaluated, the fraction of their gap it closes (metric gap_closed; empty where undefined)."""
    rows = ["k,predictor,mean,ci_low,ci_high,metric"]
    for pred_name, stats in record["curves"].items():
        rows += [
            f"{k},{pred_name},{m:.6g},{lo:.6g},{hi:.6g},{record['convention']}"
            for k, m, lo, hi in zip(record["k"], stats["mean"], stats["ci_low"], stats["ci_high"], strict=True)
        ]
    for pred_name, stats in record.get("gap_closed", {}).items():
        rows += [
            f"{k},{pred_name}," + ",".join("" if v is None else f"{v:.6g}" for v in (m, lo, hi)) + ",gap_closed"
            for k, m, lo, hi in zip(record["k"], stats["mean"], stats["ci_low"], stats["ci_high"], strict=True)
        ]
    return "\n".join(rows) + "\n"


def save_figure(fig, path: Path) -> None:
    png = io.BytesIO()
    fig.savefig(png, dpi=120, format="png")
    plt.close(fig)
    atomic_write(path, png.getvalue())


def write_prediction_sweep(grid, curves: dict[str, Any], truth, ctx_x, ctx_y, path: Path, title: str) -> None:
    """Paper 1 Figs. 4-6: predictions vs x_query over a grid, for fixed in-context examples
    (one panel per prompt). ``curves[name]`` and ``truth`` are (P, G); ctx_* are (P, k)."""
    P = truth.shape[0]
    fig, axes = plt.subplots(1, P, figsize=(3.2 * P, 3), squeeze=False)
    for p, ax in enumerate(axes[0]):
        ax.plot(grid, truth[p], color="black", lw=2, label="true f")
        for name, pred in curves.items():
            ax.plot(grid, pred[p], lw=1.5 if name == "model" else 1, label=name)
        ax.scatter(ctx_x[p], ctx_y[p], color="red", s=12, zorder=5, label="context")
        ax.set_xlabel("x query")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
