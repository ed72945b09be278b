"""Bayes-optimal predictors: closed forms (ridge), brute-force numpy posteriors (supports,
frequency grid, mixture weights), optimality on the mixture's own data, and refusals."""

import itertools
import math

import numpy as np
import pytest
import torch

from icl.baselines import BASELINES, BayesMixture, BayesTrain, LeastSquares, Ridge, build_baseline, component
from icl.baselines.bayes import POSTERIORS
from icl.baselines.bayes import sinusoid as sinusoid_posterior
from icl.errors import ICLError
from icl.rng import Domain
from icl.sampling import ComponentConfig, DataConfig, PretrainMixture, Sampler
from icl.tasks import TASKS, ConvexCombination, DenseLinear, ReluNet, Sinusoid, SparseLinear


def draw(task, b, n, d, noise, seed):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, n, d, generator=g)
    ys = task.apply(task.sample_params(b, d, g), xs) + noise * torch.randn(b, n, generator=g)
    return xs.double(), ys.double()


def np_gaussian(x, y, q, prior_var, noise_var):
    """Posterior-mean prediction and log evidence of y = beta.x + noise, beta ~ N(0, v I),
    straight from the k x k marginal covariance (the dual form, independent of the code's
    primal Cholesky)."""
    k = len(y)
    if k == 0:
        return 0.0, 0.0
    cov = prior_var * x @ x.T + noise_var * np.eye(k)
    alpha = np.linalg.solve(cov, y)
    log_ev = -0.5 * (k * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + y @ alpha)
    return float(prior_var * (x.T @ alpha) @ q), float(log_ev)


def np_average(preds, log_evs, log_prior):
    logw = np.asarray(log_evs) + np.asarray(log_prior)
    w = np.exp(logw - logw.max())
    return float(w @ np.asarray(preds) / w.sum()), float(logw.max() + np.log(w.sum()))


def np_sparse(x, y, q, nnz, prior_var, noise_var):
    supports = list(itertools.combinations(range(x.shape[1]), nnz))
    parts = [np_gaussian(x[:, list(s)], y, q[list(s)], prior_var, noise_var) for s in supports]
    log_prior = [-math.log(len(supports))] * len(supports)
    return np_average([p for p, _ in parts], [e for _, e in parts], log_prior)


def np_sinusoid(x, y, q, freqs, log_prior, amp_var, noise_var):
    parts = [
        np_gaussian(np.cos(2 * math.pi * w * x), y, np.cos(2 * math.pi * w * q), amp_var, noise_var) for w in freqs
    ]
    return np_average([p for p, _ in parts], [e for _, e in parts], log_prior)


@pytest.mark.parametrize("normalize, w_scale, noise", [(True, 1.0, 0.3), (False, 2.0, 0.5)])
def test_dense_bayes_is_ridge_with_matched_penalty(normalize, w_scale, noise):
    d = 5
    task = DenseLinear(normalize=normalize, w_scale=w_scale)
    xs, ys = draw(task, 3, 11, d, noise, seed=0)
    prior_var = w_scale**2 / (d if normalize else 1)
    bayes = BayesMixture(component(task, noise_std=noise)).predict(xs, ys)
    torch.testing.assert_close(bayes, Ridge(noise**2 / prior_var).predict(xs, ys), rtol=1e-9, atol=1e-10)


def test_noiseless_dense_bayes_is_the_least_squares_limit():
    task = DenseLinear()
    xs, ys = draw(task, 4, 12, 6, 0.0, seed=1)
    bayes = BayesMixture(component(task)).predict(xs, ys)
    torch.testing.assert_close(bayes, LeastSquares().predict(xs, ys), rtol=0, atol=1e-6)


@pytest.mark.parametrize("noise, floor", [(0.2, 0.0), (0.0, 1e-3)])
def test_sparse_bayes_matches_brute_force(noise, floor):
    """Noisy, and noiseless under an explicit noise_floor (the exact noiseless limit is checked
    against the other baselines in test_bayes_exact.py)."""
    d, nnz = 4, 2
    task = SparseLinear(nnz=nnz)
    xs, ys = draw(task, 2, 7, d, noise, seed=2)
    post = BayesMixture(component(task, noise_std=noise), noise_floor=floor).posterior(xs, ys)
    noise_var = max(noise, floor) ** 2
    for b in range(2):
        for i in range(7):
            x, y, q = xs[b, :i].numpy(), ys[b, :i].numpy(), xs[b, i].numpy()
            pred, log_ev = np_sparse(x, y, q, nnz, 1.0 / nnz, noise_var)
            assert post.preds[b, i].item() == pytest.approx(pred, rel=1e-6, abs=1e-8)
            assert post.log_evidence[b, i, 0].item() == pytest.approx(log_ev, rel=1e-8, abs=1e-6)


