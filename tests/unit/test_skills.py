"""Skill composition: the skill_composition sampler (whitelist, held-out tuples, unit variance,
k = 1 equal to sparse_linear), its scenario family, the dictionary baselines and the composition
metrics (oracle full marks, zero none, independent skills give no composition gap)."""

import dataclasses
from pathlib import Path

import pytest
import torch

from icl.baselines import DictionaryLasso, OracleSupport, Zero, build_baseline
from icl.config import load_config
from icl.errors import ICLError
from icl.evaluation.composition import composition_metrics, draw_prompts, query_predictions
from icl.evaluation.scenarios import SCENARIOS, build_suite
from icl.sampling import PretrainMixture
from icl.tasks import SparseLinear, build_task
from icl.tasks.skills import atom_names, coefficients, features

ROOT = Path(__file__).resolve().parents[2]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def skills(**params):
    return build_task("skill_composition", params)


def tuples_of(support):
    return {tuple(row.nonzero().flatten().tolist()) for row in support}


def test_singletons_of_linear_atoms_are_sparse_linear_nnz_1_draw_for_draw():
    task, sparse = skills(atoms=["linear"]), SparseLinear(nnz=1)
    for seed in range(3):
        p, q = task.sample_params(257, 6, gen(seed)), sparse.sample_params(257, 6, gen(seed))
        assert torch.equal(p["w"], q["w"]) and torch.equal(p["support"], q["support"])
        xs = torch.randn(257, 9, 6, generator=gen(seed + 10))
        assert torch.equal(task.apply(p, xs), sparse.apply(q, xs))


def test_no_heldout_tuple_in_1e5_training_draws_and_every_whitelisted_one_drawn():
    task = skills(atoms=["linear", "square"], pair_fraction=0.5, whitelist_seed=3)
    d = 4
    whitelist = set(task.tuple_list(d))
    heldout = set(dataclasses.replace(task, split="heldout").tuple_list(d))
    assert len(whitelist) == 8 + 14 and len(heldout) == 14 and not whitelist & heldout
    trained_atoms = {a for t in whitelist for a in t}
    assert all(set(t) <= trained_atoms for t in heldout)
    drawn = tuples_of(task.sample_params(100_000, d, gen())["support"])
    assert drawn == whitelist  # every training tuple, and nothing else: no held-out tuple
    assert not drawn & heldout
    assert tuples_of(dataclasses.replace(task, split="heldout").sample_params(5000, d, gen())["support"]) == heldout


def test_explicit_whitelist_holds_out_the_missing_combinations():
    task = skills(atoms=["linear", "cube"], tuples=[["linear0", "cube1"], ["linear0", "linear1"], ["cube1"]])
    names = atom_names(("linear", "cube"), 2)
    held = [tuple(names[a] for a in t) for t in dataclasses.replace(task, split="heldout").tuple_list(2)]
    assert sorted(held) == [("linear0",), ("linear1",), ("linear1", "cube1")]
    held2 = dataclasses.replace(task, split="heldout", k=2).tuple_list(2)
    assert [tuple(names[a] for a in t) for t in held2] == [("linear1", "cube1")]


@pytest.mark.parametrize("atoms", [["linear", "square", "cube"], ["square"]])
def test_every_split_and_size_has_unit_variance(atoms):
    task = skills(atoms=atoms, pair_fraction=0.4)
    for split, k in [("train", 1), ("train", 2), ("heldout", 2), ("all", 3)]:
        sub = dataclasses.replace(task, split=split, k=k)
        p = sub.sample_params(20_000, 3, gen(k))
        ys = sub.apply(p, torch.randn(20_000, 20, 3, generator=gen(7)))
        assert abs(ys.pow(2).mean().item() - 1) < 0.05, (split, k)
        assert abs(ys.mean().item()) < 0.02
        # ||f||^2 from the coefficients matches the function's energy: the atoms are orthonormal.
        assert abs(coefficients(p).pow(2).sum(1).mean().item() - 1) < 0.03


def test_atoms_are_orthonormal_under_gaussian_inputs():
    phi = features(torch.randn(400_000, 1, 2, generator=gen(), dtype=torch.float64), ["linear", "square", "cube"])[:, 0]
    gram = phi.T @ phi / phi.shape[0]
    torch.testing.assert_close(gram, torch.eye(6, dtype=torch.float64), atol=0.03, rtol=0)
    assert phi.mean(0).abs().max() < 0.01


