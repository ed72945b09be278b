"""Evaluation: scenarios build, query shifts do what they say, curves are reproducible and
their bootstrap intervals contain the mean."""

import numpy as np
import pytest
import torch

from icl.baselines import build_baseline
from icl.config import load_config
from icl.errors import ICLError
from icl.evaluation.curves import CurveResult, error_curves
from icl.evaluation.ks import interesting_ks
from icl.evaluation.queries import QUERY_SHIFTS, orthogonal_queries, predict_at_queries, repeated_queries
from icl.evaluation.run import checkpoint_labels
from icl.evaluation.scenarios import SCENARIOS, build_suite, suites
from icl.evaluation.scenarios.base import Scenario, single
from icl.sampling import Sampler

D20 = load_config([], ["model.max_points=60"])
D1 = load_config(
    [], ["data.n_dims=1", "data.mixture=[{name: dense_linear, weight: 0.5}, {name: sinusoid, weight: 0.5}]"]
)


@pytest.mark.parametrize("cfg", [D20, D1], ids=["d20", "d1"])
@pytest.mark.parametrize("family", sorted(SCENARIOS))
def test_every_scenario_builds_and_samples(cfg, family):
    sampler = Sampler(cfg.data, 0)
    for sc in build_suite(family, cfg, sampler.mixture):
        b = sampler.sample_batch(
            0, batch_size=3, n_points=sc.n_points or 5, n_dims=cfg.data.n_dims, inputs=sc.inputs, mixture=sc.mixture
        )
        assert torch.isfinite(b.ys).all()


def test_suites_name_known_families_and_unknown_names_fail():
    assert list(suites())[:5] == ["in_distribution", "paper1_dense_sparse", "paper1_sinusoid", "robustness", "length"]
    assert all(f in SCENARIOS for fams in suites().values() for f in fams)
    with pytest.raises(ICLError, match="unknown suite or scenario 'nope'; allowed suites: in_distribution, "):
        build_suite("nope", D20, Sampler(D20.data, 0).mixture)


def test_unknown_query_shift_fails_when_the_scenario_is_built():
    with pytest.raises(ICLError, match="scenario s: unknown query shift 'sideways'; allowed: orthant_context, "):
        Scenario("s", "s", single("dense_linear"), query="sideways")
    with pytest.raises(ICLError, match="unknown query shift 'sideways'"):
        error_curves({}, Sampler(D20.data, 0), 10, query="sideways")


@pytest.mark.parametrize("name", sorted(QUERY_SHIFTS))
def test_every_query_shift_runs_and_is_reproducible(name):
    cfg = load_config([], ["data.n_dims=3", "data.n_points=6"])
    preds = {"ls": build_baseline("least_squares").predict}
    a = error_curves(preds, Sampler(cfg.data, 0), 30, query=name).sq_errors["ls"]
    b = error_curves(preds, Sampler(cfg.data, 0), 30, query=name).sq_errors["ls"]
    assert a.shape == (30, 6) and np.isfinite(a).all() and np.array_equal(a, b)


def test_negated_queries_negate_an_earlier_context_input():
    g = torch.Generator().manual_seed(0)
    xs, fresh = torch.randn(5, 7, 3, generator=g), torch.randn(5, 7, 3, generator=g)
    ctx, q = QUERY_SHIFTS["negated"](xs, fresh, g)
    assert ctx is xs and torch.equal(q[:, 0], fresh[:, 0])
    for b in range(5):
        for i in range(1, 7):
            assert any(torch.equal(q[b, i], -xs[b, j]) for j in range(i))


@pytest.mark.parametrize(
    "d,n,expected", [(20, 41, [1, 10, 20, 40]), (5, 11, [1, 2, 5, 10]), (1, 3, [1, 2]), (3, 2, [1]), (4, 1, [0])]
)
def test_interesting_ks(d, n, expected):
    assert interesting_ks(d, n) == expected


