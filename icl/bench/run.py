"""`icl bench`: runs every case (our eager and compiled sides against the reference, interleaved
in one process; with ``--ensemble`` also the ensemble measurement of icl/bench/ensemble.py), then
the quick-start measurements; prints the tables and writes bench.{json,md}. With ``--device``
other than the CPU only our eager side and the ensemble measurement run (on that device)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from icl.bench.cases import BATCH, Case, batches, parse_cases, train_flops
from icl.bench.ensemble import ensemble_case, parse_members
from icl.bench.memory import peak_memory_mib
from icl.bench.quickstart import bf16_report, eval_wall_time, loop_overhead
from icl.bench.reference import ReferenceModel, reference_available, reference_side
from icl.bench.sides import on_device, our_side
from icl.bench.tables import ensemble_text_table, text_table, write_results
from icl.bench.timing import sampling_ms, time_sides
from icl.checkpoint.load import parse_device
from icl.errors import ICLError
from icl.speed import keep_freed_memory

# The parts of `icl bench` that run on the CPU alone, as (the option that skips it, its args attribute).
CPU_ONLY = (
    ("--no-reference", "reference"),
    ("--no-compile", "compile"),
    ("--no-loop", "loop"),
    ("--no-eval", "eval"),
    ("--no-bf16", "bf16"),
)


def environment(device: torch.device | None = None) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    if device is not None:
        env["device"] = str(device)
        env["device_name"] = _device_name(device)
    return env


def _device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, the CPU's model name (Linux) on the CPU, else the device type."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu" and Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or device.type


def bench_case(case: Case, args, with_reference: bool, device: torch.device | None = None) -> dict[str, Any]:
    """Step times, rates, sampling cost and (``args.memory``) peak memory of one case on ``device``
    (default: the CPU)."""
    device = device or torch.device("cpu")
    cfg = case.config()
    sides = [our_side(cfg, "ours", device=device)]
    if args.compile:
        sides.append(our_side(case.config("train.compile=true"), "ours_compiled"))
    if with_reference:
        sides.append(reference_side(cfg))
    data = on_device(batches(cfg, 4), device)
    timing = time_sides(sides, data, args.repeats, args.target_s, device)
    mm = timing.pop("_matmul_gflops")
    flops = train_flops(cfg)
    rec: dict[str, Any] = {"case": case.name, "flops_per_step": flops, "matmul_gflops": mm, "sides": timing}
    for t in timing.values():
        t["samples_per_s"] = BATCH / (t["ms_per_step"] / 1e3)
        t["gflops"] = flops / (t["ms_per_step"] / 1e3) / 1e9
        t["of_matmul"] = t["gflops"] / mm
    if "ours_compiled" in timing:
        c = timing["ours_compiled"]
        c["compile_s"] = max(0.0, c["first_step_s"] - c["ms_per_step"] / 1e3)
    if with_reference:
        ref = timing["reference"]["ms_per_step"]
        for t in timing.values():
            t["speedup_vs_reference"] = ref / t["ms_per_step"]
    rec["sampling_ms"] = sampling_ms(cfg, device=device)
    rec["sampling_fraction"] = rec["sampling_ms"] / timing["ours"]["ms_per_step"]
    if args.memory:
        names = ["ours"] + (["reference"] if with_reference else [])
        threads = torch.get_num_threads()
        rec["peak_memory_mib"] = {n: peak_memory_mib(case, n, threads, device=str(device)) for n in names}
    return rec


def run(args) -> dict[str, Any]:
    """The `icl bench` command; ``args`` are its parsed options (see `icl bench --help`)."""
    if args.repeats < 1:
        raise ICLError(f"--repeats: got {args.repeats}; allowed: an integer >= 1")
    device = parse_device(args.device)
    if device.type != "cpu" and (on := [flag for flag, attr in CPU_ONLY if getattr(args, attr)]):
        raise ICLError(
            f"--device {args.device}: the reference, compiled, loop, eval and bf16 parts run on the CPU only; "
            f"add {' '.join(on)} (allowed off the CPU: our eager side and --ensemble)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = parse_cases(args.presets, args.shapes)
    members = parse_members(args.members) if args.ensemble else []
    with_reference = args.reference and reference_available()
    if args.reference and not with_reference:
        print(
            "icl bench: transformers is not installed, skipping the HuggingFace reference "
            "(install it with: pip install -e '.[bench]')",
            file=sys.stderr,
        )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"environment": environment(device), "cases": []}
    if args.ensemble:
        # as training does (train.keep_freed_memory): an ensemble's activations exceed glibc's
        # mmap threshold, which would fault them in again every step; every case of this run then
        # runs with it
        result["environment"]["keep_freed_memory"] = keep_freed_memory()
        result["ensemble"] = []
        if device.type != "cpu":
            print(
                f"icl bench: --device {args.device}: baseline (b) (single-thread CPU processes) is left out",
                file=sys.stderr,
            )
    if with_reference:
        import transformers  # the optional extra, present here

        result["environment"]["transformers"] = transformers.__version__
        result["environment"]["reference_attention"] = ReferenceModel(
            cases[0].config()
        ).backbone.config._attn_implementation
    for case in cases:
        print(f"[bench] {case.name} ...", file=sys.stderr, flush=True)
        result["cases"].append(bench_case(case, args, with_reference, device))
        write_results(out_dir, result)
        if args.ensemble:
            print(f"[bench] {case.name}: ensembles of {args.members} members ...", file=sys.stderr, flush=True)
            result["ensemble"].append(ensemble_case(case, members, args, device))
            write_results(out_dir, result)
    print(text_table(result["cases"]))
    if args.ensemble:
        print(ensemble_text_table(result["ensemble"]))
    if args.loop:
        print("[bench] Lightning loop overhead (quick-start) ...", file=sys.stderr, flush=True)
        result["loop"] = loop_overhead(args)
        lo = result["loop"]
        print(
            f"quick-start full Lightning loop: {lo['lightning_ms_per_step']:.1f} ms/step "
            f"(bare step {lo['bare_step_ms']:.1f} ms)"
        )
    if args.eval:
        print("[bench] evaluation suite (quick-start) ...", file=sys.stderr, flush=True)
        result["eval"] = eval_wall_time()
        ev = result["eval"]
        print(
            f"evaluation suite {ev['suite']} ({ev['n_prompts']} prompts, "
            f"{', '.join(ev['baselines'])}): {ev['wall_s']:.1f} s"
        )
    if args.bf16:
        print("[bench] bf16 autocast (quick-start) ...", file=sys.stderr, flush=True)
        result["bf16"] = bf16_report(args)
        b = result["bf16"]
        print(
            f"bf16 autocast (CPU avx512_bf16: {b['cpu_has_avx512_bf16']}): "
            f"{b['ms_per_step']['bf16_autocast']:.1f} ms/step vs fp32 {b['ms_per_step']['fp32']:.1f}; "
            f"loss over the first 10 / last 50 of {b['steps']} steps: bf16 "
            f"{b['loss_first_10_steps']['bf16_autocast']:.5f} / {b['loss_last_50_steps']['bf16_autocast']:.5f}, "
            f"fp32 {b['loss_first_10_steps']['fp32']:.5f} / {b['loss_last_50_steps']['fp32']:.5f}; "
            f"per-step |bf16 - fp32| / fp32: mean {b['step_loss_rel_diff_mean']:.1e}, "
            f"max {b['step_loss_rel_diff_max']:.1e}"
        )
    result["environment"]["load_avg_after"] = os.getloadavg()
    path = write_results(out_dir, result)
    print(f"written: {path}")
    return result
