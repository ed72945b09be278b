"""The Bayes yardstick is exact enough: on each prior, at every k, the Bayes-optimal predictor
is not beaten by least squares, ridge or LASSO beyond a paired standard-error margin, and the
noiseless limits it used to miss (dense at k = d, sparse at k = nnz + 1, the sinusoid once the
frequency is pinned down) are reached to float precision. Data as the sampler makes it:
float32 inputs and labels."""

import math

import pytest
import torch

from icl.baselines import BayesMixture, Lasso, LeastSquares, Ridge, component
from icl.tasks import DenseLinear, Sinusoid, SparseLinear

PRIORS = {
    "dense": [DenseLinear()],
    "sparse_nnz1": [SparseLinear(nnz=1)],
    "sparse_nnz2": [SparseLinear(nnz=2)],
    "dense_sparse_mixture": [DenseLinear(), SparseLinear(nnz=1)],
}


def sample(tasks, b, n, d, seed):
    """b float32 prompts; with several tasks, each prompt's class drawn with equal weights."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, n, d, generator=g)
    ys = torch.stack([t.apply(t.sample_params(b, d, g), xs) for t in tasks])
    pick = torch.randint(len(tasks), (b,), generator=g)
    return xs, ys[pick, torch.arange(b)]


def bayes_for(tasks):
    return BayesMixture([component(t, 0.0, 1.0) for t in tasks])


def assert_not_worse(bayes, other, ys, name):
    """At every k >= 1: mean over prompts of (bayes error - other error) <= 3 standard errors
    (plus 1e-12 where both are at float rounding)."""
    diff = (bayes.double() - ys.double()) ** 2 - (other.double() - ys.double()) ** 2  # (P, N)
    mean, se = diff.mean(0), diff.std(0) / math.sqrt(diff.shape[0])
    bad = [k for k in range(1, diff.shape[1]) if mean[k] > 3 * se[k] + 1e-12]
    assert not bad, f"{name} beats bayes at k = {bad}: {[(mean[k].item(), se[k].item()) for k in bad]}"


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_bayes_is_not_beaten_on_its_own_prior(prior):
    d = 4
    tasks = PRIORS[prior]
    xs, ys = sample(tasks, 400, 2 * d + 1, d, seed=0)
    bayes = bayes_for(tasks).predict(xs, ys)
    for other in (LeastSquares(), Ridge(), Lasso()):
        assert_not_worse(bayes, other.predict(xs, ys), ys, other.label)


def test_sinusoid_bayes_is_not_beaten_on_its_own_prior():
    xs, ys = sample([Sinusoid()], 200, 8, 1, seed=1)
    bayes = bayes_for([Sinusoid()]).predict(xs, ys)
    for other in (LeastSquares(), Ridge(), Lasso()):
        assert_not_worse(bayes, other.predict(xs, ys), ys, other.label)


def test_noiseless_limits_are_reached():
    """The regressions of the former noise floors: dense d = 8 at k = d (was 5e-4 with a 1e-3
    floor; least squares 2e-11), sparse at k = nnz + 1 (was 2e-3), the dense + sparse mixture on
    sparse prompts at k = nnz + 1, and the sinusoid for k >= 4 (was ~3e-5 on a fixed grid; about
    5e-12 now, bounded here by 1e-9)."""
    xs, ys = sample([DenseLinear()], 200, 9, 8, seed=2)
    dense = bayes_for([DenseLinear()]).predict(xs, ys)
    assert ((dense - ys)[:, 8] ** 2).mean() < 1e-8

    for nnz in (1, 2):
        xs, ys = sample([SparseLinear(nnz=nnz)], 200, nnz + 2, 8, seed=3)
        sparse = bayes_for([SparseLinear(nnz=nnz)]).predict(xs, ys)
        mixed = bayes_for([DenseLinear(), SparseLinear(nnz=nnz)]).predict(xs, ys)
        assert ((sparse - ys)[:, nnz + 1] ** 2).mean() < 1e-10
        assert ((mixed - ys)[:, nnz + 1] ** 2).mean() < 1e-6  # dense keeps ~1e-6 weight per prompt

    xs, ys = sample([Sinusoid()], 200, 8, 1, seed=4)
    sin = bayes_for([Sinusoid()]).predict(xs, ys)
    assert ((sin - ys)[:, 4:] ** 2).mean(0).max() < 1e-9


@pytest.mark.parametrize("tasks", [[DenseLinear(), SparseLinear(nnz=2)], [Sinusoid()]], ids=["linear", "sinusoid"])
def test_noiseless_predictions_do_not_leak(tasks):
    """The noiseless paths (dual solve, precision floor, per-prefix frequency refinement) keep
    preds[:, :i+1] independent of ys[:, i:] and xs[:, i+1:]."""
    d = 1 if isinstance(tasks[0], Sinusoid) else 4
    xs, ys = sample(tasks, 6, 9, d, seed=5)
    bayes = bayes_for(tasks)
    base = bayes.predict(xs, ys)
    g = torch.Generator().manual_seed(6)
    for i in (0, 2, 3, 6):
        xs2, ys2 = xs.clone(), ys.clone()
        ys2[:, i:] = torch.randn(ys2[:, i:].shape, generator=g)
        xs2[:, i + 1 :] = torch.randn(xs2[:, i + 1 :].shape, generator=g)
        out = bayes.predict(xs2, ys2)
        torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1], rtol=0, atol=0)


def test_noisy_components_ignore_the_precision_floor():
    """The precision floor is far below real label noise: noisy dense Bayes is still exactly
    ridge with lam = sigma^2 / v."""
    xs, ys = sample([DenseLinear()], 8, 9, 4, seed=7)
    ys = ys + 0.1 * torch.randn(ys.shape, generator=torch.Generator().manual_seed(8))
    bayes = BayesMixture(component(DenseLinear(), noise_std=0.1)).predict(xs.double(), ys.double())
    torch.testing.assert_close(bayes, Ridge(0.01 * 4).predict(xs.double(), ys.double()), rtol=1e-9, atol=1e-10)
