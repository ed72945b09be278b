"""Evaluating a model on a suite: builds the predictors (model and baselines), runs every
scenario's error curves, and writes curves, sweep tables, 1-D prediction sweeps and a summary.
Results appear only when complete: written to ``<out>.partial``, then renamed (icl/outputs.py).
Every record names the checkpoint and settings that produced it; an output directory that already
holds this checkpoint's evaluation with these settings is reused instead of recomputed."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from icl import outputs
from icl.baselines import BASELINES, Unavailable, build_baseline
from icl.checkpoint.io import LAST, resolve_checkpoint
from icl.checkpoint.load import load_model
from icl.config import Config
from icl.console import duration, say
from icl.errors import ICLError
from icl.eval_config import MAX_PROMPTS
from icl.evaluation.agreement import agreement_curves
from icl.evaluation.curves import BLOCK, error_curves
from icl.evaluation.gap import DEFINITION, fmt_gap
from icl.evaluation.ks import table_ks
from icl.evaluation.provenance import describe, infer_checkpoint, matches, read_record, settings
from icl.evaluation.report import CONVENTIONS, METRIC_LABEL, METRIC_TEXT, write_curves, write_prediction_sweep
from icl.evaluation.scenarios import Scenario, build_suite
from icl.evaluation.scenarios.identity import distinct
from icl.figures import check_yscale, configured_yscale
from icl.fileio import atomic_write
from icl.resources import check_evaluation
from icl.rng import Domain
from icl.sampling import PretrainMixture, Sampler

OUT_FLAG = "--out"  # how messages about the output directory name it (`icl eval --out`, default RUN/eval/SUITE)


class SuiteRecords(dict):
    """{scenario name: JSON record}; ``reused``: read from an earlier evaluation, not recomputed."""

    reused = False


def table_k(cfg: Config, n_points: int) -> int:
    return cfg.eval.table_k or min(16, n_points - 1)


def scenario_dependent(name: str) -> bool:
    """Whether the baseline ``name`` is built per scenario (the Bayes-optimal ones)."""
    return name in BASELINES and BASELINES[name].scenario_dependent


def build_baselines(names: list[str], n_dims: int, notes: list[str] | None = None) -> dict[str, Any]:
    """The baselines named in ``names`` that do not depend on the scenario, built once per
    evaluation (the others are built by ``build_predictors``). ``checkpoint:PATH`` loads a trained
    model (a run directory or a .ckpt file) as a baseline, e.g. a specialist to compare with a
    mixture model, under the display name of ``checkpoint_labels``; a checkpoint file named twice
    is one baseline, said in ``notes``; a baseline whose optional package is missing is skipped,
    said there too."""
    specs = [name.partition(":") for name in names]
    labels = checkpoint_labels([arg for kind, sep, arg in specs if kind == "checkpoint" and sep])
    built: dict[str, Any] = {}
    named: dict[str, str] = {}  # display name -> the baseline name that built it
    for name, (kind, sep, arg) in zip(names, specs, strict=True):
        if scenario_dependent(name):
            continue
        if kind == "checkpoint" and sep:
            ckpt, label = labels[arg]
            if label in built:
                if notes is not None:
                    notes.append(
                        f"baselines {named[label]} and {name}: the same checkpoint file {ckpt}, one baseline {label}"
                    )
                continue
            model, _cfg = load_model(ckpt)
            if model.n_dims != n_dims:
                raise ICLError(
                    f"baseline {name}: the checkpoint takes {model.n_dims}-d inputs; allowed: a model of "
                    f"the evaluated model's input dims ({n_dims})"
                )
            built[label], named[label] = build_baseline("checkpoint", model=model, label=label).predict, name
        else:
            try:
                built[name] = build_baseline(name).predict
            except Unavailable as e:  # its optional package is not installed
                if notes is not None:
                    notes.append(f"{name} skipped ({e})")
    return built


def checkpoint_labels(paths: list[str]) -> dict[str, tuple[Path, str]]:
    """PATH of each ``checkpoint:PATH`` -> (checkpoint file, display name). Names are unique per
    file: ``checkpoint(<run>)`` where a run's last.ckpt is its only file named, else
    ``checkpoint(<run>:<file stem>)``, e.g. checkpoint(qs:step=0000200) beside checkpoint(qs:last);
    the same file named twice is one baseline (``build_baselines`` notes it); two files that would
    share a name (last.ckpt of two runs with one directory name) are refused."""
    files: dict[str, Path] = {}
    for arg in paths:
        if not arg:
            raise ICLError("baseline checkpoint: allowed form is checkpoint:PATH (a run directory or .ckpt file)")
        files[arg] = resolve_checkpoint(arg)

    def run_name(ckpt: Path) -> str:
        return (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent).name

    by_run: dict[str, set[Path]] = {}
    for ckpt in files.values():
        by_run.setdefault(run_name(ckpt), set()).add(ckpt.resolve())
    labels: dict[str, tuple[Path, str]] = {}
    owner: dict[str, tuple[str, Path]] = {}
    for arg, ckpt in files.items():
        run = run_name(ckpt)
        alone = len(by_run[run]) == 1 and ckpt.name == LAST
        label = f"checkpoint({run})" if alone else f"checkpoint({run}:{ckpt.stem})"
        first = owner.setdefault(label, (arg, ckpt.resolve()))
        if first[1] != ckpt.resolve():
            raise ICLError(
                f"baselines checkpoint:{first[0]} and checkpoint:{arg}: both would be labelled {label}; "
                "allowed: checkpoints whose run names or file names differ"
            )
        labels[arg] = (ckpt, label)
    return labels


def build_predictors(
    model,
    names: list[str],
    baselines: dict[str, Any],
    scenario: Scenario,
    train_mixture: PretrainMixture,
    n_dims: int,
    notes: list[str],
):
    """The model, the prebuilt ``baselines`` and the scenario-dependent baselines named in
    ``names`` (built for this scenario, under their registry names); those that do not exist for
    a scenario's classes are skipped with a note instead of failing the suite."""
    predictors = {"model": model.predict} if model is not None else {}
    predictors.update(baselines)
    for name in names:
        if scenario_dependent(name):
            try:
                pred = BASELINES[name].for_scenario(scenario.mixture, train_mixture)
                pred.predict(torch.zeros(1, 2, n_dims), torch.zeros(1, 2))  # some classes only refuse at predict time
                predictors[name] = pred.predict
            except ICLError as e:
                notes.append(f"{scenario.name}: {name} skipped ({e})")
    return predictors


