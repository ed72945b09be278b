"""Function fingerprints and algorithm agreement: least squares matches the true function once
it has d examples of noiseless dense data, a predictor agrees with itself exactly, least squares
is exactly linear in the query, and the batched fingerprint is the predictor's own answer."""

import pytest
import torch

from icl.analysis.similarity import cka, mutual_knn
from icl.baselines import KNN, LeastSquares, Ridge, Zero
from icl.evaluation.agreement import agreement_curves, agreement_table, prediction_difference, weight_difference
from icl.evaluation.fingerprint import fingerprint, implied_weights, linearity_r2, probe_queries, truth_fingerprint
from icl.inputs import InputConfig
from icl.rng import Domain
from icl.sampling import DataConfig, Sampler

D, N, P, M = 5, 12, 256, 16


@pytest.fixture(scope="module")
def setup():
    sampler = Sampler(DataConfig(n_dims=D, n_points=N), seed=3)
    batch = sampler.sample_batch(0, batch_size=P, domain=Domain.EVAL, n_points=N, n_dims=D)
    queries = probe_queries(InputConfig(), M, D, D, seed=3)
    return sampler, batch, queries


def test_least_squares_fingerprint_is_the_truth_from_d_examples_on(setup):
    sampler, batch, queries = setup
    truth = truth_fingerprint(sampler.mixture, batch.info, queries, D)
    for i in (D, D + 3):
        ols = fingerprint(LeastSquares().predict, batch.xs, batch.ys, i, queries)
        torch.testing.assert_close(ols, truth, atol=1e-4, rtol=1e-4)
        assert cka(ols, truth) == pytest.approx(1.0, abs=1e-6)
        assert mutual_knn(ols, truth) == 1.0
        torch.testing.assert_close(implied_weights(ols, queries), implied_weights(truth, queries), atol=1e-4, rtol=1e-4)
    below = fingerprint(LeastSquares().predict, batch.xs, batch.ys, D - 2, queries)
    assert cka(below, truth) < 0.95  # with fewer examples than dims it only sees a projection


def test_a_predictor_agrees_with_itself(setup):
    _, batch, queries = setup
    preds = Ridge().predict(batch.xs, batch.ys)
    assert torch.equal(prediction_difference(preds, preds), torch.zeros(N, dtype=torch.float64))
    fp = fingerprint(Ridge().predict, batch.xs, batch.ys, 3, queries)
    assert weight_difference(fp, fp, queries) == 0.0
    table = agreement_table({"a": preds, "b": preds, "zero": torch.zeros_like(preds)})
    assert table["a vs b"] == [0.0] * N
    assert table["a vs zero"] == pytest.approx((preds.double() ** 2).mean(0).tolist())


def test_linearity_is_one_for_least_squares_and_not_for_knn(setup):
    _, batch, queries = setup
    for i in (2, D, N - 1):
        r2 = linearity_r2(fingerprint(LeastSquares().predict, batch.xs, batch.ys, i, queries), queries)
        assert torch.allclose(r2, torch.ones(P, dtype=torch.float64), atol=1e-9)
    knn = linearity_r2(fingerprint(KNN().predict, batch.xs, batch.ys, N - 1, queries), queries)
    assert float(knn.mean()) < 0.9
    assert torch.isnan(linearity_r2(torch.zeros(P, M, dtype=torch.float64), queries)).all()  # constant: undefined


def test_fingerprint_is_the_predictors_answer_at_each_query(setup):
    _, batch, queries = setup
    i = 4
    fp = fingerprint(LeastSquares().predict, batch.xs[:7], batch.ys[:7], i, queries, chunk=5)
    for m in (0, M - 1):
        xs = torch.cat([batch.xs[:7, :i], queries[m].expand(7, 1, D)], 1)
        ys = torch.cat([batch.ys[:7, :i], torch.zeros(7, 1)], 1)
        torch.testing.assert_close(fp[:, m], LeastSquares().predict(xs, ys)[:, i].double())


def test_agreement_curves_use_the_evaluation_prompts(setup):
    sampler, _, _ = setup
    predictors = {"model": Zero().predict, "least_squares": LeastSquares().predict, "copy": Zero().predict}
    got = agreement_curves(predictors, sampler, 150, 100, n_points=N)
    first = sampler.sample_batch(0, batch_size=100, domain=Domain.EVAL, n_points=N)
    second = sampler.sample_batch(1, batch_size=100, domain=Domain.EVAL, n_points=N).slice(0, 50)
    ls = torch.cat([LeastSquares().predict(b.xs, b.ys) for b in (first, second)]).double()
    assert got["model vs least_squares"] == pytest.approx((ls**2).mean(0).tolist())
    assert got["model vs copy"] == [0.0] * N
    assert set(got) == {"model vs least_squares", "model vs copy"}
