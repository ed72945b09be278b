"""Representation similarity and its permutation null against known values: self-similarity 1,
invariance to rotation and scale, the chance levels of independent features (Huh et al.'s
pitfalls), CKNNA = unbiased CKA at k = N - 1, symmetry, monotone fall with noise, and a null whose
calibrated scores are ~0 with roughly uniform p-values."""

import pytest
import torch

from icl.analysis.null import align, permutations
from icl.analysis.similarity import METRICS, build_metric, cka, cka_unbiased, cknna, mutual_knn, preprocess, similarity
from icl.errors import ICLError


def gaussian(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def rotation(d, seed):
    q, _ = torch.linalg.qr(gaussian(d, d, seed))
    return q


@pytest.mark.parametrize("metric", list(METRICS))
def test_self_similarity_is_one_and_invariant_to_rotation_and_scale(metric):
    a = gaussian(200, 12, 0)
    assert similarity(metric, a, a) == pytest.approx(1.0, abs=1e-9)
    assert similarity(metric, a, 3.5 * a @ rotation(12, 1)) == pytest.approx(1.0, abs=1e-9)
    b = a[:, :6] @ gaussian(6, 9, 2) + 0.5 * gaussian(200, 9, 3)
    moved = 0.1 * b @ rotation(9, 4)
    assert similarity(metric, a, moved) == pytest.approx(similarity(metric, a, b), abs=1e-9)


@pytest.mark.parametrize("metric", list(METRICS))
def test_symmetric(metric):
    a, b = gaussian(150, 8, 5), gaussian(150, 8, 6)
    b = b + a @ gaussian(8, 8, 7)
    assert similarity(metric, a, b) == pytest.approx(similarity(metric, b, a), abs=1e-12)


@pytest.mark.parametrize("metric", ["mutual_knn", "cknna"])
def test_rows_that_coincide_get_the_same_neighbours_in_both_representations(metric):
    """Fingerprints of 1-sparse functions with the same support are one direction scaled, so after
    ``preprocess`` many rows coincide: float32-sized noise must not pick their neighbours (it did,
    by exact inner products: 0.71 for mutual kNN, 0.61 for CKNNA here)."""
    signs = torch.sign(gaussian(8, 16, 8))  # +-1 entries: the outlier clamp keeps each row's direction
    a = signs[torch.arange(240) % 8] * gaussian(240, 1, 9)  # 8 directions, 30 rows each (both signs)
    noisy = a * (1 + 1e-7 * gaussian(240, 16, 10))
    assert similarity(metric, preprocess(a), preprocess(noisy)) == pytest.approx(1.0, abs=0.01)


def test_mutual_knn_of_independent_features_is_chance():
    n, k = 1024, 10
    scores = [mutual_knn(gaussian(n, 20, 2 * s), gaussian(n, 20, 2 * s + 1), k) for s in range(4)]
    assert sum(scores) / len(scores) == pytest.approx(k / (n - 1), abs=0.003)


def test_biased_cka_of_independent_features_is_d_over_n_plus_d_and_unbiased_is_zero():
    a, b = gaussian(1024, 256, 10), gaussian(1024, 256, 11)
    assert cka(a, b) == pytest.approx(0.20, abs=0.02)
    assert abs(cka_unbiased(a, b)) < 0.01


def test_cknna_with_all_neighbours_is_unbiased_cka():
    a = gaussian(120, 10, 12)
    b = a[:, :4] @ gaussian(4, 7, 13) + gaussian(120, 7, 14)
    for x, y in ((a, b), (a, gaussian(120, 7, 15)), (b, a)):
        assert cknna(x, y, k=119) == pytest.approx(cka_unbiased(x, y), abs=1e-6)


@pytest.mark.parametrize("metric", list(METRICS))
def test_scores_fall_monotonically_as_noise_is_added(metric):
    a = gaussian(300, 16, 16)
    noise = gaussian(300, 16, 17)
    scores = [similarity(metric, preprocess(a), preprocess(a + s * noise)) for s in (0.0, 0.3, 1.0, 3.0, 10.0)]
    assert all(x > y for x, y in zip(scores, scores[1:], strict=False)), scores


def test_preprocess_clamps_outliers_and_normalises_rows():
    x = gaussian(100, 5, 18)
    x[0, 0] = 1e6
    out = preprocess(x)
    assert torch.allclose(out.norm(dim=1), torch.ones(100, dtype=torch.float64))
    assert out[0, 0] < 0.99  # the outlier no longer dominates its row


def layers(n, seed, count=3, d=8):
    return [gaussian(n, d, seed * 10 + i) for i in range(count)]


def prepared(metric, feats):
    return metric.stack([metric.prepare(preprocess(f)) for f in feats])


@pytest.mark.parametrize("name", ["mutual_knn", "cka", "cka_unbiased", "cknna"])
def test_null_is_calibrated_on_independent_layers(name):
    metric = build_metric(name)
    calibrated, p_values = [], []
    for rep in range(24):
        a, b = prepared(metric, layers(96, 2 * rep)), prepared(metric, layers(96, 2 * rep + 1))
        result = align(metric, a, b, n_perm=39, seed=rep)
        calibrated.append(result.calibrated)
        p_values.append(result.p_value)
    p, cal = torch.tensor(p_values), torch.tensor(calibrated)
    # Raw scores are maxima over 9 layer pairs, biased upward; the null repeats the maximisation,
    # so calibrated scores average 0 within 4 standard errors and p-values are roughly uniform.
    assert abs(float(cal.mean())) < 4 * float(cal.std()) / len(cal) ** 0.5
    assert 0.3 < float(p.mean()) < 0.7
    assert 0.1 < float((p <= 0.5).double().mean()) < 0.9


@pytest.mark.parametrize("name", list(METRICS))
def test_a_against_itself_has_the_smallest_p_value(name):
    metric = build_metric(name)
    a = prepared(metric, layers(80, 3, count=2))
    result = align(metric, a, a, n_perm=19, seed=0)
    assert result.raw == pytest.approx(1.0, abs=1e-9)
    assert result.p_value == pytest.approx(1 / 20)
    assert result.calibrated > 0.5


def test_best_layer_pair_is_found():
    metric = build_metric("cka_unbiased")
    a, b = layers(100, 4), layers(100, 5)
    b[2] = a[1] @ rotation(8, 6)
    result = align(metric, prepared(metric, a), prepared(metric, b), n_perm=5, seed=0)
    assert result.best == (1, 2)
    assert result.table.shape == (3, 3)


def test_permutations_are_a_pure_function_of_seed_and_key():
    assert torch.equal(permutations(50, 3, 7, 1), permutations(50, 3, 7, 1))
    assert not torch.equal(permutations(50, 3, 7, 1), permutations(50, 3, 7, 2))
    assert all(sorted(p.tolist()) == list(range(50)) for p in permutations(50, 3, 7))


def test_bad_metric_and_neighbours_are_refused():
    with pytest.raises(ICLError, match="allowed: mutual_knn"):
        build_metric("cosine")
    with pytest.raises(ICLError, match="allowed: 1 .. N - 1"):
        mutual_knn(gaussian(10, 3, 0), gaussian(10, 3, 1), k=10)
