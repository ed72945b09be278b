"""Batches: pure functions of (seed, step, domain); per-sequence mixtures; curriculum; inputs."""

import math

import pytest
import torch

from icl.curriculum import Curriculum, CurriculumConfig, Ramp, WeightRamp
from icl.errors import ICLError
from icl.inputs import InputConfig, covariance_factor, sample_inputs
from icl.rng import Domain, Stream, derive_seed, generator
from icl.sampling import ComponentConfig, DataConfig, Sampler

MIX = [
    ComponentConfig("dense_linear", 0.3),
    ComponentConfig("sparse_linear", 0.7, params={"nnz": 2}),
]


def make(mixture=None, seed=0, **kw):
    return Sampler(DataConfig(n_dims=8, n_points=9, batch_size=32, mixture=mixture or MIX, **kw), seed)


def test_same_seed_and_step_give_the_same_batch():
    a, b = make().sample_batch(5), make().sample_batch(5)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    assert torch.equal(a.info["component"], b.info["component"])


def test_steps_seeds_and_domains_differ():
    s = make()
    base = s.sample_batch(5)
    for other in (s.sample_batch(6), make(seed=1).sample_batch(5), s.sample_batch(5, domain=Domain.EVAL)):
        assert not torch.allclose(base.xs, other.xs)
        assert not torch.allclose(base.ys, other.ys)


def test_streams_are_independent_keys():
    keys = {derive_seed(0, 0, step, int(st), sub) for step in range(50) for st in Stream for sub in range(3)}
    assert len(keys) == 50 * len(Stream) * 3


def test_changing_mixture_weights_leaves_inputs_and_parameters_alone():
    """Inputs and each component's parameters have their own streams."""
    a = make().sample_batch(3)
    b = make(
        [ComponentConfig("dense_linear", 0.9), ComponentConfig("sparse_linear", 0.1, params={"nnz": 2})]
    ).sample_batch(3)
    assert torch.equal(a.xs, b.xs)
    torch.testing.assert_close(a.info["params"][0]["w"], b.info["params"][0]["w"])


def test_only_draws_every_prompt_from_one_class_of_the_mixture():
    s = make()
    sparse = s.mixture.only("sparse_linear", "--prompts")
    assert [(c.task.name, c.weight) for c in sparse.components] == [("sparse_linear", 1.0)]
    b = s.sample_batch(0, domain=Domain.EVAL, mixture=sparse)
    w = b.info["params"][0]["w"]
    assert w.shape[0] == 32 and torch.equal((w != 0).sum(-1), torch.full((32,), 2))
    torch.testing.assert_close(b.ys, (b.xs * w[:, None, :]).sum(-1) / math.sqrt(2))
    allowed = r"allowed: a class of the run's mixture \(dense_linear, sparse_linear\)$"
    with pytest.raises(ICLError, match=r"^--prompts: got 'sinusoid'; " + allowed):
        s.mixture.only("sinusoid", "--prompts")


def test_per_sequence_mixture_proportions_match_weights():
    s = make()
    ids = torch.cat([s.sample_batch(step).info["component"] for step in range(200)])
    n = ids.numel()
    frac = (ids == 1).float().mean().item()
    assert frac == pytest.approx(0.7, abs=4 * math.sqrt(0.7 * 0.3 / n))
    # components differ within a batch, and ys follow each sequence's own class
    b = s.sample_batch(0)
    assert 0 < b.info["component"].sum() < 32
    for k, p in enumerate(b.info["params"]):
        task = s.mixture.components[k].task
        mask = b.info["component"] == k
        torch.testing.assert_close(b.ys[mask], task.apply(p, b.xs)[mask])


def test_per_batch_mixing_draws_one_class_per_batch():
    s = make(mixing="per_batch")
    ids = [s.sample_batch(step).info["component"] for step in range(300)]
    assert all(len(i.unique()) == 1 for i in ids)
    frac = sum(int(i[0]) for i in ids) / len(ids)
    assert frac == pytest.approx(0.7, abs=4 * math.sqrt(0.21 / 300))


def test_label_noise_has_the_configured_std():
    clean = make([ComponentConfig("dense_linear", 1.0)]).sample_batch(2, batch_size=2000)
    noisy = make([ComponentConfig("dense_linear", 1.0, noise_std=0.5)]).sample_batch(2, batch_size=2000)
    assert torch.equal(clean.xs, noisy.xs)
    assert (noisy.ys - clean.ys).std().item() == pytest.approx(0.5, rel=0.03)


@pytest.mark.parametrize(
    "mixture,match",
    [
        ([ComponentConfig("dense_linear", 0.5)], "summing to 1"),
        ([ComponentConfig("dense_linear", 1.5), ComponentConfig("sinusoid", -0.5)], "non-negative"),
        ([ComponentConfig("sparse_linear", 1.0, params={"nnz": 9})], r"data.mixture\[0\].*1..8"),
        ([ComponentConfig("dense_linear", 1.0, noise_std=-1)], "noise_std"),
        ([], "empty"),
    ],
)
def test_bad_mixtures_are_rejected(mixture, match):
    with pytest.raises(ICLError, match=match):
        Sampler(DataConfig(n_dims=8, n_points=9, mixture=mixture), 0)


# --- curriculum ---------------------------------------------------------------------------

PAPER2 = CurriculumConfig(dims=Ramp(5, 20, 1, 2000), points=Ramp(11, 41, 2, 2000))


