"""Probes on synthetic representations: a representation that encodes w_OLS linearly is decoded, its
controls (re-paired OLS, shuffled targets, random features) are not; splits are by prompt; the
difference in differences is exactly 0 when the model's representation is the baseline's."""

import math

import pytest
import torch

from icl.analysis.probe import (
    MLPProbe,
    RidgeProbe,
    Split,
    check_split,
    did,
    group_targets,
    groups,
    r2,
    score,
    split_prompts,
)
from icl.analysis.probe_run import baseline_model, default_ks, parse_settings, probe_representation, resolve
from icl.analysis.probe_targets import TargetSet, control_r2, refusal, repair
from icl.baselines.lasso import Lasso
from icl.baselines.linear import LeastSquares, Ridge
from icl.errors import ICLError
from icl.rng import Domain
from icl.sampling import ComponentConfig, DataConfig, Sampler

D, N, P = 5, 12, 1500
KS = [3, 8, 12]


def prompts(mixture=None, n=P, noise=0.0):
    comps = mixture or [ComponentConfig("dense_linear", 1.0, noise)]
    cfg = DataConfig(n_dims=D, n_points=N, mixture=comps)
    return Sampler(cfg, 7).sample_batch(0, batch_size=n, domain=Domain.PROBE, n_points=N, n_dims=D)


@pytest.fixture(scope="module")
def dense():
    batch = prompts(noise=0.1)  # noise: w_OLS is not w itself
    targets = TargetSet(batch.xs, batch.ys, batch.info, KS, seed=7)
    return batch, targets, split_prompts(P, 7, 0)


