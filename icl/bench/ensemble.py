"""`icl bench --ensemble`: the throughput of M same-shape members trained as one stacked module
(icl/ensemble/), in member-steps per second, against two ways of training solo models on this
machine: (a) one solo process with torch's threads (in-process, interleaved with the ensemble
sides) and (b) two single-thread solo processes side by side (right after the repeats). With
``--device`` other than the CPU, baseline (a) and the ensembles train on that device and (b), a
CPU arrangement, is left out."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from multiprocessing.connection import wait
from typing import Any

import torch

from icl.bench.cases import Case, batches, train_flops
from icl.bench.memory import peak_memory_mib
from icl.bench.sides import ensemble_side, member_configs, on_device, our_side, stacked_batches
from icl.bench.timing import time_sides
from icl.errors import ICLError
from icl.speed import keep_freed_memory

SOLO = "solo"  # baseline (a): one solo model, torch's threads, in this process
PAIR = "two_solo_1_thread"  # baseline (b): two single-thread solo processes at once
PAIR_PROCESSES = 2
MIN_PAIR_S = 2.0


def parse_members(text: str) -> list[int]:
    """The member counts of ``--members`` (comma-separated integers >= 1, e.g. 1,2,5,10)."""
    try:
        members = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        members = []
    if not members or min(members) < 1:
        raise ICLError(f"--members: got {text!r}; allowed: comma-separated integers >= 1, e.g. 1,2,5,10")
    return sorted(set(members))


def _solo_process(case: tuple[str, str], seconds: float, barrier, queue) -> None:
    """One single-thread solo process of baseline (b): two warm-up steps, then steps for
    ``seconds`` from the moment every process is ready."""
    torch.set_num_threads(1)
    keep_freed_memory()  # as training does (train.keep_freed_memory)
    cfg = Case(*case).config()
    data = batches(cfg, 4)
    side = our_side(cfg)
    for i in range(2):
        side.step(*data[i])
    barrier.wait(timeout=600)
    n, t0, c0 = 0, time.perf_counter(), os.times()
    while time.perf_counter() - t0 < seconds:
        side.step(*data[n % len(data)])
        n += 1
    wall, c1 = time.perf_counter() - t0, os.times()
    queue.put({"steps": n, "wall_s": wall, "steps_per_s": n / wall, "user_s": c1.user - c0.user})


def parallel_solo(case: Case, seconds: float, processes: int = PAIR_PROCESSES) -> dict[str, Any] | None:
    """Baseline (b): ``processes`` fresh single-thread solo processes training ``case`` at the same
    time for ``seconds`` (started together at a barrier); their summed steps/s are its
    member-steps/s. None if a process failed."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_solo_process, args=((case.preset, case.shape), seconds, barrier, queue))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    running = procs
    while running:
        wait([p.sentinel for p in running])
        running = [p for p in procs if p.exitcode is None]
        if any(p.exitcode for p in procs):
            barrier.abort()  # one failed (before the start, say): release the others from the barrier
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        print(f"icl bench: {case.name}: a solo process of baseline (b) failed", file=sys.stderr)
        return None
    per = [queue.get() for _ in procs]
    rate = sum(r["steps_per_s"] for r in per)
    return {
        "processes": processes,
        "threads": 1,
        "seconds": seconds,
        "per_process": per,
        "member_steps_per_s": rate,
        "ms_per_step": sum(1e3 / r["steps_per_s"] for r in per) / processes,
    }


def _rates(rec: dict[str, Any], flops: float, matmul: float, a: float, b: float | None) -> None:
    """Adds to ``rec`` (with ``member_steps_per_s``) its GFLOP/s (``flops`` per member-step), share
    of the ``matmul`` rate, and its ratios to baselines (a) ``a``, (b) ``b`` and the better of them."""
    rate = rec["member_steps_per_s"]
    rec["gflops"] = flops * rate / 1e9
    rec["of_matmul"] = rec["gflops"] / matmul
    rec["vs_solo"] = rate / a
    rec["vs_two_solo"] = rate / b if b else None
    rec["vs_best"] = rate / max(a, b or 0.0)


def _in_process(case: Case, members: list[int], args, device: torch.device) -> dict[str, Any]:
    """Per-step times of baseline (a) and of the stacked module of each M on ``device``,
    interleaved (each ensemble on its members' own batches), and the device's matmul rate under
    ``_matmul_gflops``."""
    cfg = case.config()
    sides = [our_side(cfg, SOLO, device=device)]
    for m in members:
        cfgs = member_configs(case, m)
        sides.append(ensemble_side(cfgs, f"ensemble_{m}", stacked_batches(cfgs, 4), device))
    return time_sides(sides, on_device(batches(cfg, 4), device), args.repeats, args.target_s, device)


def _add_peaks(case: Case, solo: dict[str, Any], ensembles: list[dict[str, Any]], device: torch.device) -> None:
    """Peak memory of the solo process and of each ensemble, in total and per member, each in a
    fresh process with training's allocator setting (on CUDA: peak allocated device memory)."""
    threads = torch.get_num_threads()
    solo["peak_memory_mib"] = peak_memory_mib(case, "ours", threads, keep=True, device=str(device))
    for e in ensembles:
        peak = peak_memory_mib(case, "ensemble", threads, e["members"], keep=True, device=str(device))
        e["peak_memory_mib"] = peak
        e["peak_memory_mib_per_member"] = peak / e["members"] if peak is not None else None


def ensemble_case(case: Case, members: list[int], args, device: torch.device | None = None) -> dict[str, Any]:
    """The ensemble measurement of ``case`` on ``device`` (default: the CPU): baseline (a) and the
    stacked module of each M in ``members`` interleaved in this process, then baseline (b) (on the
    CPU only); member-steps/s, ratios, rates and (``args.memory``) peak memory per member. Every
    process runs with training's allocator setting (icl.speed.keep_freed_memory; ``run`` applies
    it to this one)."""
    device = device or torch.device("cpu")
    timing = _in_process(case, members, args, device)
    matmul = timing.pop("_matmul_gflops")
    pair = parallel_solo(case, max(MIN_PAIR_S, args.target_s * args.repeats)) if device.type == "cpu" else None
    flops = train_flops(case.config())
    solo = timing[SOLO] | {"threads": torch.get_num_threads(), "member_steps_per_s": 1e3 / timing[SOLO]["ms_per_step"]}
    if device.type != "cpu":
        solo["device"] = str(device)  # (a) trains there; its threads only drive the host side
    a, b = solo["member_steps_per_s"], pair["member_steps_per_s"] if pair else None
    baselines = {SOLO: solo} | ({PAIR: pair} if pair else {})
    ensembles = [
        timing[f"ensemble_{m}"] | {"members": m, "member_steps_per_s": m * 1e3 / timing[f"ensemble_{m}"]["ms_per_step"]}
        for m in members
    ]
    for rec in [*baselines.values(), *ensembles]:
        _rates(rec, flops, matmul, a, b)
    if args.memory:
        _add_peaks(case, solo, ensembles, device)
    return {
        "case": case.name,
        "flops_per_member_step": flops,
        "matmul_gflops": matmul,
        "baselines": baselines,
        "best_baseline": PAIR if b and b > a else SOLO,
        "ensembles": ensembles,
    }