def test_sampler_statistics_uniform_tuples_and_gaussian_coefficients():
    task = skills(atoms=["linear", "square"], pair_fraction=0.25)
    n, d = 60_000, 3
    table = task.tuple_list(d)
    p = task.sample_params(n, d, gen(5))
    index = {t: i for i, t in enumerate(table)}
    counts = torch.bincount(torch.tensor([index[tuple(r.nonzero().flatten().tolist())] for r in p["support"]]))
    expected = n / len(table)
    assert len(counts) == len(table) and (counts - expected).abs().max() < 5 * expected**0.5
    w = p["w"][p["support"]]
    assert abs(w.mean().item()) < 0.02 and abs(w.var().item() - 1) < 0.03
    assert (p["w"][~p["support"]] == 0).all()


def test_same_seed_same_draws_and_the_whitelist_is_a_function_of_its_seed():
    a, b = skills(pair_fraction=0.5, whitelist_seed=1), skills(pair_fraction=0.5, whitelist_seed=2)
    assert a.tuple_list(4) == skills(pair_fraction=0.5, whitelist_seed=1).tuple_list(4) != b.tuple_list(4)
    assert torch.equal(a.sample_params(50, 4, gen(1))["w"], a.sample_params(50, 4, gen(1))["w"])


@pytest.mark.parametrize(
    "params,match",
    [
        ({"atoms": ["relu"]}, r"skill_composition\.atoms: got \['relu'\]; allowed: .*linear, square, cube"),
        ({"split": "test"}, r"skill_composition\.split: got 'test'; allowed: train, heldout, all"),
        ({"pair_fraction": 1.5}, r"pair_fraction: got 1\.5; allowed: a number in \[0, 1\]"),
        ({"tuples": [["linear0"]], "pair_fraction": 0.5}, r"pair_fraction: got 0\.5; allowed: 0 when tuples"),
        ({"tuples": [["linear9"]]}, r"tuples\[0\]: got 'linear9'; allowed: an atom .* coordinate in 0\.\.3"),
        ({"tuples": [["linear0", "linear0"]]}, r"tuples\[0\]: got \['linear0', 'linear0'\]; allowed: distinct"),
        ({"split": "heldout"}, r"split 'heldout' has no tuples"),
        (
            {"tuples": [[["linear0"]]]},
            r"skill_composition\.tuples: got .*; allowed: null or a non-empty list of non-empty",
        ),
    ],
)
def test_bad_parameters_are_one_clear_line(params, match):
    with pytest.raises(ICLError, match=match):
        skills(**params).check(4)


def test_config_refuses_a_bad_whitelist_when_built():
    with pytest.raises(ICLError, match=r"data\.mixture\[0\]: skill_composition: split 'heldout'"):
        load_config([], ["data.mixture=[{name: skill_composition, params: {split: heldout}}]", "data.n_dims=4"])


def test_scenario_family_seen_and_heldout_per_k():
    cfg = load_config([ROOT / "configs/skills/sparse_whitelist.yaml"])
    mixture = PretrainMixture.from_config(list(cfg.data.mixture), cfg.data.n_dims)
    scenarios = SCENARIOS["skill_tuples"](cfg, mixture)
    assert [s.name for s in scenarios] == ["skills.seen_size1", "skills.seen_size2", "skills.heldout_size2"]
    train = set(mixture.components[0].task.tuple_list(8))
    held = scenarios[2].mixture.components[0].task
    drawn = tuples_of(held.sample_params(2000, 8, gen())["support"])
    assert len(drawn) == 14 and not drawn & train
    assert build_suite("skills", cfg, mixture)[0].name.startswith("in_dist.skill_composition")
    other = SCENARIOS["skill_tuples"](cfg, PretrainMixture.from_config([{"name": "dense_linear"}], 8))
    assert [s.name for s in other] == ["skills.seen_size1"]  # the default whitelist: every singleton
    assert other[0].mixture.components[0].task.atoms == ["linear", "square"]


def test_oracle_support_is_exact_once_the_context_covers_the_tuple():
    task = skills(atoms=["linear", "square"], tuples=[["linear1", "square0"]])
    p = task.sample_params(20, 3, gen())
    xs = torch.randn(20, 6, 3, generator=gen(1), dtype=torch.float64)
    ys = task.apply(p, xs)
    mixture = PretrainMixture.from_config([{"name": "skill_composition", "params": dataclasses.asdict(task)}], 3)
    for oracle in (OracleSupport.for_scenario(mixture, mixture), OracleSupport([0], task.atoms).given(p)):
        preds = oracle.predict(xs, ys)
        torch.testing.assert_close(preds[:, 2:], ys[:, 2:])  # 2 atoms: exact from 2 examples on
        assert (preds[:, 1] - ys[:, 1]).abs().max() > 1e-3  # one example does not determine two
    many = PretrainMixture.from_config([{"name": "skill_composition"}], 3)
    with pytest.raises(ICLError, match="oracle_support: needs each prompt's tuple"):
        OracleSupport.for_scenario(many, many)
    with pytest.raises(ICLError, match=r"oracle_support\.support: got \[99\]; allowed: indices into linear0"):
        build_baseline("oracle_support", support=[99]).predict(xs, ys)


