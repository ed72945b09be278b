"""Peak memory of steady-state training steps, measured in a fresh process per side: on the CPU
the peak resident memory (Linux only: it reads and resets the peak through /proc/self), on CUDA
the peak of torch's allocated device memory."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import torch

from icl.bench.cases import Case, batches
from icl.bench.reference import reference_available, reference_side
from icl.bench.sides import ensemble_side, member_configs, on_device, our_side, stacked_batches
from icl.errors import ICLError
from icl.speed import keep_freed_memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ICLError(f"/proc/self/status has no {field}")


def _side_and_data(case: Case, side: str, members: int, device: str):
    """A factory of ``side`` ("ours", "reference" or "ensemble" of ``members``) at ``case`` on
    ``device`` and the two batches it trains on, drawn (and moved to ``device``) before the model
    is built."""
    if side == "ensemble":
        cfgs = member_configs(case, members)
        return (lambda: ensemble_side(cfgs, side, device=device)), on_device(stacked_batches(cfgs, 2), device)
    cfg = case.config()
    build = (lambda: reference_side(cfg)) if side == "reference" else (lambda: our_side(cfg, device=device))
    return build, on_device(batches(cfg, 2), device)


def _peak_memory_child(
    case: tuple[str, str], side: str, threads: int, members: int, keep: bool, device: str, queue
) -> None:
    torch.set_num_threads(threads)
    if keep:
        keep_freed_memory()
    if reference_available():
        import transformers  # noqa: F401  (imported in all children: its modules are not charged to a side)
    build, data = _side_and_data(Case(*case), side, members, device)
    cuda = torch.device(device).type == "cuda"
    base = torch.cuda.memory_allocated(device) if cuda else _status_kib("VmRSS")
    s = build()
    for i in range(2):
        s.step(*data[i])
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)  # the peak from here on: the steady-state steps
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    for i in range(3):
        s.step(*data[i % 2])
    if cuda:
        torch.cuda.synchronize(device)
        queue.put((torch.cuda.max_memory_allocated(device) - base) / 1024)
    else:
        queue.put(_status_kib("VmHWM") - base)


def peak_memory_mib(
    case: Case, side: str, threads: int, members: int = 1, keep: bool = False, device: str = "cpu"
) -> float | None:
    """Peak memory of steady-state training steps (over 3 steps after 2 warm-up steps), in a
    fresh process per side. On the CPU: the peak resident memory (VmHWM) minus the RSS before the
    model was built: weights, gradients, optimiser state, the activation peak, allocator caching
    and library code touched by the step (Linux only, None elsewhere). On CUDA: torch's peak
    allocated device memory (``torch.cuda.max_memory_allocated``, reset after the warm-up) minus
    what was allocated before the model was built (the batches): weights, gradients, optimiser
    state and the activation peak, without the caching allocator's reserve. None on other
    devices. ``side``: "ours", "reference" or "ensemble" (of ``members``, all of them together).
    ``keep``: with training's allocator setting (icl.speed.keep_freed_memory)."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda") or (kind == "cpu" and not Path("/proc/self/clear_refs").exists()):
        return None
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    args = ((case.preset, case.shape), side, threads, members, keep, str(device), queue)
    proc = ctx.Process(target=_peak_memory_child, args=args)
    proc.start()
    proc.join()
    return queue.get() / 1024 if proc.exitcode == 0 and not queue.empty() else None