@pytest.mark.parametrize("freq", [None, 0.7])
def test_sinusoid_bayes_matches_brute_force_on_its_grid(freq, monkeypatch):
    """On the shared grid alone (refinement off): the refinement is checked by its errors in
    test_bayes_exact.py."""
    monkeypatch.setattr(sinusoid_posterior, "REFINE_LEVELS", 0)
    monkeypatch.setattr(sinusoid_posterior, "REFINE_LEVELS_EARLY", 0)
    task = Sinusoid(freq=freq)
    xs, ys = draw(task, 2, 6, 1, 0.1, seed=3)
    bayes = BayesMixture(component(task, noise_std=0.1), n_grid=40)
    post = bayes.posterior(xs, ys)
    freqs, log_prior = bayes.posteriors[0].frequency_grid()
    assert math.isclose(torch.logsumexp(log_prior, 0).item(), 0.0, abs_tol=1e-12)
    for b in range(2):
        for i in range(6):
            x, y, q = xs[b, :i, 0].numpy(), ys[b, :i].numpy(), xs[b, i, 0].numpy()
            args = (freqs.numpy(), log_prior.numpy(), task._amp_scale() ** 2, 0.01)
            pred, log_ev = np_sinusoid(x[:, None], y, np.array([q]), *args)
            assert post.preds[b, i].item() == pytest.approx(pred, rel=1e-7, abs=1e-9)
            assert post.log_evidence[b, i, 0].item() == pytest.approx(log_ev, rel=1e-9, abs=1e-7)


def test_mixture_weights_and_prediction_match_brute_force():
    d, noise = 3, 0.2
    dense, sparse = DenseLinear(), SparseLinear(nnz=1)
    bayes = BayesMixture([component(dense, noise, 0.3), component(sparse, noise, 0.7)])
    xs, ys = draw(sparse, 2, 6, d, noise, seed=4)
    post = bayes.posterior(xs, ys)
    for b in range(2):
        for i in range(6):
            x, y, q = xs[b, :i].numpy(), ys[b, :i].numpy(), xs[b, i].numpy()
            p_dense, ev_dense = np_gaussian(x, y, q, 1.0 / d, noise**2)
            p_sparse, ev_sparse = np_sparse(x, y, q, 1, 1.0, noise**2)
            logw = np.log([0.3, 0.7]) + [ev_dense, ev_sparse]
            w = np.exp(logw - logw.max())
            w /= w.sum()
            np.testing.assert_allclose(post.weights[b, i].numpy(), w, rtol=1e-7, atol=1e-10)
            expected = w @ [p_dense, p_sparse]
            assert post.preds[b, i].item() == pytest.approx(expected, rel=1e-7, abs=1e-9)
    np.testing.assert_allclose(post.weights[:, 0].numpy(), [[0.3, 0.7]] * 2)  # prior, no context


def test_mixture_with_weight_one_is_its_component():
    task, noise = DenseLinear(), 0.25
    xs, ys = draw(task, 3, 9, 4, noise, seed=5)
    mixed = BayesMixture(
        [
            component(task, noise, 1.0),
            component(SparseLinear(nnz=2), noise, 0.0),
            component(ReluNet(), 0.0, 0.0),
        ]
    )
    alone = BayesMixture(component(task, noise))
    torch.testing.assert_close(mixed.predict(xs, ys), alone.predict(xs, ys), rtol=0, atol=0)
    torch.testing.assert_close(mixed.predict(xs, ys), Ridge(noise**2 * 4).predict(xs, ys))
    assert len(mixed.components) == 1


def test_linear_plus_sinusoid_mixture_in_one_dim():
    """Paper 1's d = 1 mixture: the posterior picks the class that generated the prompt."""
    bayes = BayesMixture([component(DenseLinear(), 0.0, 0.5), component(Sinusoid(), 0.0, 0.5)], n_grid=500)
    for task, idx in ((DenseLinear(), 0), (Sinusoid(), 1)):
        xs, ys = draw(task, 64, 12, 1, 0.0, seed=6)
        post = bayes.posterior(xs, ys)
        assert (post.weights[:, -1, idx] > 0.99).float().mean() > 0.9
        assert ((post.preds - ys)[:, 8:] ** 2).mean() < 0.02


def test_mixture_bayes_beats_each_component_on_mixture_data():
    """On data from the 50/50 dense + sparse mixture, the mixture's posterior mean has lower
    MSE (averaged over k = 1..N-1) than the Bayes predictor of either component alone."""
    mixture = [
        ComponentConfig("dense_linear", 0.5, 0.1),
        ComponentConfig("sparse_linear", 0.5, 0.1, {"nnz": 1}),
    ]
    sampler = Sampler(DataConfig(n_dims=6, n_points=12, batch_size=1200, mixture=mixture), seed=0)
    batch = sampler.sample_batch(0, domain=Domain.EVAL)
    xs, ys = batch.xs.double(), batch.ys.double()
    comps = sampler.mixture.components

    def err(pred):
        return ((pred - ys)[:, 1:] ** 2).mean(1)

    mix = err(BayesMixture(sampler.mixture).predict(xs, ys))
    for single in comps:
        diff = mix - err(BayesMixture(component(single.task, single.noise_std)).predict(xs, ys))
        se = diff.std() / math.sqrt(len(diff))
        assert diff.mean() < -3 * se, single.label
    assert mix.mean() > BayesMixture(sampler.mixture).irreducible_mse()


