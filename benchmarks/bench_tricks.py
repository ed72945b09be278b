"""The gain of each speed trick of icl/speed.py on the training step of the presets people use
(tiny and small at d = 5 / 11 points and d = 20 / 41 points, batch 64, fp32, torch's default
threads). Prints a table, writes tricks.json and tricks.md (the table of docs/performance.md).
Figures only, no assertions about time.

    python benchmarks/bench_tricks.py [--tricks flat_adam,keep_freed_memory,matmul_attention]
        [--presets tiny,small] [--shapes curriculum_start,paper2] [--repeats 5] [--target-s 1]
        [--out runs/bench] [--quick]

Each trick is measured with and without it, paired: every repeat runs both settings, in
alternating order, and the gain of a repeat is (without - with) / without of its two step
times; the table gives the medians of the step times and the median, min and max of the gain.

- flat_adam: the default optimiser (fused Adam over one flat tensor, icl.speed.FlatAdam) against
  torch's fused Adam over the parameters, same model, same batches, in one process.
- keep_freed_memory: process-wide, so each repeat runs two fresh processes, one with it applied
  (as `icl train` does at fit start) and one without; they report their step time and page faults.
- matmul_attention: the CPU attention-form rule (icl.speed.use_matmul_attention) against the
  fused kernel (F.scaled_dot_product_attention) everywhere, in one process; a case where the rule
  picks the fused kernel anyway has nothing to measure and is listed as such.

The in-process measurements run with keep_freed_memory applied, as training does. The model's
structural savings (the last y token left out of every layer, the last block on the x tokens
alone) have no switch and are not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import icl.model
import icl.training.module
from icl import speed
from icl.bench.cases import Case, batches, parse_cases
from icl.bench.run import environment
from icl.bench.sides import Side, our_side
from icl.bench.timing import interleave
from icl.errors import ICLError

TRICKS = ("flat_adam", "keep_freed_memory", "matmul_attention")


@contextmanager
def plain_fused_adam():
    """ICLModule.configure_optimizers builds torch's fused Adam instead of the flat one."""
    with mock.patch.object(icl.training.module, "FlatAdam", torch.optim.Adam):
        yield


def with_attention_rule(side: Side, rule) -> Side:
    """``side`` whose steps run with ``rule`` as the model's attention-form rule."""

    def step(xs, ys):
        with mock.patch.object(icl.model, "use_matmul_attention", rule):
            return side.step(xs, ys)

    return Side(side.name, step, side.params)


def rule_picks_matmul(case: Case) -> bool:
    """Whether the attention-form rule chooses the matmul form anywhere in a forward of ``case``."""
    cfg = case.config()
    side = our_side(cfg)
    chosen: list[bool] = []

    def recording(n_tokens, device):
        chosen.append(speed.use_matmul_attention(n_tokens, device))
        return chosen[-1]

    with_attention_rule(side, recording).step(*batches(cfg, 1)[0])
    return any(chosen)


def paired(name: str, case: Case, without: list[float], with_: list[float], **extra) -> dict[str, Any]:
    """One row: step times (s) per repeat without and with the trick -> medians and gains (%)."""
    gains = [100 * (a - b) / a for a, b in zip(without, with_, strict=True)]
    return {
        "trick": name,
        "case": case.name,
        "ms_without": statistics.median(without) * 1e3,
        "ms_with": statistics.median(with_) * 1e3,
        "gain_pct": statistics.median(gains),
        "gain_pct_min": min(gains),
        "gain_pct_max": max(gains),
        "repeats": len(gains),
        "ms_without_per_repeat": [t * 1e3 for t in without],
        "ms_with_per_repeat": [t * 1e3 for t in with_],
        **extra,
    }


def flat_adam(case: Case, args) -> dict[str, Any]:
    cfg = case.config()
    with_ = our_side(cfg, "flat")
    with plain_fused_adam():
        without = our_side(cfg, "plain")
    rec = interleave([without, with_], batches(cfg, 4), args.repeats, args.target_s)
    return paired("flat_adam", case, rec["plain"]["wall"], rec["flat"]["wall"])


def matmul_attention(case: Case, args) -> dict[str, Any]:
    if not rule_picks_matmul(case):
        return {"trick": "matmul_attention", "case": case.name, "skipped": "the rule picks the fused kernel here"}
    cfg = case.config()
    with_ = with_attention_rule(our_side(cfg, "rule"), speed.use_matmul_attention)
    without = with_attention_rule(our_side(cfg, "fused"), lambda n_tokens, device: False)
    rec = interleave([without, with_], batches(cfg, 4), args.repeats, args.target_s)
    return paired("matmul_attention", case, rec["fused"]["wall"], rec["rule"]["wall"])


