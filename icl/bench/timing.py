"""Timing: sides alternated within every repeat so that load from other processes hits all alike,
per-step medians, this machine's matmul rate, and the cost of drawing a batch."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from icl.bench.sides import Side
from icl.config import Config
from icl.sampling import Sampler


def matmul_gflops(n: int = 1024, repeats: int = 3) -> float:
    """This machine's dense fp32 matmul rate now: median over ``repeats`` of an n x n x n product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def interleave(sides: list[Side], data, repeats: int, target_s: float, between=None) -> dict[str, dict[str, Any]]:
    """Per-repeat wall, user and system seconds per step of each side. After two warm-up steps per
    side (the first one's time is kept: a compiled side compiles there), each repeat runs every
    side for about ``target_s`` seconds, in the order of ``sides`` in even repeats and reversed in
    odd ones; ``between()`` runs at the start of every repeat. Each side trains on ``data`` (a list
    of (xs, ys)) or on its own ``side.data``."""
    own = {s.name: s.data if s.data is not None else data for s in sides}
    first: dict[str, float] = {}
    for side in sides:
        d = own[side.name]
        start = time.perf_counter()
        side.step(*d[0])
        first[side.name] = time.perf_counter() - start
        side.step(*d[1 % len(d)])
    per_repeat: dict[str, int] = {}
    for side in sides:
        start = time.perf_counter()
        side.step(*own[side.name][0])
        per_repeat[side.name] = max(1, round(target_s / max(time.perf_counter() - start, 1e-6)))
    rec: dict[str, dict[str, Any]] = {
        s.name: {"wall": [], "user": [], "sys": [], "first_step_s": first[s.name], "steps": per_repeat[s.name]}
        for s in sides
    }
    for r in range(repeats):
        if between is not None:
            between()
        for side in sides if r % 2 == 0 else sides[::-1]:
            k, d = per_repeat[side.name], own[side.name]
            t0, c0 = time.perf_counter(), os.times()
            for i in range(k):
                side.step(*d[i % len(d)])
            t1, c1 = time.perf_counter(), os.times()
            rec[side.name]["wall"].append((t1 - t0) / k)
            rec[side.name]["user"].append((c1.user - c0.user) / k)
            rec[side.name]["sys"].append((c1.system - c0.system) / k)
    return rec


def time_sides(sides: list[Side], data, repeats: int, target_s: float) -> dict[str, dict[str, Any]]:
    """Median per-step wall, user and system time of each side over interleaved repeats; the
    matmul rate is re-measured in every repeat (its median under ``_matmul_gflops``)."""
    mm: list[float] = []
    rec = interleave(sides, data, repeats, target_s, between=lambda: mm.append(matmul_gflops()))
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


def sampling_ms(cfg: Config, n: int = 20) -> float:
    """Median wall time of drawing one training batch of ``cfg``."""
    sampler = Sampler(cfg.data, cfg.seed)
    sampler.sample_batch(0)
    times = []
    for step in range(n):
        start = time.perf_counter()
        sampler.sample_batch(step)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
