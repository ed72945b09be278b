"""The training data of an ensemble: at every step, each member's own batch (its sampler, its
seed, the solo run's (seed, step, stream) keys), stacked on a leading member axis."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset, get_worker_info

from icl.sampling import Sampler


class StackedStepStream(IterableDataset):
    """Yields (step, xs (M, B, N, D), ys (M, B, N)) for every step from ``start`` on, forever:
    member m's rows are exactly the batch a solo run of member m's config draws at that step
    (icl.training.stream.StepStream). Workers split the steps as StepStream's do. With
    ``sample=False`` it yields the step numbers alone and the module calls ``batch`` on its device."""

    def __init__(self, samplers: list[Sampler], start: int, sample: bool = True) -> None:
        self.samplers, self.start, self.sample = samplers, start, sample

    def batch(self, step: int, device: torch.device | str = "cpu") -> tuple[int, torch.Tensor, torch.Tensor]:
        batches = [s.sample_batch(step, device=device) for s in self.samplers]
        return step, torch.stack([b.xs for b in batches]), torch.stack([b.ys for b in batches])

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start + wid
        while True:
            yield self.batch(step) if self.sample else step
            step += nw
