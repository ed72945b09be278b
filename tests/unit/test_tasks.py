"""Function classes: shapes, determinism, sparsity, Gamma prior, unit variance."""

import dataclasses
import math
from typing import ClassVar

import pytest
import torch

from icl.errors import ICLError
from icl.rng import Stream, generator
from icl.tasks import TASKS, DenseLinear, FunctionClass, build_task
from icl.tasks.registry import register
from icl.tasks.sinusoid import _gamma

CONVEX = {"components": [{"name": "dense_linear"}, {"name": "sinusoid"}], "coefs": [0.3, 0.7]}
# Parameters for the classes that need some (or are tested with non-defaults); every other
# registered class is drawn with its defaults, so a new class is covered without an entry here.
EXAMPLES = {
    "sparse_linear": {"nnz": 3},
    "relu_2nn": {"hidden": 50},
    "convex_combination": CONVEX,
}


def test_examples_name_registered_classes():
    assert set(EXAMPLES) <= set(TASKS)
    assert all(name.replace("_", "").isalnum() and name.islower() for name in TASKS)


def test_a_name_is_registered_once():
    register(DenseLinear)  # the same class again (a user module imported twice): nothing changes
    assert TASKS["dense_linear"] is DenseLinear
    impostor = type("DenseLinear", (DenseLinear,), {"name": "dense_linear"})
    with pytest.raises(ICLError, match="already registered to icl.tasks.linear.DenseLinear"):
        register(impostor)
    assert TASKS["dense_linear"] is DenseLinear


def test_a_class_without_apply_is_refused_when_registered():
    @dataclasses.dataclass
    class Half(FunctionClass):
        name: ClassVar[str] = "half"

        def sample_params(self, n, n_dims, generator):
            return {}

    with pytest.raises(ICLError, match=r"^function class Half: apply not defined; allowed: a class that defines them$"):
        register(Half)
    assert "half" not in TASKS


def _draw(name, params, n=256, n_points=7, d=6, seed=0):
    task = build_task(name, params)
    g = generator(seed, 0, Stream.PARAMS)
    p = task.sample_params(n, d, g)
    xs = torch.randn(n, n_points, d, generator=generator(seed, 0, Stream.INPUTS))
    return task, p, xs, task.apply(p, xs)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shapes_and_dtype(name):
    _, _, xs, ys = _draw(name, EXAMPLES.get(name, {}))
    assert ys.shape == xs.shape[:2]
    assert ys.dtype == torch.float32
    assert torch.isfinite(ys).all()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_generator_same_function_different_seed_differs(name):
    *_, ys1 = _draw(name, EXAMPLES.get(name, {}), seed=3)
    *_, ys2 = _draw(name, EXAMPLES.get(name, {}), seed=3)
    *_, ys3 = _draw(name, EXAMPLES.get(name, {}), seed=4)
    assert torch.equal(ys1, ys2)
    assert not torch.allclose(ys1, ys3)


@pytest.mark.parametrize("name", ["dense_linear", "sparse_linear", "sinusoid", "relu_2nn"])
@pytest.mark.parametrize("d", [1, 5, 20])
def test_unit_variance_normalisation(name, d):
    params = dict(EXAMPLES.get(name, {}))
    if name == "sparse_linear":
        params["nnz"] = min(3, d)
    task = build_task(name, params)
    n, n_points = 4000, 16
    p = task.sample_params(n, d, generator(1, 0, Stream.PARAMS))
    xs = torch.randn(n, n_points, d, generator=generator(1, 0, Stream.INPUTS))
    ys = task.apply(p, xs)
    second_moment = (ys.double() ** 2).mean().item()
    # Per-function second moments are heavy-tailed; 4000 functions give a few % error at most.
    assert second_moment == pytest.approx(1.0, abs=0.08)


def test_paper2_convention_has_variance_d():
    d = 10
    for name in ("dense_linear", "relu_2nn"):
        task = build_task(name, {"normalize": False})
        p = task.sample_params(4000, d, generator(2, 0, Stream.PARAMS))
        xs = torch.randn(4000, 8, d, generator=generator(2, 0, Stream.INPUTS))
        assert (task.apply(p, xs) ** 2).mean().item() == pytest.approx(d, rel=0.08)


