"""Baselines: the no-leakage contract for every registered predictor, closed forms and
reference solvers (numpy lstsq, scikit-learn Lasso) on every prefix, and the registry."""

import math
import re

import numpy as np
import pytest
import torch

from icl.baselines import (
    BASELINES,
    KNN,
    Averaging,
    CheckpointPredictor,
    Lasso,
    LassoCV,
    LeastSquares,
    Predictor,
    Ridge,
    Unavailable,
    build_baseline,
    component,
    register,
)
from icl.baselines.base import prefix_stats
from icl.baselines.lasso_solver import _path, duality_gap, lasso_path, objective, solve_lasso
from icl.errors import ICLError
from icl.model import ICLTransformer, ModelConfig
from icl.tasks import DenseLinear, SparseLinear


def data(b=3, n=10, d=4, seed=0, noise=0.5):
    """Float64 prompts: a random linear function plus noise (so fits are not exact)."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    w = torch.randn(b, d, generator=g, dtype=torch.float64)
    ys = torch.einsum("bnd,bd->bn", xs, w) + noise * torch.randn(b, n, generator=g, dtype=torch.float64)
    return xs, ys


def tiny_model(d):
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, max_points=16)
    torch.manual_seed(0)
    return ICLTransformer(cfg, d).double()


BAYES_CASE = {
    "mixture": [
        component(DenseLinear(), noise_std=0.5, weight=0.5),
        component(SparseLinear(nnz=2), noise_std=0.5, weight=0.5),
    ]
}
# Arguments for the registered baselines that need some (or are tested with non-defaults); every
# other registry entry is built with its defaults, so a new baseline is covered by every test
# parametrised over BASELINES without an entry here.
CASES = {
    "knn": {"k": 2},
    "ridge": {"lam": 0.3},
    "lasso": {"alpha": 0.05},
    "lasso_cv": {"n_alphas": 4, "folds": 3},
    "bayes": BAYES_CASE,
    "bayes_train": BAYES_CASE,
    "checkpoint": {"model": "tiny_model"},
    # Learned per-prefix fits: small settings keep these generic tests fast (their defaults are
    # tested in tests/unit/test_new_baselines.py and measured in benchmarks/bench_baselines.py).
    "gd_2nn": {"steps": 10},
    "xgboost": {"n_estimators": 10},
    # Dictionary baselines (icl/baselines/oracle.py): atoms linear0, square2 and cube3 of 4-d inputs.
    "oracle_support": {"support": [0, 6, 11], "atoms": ["linear", "square", "cube"]},
    "dictionary_lasso": {"alpha": 0.05, "atoms": ["linear", "square", "cube"]},
}


def build(name, d=4):
    """The baseline with its CASES arguments; skipped where its optional package is missing."""
    kwargs = dict(CASES.get(name, {}))
    if kwargs.get("model") == "tiny_model":
        kwargs["model"] = tiny_model(d)
    try:
        return build_baseline(name, **kwargs)
    except Unavailable as e:
        pytest.skip(str(e))


def test_registry_keys_are_snake_case_and_cases_name_registered_baselines():
    assert set(CASES) <= set(BASELINES)
    assert all(re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name) for name in BASELINES), sorted(BASELINES)


def test_a_baseline_without_predict_is_refused_when_registered():
    nothing = type("Nothing", (Predictor,), {"name": "nothing"})
    with pytest.raises(ICLError, match=r"^baseline Nothing: predict not defined; allowed: a class that defines them$"):
        register(nothing)
    assert "nothing" not in BASELINES


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_leakage(name):
    """preds[:, :i+1] ignore ys[:, i:] and xs[:, i+1:], for several split points i."""
    xs, ys = data(n=10, d=4)
    predictor = build(name)
    base = predictor.predict(xs, ys)
    assert base.shape == ys.shape and base.dtype == ys.dtype and torch.isfinite(base).all()
    g = torch.Generator().manual_seed(1)
    changed_later = False
    for i in (0, 1, 4, 8):
        xs2, ys2 = xs.clone(), ys.clone()
        ys2[:, i:] = 5 * torch.randn(ys2[:, i:].shape, generator=g, dtype=torch.float64)
        xs2[:, i + 1 :] = 3 * torch.randn(xs2[:, i + 1 :].shape, generator=g, dtype=torch.float64)
        out = predictor.predict(xs2, ys2)
        torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1], rtol=1e-9, atol=1e-9)
        changed_later |= not torch.allclose(out[:, i + 1 :], base[:, i + 1 :])
    # The perturbation must reach later predictions, or the test above proves nothing.
    assert changed_later or name == "zero"


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_float32_in_float32_out(name):
    xs, ys = data(n=6, d=4)
    predictor = build(name)
    out = predictor.predict(xs.float(), ys.float())
    assert out.dtype == torch.float32 and out.shape == ys.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_zero_context_predicts_zero(name):
    """Without context every baseline (and the zero-mean Bayes prior) predicts 0... except a
    model, whose first prediction is whatever it learned."""
    if name == "checkpoint":
        pytest.skip("a model's zero-context prediction is learned")
    xs, ys = data(n=5, d=4)
    assert torch.equal(build(name).predict(xs, ys)[:, 0], torch.zeros(xs.shape[0], dtype=ys.dtype))


def test_registry_errors():
    with pytest.raises(ICLError, match="unknown baseline 'nope'; allowed: averaging, bayes"):
        build_baseline("nope")
    with pytest.raises(ICLError, match="ridge: unknown parameter.*alpha; allowed: lam"):
        build_baseline("ridge", alpha=1.0)
    for name, kwargs in [
        ("knn", {"k": 0}),
        ("ridge", {"lam": -1.0}),
        ("ridge", {"lam": float("nan")}),
        ("lasso", {"alpha": 0}),
        ("lasso", {"tol": 2.0}),
        ("lasso_cv", {"folds": 1}),
        ("lasso_cv", {"alphas": []}),
        ("checkpoint", {}),
        ("bayes", {}),
    ]:
        with pytest.raises(ICLError, match=name.split("_")[0]):
            build_baseline(name, **kwargs)


def test_bad_shapes_are_refused():
    with pytest.raises(ICLError, match=r"xs \(B, N, D\) and ys \(B, N\)"):
        LeastSquares().predict(torch.zeros(2, 5, 3), torch.zeros(2, 4))


def test_least_squares_matches_numpy_lstsq_on_every_prefix():
    """k < d, k = d and k > d, including a rank-deficient design (a repeated column), where
    only the minimum-norm solution is unique."""
    xs, ys = data(b=3, n=12, d=6, seed=3)
    xs[1, :, 5] = xs[1, :, 0]  # rank-deficient prompt
    xs[2, :, 5] = xs[2, :, 0] + 1e-6 * torch.randn(12, dtype=torch.float64)  # ill-conditioned
    preds = LeastSquares().predict(xs, ys)
    x, y = xs.numpy(), ys.numpy()
    for b in range(x.shape[0]):
        for i in range(1, x.shape[1]):
            w = np.linalg.lstsq(x[b, :i], y[b, :i], rcond=None)[0]
            assert preds[b, i].item() == pytest.approx(w @ x[b, i], rel=1e-7, abs=1e-7), (b, i)


def test_ridge_matches_closed_form():
    xs, ys = data(b=2, n=9, d=5, seed=5)
    lam = 0.7
    preds = Ridge(lam).predict(xs, ys)
    x, y = xs.numpy(), ys.numpy()
    for b in range(2):
        for i in range(9):
            w = np.linalg.solve(x[b, :i].T @ x[b, :i] + lam * np.eye(5), x[b, :i].T @ y[b, :i])
            assert preds[b, i].item() == pytest.approx(w @ x[b, i], rel=1e-10, abs=1e-12)


def test_least_squares_error_curve_is_one_minus_k_over_d():
    """Noiseless normalised dense data, x ~ N(0, I): E error = 1 - k/d for k < d, 0 after."""
    b, n, d = 3000, 12, 8
    g = torch.Generator().manual_seed(7)
    task = DenseLinear()
    xs = torch.randn(b, n, d, generator=g)
    ys = task.apply(task.sample_params(b, d, g), xs)
    err = (LeastSquares().predict(xs.double(), ys.double()) - ys.double()) ** 2
    mean, se = err.mean(0), err.std(0) / math.sqrt(b)
    for k in range(n):
        expected = max(0.0, 1 - k / d)
        assert abs(mean[k].item() - expected) < 4 * se[k].item() + 1e-6, (k, mean[k].item())


def test_averaging_and_knn_match_direct_loops():
    xs, ys = data(b=2, n=7, d=3, seed=8)
    avg, knn = Averaging().predict(xs, ys), KNN(k=3).predict(xs, ys)
    for b in range(2):
        for i in range(7):
            x, y, q = xs[b, :i], ys[b, :i], xs[b, i]
            w_hat = (y[:, None] * x).mean(0) if i else torch.zeros(3, dtype=torch.float64)
            assert avg[b, i].item() == pytest.approx((w_hat @ q).item(), abs=1e-12)
            if i == 0:
                assert knn[b, i].item() == 0.0
                continue
            order = sorted(range(i), key=lambda j: (x[j] - q).norm().item())[:3]
            assert knn[b, i].item() == pytest.approx(y[order].mean().item(), abs=1e-12)


def sparse_problems(seed, b=4, n=14, d=8, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    task = SparseLinear(nnz=2, normalize=False)
    xs = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    ys = task.apply(task.sample_params(b, d, g), xs).double()
    return xs, ys + noise * torch.randn(b, n, generator=g, dtype=torch.float64)


def test_lasso_satisfies_kkt_on_every_prefix():
    """Stationarity: X^T (y - X w) / k = alpha sign(w_j) where w_j != 0, |.| <= alpha else."""
    for xs, ys in (sparse_problems(1), data(b=3, n=12, d=6, seed=2)):
        alpha = 0.05
        w = Lasso(alpha).coefficients(xs, ys)
        for b in range(xs.shape[0]):
            for i in range(1, xs.shape[1]):
                x, y = xs[b, :i], ys[b, :i]
                corr = x.T @ (y - x @ w[b, i]) / i
                on = w[b, i] != 0
                assert torch.allclose(corr[on], alpha * torch.sign(w[b, i][on]), atol=1e-9)
                assert (corr[~on].abs() <= alpha + 1e-9).all()


def test_lasso_matches_sklearn_objective():
    sk = pytest.importorskip("sklearn.linear_model")
    for (xs, ys), alpha in ((sparse_problems(2), 0.01), (data(b=3, n=11, d=5, seed=6), 0.2)):
        w = Lasso(alpha).coefficients(xs, ys)
        for b in range(xs.shape[0]):
            for i in range(1, xs.shape[1]):
                x, y = xs[b, :i].numpy(), ys[b, :i].numpy()
                ref = sk.Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=10**6).fit(x, y)
                obj_ref = 0.5 * np.mean((y - x @ ref.coef_) ** 2) + alpha * np.abs(ref.coef_).sum()
                ours = 0.5 * np.mean((y - x @ w[b, i].numpy()) ** 2) + alpha * w[b, i].abs().sum().item()
                assert ours <= obj_ref * (1 + 1e-6) + 1e-12, (b, i)
                assert abs(ours - obj_ref) <= 1e-4 * obj_ref, (b, i)


def test_lasso_path_targets_and_certificate():
    """Several penalties per problem from one path: each solution has a duality gap at the
    stated tolerance, and objectives fall as the penalty falls."""
    xs, ys = sparse_problems(3, b=6, n=10, d=7)
    x, y = xs.reshape(-1, 7), ys.reshape(-1)
    gram, xty, yty = (x.T @ x / len(y))[None], (x.T @ y / len(y))[None], (y @ y / len(y))[None]
    lam_max = xty.abs().max()
    alphas = lam_max * torch.tensor([[1.5, 0.5, 0.1, 0.02, 0.004]], dtype=torch.float64)
    coef = solve_lasso(gram, xty, yty, alphas, tol=1e-10)
    gap = duality_gap(gram, xty, yty, alphas, coef)
    assert (gap <= 1e-10 * yty[:, None]).all()
    assert (coef[0, 0] == 0).all() and (coef[0, 1:] != 0).any(-1).all()
    obj = objective(gram, xty, yty, alphas, coef)
    assert (obj[:, 1:] < obj[:, :-1]).all()
    assert int((coef[0, -1] != 0).sum()) > int((coef[0, 1] != 0).sum())


def test_homotopy_alone_is_exact_on_random_problems():
    """The path solver without its fallback: n < d, n = d, n > d, collinear columns."""
    g = torch.Generator().manual_seed(9)
    probs, d = 300, 8
    n = torch.randint(1, 16, (probs,), generator=g)
    x = torch.randn(probs, 16, d, generator=g, dtype=torch.float64)
    x[::7, :, 3] = x[::7, :, 2]  # duplicated columns: G_AA singular if both would enter
    x = x * (torch.arange(16)[None, :, None] < n[:, None, None])
    y = (x[..., :3] @ torch.randn(probs, 3, 1, generator=g, dtype=torch.float64))[..., 0]
    y = y + 0.3 * torch.randn(y.shape, generator=g, dtype=torch.float64) * (x[..., 0] != 0)
    nf = n.double()
    gram, xty, yty = (
        x.mT @ x / nf[:, None, None],
        (x.mT @ y[..., None])[..., 0] / nf[:, None],
        (y * y).sum(-1) / nf,
    )
    alphas = torch.tensor([0.3, 0.05, 0.01], dtype=torch.float64).expand(probs, -1)
    coef, ok = lasso_path(gram, xty, alphas)
    assert ok.float().mean() > 0.95
    gap = duality_gap(gram, xty, yty, alphas, coef)
    assert (gap[ok] <= 1e-12 * yty[ok, None]).all()


def test_lasso_path_runs_the_same_in_numpy_and_torch():
    """On CPU the path runs in numpy; on other devices the same code runs in torch. Both must
    give the same solutions (up to summation order) and the same ``ok`` flags."""
    xs, ys = sparse_problems(10, b=16, n=14, d=8, noise=0.1)
    st = prefix_stats(xs, ys)
    gram, xty = st.gram.reshape(-1, 8, 8), st.xty.reshape(-1, 8)
    alphas = (st.count.repeat(16)[:, None] * torch.tensor([[0.3, 0.05, 0.01, 1e-3]])).double()
    coef_np, ok_np = lasso_path(gram, xty, alphas)
    coef_t, ok_t = _path(torch, gram, xty, alphas, None)
    assert coef_t.dtype == coef_np.dtype == torch.float64
    assert torch.equal(ok_np, ok_t) and bool(ok_np.all())
    torch.testing.assert_close(coef_np, coef_t, rtol=0, atol=1e-10)
    assert (coef_np[:, -1] != 0).sum() > (coef_np[:, 0] != 0).sum()  # the path went somewhere


def test_lasso_cv_matches_brute_force_cross_validation():
    """Fold j mod K, squared error on held-out points summed, argmin over the grid (ties to
    the larger penalty), refit on the whole context: against scikit-learn fits."""
    sk = pytest.importorskip("sklearn.linear_model")
    xs, ys = sparse_problems(4, b=2, n=9, d=4, noise=0.3)
    grid, folds = [0.5, 0.1, 0.02], 3
    preds = LassoCV(alphas=grid, folds=folds, tol=1e-12).predict(xs, ys)

    def fit(x, y, a):
        if len(y) == 0:
            return np.zeros(x.shape[1])
        return sk.Lasso(alpha=a, fit_intercept=False, tol=1e-14, max_iter=10**6).fit(x, y).coef_

    for b in range(2):
        for i in range(1, 9):
            x, y = xs[b, :i].numpy(), ys[b, :i].numpy()
            fold = np.arange(i) % folds
            scores = [
                sum(
                    ((y[fold == f] - x[fold == f] @ fit(x[fold != f], y[fold != f], a)) ** 2).sum()
                    for f in range(folds)
                )
                for a in grid
            ]
            best = grid[int(np.argmin(scores))]
            expected = fit(x, y, best) @ xs[b, i].numpy()
            assert preds[b, i].item() == pytest.approx(expected, rel=1e-6, abs=1e-8), (b, i)


def test_lasso_cv_with_one_penalty_is_lasso():
    xs, ys = sparse_problems(5)
    torch.testing.assert_close(LassoCV(alphas=[0.03]).predict(xs, ys), Lasso(0.03).predict(xs, ys))


def test_checkpoint_predictor_restores_mode_and_device_dtype():
    model = tiny_model(4).float().train()
    xs, ys = data(n=6, d=4)
    out = CheckpointPredictor(model, "tiny").predict(xs, ys)
    assert out.dtype == torch.float64 and model.training
    with torch.no_grad():
        model.eval()
        ref = model.predict(xs.float(), ys.float())
    torch.testing.assert_close(out, ref.double())


@pytest.mark.parametrize("shape", [(3, 7, 2), (2, 9, 4096)])  # torch.cumsum path; per-position loop path
def test_exclusive_cumsum_sums_strictly_earlier_entries_bit_for_bit(shape):
    from icl.baselines.base import exclusive_cumsum

    t = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = exclusive_cumsum(t, dim=1)
    assert (out[:, 0] == 0).all()
    shifted = torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], 1)
    assert torch.equal(out, torch.cumsum(shifted, 1))  # the same additions in the same order
    t2 = t.clone()
    t2[:, 5:] = 1e9  # later entries never reach earlier prefixes
    assert torch.equal(exclusive_cumsum(t2, dim=1)[:, :6], out[:, :6])
