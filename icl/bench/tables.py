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


def write_results(out_dir: Path, result: dict[str, Any]) -> Path:
    """Write ``out_dir``/bench.json and bench.md (rewritten after every case); returns the JSON's path."""
    path = out_dir / "bench.json"
    path.write_text(json.dumps(result, indent=2))
    (out_dir / "bench.md").write_text(markdown_table(result))
    return path
