"""The package's own worked examples of README "Extending" (its "Inside the package" part; the
user-module route is tests/integration/test_user_modules.py), each a test: a function class (``quadratic``), a
baseline (``quadratic_least_squares``), a scenario family (``quadratic_data``, suite
``out_of_class``) and a query shift (``negated``)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY

from icl.baselines import BASELINES, BayesMixture, QuadraticLeastSquares, build_baseline, component
from icl.config import load_config
from icl.errors import ICLError
from icl.evaluation.curves import error_curves
from icl.evaluation.queries import QUERY_SHIFTS
from icl.evaluation.scenarios import SCENARIOS, build_suite, suites
from icl.sampling import Sampler
from icl.tasks import TASKS, Quadratic

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "tests" / "extending" / "quadratic.yaml"
EXAMPLE_FILES = [
    "icl/tasks/quadratic.py",
    "icl/baselines/quadratic.py",
    "icl/evaluation/scenarios/quadratic.py",
    "icl/evaluation/queries.py",
]


def test_every_code_block_of_the_readme_section_is_the_packages_code():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Inside the package.**") :].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    sources = [(ROOT / f).read_text() for f in EXAMPLE_FILES]
    assert len(blocks) == len(EXAMPLE_FILES)
    for block, source in zip(blocks, sources, strict=True):
        assert block in source, block.splitlines()[0]


def test_the_function_class_is_registered_and_declares_no_bayes_posterior():
    assert TASKS["quadratic"] is Quadratic and Quadratic.bayes_posterior is None
    with pytest.raises(ICLError, match="no Bayes-optimal predictor for component.*quadratic; allowed: dense_linear"):
        BayesMixture(component(Quadratic()))


@pytest.mark.parametrize("d", [1, 5, 20])
def test_the_function_class_sampler_statistics(d):
    """Drawn through the example YAML: the right shapes, and y = w . (x * x) / sqrt(3 d) has mean
    0 and variance 1 over functions and inputs x ~ N(0, I)."""
    cfg = load_config([EXAMPLE], [f"data.n_dims={d}", "data.n_points=8"])
    batch = Sampler(cfg.data, 0).sample_batch(0, batch_size=8000)
    assert batch.xs.shape == (8000, 8, d) and batch.ys.shape == (8000, 8)
    w = batch.info["params"][0]["w"]
    torch.testing.assert_close(batch.ys, torch.einsum("bnd,bd->bn", batch.xs**2, w) / (3 * d) ** 0.5)
    ys = batch.ys.double()
    assert abs(ys.mean().item()) < 0.05
    assert ys.pow(2).mean().item() == pytest.approx(1.0, abs=0.08)


def test_the_baseline_is_registered_and_covered_by_the_leakage_test():
    # Imported here, not at the top, so that pytest does not collect these tests a second time.
    from unit.test_baselines import test_float32_in_float32_out, test_no_leakage, test_zero_context_predicts_zero

    assert BASELINES["quadratic_least_squares"] is QuadraticLeastSquares
    for check in (test_no_leakage, test_float32_in_float32_out, test_zero_context_predicts_zero):
        check("quadratic_least_squares")  # the registry-wide tests, with the baseline's defaults


def test_the_scenario_and_the_query_shift():
    """On noiseless quadratic data the matched baseline is exact once it has d examples at fresh
    queries, and from the first example at negated ones (x * x repeats a context row there)."""
    assert "quadratic_data" in SCENARIOS and suites()["out_of_class"] == ["quadratic_data"]
    assert "negated" in QUERY_SHIFTS
    cfg = load_config([], ["data.n_dims=4", "data.n_points=9"])
    sampler = Sampler(cfg.data, 0)
    fresh, negated = build_suite("out_of_class", cfg, sampler.mixture)
    assert (fresh.name, fresh.query) == ("quadratic.fresh", None)
    assert (negated.name, negated.query) == ("quadratic.negated", "negated")
    preds = {"quadratic_least_squares": build_baseline("quadratic_least_squares").predict}
    for sc, exact_from in ((fresh, 4), (negated, 1)):
        err = error_curves(preds, sampler, 100, mixture=sc.mixture, query=sc.query).sq_errors["quadratic_least_squares"]
        assert err[:, exact_from:].mean() < 1e-6 and err[:, 0].mean() > 0.5, sc.name


def icl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "icl", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_train_and_evaluate_the_examples_through_the_cli(tmp_path):
    res = icl("train", str(EXAMPLE), *TINY, "train.steps=3", "--run-dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = (tmp_path / "run" / "eval" / "in_distribution" / "summary.md").read_text()
    assert "in_dist.quadratic: bayes skipped (bayes: no Bayes-optimal predictor for component(s) quadratic" in summary
    res = icl(
        "eval",
        "run",
        "--suite",
        "out_of_class",
        "--n-prompts",
        "20",
        "--baselines",
        "least_squares,quadratic_least_squares,bayes",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    for name in ("quadratic.fresh", "quadratic.negated"):
        rec = json.loads((tmp_path / "run" / "eval" / "out_of_class" / f"{name}.json").read_text())
        assert set(rec["curves"]) == {"model", "least_squares", "quadratic_least_squares"}
        assert np.isfinite(rec["curves"]["model"]["mean"]).all()
    assert rec["query"] == "negated"
