"""Mixture minus specialist: each mixture model's error minus that of the run trained on one of its
classes alone, on that class, at the usual k's."""

from __future__ import annotations

from icl.report.context import Report
from icl.report.render import md_table, write_csv
from icl.report.runs import Run, specialist


def applies(runs: list[Run]) -> bool:
    """A mixture run and a specialist of one of its classes (every trained class is an eval class)."""
    mixtures = [r for r in runs if len(r.active) >= 2]
    return any(specialist(runs, a.name, dict(a.params), run) for run in mixtures for a in run.active)


def write(report: Report) -> str:
    runs, show = report.runs, report.shown_ks()
    rows = []
    for run in runs:
        if len(run.active) < 2:
            continue
        for c in report.classes:
            comp = next((a for a in run.active if (a.name, dict(a.params)) == (c.spec["name"], c.spec["params"])), None)
            spec_run = specialist(runs, comp.name, dict(comp.params), run) if comp else None
            if spec_run is None:
                continue
            mine = report.curves(run, c)["model"]["mean"]
            theirs = report.curves(spec_run, c)["model"]["mean"]
            rows.append([run.label, c.title, spec_run.label] + [mine[kk] - theirs[kk] for kk in show])
    header = ["mixture model", "eval class", "specialist", *[f"k={kk}" for kk in show]]
    write_csv(report.out / "gaps.csv", header, rows)
    md = [r[:3] + [f"{v:+.4f}" for v in r[3:]] for r in rows]
    return (
        "### Mixture minus specialist on the specialist's class (MSE; > 0: the mixture is worse)\n\n"
        + md_table(header, md)
        + "\n"
    )
