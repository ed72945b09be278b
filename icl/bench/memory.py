"""Peak resident memory of steady-state training steps, measured in a fresh process per side
(Linux only: it reads and resets the peak through /proc/self)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import torch

from icl.bench.cases import Case, batches
from icl.bench.reference import reference_available, reference_side
from icl.bench.sides import our_side
from icl.errors import ICLError


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ICLError(f"/proc/self/status has no {field}")


def _peak_memory_child(case: tuple[str, str], side: str, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    if reference_available():
        import transformers  # noqa: F401  (imported in both children: its modules are not charged to a side)
    cfg = Case(*case).config()
    data = batches(cfg, 2)
    base = _status_kib("VmRSS")
    s = reference_side(cfg) if side == "reference" else our_side(cfg)
    for i in range(2):
        s.step(*data[i])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    for i in range(3):
        s.step(*data[i % 2])
    queue.put(_status_kib("VmHWM") - base)


def peak_memory_mib(case: Case, side: str, threads: int) -> float | None:
    """Peak resident memory of steady-state training steps (VmHWM over 3 steps after 2 warm-up
    steps) minus the RSS before the model was built, in a fresh process per side: weights,
    gradients, optimiser state, the activation peak, allocator caching and library code touched
    by the step. Linux only (None elsewhere)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child, args=((case.preset, case.shape), side, threads, queue))
    proc.start()
    proc.join()
    return queue.get() / 1024 if proc.exitcode == 0 and not queue.empty() else None