@pytest.mark.parametrize("nnz,d", [(1, 5), (2, 20), (3, 20), (20, 20)])
def test_sparse_has_exactly_nnz_nonzeros_uniform_support(nnz, d):
    task = build_task("sparse_linear", {"nnz": nnz})
    p = task.sample_params(5000, d, generator(0, 0, Stream.PARAMS))
    assert ((p["w"] != 0).sum(dim=1) == nnz).all()
    assert torch.equal(p["support"], p["w"] != 0)
    freq = p["support"].float().mean(dim=0)  # each coordinate is in the support w.p. nnz/d
    expected = nnz / d
    sd = math.sqrt(expected * (1 - expected) / 5000)
    assert (freq - expected).abs().max().item() <= 5 * sd + 1e-9


def test_sparse_under_curriculum_uses_all_active_dims_when_fewer_than_nnz():
    task = build_task("sparse_linear", {"nnz": 4})
    p = task.sample_params(10, 2, generator(0, 0, Stream.PARAMS))
    assert ((p["w"] != 0).sum(dim=1) == 2).all()


@pytest.mark.parametrize("shape,scale", [(6.0, 1 / 6), (2.0, 0.5), (0.5, 2.0)])
def test_gamma_sampler_matches_its_moments(shape, scale):
    n = 200_000
    w = _gamma(n, shape, generator(0, 0, Stream.PARAMS)).double() * scale
    mean, var = shape * scale, shape * scale**2
    assert (w > 0).all()
    assert w.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(var / n))
    # Var of the sample variance ~ (m4 - var^2)/n; m4 of Gamma = var^2 (3 + 6/shape)
    sd_var = math.sqrt(var**2 * (2 + 6 / shape) / n)
    assert w.var().item() == pytest.approx(var, abs=5 * sd_var)


def test_sinusoid_frequency_prior_and_fixed_frequency():
    task = build_task("sinusoid", {})
    p = task.sample_params(100_000, 1, generator(0, 0, Stream.PARAMS))
    assert p["freq"].double().mean().item() == pytest.approx(1.0, abs=0.005)
    assert p["freq"].double().var().item() == pytest.approx(1 / 6, abs=0.005)
    fixed = build_task("sinusoid", {"freq": 0.5}).sample_params(10, 1, generator(0, 0, Stream.PARAMS))
    assert torch.all(fixed["freq"] == 0.5)


def test_sinusoid_1d_matches_paper_form():
    task = build_task("sinusoid", {"normalize": False})
    p = task.sample_params(4, 1, generator(0, 0, Stream.PARAMS))
    xs = torch.linspace(-2, 2, 9).repeat(4, 1)[..., None]
    expected = p["amp"][:, None] * torch.cos(2 * math.pi * p["freq"][:, None] * xs[..., 0])
    torch.testing.assert_close(task.apply(p, xs), expected)


def test_convex_combination_is_the_weighted_sum_of_its_parts():
    task = build_task("convex_combination", CONVEX)
    p = task.sample_params(8, 1, generator(0, 0, Stream.PARAMS))
    xs = torch.randn(8, 5, 1, generator=generator(0, 0, Stream.INPUTS))
    lin, sin = task.parts
    torch.testing.assert_close(task.apply(p, xs), 0.3 * lin.apply(p["c0"], xs) + 0.7 * sin.apply(p["c1"], xs))


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("nope", {}, "unknown function class 'nope'"),
        ("dense_linear", {"nnz": 2}, "unknown parameter"),
        ("sparse_linear", {"nnz": "two"}, "sparse_linear.nnz"),
        ("convex_combination", {"components": [{"name": "dense_linear"}], "coefs": [0.5]}, "summing to 1"),
        ("sinusoid", {"freq_shape": -1.0}, None),
    ],
)
def test_bad_parameters_are_rejected_with_a_clear_message(name, params, match):
    with pytest.raises(ICLError, match=match):
        task = build_task(name, params)
        task.check(5)


@pytest.mark.parametrize("nnz", [0, -1, 6])
def test_sparsity_out_of_range(nnz):
    with pytest.raises(ICLError, match="1..5"):
        build_task("sparse_linear", {"nnz": nnz}).check(5)
