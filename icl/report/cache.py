"""The evaluations a report reads, cached in each run: error curves of the run's model on every eval
class (RUN/eval/report_classes/) and whole eval suites (RUN/eval/SUITE/). A cached evaluation is
reused only when it records the run's newest checkpoint (path, step, weights hash) and the settings
asked for (icl.evaluation.provenance); otherwise it is recomputed and overwritten."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from icl.console import duration, say
from icl.evaluation.curves import error_curves
from icl.evaluation.provenance import SETTINGS, matches, read_record, settings
from icl.evaluation.report import write_curves
from icl.evaluation.run import (
    build_baselines,
    build_predictors,
    current_suite,
    evaluate_suite,
    scenario_settings,
    suite_scenarios,
)
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


def class_settings(run: Run, cls: EvalClass, n_prompts: int) -> dict[str, Any]:
    return settings(
        suite=None,
        scenario=cls.name,
        n_prompts=n_prompts,
        seed=run.cfg.eval.seed,
        baselines=REFERENCES,
        convention="mse",
        definition=cls.spec,
    )


def class_curves(
    run: Run, cls: EvalClass, n_prompts: int, device: str, notes: list[str], yscale: str = "auto"
) -> dict[str, Any]:
    """Error curves of the run's model (and the references) on one class, cached in the run; one
    progress line says whether they were reused or evaluated."""
    out = run.path / "eval" / CLASSES_DIR
    checkpoint, wanted = run.checkpoint(device), class_settings(run, cls, n_prompts)
    record = read_record(out / f"{cls.name}.json")
    if record is not None and matches(record, checkpoint, wanted):
        notes += [n for n in record.get("notes", []) if n not in notes]
        say(f"{run.key}: {cls.title}: reused (step {checkpoint['global_step']})")
        return record
    start = time.monotonic()
    cfg, d = run.cfg, run.cfg.data.n_dims
    sampler = Sampler(cfg.data, cfg.eval.seed)
    scenario = Scenario(cls.name, cls.title, class_mixture(cls.spec, d))
    local: list[str] = []
    predictors = build_predictors(
        run.model(device), REFERENCES, build_baselines(REFERENCES, d), scenario, sampler.mixture, d, local
    )
    notes += [n for n in local if n not in notes]
    result = error_curves(predictors, sampler, n_prompts, mixture=scenario.mixture, device=device)
    record = write_curves(
        result,
        out,
        cls.name,
        f"{run.label}: {cls.title}",
        extra={"notes": local},
        checkpoint=checkpoint,
        settings=wanted,
        yscale=yscale,
    )
    took = duration(time.monotonic() - start)
    say(f"{run.key}: {cls.title}: evaluated at step {checkpoint['global_step']} in {took}")
    return record


def suite_records(
    run: Run, suite: str, n_prompts: int, device: str, baselines: list[str], yscale: str = "auto"
) -> dict[str, dict[str, Any]]:
    """The run's eval/<suite> records (raw MSE, ``n_prompts`` prompts, at least ``baselines``: an
    `icl eval` with more baselines is reused), evaluated anew unless they record the run's newest
    checkpoint and these settings; progress lines say which."""
    out = run.path / "eval" / suite
    checkpoint = run.checkpoint(device)
    scenarios, _ = suite_scenarios(suite, run.cfg, Sampler(run.cfg.data, run.cfg.eval.seed).mixture)
    have = (read_record(out / f"{scenarios[0].name}.json") or {}).get(SETTINGS) or {}
    names = have.get("baselines") if set(baselines) <= set(have.get("baselines") or []) else baselines
    wanted = {sc.name: scenario_settings(sc, run.cfg, suite, n_prompts, names, "mse") for sc in scenarios}
    records = current_suite(out, checkpoint, wanted)
    if records is not None:
        say(f"{run.key}: suite {suite}: reused from {out} (step {checkpoint['global_step']})")
        return dict(records)
    say(f"{run.key}: suite {suite}: evaluating {len(scenarios)} scenarios at step {checkpoint['global_step']}")
    records = evaluate_suite(
        run.model(device),
        run.cfg,
        suite,
        out,
        baselines=baselines,
        n_prompts=n_prompts,
        checkpoint=checkpoint,
        reuse=False,
        yscale=yscale,
        progress=lambda line: say(f"{run.key}: {line}"),
    )
    return dict(records)
