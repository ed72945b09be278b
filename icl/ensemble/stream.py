"""The training data of an ensemble: at every step, each member's own batch (its sampler, its
seed, the solo run's (seed, step, stream) keys), stacked on a leading member axis."""

from __future__ import annotations

import torch

from icl.sampling import Sampler
from icl.training.stream import StepStream


class StackedStepStream(StepStream):
    """Yields (step, xs (M, B, N, D), ys (M, B, N)) for every step from ``start`` on, forever:
    member m's rows are exactly the batch a solo run of member m's config draws at that step
    (StepStream, whose worker split and ``sample=False`` mode it keeps; one process, no ranks)."""

    def __init__(self, samplers: list[Sampler], start: int, sample: bool = True) -> None:
        super().__init__(samplers[0], start, sample=sample)
        self.samplers = samplers

    def batch(self, step: int, device: torch.device | str = "cpu") -> tuple[int, torch.Tensor, torch.Tensor]:
        batches = [s.sample_batch(step, device=device) for s in self.samplers]
        return step, torch.stack([b.xs for b in batches]), torch.stack([b.ys for b in batches])
