"""Evaluating a model on a suite: builds the predictors (model and baselines), runs every
scenario's error curves, and writes curves, sweep tables, 1-D prediction sweeps and a summary.
Results appear only when complete: written to ``<out>.partial``, then renamed (icl/outputs.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from icl import outputs
from icl.baselines import build_baseline
from icl.baselines.bayes import BayesMixture
from icl.config import Config
from icl.errors import ICLError
from icl.evaluation.curves import error_curves
from icl.evaluation.report import CONVENTIONS, write_curves, write_prediction_sweep
from icl.evaluation.scenarios import Scenario, build_suite
from icl.fileio import atomic_write
from icl.resources import MAX_PROMPTS, check_evaluation
from icl.rng import Domain
from icl.sampling import PretrainMixture, Sampler

OUT_FLAG = "--out"  # how messages about the output directory name it (`icl eval --out`, default RUN/eval/SUITE)
BAYES = {
    "bayes": "Bayes-optimal for the scenario's distribution",
    "bayes_train": "Bayes-optimal for the training mixture",
}


def table_k(cfg: Config, n_points: int) -> int:
    return cfg.eval.table_k or min(16, n_points - 1)


def build_baselines(names: list[str], n_dims: int) -> dict[str, Any]:
    """The non-Bayes baselines named in ``names``, built once per evaluation (Bayes references
    depend on the scenario and are built by ``build_predictors``). ``checkpoint:PATH`` loads a
    trained model (a run directory or a .ckpt file) as a baseline, e.g. a specialist to compare
    with a mixture model; its display name is ``checkpoint(<run name>)``."""
    built: dict[str, Any] = {}
    for name in names:
        if name in BAYES:
            continue
        kind, sep, arg = name.partition(":")
        if kind == "checkpoint" and sep:
            if not arg:
                raise ICLError("baseline checkpoint: allowed form is checkpoint:PATH (a run directory or .ckpt file)")
            pred = build_baseline("checkpoint", path=arg)
            if pred.model.n_dims != n_dims:
                raise ICLError(
                    f"baseline {name}: the checkpoint takes {pred.model.n_dims}-d inputs; allowed: a model of "
                    f"the evaluated model's input dims ({n_dims})"
                )
            built[pred.label] = pred.predict
        else:
            built[name] = build_baseline(name).predict
    return built


def build_predictors(
    model,
    names: list[str],
    baselines: dict[str, Any],
    scenario: Scenario,
    train_mixture: PretrainMixture,
    n_dims: int,
    notes: list[str],
):
    """The model, the prebuilt ``baselines`` and the Bayes references named in ``names`` for
    one scenario; Bayes references that do not exist for a scenario's classes are skipped with
    a note instead of failing the suite."""
    predictors = {"model": model.predict} if model is not None else {}
    predictors.update(baselines)
    for name in names:
        if name in BAYES:
            try:
                bayes = BayesMixture(scenario.mixture if name == "bayes" else train_mixture)
                bayes.predict(torch.zeros(1, 2, n_dims), torch.zeros(1, 2))  # some classes only refuse at predict time
                predictors[name] = bayes.predict
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
) -> dict[str, Any]:
    """Evaluate ``model`` (an ICLTransformer trained with ``cfg``) on ``suite``; write to
    ``out_dir``; return {scenario name: JSON record}. ``check_memory``: refuse, before any work, an
    evaluation whose estimated memory exceeds what this machine has (off for the end-of-training
    evaluation, which the run's pre-flight estimate already includes)."""
    out_dir = Path(out_dir)
    # Before any work: the CLI checks too, but training and sweeps call this directly.
    outputs.check_replaceable(out_dir, outputs.EVAL, OUT_FLAG)
    if convention not in CONVENTIONS:
        raise ICLError(f"--convention: got {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    names = list(cfg.eval.baselines if baselines is None else baselines)
    built = build_baselines(names, cfg.data.n_dims)
    field = "eval.n_prompts" if n_prompts is None else "--n-prompts"
    n_prompts = cfg.eval.n_prompts if n_prompts is None else n_prompts
    if not 1 <= n_prompts <= MAX_PROMPTS:
        raise ICLError(f"{field}: got {n_prompts}; allowed: an integer in 1..{MAX_PROMPTS}")
    sampler = Sampler(cfg.data, cfg.eval.seed)
    scenarios = build_suite(suite, cfg, sampler.mixture)
    if check_memory:
        check_evaluation(
            cfg,
            n_prompts,
            field,
            n_predictors=1 + len(built) + sum(n in BAYES for n in names),
            n_points=max(sc.n_points or cfg.data.n_points for sc in scenarios),
            skewed=any((sc.inputs or cfg.data.inputs).covariance != "isotropic" for sc in scenarios),
        )
    for sc in scenarios:
        n = sc.n_points or cfg.data.n_points
        if n > cfg.model.max_points:
            raise ICLError(f"scenario {sc.name}: {n} points; the model takes at most {cfg.model.max_points}")
    device = next(model.parameters()).device
    model.eval()
    partial = outputs.begin(out_dir, outputs.EVAL)
    try:
        records = _run_scenarios(
            model, cfg, sampler, scenarios, names, built, n_prompts, convention, device, partial, suite
        )
    except BaseException:
        outputs.discard(partial)  # never leave a partial result behind
        raise
    outputs.commit(partial, out_dir, outputs.EVAL, OUT_FLAG)
    return records


def _run_scenarios(model, cfg, sampler, scenarios, names, built, n_prompts, convention, device, partial, suite):
    records: dict[str, Any] = {}
    notes: list[str] = []
    with torch.no_grad():
        for sc in scenarios:
            predictors = build_predictors(model, names, built, sc, sampler.mixture, cfg.data.n_dims, notes)
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
                convention,
                extra={"group": sc.group, "value": sc.value, "query": sc.query},
            )
            if cfg.data.n_dims == 1 and sc.query is None:
                prediction_sweep(predictors, sampler, sc, cfg, partial / f"{sc.name}.sweep.png", device)
    tables = write_tables(records, scenarios, cfg, partial)
    write_summary(records, tables, notes, cfg, suite, convention, n_prompts, partial)
    return records


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


def write_summary(records, tables, notes, cfg: Config, suite: str, convention: str, n_prompts: int, out: Path) -> None:
    lines = [
        f"# Evaluation: suite `{suite}`",
        "",
        f"Error convention: {CONVENTIONS[convention]}. {n_prompts} prompts per scenario, evaluation seed "
        f"{cfg.eval.seed}; intervals are 90% percentile bootstraps over prompts.",
        "",
    ]
    lines += [t for t in tables.values()]
    for name, rec in records.items():
        n = len(rec["k"])
        ks = sorted(
            {1, max(1, cfg.data.n_dims // 2), cfg.data.n_dims, 2 * cfg.data.n_dims, table_k(cfg, n), n - 1}
            & set(rec["k"])
        )
        lines += [
            f"## {rec['title']}",
            "",
            f"![{name}]({name}.png) · [{name}.json]({name}.json) · [{name}.csv]({name}.csv)",
        ]
        if (out / f"{name}.sweep.png").exists():
            lines.append(f" · [prediction sweep]({name}.sweep.png)")
        lines += ["", "| predictor | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for pred, stats in rec["curves"].items():
            lines.append(f"| {pred} | " + " | ".join(f"{stats['mean'][k]:.4f}" for k in ks) + " |")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes]
    atomic_write(out / "summary.md", "\n".join(lines) + "\n")


class PeriodicEval(Callback):
    """Every ``eval.every`` steps: curves of the model and ``eval.periodic_baselines`` on
    ``eval.periodic_suite`` with ``eval.periodic_n_prompts`` prompts, sent to every logger
    as eval/<scenario>/<predictor>/mse@<k> for k in {1, d/2, d, 2d, last}."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.sampler = Sampler(cfg.data, cfg.eval.seed)
        self.scenarios = build_suite(cfg.eval.periodic_suite, cfg, self.sampler.mixture)
        self.baselines = build_baselines(cfg.eval.periodic_baselines, cfg.data.n_dims)
        d, n = cfg.data.n_dims, cfg.data.n_points
        self.ks = sorted({1, max(1, d // 2), d, 2 * d, n - 1} & set(range(n)))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.cfg.eval.every or trainer.global_rank != 0:
            return
        model = module.model
        was_training = model.training
        model.eval()
        values: dict[str, float] = {}
        with torch.no_grad():
            for sc in self.scenarios:
                predictors = build_predictors(
                    model,
                    self.cfg.eval.periodic_baselines,
                    self.baselines,
                    sc,
                    self.sampler.mixture,
                    self.cfg.data.n_dims,
                    [],
                )
                result = error_curves(
                    predictors,
                    self.sampler,
                    self.cfg.eval.periodic_n_prompts,
                    n_points=sc.n_points,
                    mixture=sc.mixture,
                    inputs=sc.inputs,
                    query=sc.query,
                    device=module.device,
                )
                for pred, err in result.sq_errors.items():
                    mean = err.mean(axis=0)
                    values.update({f"eval/{sc.name}/{pred}/mse@{k}": float(mean[k]) for k in self.ks if k < len(mean)})
        model.train(was_training)
        for lg in trainer.loggers:
            lg.log_metrics(values, step=step)
