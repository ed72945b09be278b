"""The report's learning-curve section: periodic evaluations read back from metrics.csv, and the
gap closed computed from their means by the same rules as ``icl.evaluation.gap``."""

import numpy as np

from icl.evaluation.gap import gap_closed
from icl.report.sections.learning import gap_from_means, gap_series, read_curves


def test_read_curves_groups_by_scenario_predictor_and_k(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "step,eval/s/model/mse@2,eval/s/least_squares/mse@2,eval/s/bayes/mse@2,eval/s/model/mse@10,train/loss\n"
        "100,0.5,0.6,0.1,,0.9\n"
        "200,0.35,0.6,0.1,0.2,0.8\n"
        "250,,,,,0.7\n"
    )
    curves = read_curves(tmp_path / "metrics.csv")
    assert curves["s"]["model"][2] == [(100, 0.5), (200, 0.35)]
    assert curves["s"]["model"][10] == [(200, 0.2)]
    assert [(s, round(g, 6)) for s, g in gap_series(curves, "s", 2)] == [(100, 0.2), (200, 0.5)]
    assert gap_series(curves, "s", 10) == []  # no references at k = 10
    assert read_curves(tmp_path / "absent.csv") == {}


def test_gap_from_means_matches_the_metric_point_estimate():
    rng = np.random.default_rng(0)
    ls = rng.exponential(0.5, size=(400, 3))
    bayes = ls * rng.uniform(0.0, 0.3, size=ls.shape)
    model = 0.5 * (ls + bayes)
    ref = gap_closed(model, ls, bayes, n_boot=10)["mean"]
    got = [gap_from_means(model[:, k].mean(), ls[:, k].mean(), bayes[:, k].mean(), ls[:, 0].mean()) for k in range(3)]
    assert np.allclose(got, ref)
    assert gap_from_means(0.5, 0.52, 0.52, 1.0) is None  # least squares is Bayes: undefined
    assert gap_from_means(0.5, 1e-6, 0.0, 1.0) is None  # both exact up to rounding: undefined