def test_orthogonal_queries_are_orthogonal_to_their_context():
    g = torch.Generator().manual_seed(0)
    xs, fresh = torch.randn(4, 8, 5, generator=g), torch.randn(4, 8, 5, generator=g)
    q = orthogonal_queries(xs, fresh)
    for i in range(1, 8):
        dots = torch.einsum("bjd,bd->bj", xs[:, :i], q[:, i])
        assert dots.abs().max() < 1e-4
    assert q[:, 5:].abs().max() < 1e-4 and q[:, :5].norm(dim=-1).min() > 1e-3  # R^5 is spanned after 5


def test_repeated_queries_pick_earlier_inputs():
    g = torch.Generator().manual_seed(0)
    xs, fresh = torch.randn(6, 7, 3, generator=g), torch.randn(6, 7, 3, generator=g)
    q = repeated_queries(xs, fresh, g)
    assert torch.equal(q[:, 0], fresh[:, 0])
    for b in range(6):
        for i in range(1, 7):
            assert any(torch.equal(q[b, i], xs[b, j]) for j in range(i))


def test_predict_at_queries_equals_one_prompt_per_position():
    g = torch.Generator().manual_seed(1)
    xs, ys, q = torch.randn(3, 6, 4, generator=g), torch.randn(3, 6, generator=g), torch.randn(3, 6, 4, generator=g)
    ls = build_baseline("least_squares")
    out = predict_at_queries(ls.predict, xs, ys, q)
    for i in range(6):
        prompt = torch.cat([xs[:, :i], q[:, i : i + 1]], dim=1)
        torch.testing.assert_close(out[:, i], ls.predict(prompt, ys[:, : i + 1])[:, i])


def test_curves_are_reproducible_and_independent_of_prompt_count():
    cfg = load_config([], ["data.n_dims=4", "data.n_points=8"])
    sampler = Sampler(cfg.data, 7)
    preds = {"least_squares": build_baseline("least_squares").predict, "averaging": build_baseline("averaging").predict}
    a = error_curves(preds, sampler, 150)
    b = error_curves(preds, Sampler(cfg.data, 7), 150)
    c = error_curves(preds, sampler, 120)
    assert np.array_equal(a.sq_errors["averaging"], b.sq_errors["averaging"])
    assert np.array_equal(a.sq_errors["averaging"][:120], c.sq_errors["averaging"])


def test_least_squares_curve_follows_one_minus_k_over_d():
    d = 8
    cfg = load_config([], [f"data.n_dims={d}", "data.n_points=12"])
    result = error_curves({"ls": build_baseline("least_squares").predict}, Sampler(cfg.data, 0), 2000)
    mean = result.sq_errors["ls"].mean(axis=0)
    for k in range(12):
        expected = max(0.0, 1 - k / d)
        se = result.sq_errors["ls"][:, k].std() / np.sqrt(2000)
        assert abs(mean[k] - expected) < 5 * se + 1e-6


def test_bootstrap_interval_contains_the_mean():
    rng = np.random.default_rng(0)
    res = CurveResult({"p": rng.exponential(size=(500, 6))}, n_dims=3)
    stats = res.summary()["p"]
    for m, lo, hi in zip(stats["mean"], stats["ci_low"], stats["ci_high"], strict=True):
        assert lo < m < hi
        assert hi - lo < 0.5  # ~ 2 * 1.645 * sd / sqrt(500) = 0.15 for unit-sd data