def test_noiseless_sparse_bayes_identifies_the_support():
    xs, ys = draw(SparseLinear(nnz=2), 200, 6, 8, 0.0, seed=7)
    pred = BayesMixture(component(SparseLinear(nnz=2))).predict(xs, ys)
    mse = ((pred - ys) ** 2).mean(0)
    assert mse[4] < 0.02 and mse[5] < 1e-3 and mse[1] > 0.3


def test_sinusoid_exact_limit_beats_the_old_smoothing_floor():
    """Guards the default sinusoid_noise_floor = 0 (the noiseless limit, resolved by the adaptive
    grid): the former default floor 0.01 smoothed the posterior for a fixed grid, and is far
    worse once three labels pin the frequency down."""
    task = Sinusoid()
    xs, ys = draw(task, 300, 5, 1, 0.0, seed=8)
    default = BayesMixture(component(task)).predict(xs, ys)
    smooth = BayesMixture(component(task), sinusoid_noise_floor=0.01).predict(xs, ys)
    for k in (3, 4):
        assert ((default - ys)[:, k] ** 2).mean() < 1e-3 * ((smooth - ys)[:, k] ** 2).mean()


def test_active_dims_ignore_zero_padding():
    task = SparseLinear(nnz=2)
    xs, ys = draw(task, 3, 8, 4, 0.1, seed=9)
    padded = torch.nn.functional.pad(xs, (0, 3))
    comp = component(task, 0.1)
    torch.testing.assert_close(
        BayesMixture(comp, n_dims=4).predict(padded, ys),
        BayesMixture(comp).predict(xs, ys),
        rtol=0,
        atol=0,
    )


def test_irreducible_mse_is_the_label_noise_floor():
    bayes = BayesMixture([component(DenseLinear(), 0.1, 0.25), component(SparseLinear(nnz=1), 0.3, 0.75)])
    assert bayes.irreducible_mse() == pytest.approx(0.25 * 0.01 + 0.75 * 0.09)


def test_refusals():
    with pytest.raises(ICLError, match="relu_2nn.*allowed: dense_linear, sparse_linear, sinusoid"):
        BayesMixture([component(DenseLinear(), 0.0, 0.5), component(ReluNet(), 0.0, 0.5)])
    combo = ConvexCombination(components=[{"name": "dense_linear"}, {"name": "sinusoid"}], coefs=[0.5, 0.5])
    with pytest.raises(ICLError, match="convex_combination"):
        build_baseline("bayes", mixture=component(combo))
    xs, ys = draw(Sinusoid(), 2, 5, 2, 0.0, seed=10)
    with pytest.raises(ICLError, match="sinusoid with d=2"):
        BayesMixture(component(Sinusoid())).predict(xs, ys)
    xs, ys = draw(SparseLinear(nnz=3), 1, 3, 12, 0.0, seed=11)
    with pytest.raises(ICLError, match=r"C\(12,3\)=220 supports, more than max_supports=100"):
        BayesMixture(component(SparseLinear(nnz=3)), max_supports=100).predict(xs, ys)
    with pytest.raises(ICLError, match="bayes.noise_floor"):
        BayesMixture(component(DenseLinear()), noise_floor=-1.0)


def test_every_function_class_declares_a_registered_posterior_or_none():
    declared = {name: cls.bayes_posterior for name, cls in TASKS.items()}
    assert all(key is None or key in POSTERIORS for key in declared.values()), declared
    assert {name for name, key in declared.items() if key} == {"dense_linear", "sparse_linear", "sinusoid"}

    # The mixture dispatches on the declaration alone: a class naming another's posterior gets it.
    class Relabelled(DenseLinear):
        name = "relabelled"
        bayes_posterior = "gaussian_linear"

    xs, ys = draw(DenseLinear(), 2, 6, 3, 0.2, seed=12)
    torch.testing.assert_close(
        BayesMixture(component(Relabelled(), 0.2)).predict(xs, ys),
        BayesMixture(component(DenseLinear(), 0.2)).predict(xs, ys),
        rtol=0,
        atol=0,
    )

    class Misdeclared(DenseLinear):
        name = "misdeclared"
        bayes_posterior = "nope"

    with pytest.raises(ICLError, match="misdeclared declares bayes_posterior 'nope'; allowed: gaussian_linear"):
        BayesMixture(component(Misdeclared()))


def test_bayes_and_bayes_train_are_built_per_scenario_from_their_mixture():
    dependent = {name for name, cls in BASELINES.items() if cls.scenario_dependent}
    assert dependent == {"bayes", "bayes_train", "oracle_support", "dictionary_lasso"}
    scenario = PretrainMixture([component(SparseLinear(nnz=1), 0.1)])
    train = PretrainMixture([component(DenseLinear(), 0.1)])
    xs, ys = draw(SparseLinear(nnz=1), 2, 6, 3, 0.1, seed=13)
    for cls, expected in ((BayesMixture, scenario), (BayesTrain, train)):
        built = BASELINES[cls.name].for_scenario(scenario, train)
        assert type(built) is cls
        torch.testing.assert_close(built.predict(xs, ys), BayesMixture(expected).predict(xs, ys), rtol=0, atol=0)