@pytest.mark.parametrize(
    "step,dims,points",
    [
        (0, 5, 11),
        (1999, 5, 11),
        (2000, 6, 13),
        (2001, 6, 13),
        (3999, 6, 13),
        (4000, 7, 15),
        (29_999, 19, 39),
        (30_000, 20, 41),
        (30_001, 20, 41),
        (10**7, 20, 41),
    ],
)
def test_paper2_curriculum_at_and_around_boundaries(step, dims, points):
    assert Curriculum.build(PAPER2, 20, 41).at(step) == (dims, points)


def test_no_curriculum_means_full_size_from_step_zero():
    assert Curriculum.build(CurriculumConfig(), 20, 41).at(0) == (20, 41)


def test_curriculum_batches_have_inactive_dims_zero_and_short_prompts():
    s = Sampler(DataConfig(n_dims=20, n_points=41, batch_size=4, curriculum=PAPER2), 0)
    b = s.sample_batch(2500)
    assert b.xs.shape == (4, 13, 20)
    assert torch.all(b.xs[..., 6:] == 0) and torch.all(b.xs[..., :6] != 0)
    assert b.info["n_dims"] == 6


@pytest.mark.parametrize(
    "cfg,match",
    [
        (CurriculumConfig(dims=Ramp(5, 30, 1, 100)), "dims.end"),
        (CurriculumConfig(dims=Ramp(0, 0, 1, 100)), "start"),
        (CurriculumConfig(points=Ramp(5, 0, 1, -1)), "interval"),
    ],
)
def test_bad_curricula(cfg, match):
    with pytest.raises(ICLError, match=match):
        Curriculum.build(cfg, 20, 41)


def test_weight_ramp_holds_then_interpolates_then_uses_the_mixture():
    ramp = CurriculumConfig(weights=WeightRamp(start=[1.0, 0.0], hold=10, steps=20))
    s = make(curriculum=ramp)
    for step, frac_sparse in [(0, 0.0), (9, 0.0), (10, 0.0), (20, 0.35), (30, 0.7), (500, 0.7)]:
        assert s.curriculum.weights_at(step) == pytest.approx([1 - frac_sparse, frac_sparse])
        ids = s.sample_batch(step, batch_size=4000).info["component"]
        assert (ids == 1).float().mean().item() == pytest.approx(frac_sparse, abs=4 * math.sqrt(0.25 / 4000))
    # a class with no weight at this step draws no parameters; evaluation ignores the ramp
    assert s.sample_batch(0).info["params"][1] is None
    ids = s.sample_batch(0, batch_size=4000, domain=Domain.EVAL).info["component"]
    assert (ids == 1).float().mean().item() == pytest.approx(0.7, abs=0.03)


def test_weight_ramp_after_its_end_gives_the_batches_of_the_plain_mixture():
    ramped = make(curriculum=CurriculumConfig(weights=WeightRamp(start=[0.0, 1.0], hold=3, steps=2)))
    plain = make()
    for step in (5, 6, 40):
        a, b = ramped.sample_batch(step), plain.sample_batch(step)
        torch.testing.assert_close(a.xs, b.xs)
        torch.testing.assert_close(a.ys, b.ys)


@pytest.mark.parametrize(
    "ramp, match",
    [
        (WeightRamp(start=[1.0]), "one per data.mixture entry"),
        (WeightRamp(start=[0.6, 0.6]), "summing to 1"),
        (WeightRamp(start=[float("nan"), 1.0]), "summing to 1"),
        (WeightRamp(start=[0.0, 1.0], hold=-1), "hold"),
    ],
)
def test_bad_weight_ramps(ramp, match):
    with pytest.raises(ICLError, match=match):
        make(curriculum=CurriculumConfig(weights=ramp))


# --- inputs ---------------------------------------------------------------------------------


def test_skewed_covariance_has_the_requested_spectrum():
    d = 6
    A = covariance_factor("skewed", d, 1.0, 0).double()
    eig = torch.linalg.eigvalsh(A @ A.T).flip(0)
    expected = 1 / torch.arange(1, d + 1, dtype=torch.float64)
    torch.testing.assert_close(eig, expected * d / expected.sum(), rtol=1e-5, atol=1e-6)
    xs = sample_inputs(InputConfig(covariance="skewed"), 20000, 4, d, generator(0, 0, Stream.INPUTS)).double()
    cov = torch.cov(xs.reshape(-1, d).T)
    torch.testing.assert_close(cov, A @ A.T, atol=0.03, rtol=0)


def test_half_subspace_inputs_have_rank_d_over_2():
    xs = sample_inputs(InputConfig(covariance="half_subspace"), 50, 10, 6, generator(0, 0, Stream.INPUTS))
    assert torch.linalg.matrix_rank(xs.reshape(-1, 6).double(), atol=1e-4) == 3


def test_scale_and_shift():
    g = lambda: generator(0, 0, Stream.INPUTS)  # noqa: E731
    base = sample_inputs(InputConfig(), 10, 4, 3, g())
    torch.testing.assert_close(sample_inputs(InputConfig(scale=2.0, shift=0.5), 10, 4, 3, g()), 2 * base + 0.5)


def test_bad_inputs():
    with pytest.raises(ICLError, match="covariance"):
        InputConfig(covariance="diagonal").check()
