"""The runs, the checkpoint each is evaluated at, and their training loss: train/loss against step
from every run's metrics.csv."""

from __future__ import annotations

import csv

from icl.config import flatten, to_dict
from icl.figures import save_figure
from icl.report.context import Report
from icl.report.render import colors, fmt, md_table, plt, write_csv
from icl.report.runs import Run, execution_keys


def applies(runs: list[Run]) -> bool:
    return True


def write(report: Report) -> str:
    runs, out = report.runs, report.out
    fig, ax = plt.subplots(figsize=(6.5, 4))
    rows = []
    shown = execution_keys(runs)  # e.g. train.precision where some runs were resumed in bf16
    for run, color in zip(runs, colors(len(runs)), strict=True):
        path = run.path / "metrics.csv"
        data = list(csv.DictReader(path.read_text().splitlines())) if path.is_file() else []
        pts = [(int(r["step"]), float(r["train/loss"])) for r in data if r.get("train/loss")]
        if pts:
            ax.plot(*zip(*pts, strict=True), color=color, label=run.label, lw=1.2)
        ckpt = report.checkpoint(run)
        flat = flatten(to_dict(run.cfg)) if shown else {}
        rows.append(
            [
                run.key,
                run.label,
                str(run.cfg.train.steps),
                str(ckpt["global_step"]),
                ckpt["sha256"][:12],
                fmt(pts[-1][1] if pts else None),
                *(str(flat.get(k)) for k in shown),
            ]
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over positions)")
    ax.set_yscale("log")
    if ax.get_lines():
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no train/loss rows in metrics.csv", ha="center", transform=ax.transAxes)
    ax.set_title("Training loss (metrics.csv)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "training.png")
    header = ["run", "label", "steps", "evaluated step", "weights sha256", "last train/loss", *shown]
    write_csv(out / "runs.csv", header, rows)
    return (
        "## Runs and training loss\n\nEvery number of a run comes from its newest checkpoint (evaluated step; "
        "the first 12 hex digits of the sha256 of its weights).\n\n"
        + md_table(header, rows)
        + "\n![training loss](training.png)\n"
    )
