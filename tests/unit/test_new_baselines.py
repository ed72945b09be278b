"""Garg et al.'s learned baselines: the batched 2-layer network against a per-prefix
nn.Module + torch.optim.Adam loop, greedy trees against scikit-learn, logistic regression
against scikit-learn, xgboost against its own fits, and the skip path for a missing package."""

import numpy as np
import pytest
import torch
from torch import nn

from icl.baselines import GD2NN, GreedyTree, GreedyTreeFull, Logistic, Unavailable, build_baseline
from icl.baselines.gd_2nn import init_params
from icl.baselines.optional import require_package
from icl.errors import ICLError


def regression(b, n, d, seed):
    """Float32-representable float64 data (scikit-learn's trees cast inputs to float32)."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, n, d, generator=g).double()
    ys = torch.randn(b, n, generator=g).double()
    return xs, ys


def test_gd_2nn_matches_a_per_prefix_module_loop():
    """Same initial weights (init_params), then per prefix: nn.Linear-ReLU-nn.Linear trained by
    torch.optim.Adam on nn.MSELoss over the whole context, as in the reference."""
    b, n, d, h, steps, lr = 2, 7, 3, 8, 30, 5e-3
    xs, ys = regression(b, n, d, seed=0)
    preds = GD2NN(hidden=h, steps=steps, lr=lr, seed=3).predict(xs, ys)
    p = init_params(b, n, d, h, 3, torch.float64)
    for bi in range(b):
        assert preds[bi, 0] == 0
        for i in range(1, n):
            net = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 1)).double()
            with torch.no_grad():
                net[0].weight.copy_(p["w1"][bi, i].T)
                net[0].bias.copy_(p["b1"][bi, i])
                net[2].weight.copy_(p["w2"][bi, i][None])
                net[2].bias.copy_(p["b2"][bi, i][None])
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                nn.functional.mse_loss(net(xs[bi, :i])[:, 0], ys[bi, :i]).backward()
                opt.step()
            with torch.no_grad():
                expected = net(xs[bi, i : i + 1])[0, 0].item()
            assert preds[bi, i].item() == pytest.approx(expected, rel=1e-9, abs=1e-10), (bi, i)


def test_gd_2nn_minibatches_are_seeded_and_full_batch_when_context_fits():
    xs, ys = regression(2, 9, 3, seed=1)
    full = GD2NN(hidden=8, steps=20).predict(xs, ys)
    torch.testing.assert_close(GD2NN(hidden=8, steps=20, batch_size=8).predict(xs, ys), full, rtol=0, atol=0)
    mini = GD2NN(hidden=8, steps=20, batch_size=3).predict(xs, ys)
    torch.testing.assert_close(GD2NN(hidden=8, steps=20, batch_size=3).predict(xs, ys), mini, rtol=0, atol=0)
    torch.testing.assert_close(mini[:, :4], full[:, :4], rtol=0, atol=0)  # contexts of <= 3 points
    assert not torch.allclose(mini[:, 4:], full[:, 4:])
    assert not torch.allclose(GD2NN(hidden=8, steps=20, seed=1).predict(xs, ys)[:, 1:], full[:, 1:])


def test_gd_2nn_fits_its_context_when_trained_longer():
    """More steps, lower training error: a network with 32 units interpolates 5 points."""
    xs, ys = regression(3, 6, 4, seed=2)
    net = GD2NN(hidden=32, steps=300, lr=2e-2)
    # Query = the last context point, repeated: the prediction at position 5 is a training fit.
    xs[:, 5] = xs[:, 4]
    short = (GD2NN(steps=5).predict(xs, ys)[:, 5] - ys[:, 4]).abs()
    long = (net.predict(xs, ys)[:, 5] - ys[:, 4]).abs()
    assert (long < 0.05).all() and (long < short).all()


def tree_reference(xs, ys, depth, seeds=24):
    """Per (prompt, prefix): the set of scikit-learn predictions over several random_states (one
    value unless equally good splits exist, which scikit-learn breaks by a random feature order)."""
    tree = pytest.importorskip("sklearn.tree")
    out = {}
    for b in range(xs.shape[0]):
        for i in range(1, xs.shape[1]):
            x, y, q = xs[b, :i].numpy(), ys[b, :i].numpy(), xs[b, i : i + 1].numpy()
            out[b, i] = {
                tree.DecisionTreeRegressor(max_depth=depth, random_state=s).fit(x, y).predict(q)[0]
                for s in range(seeds)
            }
    return out


@pytest.mark.parametrize("depth", [1, 2, 4, None])
def test_greedy_tree_matches_sklearn(depth):
    xs, ys = regression(3, 25, 4, seed=depth or 7)
    preds = GreedyTree(depth).predict(xs, ys)
    assert (preds[:, 0] == 0).all()
    unique = tied = tied_matched = 0
    for (b, i), refs in tree_reference(xs, ys, depth).items():
        if len(refs) == 1:
            unique += 1
            assert preds[b, i].item() == pytest.approx(refs.pop(), abs=1e-12), (b, i)
        else:
            tied += 1
            tied_matched += any(abs(preds[b, i].item() - r) < 1e-12 for r in refs)
    assert unique >= 10  # the exact comparison covers enough prefixes to mean something
    assert tied_matched >= 0.8 * tied  # a tie is broken like one of scikit-learn's orders


def test_greedy_tree_full_is_unlimited_depth_and_interpolates():
    xs, ys = regression(2, 12, 3, seed=4)
    full = GreedyTreeFull().predict(xs, ys)
    torch.testing.assert_close(full, GreedyTree(None).predict(xs, ys), rtol=0, atol=0)
    # A query equal to a context point lands in that point's pure leaf.
    xs[:, 11] = xs[:, 3]
    assert torch.allclose(GreedyTreeFull().predict(xs, ys)[:, 11], ys[:, 3])


def test_logistic_matches_sklearn_and_predicts_expected_label():
    lm = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(5)
    b, n, d = 3, 12, 4
    xs = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    w_true = torch.randn(b, d, generator=g, dtype=torch.float64)
    ys = torch.sign(torch.einsum("bnd,bd->bn", xs, w_true))  # separable: needs the L2 term
    for lam in (0.1, 1e-3):
        model = Logistic(lam)
        w = model.coefficients(xs, ys)
        assert torch.isfinite(w).all() and (w[:, 0] == 0).all()
        compared = 0
        for bi in range(b):
            for i in range(1, n):
                s = ys[bi, :i].numpy()
                if len(set(s)) < 2:  # scikit-learn refuses one-class data
                    continue
                ref = lm.LogisticRegression(C=1 / lam, fit_intercept=False, tol=1e-12, max_iter=10**4)
                coef = ref.fit(xs[bi, :i].numpy(), s).coef_[0]
                np.testing.assert_allclose(w[bi, i].numpy(), coef, rtol=1e-4, atol=1e-5 / lam)
                compared += 1
        assert compared >= 15
        preds = model.predict(xs, ys)
        torch.testing.assert_close(preds, torch.tanh((w * xs).sum(-1) / 2))
    # Enough context: the predicted sign is mostly right.
    assert (torch.sign(preds[:, 8:]) == ys[:, 8:]).float().mean() > 0.7


def test_xgboost_matches_direct_fits():
    xgb = pytest.importorskip("xgboost")
    xs, ys = regression(2, 6, 3, seed=6)
    preds = build_baseline("xgboost", n_estimators=10).predict(xs, ys)
    assert (preds[:, 0] == 0).all()
    torch.testing.assert_close(build_baseline("xgboost", n_estimators=10, workers=1).predict(xs, ys), preds)
    for b in range(2):
        for i in (1, 3, 5):
            model = xgb.XGBRegressor(n_estimators=10, max_depth=6, learning_rate=0.3, n_jobs=1, tree_method="exact")
            expected = model.fit(xs[b, :i].numpy(), ys[b, :i].numpy()).predict(xs[b, i : i + 1].numpy())[0]
            assert preds[b, i].item() == pytest.approx(float(expected), abs=1e-6)


def test_missing_optional_package_is_unavailable_and_skipped_by_evaluation(monkeypatch):
    import icl.baselines.optional as optional
    from icl.evaluation.run import build_baselines

    with pytest.raises(Unavailable, match=r"xgboost: needs the optional package no_such_module_x.*\[xgboost\]"):
        require_package("xgboost", "no_such_module_x", "xgboost")

    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(optional.importlib, "import_module", missing)
    with pytest.raises(Unavailable):
        build_baseline("xgboost")
    notes: list[str] = []
    built = build_baselines(["least_squares", "xgboost"], 4, notes)
    assert list(built) == ["least_squares"]
    assert len(notes) == 1 and notes[0].startswith("xgboost skipped (xgboost: needs the optional package xgboost")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("gd_2nn", {"hidden": 0}),
        ("gd_2nn", {"lr": -1.0}),
        ("gd_2nn", {"batch_size": 0}),
        ("greedy_tree", {"max_depth": 0}),
        ("greedy_tree", {"max_depth": 2.5}),
        ("logistic", {"lam": 0}),
        ("logistic", {"max_iter": 0}),
    ],
)
def test_bad_parameters_are_refused(name, kwargs):
    with pytest.raises(ICLError, match=f"{name}.{next(iter(kwargs))}: got"):
        build_baseline(name, **kwargs)
