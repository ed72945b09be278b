"""The training stream: step-ordered with DataLoader workers, resumable, rank-sliced."""

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from icl.curriculum import CurriculumConfig, Ramp
from icl.sampling import DataConfig, Sampler
from icl.train_config import lr_factor
from icl.training.stream import StepStream

CFG = DataConfig(
    n_dims=6, n_points=9, batch_size=8, curriculum=CurriculumConfig(dims=Ramp(2, 0, 1, 3), points=Ramp(3, 0, 2, 3))
)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("start", [0, 7])
def test_workers_yield_the_batches_of_consecutive_steps(workers, start):
    sampler = Sampler(CFG, 5)
    loader = DataLoader(StepStream(sampler, start), batch_size=None, num_workers=workers)
    for expected_step, (step, xs, ys) in zip(range(start, start + 6), itertools.islice(loader, 6), strict=True):
        ref = sampler.sample_batch(expected_step)
        assert int(step) == expected_step
        assert torch.equal(xs, ref.xs) and torch.equal(ys, ref.ys)


def test_ranks_partition_the_global_batch():
    sampler = Sampler(CFG, 5)
    parts = [next(iter(StepStream(sampler, 4, rank=r, world=2))) for r in range(2)]
    ref = sampler.sample_batch(4)
    assert torch.equal(torch.cat([p[1] for p in parts]), ref.xs)
    assert torch.equal(torch.cat([p[2] for p in parts]), ref.ys)


def test_learning_rate_schedules():
    assert [lr_factor(s, "constant", 0) for s in (0, 10)] == [1.0, 1.0]
    assert (
        lr_factor(0, "constant", 4) == 0.25
        and lr_factor(3, "constant", 4) == 1.0
        and lr_factor(100, "constant", 4) == 1.0
    )
    assert lr_factor(4, "warmup_rsqrt", 5) == 1.0  # peak at the end of warm-up
    assert lr_factor(19, "warmup_rsqrt", 5) == pytest.approx(0.5)  # sqrt(5 / 20)
    assert lr_factor(0, "warmup_rsqrt", 5) == pytest.approx(0.2)
    # warm-up, then a cosine from 1 down to the final fraction at the last step
    cos = [lr_factor(s, "warmup_cosine", 10, 110, 0.1) for s in range(110)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == 1.0
    assert cos[59] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert cos[109] == pytest.approx(0.1) and lr_factor(500, "warmup_cosine", 10, 110, 0.1) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(cos[9:], cos[10:], strict=False))
