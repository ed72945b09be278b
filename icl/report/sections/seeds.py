"""Seed-to-seed spread: runs whose configs differ only in ``seed`` form a group, and each group's
model error and gap closed are given as the mean over seeds with the smallest and largest seed's
value, per eval class at the usual k's (each seed's own curves are in the other sections)."""

from __future__ import annotations

import statistics

from icl.config import flatten, to_dict
from icl.report.context import Report
from icl.report.render import md_table, write_csv
from icl.report.runs import EXECUTION, UNLABELLED, Run


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Groups of two or more runs that agree on every config key but ``seed`` (and where/how they
    were logged and computed), in run order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        flat = flatten(to_dict(run.cfg))
        same = [(k, repr(v)) for k, v in flat.items() if k != "seed" and not k.startswith(UNLABELLED + EXECUTION)]
        key = repr(sorted(same))
        groups.setdefault(key, []).append(run)
    return [g for g in groups.values() if len(g) > 1]


def applies(runs: list[Run]) -> bool:
    return bool(seed_groups(runs))


def spread(values: list[float]) -> str:
    """``mean [min, max]`` over seeds."""
    return f"{statistics.fmean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def group_label(group: list[Run]) -> str:
    seeds = ", ".join(str(r.cfg.seed) for r in group)
    base = "; ".join(p for p in group[0].label.split("; ") if not p.startswith("seed="))
    return f"{base or 'runs'} (seeds {seeds})"


def write(report: Report) -> str:
    show = report.shown_ks()
    text = (
        "## Seed-to-seed spread\n\n"
        "Runs that differ only in their seed, grouped: the mean over seeds [lowest, highest].\n\n"
    )
    rows = []
    for group in seed_groups(report.runs):
        label = group_label(group)
        for c in report.classes:
            mse = [[report.curves(r, c)["model"]["mean"][kk] for r in group] for kk in show]
            gaps = [report.gap_closed(r, c) for r in group]
            gap = [
                [g["mean"][kk] for g in gaps]
                if all(g is not None and g["mean"][kk] is not None for g in gaps)
                else None
                for kk in show
            ]
            rows.append((label, c.title, len(group), mse, gap))
    for c in report.classes:
        mine = [r for r in rows if r[1] == c.title]
        table = [[r[0], "MSE"] + [spread(v) for v in r[3]] for r in mine]
        table += [[r[0], "gap closed"] + [spread(v) if v else "-" for v in r[4]] for r in mine if any(r[4])]
        text += f"### {c.title}\n\n" + md_table(["runs", "quantity", *[f"k={kk}" for kk in show]], table) + "\n"
    header = ["runs", "eval class", "n_seeds", "quantity", "k", "mean", "min", "max", "sd"]
    long_rows = []
    for label, title, n, mse, gap in rows:
        for name, per_k in (("mse", mse), ("gap_closed", gap)):
            for kk, v in zip(show, per_k, strict=True):
                if v:
                    sd = statistics.stdev(v) if len(v) > 1 else 0.0
                    long_rows.append([label, title, n, name, kk, statistics.fmean(v), min(v), max(v), sd])
    write_csv(report.out / "seeds.csv", header, long_rows)
    return text
