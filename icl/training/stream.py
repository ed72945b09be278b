"""The training data stream: the batch of every step from a start step on, a pure function of
(seed, step), split across DataLoader workers and data-parallel ranks."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset, get_worker_info

from icl.sampling import Sampler


class StepStream(IterableDataset):
    """Yields the training batch of every step from ``start`` on, forever.

    Batches are ``sampler.sample_batch(step)``, a pure function of (seed, step), so resume
    only needs the start step. With W workers, worker w yields steps start + w, start + w + W,
    ...; the DataLoader's round-robin over workers then restores the step order. Under data
    parallelism rank r of R keeps rows [r B/R, (r+1) B/R) of the global batch, so the
    concatenated batch is the single-process one. With ``sample=False`` it yields the step
    numbers alone and the training module draws ``batch(step, device)`` on its device.
    """

    def __init__(self, sampler: Sampler, start: int, rank: int = 0, world: int = 1, sample: bool = True) -> None:
        self.sampler, self.start, self.rank, self.world, self.sample = sampler, start, rank, world, sample

    def batch(self, step: int, device: torch.device | str = "cpu") -> tuple[int, torch.Tensor, torch.Tensor]:
        """(step, xs, ys): this rank's rows of the batch of ``step``, drawn on ``device``."""
        B = self.sampler.cfg.batch_size
        lo, hi = self.rank * B // self.world, (self.rank + 1) * B // self.world
        batch = self.sampler.sample_batch(step, device=device)
        return step, batch.xs[lo:hi], batch.ys[lo:hi]

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start + wid
        while True:
            yield self.batch(step) if self.sample else step
            step += nw