def test_checkpoint_labels_are_unique_per_file_or_refused(tmp_path):
    def ckpt(*parts):
        path = tmp_path.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return str(path)

    a_last, a_step = ckpt("a", "run", "checkpoints", "last.ckpt"), ckpt("a", "run", "checkpoints", "step=0000003.ckpt")
    other = ckpt("b", "other", "checkpoints", "last.ckpt")
    run_dir = str(tmp_path / "a" / "run")
    labels = checkpoint_labels([run_dir, a_step, other, a_last])
    assert {arg: label for arg, (_, label) in labels.items()} == {
        run_dir: "checkpoint(run:last)",  # the run directory means its last.ckpt: the same file as a_last
        a_step: "checkpoint(run:step=0000003)",
        other: "checkpoint(other)",
        a_last: "checkpoint(run:last)",
    }
    clash = ckpt("c", "run", "checkpoints", "last.ckpt")
    with pytest.raises(ICLError, match=r"checkpoint:.*a/run and checkpoint:.*c/run/checkpoints/last.ckpt: both would"):
        checkpoint_labels([run_dir, a_step, clash])
    with pytest.raises(ICLError, match="allowed form is checkpoint:PATH"):
        checkpoint_labels([""])


@pytest.fixture(scope="module")
def gap_errors():
    """Squared errors of least squares, the Bayes predictor and their 50/50 blend on sparse data
    (nnz 1, d = 4), where Bayes is far better than least squares below k = d."""
    from icl.baselines import BASELINES

    cfg = load_config([], ["data.n_dims=4", "data.n_points=8"])
    sampler = Sampler(cfg.data, 0)
    mixture = single("sparse_linear", {"nnz": 1})
    ls = build_baseline("least_squares").predict
    bayes = BASELINES["bayes"].for_scenario(mixture, sampler.mixture).predict
    preds = {"least_squares": ls, "bayes": bayes, "blend": lambda xs, ys: 0.5 * (ls(xs, ys) + bayes(xs, ys))}
    return error_curves(preds, sampler, 300, mixture=mixture).sq_errors


def test_gap_closed_is_zero_for_least_squares_one_for_bayes_and_between_for_a_blend(gap_errors):
    from icl.evaluation.gap import gap_closed, gap_closed_all

    ls, bayes, blend = (gap_errors[k] for k in ("least_squares", "bayes", "blend"))
    k = 2
    assert ls[:, k].mean() - bayes[:, k].mean() > 0.2  # a large gap: the metric is defined there
    for err, expected in ((ls, 0.0), (bayes, 1.0)):
        g = gap_closed(err, ls, bayes)
        assert g["mean"][k] == pytest.approx(expected, abs=1e-12)
    g = gap_closed(blend, ls, bayes)
    assert 0.0 < g["mean"][k] < 1.0
    for stats in (gap_closed(e, ls, bayes) for e in (ls, bayes, blend)):
        for m, lo, hi in zip(stats["mean"], stats["ci_low"], stats["ci_high"], strict=True):
            assert (m is None) == (lo is None) == (hi is None)
            if m is not None:
                assert lo - 1e-12 <= m <= hi + 1e-12
    assert g["ci_low"][k] < g["mean"][k] < g["ci_high"][k]  # a blend's errors vary: a real interval
    # Undefined where least squares and Bayes agree: k = 0 (both predict 0) and k >= d (both exact).
    assert g["mean"][0] is None and all(v is None for v in g["mean"][4:])
    assert set(gap_closed_all(gap_errors)) == {"blend"}
    assert gap_closed_all({"least_squares": ls, "blend": blend}) == {}


def test_gap_closed_resamples_prompts_jointly():
    """The blend's ratio is the same in every paired resample when its per-prompt errors are an exact
    mix of the references': a joint resampling gives a zero-width interval, independent ones would not."""
    from icl.evaluation.gap import gap_closed

    rng = np.random.default_rng(1)
    bayes = rng.exponential(0.1, size=(200, 3))
    ls = bayes + rng.exponential(1.0, size=(200, 3))
    g = gap_closed(0.75 * bayes + 0.25 * ls, ls, bayes)
    assert g["mean"] == pytest.approx([0.75] * 3)
    assert g["ci_low"] == pytest.approx([0.75] * 3) and g["ci_high"] == pytest.approx([0.75] * 3)
