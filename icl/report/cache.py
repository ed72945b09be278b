"""The evaluations a report reads, cached in each run: error curves of the run's model on every eval
class (RUN/eval/report_classes/, recomputed when the prompt count differs) and whole eval suites
(RUN/eval/SUITE/, run when the run lacks them)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from icl.evaluation.curves import error_curves
from icl.evaluation.report import write_curves
from icl.evaluation.run import build_baselines, build_predictors, evaluate_suite
from icl.evaluation.scenarios.base import Scenario, slug
from icl.report.runs import Run, class_label
from icl.sampling import PretrainMixture, Sampler

REFERENCES = ["least_squares", "bayes"]  # drawn beside the models; bayes is skipped where it does not exist
CLASSES_DIR = "report_classes"  # per-run cache of the cross-class curves, under RUN/eval/


@dataclasses.dataclass
class EvalClass:
    """A pure function class every run is evaluated on (the classes of the sweep's mixtures)."""

    name: str  # scenario file name, e.g. class.sparse_linear_nnz_2
    title: str
    spec: dict[str, Any]  # {name, params, noise_std}


def eval_classes(runs: list[Run]) -> list[EvalClass]:
    """Every class named in any run's mixture (zero-weight components included), plus weakly
    sparse data (nnz = d/2, paper 1's nnz 10 of 20) where a sparse class is trained."""
    d = runs[0].cfg.data.n_dims
    specs: list[dict[str, Any]] = []
    for run in runs:
        for c in run.cfg.data.mixture:
            spec = {"name": c.name, "params": dict(c.params), "noise_std": c.noise_std}
            if spec not in specs:
                specs.append(spec)
    for spec in list(specs):
        if spec["name"] == "sparse_linear" and d >= 2 and spec["params"].get("nnz") != d // 2:
            weak = {**spec, "params": {**spec["params"], "nnz": d // 2}}
            if weak not in specs:
                specs.append(weak)
    out = []
    for spec in specs:
        label = class_label(spec["name"], spec["params"]) + (
            f", noise {spec['noise_std']:g}" if spec["noise_std"] else ""
        )
        out.append(EvalClass(f"class.{slug(label)}", label, spec))
    return out


def class_mixture(spec: dict[str, Any], d: int) -> PretrainMixture:
    """Data of one eval class alone: ``spec`` = {name, params, noise_std}."""
    return PretrainMixture.from_config([{**spec, "weight": 1.0}], d)


def class_curves(run: Run, cls: EvalClass, n_prompts: int, device: str, notes: list[str]) -> dict[str, Any]:
    """Error curves of the run's model (and the references) on one class, cached in the run."""
    out = run.path / "eval" / CLASSES_DIR
    cached = out / f"{cls.name}.json"
    if cached.is_file():
        record = json.loads(cached.read_text())
        if record.get("n_prompts") == n_prompts:
            return record
    cfg, d = run.cfg, run.cfg.data.n_dims
    sampler = Sampler(cfg.data, cfg.eval.seed)
    scenario = Scenario(cls.name, cls.title, class_mixture(cls.spec, d))
    local: list[str] = []
    predictors = build_predictors(
        run.model(device), REFERENCES, build_baselines(REFERENCES, d), scenario, sampler.mixture, d, local
    )
    notes += [n for n in local if n not in notes]
    result = error_curves(predictors, sampler, n_prompts, mixture=scenario.mixture, device=device)
    return write_curves(result, out, cls.name, f"{run.label}: {cls.title}")


def suite_records(run: Run, suite: str, n_prompts: int, device: str, baselines: list[str]) -> dict[str, dict[str, Any]]:
    """The run's eval/<suite> records, running the suite (with ``baselines``) if the run lacks it."""
    out = run.path / "eval" / suite
    if not (out / "summary.md").is_file():
        evaluate_suite(run.model(device), run.cfg, suite, out, baselines=baselines, n_prompts=n_prompts)
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