def child(case_name: str, keep: bool, target_s: float) -> None:
    """In a fresh process: our step at ``case_name``, with or without keep_freed_memory; prints
    one JSON line (median seconds per step over three chunks, minor page faults per step)."""
    preset, shape = case_name.split("@")
    cfg = Case(preset, shape).config()
    side, data = our_side(cfg), batches(cfg, 4)
    applied = speed.keep_freed_memory() if keep else False
    for i in range(3):
        side.step(*data[i % 4])
    start = time.perf_counter()
    side.step(*data[3])
    k = max(1, round(target_s / 3 / max(time.perf_counter() - start, 1e-6)))
    walls, faults = [], []
    for _ in range(3):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        for i in range(k):
            side.step(*data[i % 4])
        walls.append((time.perf_counter() - t0) / k)
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / k)
    record = {"s_per_step": statistics.median(walls), "faults_per_step": statistics.median(faults)}
    print(json.dumps(record | {"applied": applied}))


def keep_freed_memory(case: Case, args) -> dict[str, Any]:
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for r in range(args.repeats):
        for keep in (False, True) if r % 2 == 0 else (True, False):
            cmd = [sys.executable, __file__, "--child", case.name, "--target-s", str(args.target_s)]
            out = subprocess.run([*cmd, *(["--keep"] if keep else [])], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"bench_tricks: the child process failed:\n{out.stderr[-2000:]}")
            runs[keep].append(json.loads(out.stdout.strip().splitlines()[-1]))
    if not all(r["applied"] for r in runs[True]):
        return {"trick": "keep_freed_memory", "case": case.name, "skipped": "not applicable here (Linux/glibc only)"}
    return paired(
        "keep_freed_memory",
        case,
        [r["s_per_step"] for r in runs[False]],
        [r["s_per_step"] for r in runs[True]],
        faults_per_step_without=statistics.median(r["faults_per_step"] for r in runs[False]),
        faults_per_step_with=statistics.median(r["faults_per_step"] for r in runs[True]),
    )


MEASURE = {"flat_adam": flat_adam, "keep_freed_memory": keep_freed_memory, "matmul_attention": matmul_attention}


def text_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'trick':<19}{'case':<24}{'ms without':>11}{'ms with':>9}{'gain':>8}{'min':>8}{'max':>8}{'n':>4}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['trick']:<19}{r['case']:<24}  skipped: {r['skipped']}")
            continue
        lines.append(
            f"{r['trick']:<19}{r['case']:<24}{r['ms_without']:>11.1f}{r['ms_with']:>9.1f}{r['gain_pct']:>7.1f}%"
            f"{r['gain_pct_min']:>7.1f}%{r['gain_pct_max']:>7.1f}%{r['repeats']:>4}"
        )
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| trick | preset (shape) | ms/step without | ms/step with | gain, % of a step: median (min - max) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['trick']} | {r['case']} | - | - | {r['skipped']} |")
        else:
            lines.append(
                f"| {r['trick']} | {r['case']} | {r['ms_without']:.1f} | {r['ms_with']:.1f} | "
                f"{r['gain_pct']:.1f} ({r['gain_pct_min']:.1f} - {r['gain_pct_max']:.1f}) |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tricks", default=",".join(TRICKS), help=f"comma-separated: {', '.join(TRICKS)}")
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--shapes", default="curriculum_start,paper2")
    ap.add_argument("--repeats", type=int, default=5, help="paired repeats per trick and case")
    ap.add_argument("--target-s", type=float, default=1.0, help="seconds of steps per setting and repeat")
    ap.add_argument("--out", default="runs/bench", help="directory for tricks.json and tricks.md")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny at d = 5, 2 repeats of 0.05 s")
    ap.add_argument("--child", metavar="CASE", help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.keep, args.target_s)
        return
    if args.quick:
        args.presets, args.shapes, args.repeats, args.target_s = "tiny", "curriculum_start", 2, 0.05
    tricks = [t for t in args.tricks.split(",") if t]
    if bad := [t for t in tricks if t not in TRICKS]:
        sys.exit(f"--tricks: got {bad}; allowed: {', '.join(TRICKS)}")
    if args.repeats < 1:
        sys.exit(f"--repeats: got {args.repeats}; allowed: an integer >= 1")
    try:
        cases = parse_cases(args.presets, args.shapes)
    except ICLError as e:
        sys.exit(f"bench_tricks: {e}")
    env = environment() | {"keep_freed_memory_in_this_process": speed.keep_freed_memory()}
    rows = []
    for trick in tricks:
        for case in cases:
            print(f"[tricks] {trick} {case.name} ...", file=sys.stderr, flush=True)
            rows.append(MEASURE[trick](case, args))
    print(text_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env["load_avg_after"] = os.getloadavg()
    (out / "tricks.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    (out / "tricks.md").write_text(markdown_table(rows))
    print(f"written: {out / 'tricks.json'}, {out / 'tricks.md'}")


if __name__ == "__main__":
    main()
