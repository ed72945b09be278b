"""Timing: sides alternated within every repeat so that load from other processes hits all alike,
per-step medians, the device's matmul rate, and the cost of drawing a batch. On an accelerator a
step only queues its kernels: the device is synchronised before every timer read (around each
side's block of steps, around the warm-up), never inside a block of timed steps."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from icl.bench.sides import Side
from icl.config import Config
from icl.sampling import Sampler

CPU = torch.device("cpu")


def synchronize(device: torch.device = CPU) -> None:
    """Wait for the work queued on ``device`` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_gflops(n: int = 1024, repeats: int = 3, device: torch.device = CPU) -> float:
    """``device``'s dense fp32 matmul rate now: median over ``repeats`` of an n x n x n product
    (on an accelerator: of 8 products of n = 4096 at a time, synchronised, so launches and the
    synchronisation do not count)."""
    per = 1
    if device.type != "cpu":
        n, per = max(n, 4096), 8
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per):
            a @ b
        synchronize(device)
        times.append((time.perf_counter() - start) / per)
    return 2 * n**3 / statistics.median(times) / 1e9


def _timed_step(side: Side, batch, device: torch.device) -> float:
    """Wall seconds of one step of ``side``, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    side.step(*batch)
    synchronize(device)
    return time.perf_counter() - start


def interleave(
    sides: list[Side], data, repeats: int, target_s: float, between=None, device: torch.device = CPU
) -> dict[str, dict[str, Any]]:
    """Per-repeat wall, user and system seconds per step of each side. After two warm-up steps per
    side (the first one's time is kept: a compiled side compiles there), each repeat runs every
    side for about ``target_s`` seconds, in the order of ``sides`` in even repeats and reversed in
    odd ones; ``between()`` runs at the start of every repeat. Each side trains on ``data`` (a list
    of (xs, ys)) or on its own ``side.data``, on ``device`` (synchronised before each timer read)."""
    own = {s.name: s.data if s.data is not None else data for s in sides}
    first: dict[str, float] = {}
    for side in sides:
        d = own[side.name]
        first[side.name] = _timed_step(side, d[0], device)
        side.step(*d[1 % len(d)])
    per_repeat: dict[str, int] = {}
    for side in sides:
        step_s = _timed_step(side, own[side.name][0], device)
        per_repeat[side.name] = max(1, round(target_s / max(step_s, 1e-6)))
    rec: dict[str, dict[str, Any]] = {
        s.name: {"wall": [], "user": [], "sys": [], "first_step_s": first[s.name], "steps": per_repeat[s.name]}
        for s in sides
    }
    for r in range(repeats):
        if between is not None:
            between()
        for side in sides if r % 2 == 0 else sides[::-1]:
            k, d = per_repeat[side.name], own[side.name]
            synchronize(device)
            t0, c0 = time.perf_counter(), os.times()
            for i in range(k):
                side.step(*d[i % len(d)])
            synchronize(device)
            t1, c1 = time.perf_counter(), os.times()
            rec[side.name]["wall"].append((t1 - t0) / k)
            rec[side.name]["user"].append((c1.user - c0.user) / k)
            rec[side.name]["sys"].append((c1.system - c0.system) / k)
    return rec


def time_sides(
    sides: list[Side], data, repeats: int, target_s: float, device: torch.device = CPU
) -> dict[str, dict[str, Any]]:
    """Median per-step wall, user and system time of each side over interleaved repeats on
    ``device``; the device's matmul rate is re-measured in every repeat (its median under
    ``_matmul_gflops``)."""
    mm: list[float] = []
    rec = interleave(
        sides, data, repeats, target_s, between=lambda: mm.append(matmul_gflops(device=device)), device=device
    )
    out = {}
    for side in sides:
        r = rec[side.name]
        out[side.name] = {
            "ms_per_step": statistics.median(r["wall"]) * 1e3,
            "ms_per_step_min": min(r["wall"]) * 1e3,
            "user_ms_per_step": statistics.median(r["user"]) * 1e3,
            "sys_ms_per_step": statistics.median(r["sys"]) * 1e3,
            "first_step_s": r["first_step_s"],
            "steps_per_repeat": r["steps"],
            "params": side.params,
        }
    return out | {"_matmul_gflops": statistics.median(mm)}


def sampling_ms(cfg: Config, n: int = 20, device: torch.device = CPU) -> float:
    """Median wall time of drawing one training batch of ``cfg`` on ``device`` (where training
    draws it off the CPU: train.sampling "auto" with no loader workers)."""
    sampler = Sampler(cfg.data, cfg.seed)
    sampler.sample_batch(0, device=device)
    times = []
    for step in range(n):
        synchronize(device)
        start = time.perf_counter()
        sampler.sample_batch(step, device=device)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