def test_dictionary_lasso_recovers_a_sparse_nonlinear_function():
    task = skills(atoms=["linear", "square"], tuples=[["linear1", "square2"]])
    p = task.sample_params(30, 6, gen())
    xs = torch.randn(30, 25, 6, generator=gen(2))
    ys = task.apply(p, xs)
    err = (DictionaryLasso(0.001, task.atoms).predict(xs, ys) - ys).pow(2).mean(0)
    ls_err = (build_baseline("least_squares").predict(xs, ys) - ys).pow(2).mean(0)
    assert err[-5:].mean() < 0.01 < ls_err[-5:].mean()  # 12 atoms, 2 active: LASSO finds them; x-linear LS cannot


class IndependentSkills:
    """Reads the truth: gets each component of the tuple right with probability ``p``
    independently (a pseudo-random function of the coefficient, so the same for every query of a
    prompt); a missed component is off by the function's own norm. ``compose=False``: tuples of
    two or more atoms are always missed in full."""

    def __init__(self, p, atoms, compose=True):
        self.p, self.atoms, self.compose = p, atoms, compose

    def given(self, params):
        coef = coefficients(params).double()
        hit = ((params["w"].double().abs() * 9973.0).frac() < self.p) & params["support"]
        if not self.compose:
            hit &= params["support"].sum(1, keepdim=True) == 1
        norm = coef.pow(2).sum(1, keepdim=True).sqrt()
        guess = torch.where(hit | ~params["support"], coef, coef + norm)

        def predict(xs, ys):
            return torch.einsum("bna,ba->bn", features(xs.double(), self.atoms), guess).to(ys.dtype)

        return predict


def test_composition_metrics_oracle_full_marks_zero_none_independent_skills_no_gap():
    task = skills(atoms=["linear", "square"], pair_fraction=0.5)
    d, n_ctx = 3, 8
    oracle = composition_metrics(
        {"oracle": OracleSupport([0], task.atoms), "zero": Zero()}, task, d, n_ctx, n_prompts=40, n_queries=12
    )
    groups = [(r["group"], r["k"]) for r in oracle if r["predictor"] == "oracle"]
    assert groups == [("single", 1), ("seen", 1), ("seen", 2), ("heldout", 2)]
    for r in oracle:
        want = 1.0 if r["predictor"] == "oracle" else 0.0
        assert r["full_marks"] == want and r["component_fraction"] == want and r["independence"] == want, r
        assert r["gap"] == 0.0
    p = 0.7
    synthetic = {
        "independent": IndependentSkills(p, task.atoms),
        "no_composition": IndependentSkills(p, task.atoms, compose=False),
    }
    rows = composition_metrics(synthetic, task, d, n_ctx, n_prompts=700, n_queries=12, seed=1)
    by = {(r["predictor"], r["group"], r["k"]): r for r in rows}
    assert abs(by["independent", "single", 1]["full_marks"] - p) < 0.05
    for group in ("seen", "heldout"):
        r = by["independent", group, 2]
        assert abs(r["full_marks"] - p * p) < 0.06 and abs(r["component_fraction"] - p) < 0.04
        assert abs(r["gap"]) < 0.06, r
        bad = by["no_composition", group, 2]
        assert bad["full_marks"] == 0 and bad["gap"] < -0.4  # the gap sees a failure to compose


def test_query_predictions_ask_each_query_with_the_whole_context():
    task = skills(atoms=["linear"], pair_fraction=0.2)
    prompts = draw_prompts(task, "seen", 2, 3, 5, 4, 6, 0, 0)
    seen = []

    def spy(xs, ys):
        seen.append((xs.clone(), ys.clone()))
        return xs[..., 0] + 0 * ys

    preds = query_predictions(spy, prompts)
    xs, ys = seen[0]
    assert xs.shape == (24, 6, 3) and torch.equal(xs[5, :5], prompts.xs[1]) and torch.equal(ys[5, :5], prompts.ys[1])
    torch.testing.assert_close(preds, prompts.qxs[..., 0].double())