def evaluate_suite(
    model,
    cfg: Config,
    suite: str,
    out_dir: Path,
    *,
    baselines: list[str] | None = None,
    n_prompts: int | None = None,
    convention: str = "mse",
    check_memory: bool = False,
    checkpoint: dict[str, Any] | None = None,
    reuse: bool = True,
    yscale: str | None = None,
    progress: Callable[[str], None] | None = say,
) -> SuiteRecords:
    """Evaluate ``model`` (an ICLTransformer trained with ``cfg``) on ``suite``; write to
    ``out_dir``; return {scenario name: JSON record}. ``check_memory``: refuse, before any work, an
    evaluation whose estimated memory exceeds what this machine has (off for the end-of-training
    evaluation, which the run's pre-flight estimate already includes). ``checkpoint``: the model's
    ``provenance.checkpoint_info`` (default: inferred, icl.evaluation.provenance.infer_checkpoint).
    ``reuse``: where ``out_dir`` already holds every scenario of this checkpoint with these settings
    (and no checkpoint:PATH baseline), return those records (``.reused``) and write nothing.
    ``yscale``: the figures' y axes, auto, linear or log (default: icl.figures.configured_yscale).
    ``progress``: called with one line per scenario as it finishes (default: flushed to stderr)."""
    out_dir = Path(out_dir)
    # Before any work: the CLI checks too, but training and sweeps call this directly.
    outputs.check_replaceable(out_dir, outputs.EVAL, OUT_FLAG)
    if convention not in CONVENTIONS:
        raise ICLError(f"--convention: got {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    names = list(cfg.eval.baselines if baselines is None else baselines)
    merged: list[str] = []
    built = build_baselines(names, cfg.data.n_dims, merged)
    field = "eval.n_prompts" if n_prompts is None else "--n-prompts"
    n_prompts = cfg.eval.n_prompts if n_prompts is None else n_prompts
    if not 1 <= n_prompts <= MAX_PROMPTS:
        raise ICLError(f"{field}: got {n_prompts}; allowed: an integer in 1..{MAX_PROMPTS}")
    sampler = Sampler(cfg.data, cfg.eval.seed)
    scenarios, left_out = suite_scenarios(suite, cfg, sampler.mixture)
    yscale = configured_yscale(cfg.eval) if yscale is None else check_yscale(yscale, "yscale")
    if check_memory:
        check_evaluation(
            cfg,
            n_prompts,
            field,
            n_predictors=1 + len(built) + sum(scenario_dependent(n) for n in names),
            n_points=max(sc.n_points or cfg.data.n_points for sc in scenarios),
            skewed=any((sc.inputs or cfg.data.inputs).covariance != "isotropic" for sc in scenarios),
        )
    for sc in scenarios:
        n = sc.n_points or cfg.data.n_points
        if n > cfg.model.max_points:
            raise ICLError(f"scenario {sc.name}: {n} points; the model takes at most {cfg.model.max_points}")
    checkpoint = checkpoint if checkpoint is not None else infer_checkpoint(model, out_dir)
    wanted = {sc.name: scenario_settings(sc, cfg, suite, n_prompts, names, convention) for sc in scenarios}
    # A checkpoint:PATH baseline's file may have changed since: such an evaluation is never reused.
    reuse = reuse and not any(n.partition(":")[0] == "checkpoint" for n in names)
    cached = current_suite(out_dir, checkpoint, wanted) if reuse else None
    if cached is not None:
        return cached
    if progress is not None:  # after every check of the input: bad input gets its one line only
        for note in merged:
            progress(note)
    device = next(model.parameters()).device
    model.eval()
    partial = outputs.begin(out_dir, outputs.EVAL)
    try:
        plan = SuitePlan(cfg, sampler, suite, scenarios, names, built, n_prompts, convention, checkpoint, wanted)
        records = _run_scenarios(model, plan, merged + left_out, device, partial, yscale, progress)
    except BaseException:
        outputs.discard(partial)  # never leave a partial result behind
        raise
    outputs.commit(partial, out_dir, outputs.EVAL, OUT_FLAG)
    return records


def suite_scenarios(suite: str, cfg: Config, mixture: PretrainMixture) -> tuple[list[Scenario], list[str]]:
    """The scenarios of ``suite`` (a suite or one scenario family), one per definition, and a note
    for each one left out as the same evaluation as another (icl.evaluation.scenarios.identity)."""
    return distinct(build_suite(suite, cfg, mixture), cfg)


def scenario_settings(
    sc: Scenario, cfg: Config, suite: str, n_prompts: int, baselines: list[str], convention: str
) -> dict[str, Any]:
    """The settings a scenario's record is reused for (provenance.settings)."""
    definition = {"title": sc.title, "n_points": sc.n_points or cfg.data.n_points, "query": sc.query}
    if cfg.eval.agreement:  # a record without agreement numbers is not reused for one that asks for them
        definition["agreement"] = True
    if sc.spec is not None:  # a suite file's scenario: its entry, which may change under the same name
        definition["spec"] = sc.spec
    return settings(
        suite=suite,
        scenario=sc.name,
        n_prompts=n_prompts,
        seed=cfg.eval.seed,
        baselines=baselines,
        convention=convention,
        definition=definition,
    )


def current_suite(out_dir: Path, checkpoint: dict[str, Any], wanted: dict[str, dict[str, Any]]) -> SuiteRecords | None:
    """The records in ``out_dir`` when it is a complete evaluation (summary.md) of exactly the
    scenarios ``wanted`` (name -> settings), each from ``checkpoint`` with its settings; else None."""
    out_dir = Path(out_dir)
    if not (out_dir / "summary.md").is_file() or {p.stem for p in out_dir.glob("*.json")} != set(wanted):
        return None
    records = SuiteRecords()
    for name, want in wanted.items():
        record = read_record(out_dir / f"{name}.json")
        if record is None or not matches(record, checkpoint, want):
            return None
        records[name] = record
    records.reused = True
    return records


@dataclasses.dataclass
class SuitePlan:
    """What ``evaluate_suite`` settles before any work: the run's config, the evaluation sampler,
    the suite's scenarios, the baselines (names and the scenario-independent ones built), prompts,
    error convention, the checkpoint's provenance and each scenario's reuse settings."""

    cfg: Config
    sampler: Sampler
    suite: str
    scenarios: list[Scenario]
    names: list[str]
    built: dict[str, Any]
    n_prompts: int
    convention: str
    checkpoint: dict[str, Any]
    wanted: dict[str, dict[str, Any]]


def _run_scenarios(
    model, plan: SuitePlan, notes: list[str], device, partial: Path, yscale: str, progress
) -> SuiteRecords:
    cfg, sampler, scenarios, n_prompts = plan.cfg, plan.sampler, plan.scenarios, plan.n_prompts
    records = SuiteRecords()
    notes = list(notes)
    start = time.monotonic()
    with torch.no_grad():
        for i, sc in enumerate(scenarios, start=1):
            predictors = build_predictors(model, plan.names, plan.built, sc, sampler.mixture, cfg.data.n_dims, notes)
            result = error_curves(
                predictors,
                sampler,
                n_prompts,
                n_points=sc.n_points,
                mixture=sc.mixture,
                inputs=sc.inputs,
                query=sc.query,
                device=device,
            )
            records[sc.name] = write_curves(
                result,
                partial,
                sc.name,
                sc.title,
                plan.convention,
                extra={"group": sc.group, "value": sc.value, "query": sc.query}
                | scenario_agreement(predictors, sampler, n_prompts, sc, cfg, device),
                checkpoint=plan.checkpoint,
                settings=plan.wanted[sc.name],
                yscale=yscale,
            )
            if cfg.data.n_dims == 1 and sc.query is None:
                prediction_sweep(predictors, sampler, sc, cfg, partial / f"{sc.name}.sweep.png", device)
            if progress is not None:
                progress(scenario_line(records[sc.name], cfg, f"[{i}/{len(scenarios)}]", time.monotonic() - start))
    tables = write_tables(records, scenarios, cfg, partial)
    write_summary(records, tables, notes, cfg, plan.suite, plan.convention, n_prompts, partial, plan.checkpoint)
    return records


def scenario_agreement(predictors, sampler: Sampler, n_prompts: int, sc: Scenario, cfg: Config, device) -> dict:
    """With eval.agreement: {"agreement": {"model vs NAME": squared prediction difference per k}} on
    the scenario's own prompts (scenarios with shifted queries have none); else {}."""
    if not cfg.eval.agreement or sc.query is not None or "model" not in predictors:
        return {}
    sample = {"n_points": sc.n_points, "inputs": sc.inputs, "mixture": sc.mixture}
    return {"agreement": agreement_curves(predictors, sampler, n_prompts, BLOCK, device, **sample)}


def scenario_line(record: dict[str, Any], cfg: Config, counter: str, elapsed: float) -> str:
    """``[i/n] NAME: H:MM:SS, model MSE at k=K X``: the model's error at the table k."""
    k = table_k(cfg, len(record["k"]))
    what = METRIC_LABEL.get(record.get("metric", "mse")) or ("MSE/d" if record["convention"] == "mse_over_d" else "MSE")
    model = record["curves"].get("model")
    err = f", model {what} at k={k} {model['mean'][k]:.4f}" if model else ""
    return f"{counter} {record['scenario']}: {duration(elapsed)}{err}"


def prediction_sweep(
    predictors, sampler: Sampler, sc: Scenario, cfg: Config, path: Path, device, n_show: int = 4, n_grid: int = 201
) -> None:
    """Predictions vs x_query on [-3, 3] after ``eval.sweep_k`` fixed in-context examples."""
    k = min(cfg.eval.sweep_k, (sc.n_points or cfg.data.n_points) - 1)
    batch = sampler.sample_batch(
        0,
        batch_size=n_show,
        domain=Domain.EVAL,
        device=device,
        n_points=k + 1,
        n_dims=1,
        inputs=sc.inputs,
        mixture=sc.mixture,
    )
    grid = torch.linspace(-3, 3, n_grid, device=device)
    xs = batch.xs[:, None, : k + 1].repeat(1, n_grid, 1, 1)  # (P, G, k+1, 1)
    xs[:, :, k, 0] = grid
    ys = batch.ys[:, None, : k + 1].repeat(1, n_grid, 1)
    flat_x, flat_y = xs.reshape(-1, k + 1, 1), ys.reshape(-1, k + 1)
    curves = {
        name: predict(flat_x, flat_y)[:, k].reshape(n_show, n_grid).cpu().numpy()
        for name, predict in predictors.items()
    }
    truth = sc.mixture.evaluate(batch.info, grid[None, :, None].expand(n_show, n_grid, 1)).cpu().numpy()
    write_prediction_sweep(
        grid.cpu().numpy(),
        curves,
        truth,
        batch.xs[:, :k, 0].cpu().numpy(),
        batch.ys[:, :k].cpu().numpy(),
        path,
        f"{sc.title}: predictions after k = {k} examples",
    )


def write_tables(records: dict[str, Any], scenarios: list[Scenario], cfg: Config, out: Path) -> dict[str, str]:
    """One table per sweep group: error at k = table_k per value and predictor (CSV and MD)."""
    tables: dict[str, str] = {}
    groups = dict.fromkeys(sc.group for sc in scenarios if sc.group)
    for group in groups:
        rows = [sc for sc in scenarios if sc.group == group]
        k = table_k(cfg, rows[0].n_points or cfg.data.n_points)
        preds = list(dict.fromkeys(p for sc in rows for p in records[sc.name]["curves"]))
        csv = [f"{group},{','.join(preds)}"]
        md = [f"| {group} | " + " | ".join(preds) + " |", "|---" * (len(preds) + 1) + "|"]
        for sc in rows:
            curves = records[sc.name]["curves"]
            vals = [curves[p]["mean"][k] if p in curves else math.nan for p in preds]
            csv.append(f"{sc.value:g}," + ",".join(f"{v:.6g}" for v in vals))
            md.append(f"| {sc.value:g} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
        atomic_write(out / f"table.{group}.csv", "\n".join(csv) + "\n")
        tables[group] = f"### {group} sweep, error at k = {k}\n\n" + "\n".join(md) + "\n"
    return tables


def write_summary(
    records, tables, notes, cfg: Config, suite: str, convention: str, n_prompts: int, out: Path, checkpoint=None
) -> None:
    lines = [
        f"# Evaluation: suite `{suite}`",
        "",
        f"Checkpoint: {describe(checkpoint)}." if checkpoint else "Checkpoint: not recorded.",
        "",
        f"Error convention: {CONVENTIONS[convention]}. {n_prompts} prompts per scenario, evaluation seed "
        f"{cfg.eval.seed}; intervals are 90% percentile bootstraps over prompts.",
        "",
    ]
    if any("gap_closed" in rec for rec in records.values()):
        lines += [f"Gap closed: {DEFINITION}; shown as point [90% bootstrap interval], - where undefined.", ""]
    lines += [t for t in tables.values()]
    for name, rec in records.items():
        n = len(rec["k"])
        ks = table_ks(cfg.data.n_dims, n, (table_k(cfg, n),))
        lines += [
            f"## {rec['title']}",
            "",
            f"![{name}]({name}.png) · [{name}.pdf]({name}.pdf) · [{name}.json]({name}.json) · [{name}.csv]({name}.csv)",
        ]
        if (out / f"{name}.sweep.png").exists():
            lines.append(f" · [prediction sweep]({name}.sweep.png)")
        if rec.get("metric", "mse") != "mse":
            lines += ["", f"Error: {METRIC_TEXT[rec['metric']]}; its MSE: `curves_mse` in the JSON, rows in the CSV."]
        lines += ["", "| predictor | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for pred, stats in rec["curves"].items():
            lines.append(f"| {pred} | " + " | ".join(f"{stats['mean'][k]:.4f}" for k in ks) + " |")
        if rec.get("gap_closed"):
            lines += ["", "| gap closed | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
            for pred, stats in rec["gap_closed"].items():
                lines.append(f"| {pred} | " + " | ".join(fmt_gap(stats, k) for k in ks) + " |")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes]
    atomic_write(out / "summary.md", "\n".join(lines) + "\n")
