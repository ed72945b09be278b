"""``write_report``: evaluates a sweep's finished runs where their caches lack it, then writes the
sections that apply to them (report.md, CSV tables, PNG plots) into a new report directory."""

from __future__ import annotations

from pathlib import Path

from icl import outputs
from icl.console import say
from icl.evaluation.run import table_k
from icl.figures import check_yscale, configured_yscale
from icl.fileio import atomic_write
from icl.report.context import Report
from icl.report.runs import collect_runs
from icl.report.sections import fig1, fig2, fig3, gap_closed, gaps, learning, seeds, sinusoid, training
from icl.resources import check_evaluation

SECTIONS = (training, learning, fig1, fig2, gap_closed, seeds, gaps, fig3, sinusoid)  # in report order


def write_report(
    sweep_dirs: Path | list[Path],
    out: Path | None = None,
    n_prompts: int | None = None,
    device: str = "cpu",
    yscale: str | None = None,
) -> Path:
    """Write report.md, CSV tables and figures (PNG and PDF) for the finished runs under
    ``sweep_dirs`` (one directory or several, reported together; default ``out``: the first's
    report/); one progress line (stderr) per run and evaluation computed or reused. ``yscale``:
    the figures' y axes, auto, linear or log (default: icl.figures.configured_yscale of the first
    run)."""
    if yscale is not None:
        check_yscale(yscale, "--yscale")
    dirs = [sweep_dirs] if isinstance(sweep_dirs, Path) else list(sweep_dirs)
    runs, skipped = collect_runs(dirs)
    cfg = runs[0].cfg
    yscale = yscale or configured_yscale(cfg.eval)
    if n_prompts is not None:
        check_evaluation(cfg, n_prompts, "--n-prompts")  # the range, and memory for the largest run
    n_prompts = n_prompts or cfg.eval.n_prompts
    d, k = cfg.data.n_dims, table_k(cfg, cfg.data.n_points)
    out = Path(out) if out else dirs[0] / "report"
    outputs.check_replaceable(out, outputs.REPORT, "--out")  # before any evaluation
    partial = outputs.begin(out, outputs.REPORT)
    notes = list(skipped)
    try:
        report = Report.evaluate(runs, k, n_prompts, device, partial, notes, yscale)
        parts = [
            f"# Report: {', '.join(map(str, dirs))}\n\n{len(runs)} finished runs; raw MSE (paper 1's convention: "
            f"unit-variance functions, the zero predictor scores about 1) on {n_prompts} prompts per class, "
            "evaluation seed "
            f"{cfg.eval.seed}, d = {d}, k = {k} in tables (eval.table_k). References (least squares, Bayes-optimal "
            "for the class) come from the first run's evaluation; every run sees the same prompts. Each run is "
            "evaluated at its newest checkpoint (runs table); evaluations cached in a run are reused only when "
            "they record that checkpoint (step and weights hash) and these settings.\n"
        ]
        for section in SECTIONS:
            if section.applies(runs):
                parts.append(section.write(report))
                say(f"section {section.__name__.rsplit('.', 1)[-1]}: written")
        if notes:
            parts.append("## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
        atomic_write(partial / "report.md", "\n".join(parts))
    except BaseException:
        outputs.discard(partial)
        raise
    outputs.commit(partial, out, outputs.REPORT, "--out")
    return out
