"""Peak resident memory of steady-state training steps, measured in a fresh process per side
(Linux only: it reads and resets the peak through /proc/self)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import torch

from icl.bench.cases import Case, batches
from icl.bench.reference import reference_available, reference_side
from icl.bench.sides import ensemble_side, member_configs, our_side, stacked_batches
from icl.errors import ICLError
from icl.speed import keep_freed_memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ICLError(f"/proc/self/status has no {field}")


def _side_and_data(case: Case, side: str, members: int):
    """A factory of ``side`` ("ours", "reference" or "ensemble" of ``members``) at ``case`` and the
    two batches it trains on, drawn before the model is built."""
    if side == "ensemble":
        cfgs = member_configs(case, members)
        return (lambda: ensemble_side(cfgs, side)), stacked_batches(cfgs, 2)
    cfg = case.config()
    return (lambda: reference_side(cfg) if side == "reference" else our_side(cfg)), batches(cfg, 2)


def _peak_memory_child(case: tuple[str, str], side: str, threads: int, members: int, keep: bool, queue) -> None:
    torch.set_num_threads(threads)
    if keep:
        keep_freed_memory()
    if reference_available():
        import transformers  # noqa: F401  (imported in all children: its modules are not charged to a side)
    build, data = _side_and_data(Case(*case), side, members)
    base = _status_kib("VmRSS")
    s = build()
    for i in range(2):
        s.step(*data[i])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    for i in range(3):
        s.step(*data[i % 2])
    queue.put(_status_kib("VmHWM") - base)


def peak_memory_mib(case: Case, side: str, threads: int, members: int = 1, keep: bool = False) -> float | None:
    """Peak resident memory of steady-state training steps (VmHWM over 3 steps after 2 warm-up
    steps) minus the RSS before the model was built, in a fresh process per side: weights,
    gradients, optimiser state, the activation peak, allocator caching and library code touched
    by the step. ``side``: "ours", "reference" or "ensemble" (of ``members``, all of them
    together). ``keep``: with training's allocator setting (icl.speed.keep_freed_memory). Linux
    only (None elsewhere)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child, args=((case.preset, case.shape), side, threads, members, keep, queue))
    proc.start()
    proc.join()
    return queue.get() / 1024 if proc.exitcode == 0 and not queue.empty() else None
