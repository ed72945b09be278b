"""The bench's output: the table printed on stdout, the same as Markdown, and the files
bench.json (every figure) and bench.md (the Markdown table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def text_table(records: list[dict[str, Any]]) -> str:
    """The throughput table printed on stdout: one row per case and side."""
    head = (
        f"{'case':<26}{'side':<15}{'ms/step':>9}{'samples/s':>11}{'GFLOP/s':>9}{'/matmul':>9}"
        f"{'user ms':>9}{'sys ms':>8}{'vs ref':>8}{'sampling':>10}{'mem MiB':>9}"
    )
    lines = [head, "-" * len(head)]
    for rec in records:
        for name, t in rec["sides"].items():
            mem = (rec.get("peak_memory_mib") or {}).get(name)
            sp = t.get("speedup_vs_reference")
            lines.append(
                f"{rec['case']:<26}{name:<15}{t['ms_per_step']:>9.1f}{t['samples_per_s']:>11.0f}{t['gflops']:>9.1f}"
                f"{t['of_matmul']:>9.2f}{t['user_ms_per_step']:>9.1f}{t['sys_ms_per_step']:>8.1f}"
                + (f"{sp:>7.2f}x" if sp else f"{'-':>8}")
                + (f"{rec['sampling_fraction']:>9.1%}" if name == "ours" else f"{'':>10}")
                + (f"{mem:>9.1f}" if mem is not None else f"{'':>9}")
            )
        lines.append(f"{'':<26}matmul rate {rec['matmul_gflops']:.1f} GFLOP/s in this case's repeats")
    return "\n".join(lines)


def markdown_table(result: dict[str, Any]) -> str:
    """The throughput table as Markdown (for the README and docs/performance.md)."""
    lines = [
        "| case | side | ms/step | samples/s | GFLOP/s | of matmul rate | vs reference | peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rec in result["cases"]:
        for name, t in rec["sides"].items():
            mem = (rec.get("peak_memory_mib") or {}).get(name)
            sp = t.get("speedup_vs_reference")
            lines.append(
                f"| {rec['case']} | {name} | {t['ms_per_step']:.0f} | {t['samples_per_s']:.0f} | {t['gflops']:.1f} | "
                f"{t['of_matmul']:.2f} | {f'{sp:.2f}x' if sp else '-'} | {f'{mem:.0f}' if mem is not None else '-'} |"
            )
    return "\n".join(lines) + "\n"


def _ensemble_rows(rec: dict[str, Any]):
    """(side label, M, figures) of an ensemble record: the baselines (no (b) off the CPU), then each M."""
    base = rec["baselines"]
    solo = base["solo"]
    yield f"(a) solo, {solo.get('device') or str(solo['threads']) + ' threads'}", 1, solo  # device: off the CPU
    if "two_solo_1_thread" in base:
        pair = base["two_solo_1_thread"]
        yield f"(b) {pair['processes']} solo x 1 thread", pair["processes"], pair
    for e in rec["ensembles"]:
        yield "ensemble", e["members"], e


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x else "-"


def _member_mib(t: dict[str, Any]) -> float | None:
    """Peak MiB per member: an ensemble's divided by M; the solo process's own."""
    return t.get("peak_memory_mib_per_member", t.get("peak_memory_mib"))


def ensemble_text_table(records: list[dict[str, Any]]) -> str:
    """The ensemble table printed on stdout: per case, the two baselines and one row per M."""
    head = (
        f"{'case':<26}{'side':<24}{'M':>3}{'ms/step':>9}{'member-steps/s':>16}{'vs (a)':>8}{'vs (b)':>8}"
        f"{'vs best':>9}{'GFLOP/s':>9}{'/matmul':>9}{'MiB/member':>12}"
    )
    lines = [head, "-" * len(head)]
    for rec in records:
        for label, m, t in _ensemble_rows(rec):
            mem = _member_mib(t)
            lines.append(
                f"{rec['case']:<26}{label:<24}{m:>3}{t['ms_per_step']:>9.1f}{t['member_steps_per_s']:>16.1f}"
                f"{_ratio(t['vs_solo']):>8}{_ratio(t['vs_two_solo']):>8}{_ratio(t['vs_best']):>9}"
                f"{t['gflops']:>9.1f}{t['of_matmul']:>9.2f}" + (f"{mem:>12.1f}" if mem is not None else f"{'-':>12}")
            )
        lines.append(f"{'':<26}matmul rate {rec['matmul_gflops']:.1f} GFLOP/s in this case's repeats")
    return "\n".join(lines)


def ensemble_markdown_table(records: list[dict[str, Any]]) -> str:
    """The ensemble table as Markdown (for docs/performance.md)."""
    lines = [
        "| case | side | M | ms/step | member-steps/s | vs (a) | vs (b) | vs best | GFLOP/s | of matmul rate "
        "| peak MiB per member |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rec in records:
        for label, m, t in _ensemble_rows(rec):
            mem = _member_mib(t)
            lines.append(
                f"| {rec['case']} | {label} | {m} | {t['ms_per_step']:.1f} | {t['member_steps_per_s']:.1f} | "
                f"{_ratio(t['vs_solo'])} | {_ratio(t['vs_two_solo'])} | {_ratio(t['vs_best'])} | "
                f"{t['gflops']:.1f} | {t['of_matmul']:.2f} | {f'{mem:.0f}' if mem is not None else '-'} |"
            )
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, result: dict[str, Any]) -> Path:
    """Write ``out_dir``/bench.json and bench.md (the throughput table, then the ensemble table if
    any; rewritten after every case); returns the JSON's path."""
    path = out_dir / "bench.json"
    path.write_text(json.dumps(result, indent=2))
    md = markdown_table(result)
    if result.get("ensemble"):
        md += "\n" + ensemble_markdown_table(result["ensemble"])
    (out_dir / "bench.md").write_text(md)
    return path