def linear_code(target, width=24, seed=0):
    """A representation (1 layer, P, K, width) that holds ``target`` (P, K, O) in random directions."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(target.shape[-1], width, generator=g, dtype=torch.float64)
    return (target @ mix).float()[None]


def ridge_r2(h, y, split):
    pred, _ = RidgeProbe(groups(h), split).predict(group_targets(y, h.shape[0]))
    return r2(pred, group_targets(y, h.shape[0])[:, split.test])


def test_probe_decodes_a_linear_code_of_w_ols_and_not_its_controls(dense):
    _, targets, split = dense
    ols = targets.values("ols")
    h = linear_code(ols)
    assert (ridge_r2(h, ols, split) > 0.99).all()
    control, valid = targets.control("ols")
    assert valid == [True, True, True]
    assert (ridge_r2(h, control, split).abs() < 0.05).all()  # re-paired OLS
    shuffled = ols[torch.randperm(P, generator=torch.Generator().manual_seed(1))]
    assert (ridge_r2(h, shuffled, split).abs() < 0.05).all()
    noise = torch.randn(h.shape, generator=torch.Generator().manual_seed(2))
    assert (ridge_r2(noise, ols, split).abs() < 0.05).all()  # random features


def test_mlp_probe_decodes_a_linear_code_and_not_random_features(dense):
    _, targets, split = dense
    ols = targets.values("ols")[:, -1:]
    h = linear_code(ols)
    y = group_targets(ols, 1)
    pred, epochs = MLPProbe(groups(h), split, 7, 0).predict(y)
    assert r2(pred, y[:, split.test]).item() > 0.95 and epochs.item() >= 1
    noise = torch.randn(h.shape, generator=torch.Generator().manual_seed(3))
    pred, _ = MLPProbe(groups(noise), split, 7, 0).predict(y)
    assert abs(r2(pred, y[:, split.test]).item()) < 0.05


def test_ridge_penalty_is_chosen_on_validation(dense):
    _, targets, split = dense
    ols = targets.values("ols")
    noisy = linear_code(ols) + 30 * torch.randn(1, P, len(KS), 24, generator=torch.Generator().manual_seed(4))
    clean = linear_code(ols)
    _, lam_noisy = RidgeProbe(groups(noisy), split).predict(group_targets(ols, 1))
    _, lam_clean = RidgeProbe(groups(clean), split).predict(group_targets(ols, 1))
    assert (lam_noisy > lam_clean).all()  # heavy feature noise calls for a larger penalty


def test_targets_are_the_baselines_fits_on_the_first_i_examples(dense):
    batch, targets, _ = dense
    xs, ys = batch.xs, batch.ys
    for name, predictor in (("ols", LeastSquares()), ("ridge", Ridge()), ("lasso", Lasso())):
        w = targets.values(name)  # (P, K, D)
        preds = predictor.predict(xs, ys).double()
        for j, k in enumerate(KS[:-1]):  # the prediction at query k uses the fit on examples 0..k-1
            torch.testing.assert_close((w[:, j] * xs[:, k].double()).sum(-1), preds[:, k], atol=1e-5, rtol=1e-5)
    xty = targets.values("xty")[:, 0]
    torch.testing.assert_close(xty, (xs[:, :3].double() * ys[:, :3, None].double()).sum(1))
    true_w = targets.values("w")[:, 0]
    torch.testing.assert_close(true_w, batch.info["params"][0]["w"].double())


def test_least_squares_target_is_the_true_function_on_noiseless_data():
    batch = prompts()
    targets = TargetSet(batch.xs, batch.ys, batch.info, [D, N], seed=7)
    # f(x) = w.x / sqrt(d): least squares recovers w / sqrt(d) once i >= d (up to float32 labels; at i = d
    # the square systems are the worst conditioned)
    ols, w = targets.values("ols"), targets.values("w") / math.sqrt(D)
    torch.testing.assert_close(ols[:, 0], w[:, 0], atol=1e-3, rtol=1e-2)
    torch.testing.assert_close(ols[:, 1], w[:, 1], atol=1e-5, rtol=1e-4)


def test_estimators_without_examples_are_zero():
    batch = prompts(n=20)
    targets = TargetSet(batch.xs, batch.ys, batch.info, [0, 3], seed=0)
    for name in ("ols", "ridge", "lasso", "xty"):
        values = targets.values(name)
        assert torch.equal(values[:, 0], torch.zeros(20, D, dtype=torch.float64)) and values[:, 1].abs().sum() > 0


def test_repairing_moves_every_label_and_keeps_the_tokens():
    ys = torch.arange(40.0).reshape(4, 10)
    out = repair(ys, 6, torch.Generator().manual_seed(0))
    assert (out[:, :6] != ys[:, :6]).all()  # a derangement: no x_j keeps its y_j
    assert torch.equal(out[:, :6].sort(1).values, ys[:, :6])
    assert torch.equal(out[:, 6:], ys[:, 6:])
    with pytest.raises(ICLError, match="2 or more"):
        repair(ys, 1, torch.Generator())


def test_control_without_a_pair_to_repair_is_marked_absent():
    batch = prompts(n=50)
    control, valid = TargetSet(batch.xs, batch.ys, batch.info, [1, 4], seed=0).control("ols")
    assert valid == [False, True] and torch.equal(control[:, 0], torch.zeros(50, D, dtype=torch.float64))


def test_a_control_linearly_predictable_from_the_target_is_refused(dense):
    _, targets, split = dense
    ols = targets.values("ols")
    control, _ = targets.control("ols")
    r2_repaired = control_r2(ols, control, split.train, split.test)
    assert (r2_repaired < 0.1).all() and refusal(float(r2_repaired.max()), "ols", 8) is None
    mix = torch.randn(D, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    leaky = 0.5 * control + ols @ mix  # half alternative, half a linear image of the real target
    r2_leaky = control_r2(ols, leaky, split.train, split.test)
    message = refusal(float(r2_leaky[1]), "ols", 8)
    assert r2_leaky.min() > 0.1 and "refused" in message and "re-paired ols" in message and "i=8" in message


def test_targets_that_do_not_apply_are_skipped_with_a_reason():
    batch = prompts(n=20)
    targets = TargetSet(batch.xs, batch.ys, batch.info, [3], seed=0)
    assert targets.skip_reason("ols") is None and targets.skip_reason("w") is None
    assert "no sparse class" in targets.skip_reason("support")
    assert "one class" in targets.skip_reason("component")
    sparse = prompts([ComponentConfig("dense_linear", 0.5), ComponentConfig("sparse_linear", 0.5, params={"nnz": 2})])
    targets = TargetSet(sparse.xs, sparse.ys, sparse.info, [3], seed=0)
    assert targets.skip_reason("support") is None and targets.skip_reason("component") is None
    support, component = targets.values("support")[:, 0], targets.values("component")[:, 0]
    is_sparse = sparse.info["component"] == 1
    assert (support[is_sparse].sum(1) == 2).all() and (support[~is_sparse] == 1).all()
    assert torch.equal(component.argmax(1), sparse.info["component"])
    sine = prompts([ComponentConfig("sinusoid", 1.0)], n=20)
    assert "no weight vector" in TargetSet(sine.xs, sine.ys, sine.info, [3], seed=0).skip_reason("w")


def test_split_is_by_prompt_and_a_prompt_in_two_parts_raises():
    split = split_prompts(100, 0, 0)
    every = torch.cat([split.train, split.val, split.test])
    assert torch.equal(every.sort().values, torch.arange(100)) and split.sizes() == {"train": 60, "val": 20, "test": 20}
    assert not torch.equal(split_prompts(100, 0, 1).train, split.train)  # another probe seed, another split
    check_split(split)
    with pytest.raises(ICLError, match="prompt 5 is in both train and test"):
        check_split(Split(torch.arange(0, 60), torch.arange(60, 80), torch.tensor([5, *range(81, 100)])))
    xs, ys = torch.randn(100, 4, 2), torch.randn(100, 4)
    check_split(split, xs, ys)
    xs[split.test[0]], ys[split.test[0]] = xs[split.train[0]], ys[split.train[0]]  # the same prompt twice
    with pytest.raises(ICLError, match="same prompt in more than one part"):
        check_split(split, xs, ys)


@pytest.mark.parametrize("probe", ["ridge", "mlp"])
def test_did_is_exactly_zero_when_the_model_representation_is_the_baselines(dense, probe):
    _, targets, split = dense
    ols, (control, _) = targets.values("ols").float(), targets.control("ols")
    values = {"ols": ("vector", ols, control.float())}
    base = torch.randn(2, P, len(KS), 16, generator=torch.Generator().manual_seed(6))
    model = base.clone()  # the "model" is the baseline's representation
    a = probe_representation(model, values, split, probe, 7, 0)["ols"]
    b = probe_representation(base, values, split, probe, 7, 0)["ols"]
    score_did = did(a["real"]["r2"], a["control"]["r2"], b["real"]["r2"], b["control"]["r2"])
    assert score_did.shape == (2, len(KS)) and torch.equal(score_did, torch.zeros_like(score_did))
    assert not torch.equal(a["real"]["r2"], torch.zeros_like(a["real"]["r2"]))


def test_scores_of_each_kind():
    y = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    perfect = score("vector", y, y)
    assert perfect["r2"].item() == 1.0 and abs(perfect["cosine"].item() - 1.0) < 1e-12
    assert score("binary", y * 0.9, y)["accuracy"].item() == 1.0
    assert score("binary", 1 - y, y)["accuracy"].item() == 0.0
    onehot = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert score("classes", torch.tensor([[[0.7, 0.3], [0.6, 0.4]]]), onehot)["accuracy"].item() == 0.5
    assert torch.isnan(r2(y, torch.ones_like(y)))  # a constant target has no R^2


def test_settings_are_checked_with_one_line_each():
    s = parse_settings("0,2", "x", "0,3", "w,ols", 100, "ridge", 2)
    assert (s.layers, s.ks, s.targets, s.probes) == ([0, 2], [0, 3], ["w", "ols"], ("ridge",))
    for args, match in [
        (("all", "z", None, None, 100, "both", 1), "--position"),
        (("all", "y", None, "w,bogus", 100, "both", 1), "--targets: got 'bogus'"),
        (("all", "y", None, None, 100, "svm", 1), "--probe"),
        (("all", "y", None, None, 5, "both", 1), "--n-prompts"),
        (("all", "y", None, None, 100, "both", 0), "--probe-seeds"),
        (("a,b", "y", None, None, 100, "both", 1), "--layers"),
        (("all", "y", "1,x", None, 100, "both", 1), "--ks"),
    ]:
        with pytest.raises(ICLError, match=match):
            parse_settings(*args)
    assert default_ks(20, "y", 41) == [10, 20, 30, 41] and default_ks(5, "x", 11) == [2, 5, 7, 10]
    with pytest.raises(ICLError, match=r"--layers: got 4; allowed: all or numbers in 0 \(embedding\) .. 3"):
        resolve(parse_settings("4", "y", None, None, 100, "both", 1), 4, 5, 11)
    with pytest.raises(ICLError, match=r"--ks: got 0; allowed: numbers in 1 .. 11 for --position y"):
        resolve(parse_settings("all", "y", "0", None, 100, "both", 1), 4, 5, 11)


def test_baseline_is_a_seeded_fresh_model_of_the_same_architecture():
    from icl.config import load_config
    from icl.models import build_model

    cfg = load_config([], ["data.n_dims=3", "data.n_points=6", "model.n_layer=1", "model.n_embd=16", "model.n_head=2"])
    model = build_model(cfg.model, 3)
    state = torch.get_rng_state()
    a, b = baseline_model(model, cfg), baseline_model(model, cfg)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert list(a.state_dict()) == list(model.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.read_in.weight, model.read_in.weight)
