"""Skill composition metrics (Skill-Mix style): per tuple size k, on seen and held-out tuples, the
full-marks ratio, the fraction of components recovered and the composition gap against the
independence prediction (the product of single-skill competences); and a run's report of them.

Every prompt is scored at one context length: ``n_context`` examples, then ``n_queries`` fresh
queries x'_m, each asked with that same context (one query per sequence, so any predictor under
the causal contract can be scored). On those queries:
- normalised error = sum_m (pred_m - f(x'_m))^2 / sum_m f(x'_m)^2 (the zero predictor scores 1);
- full marks: normalised error < ``tau``;
- implied coefficients: least squares of the predictions on the dictionary's atoms at the queries
  (the dictionary is orthonormal, so this is the predictor's projection on each atom); component a
  of the tuple is recovered when (c_hat_a - c_a)^2 <= ``recovery_tau`` * c_a^2;
- single-skill competence s_a: the full-marks ratio on singleton prompts of atom a (every atom,
  ``n_prompts`` prompts shared out evenly); independence prediction of a prompt with tuple T:
  prod_{a in T} s_a; composition gap: full-marks ratio - mean independence prediction (0: the
  predictor composes as well as independent skills would; < 0: composing costs more)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from icl.baselines import DictionaryLasso, LeastSquares, OracleSupport, Zero
from icl.checkpoint.load import load_model
from icl.errors import ICLError
from icl.evaluation.run import table_k
from icl.fileio import atomic_write
from icl.rng import Domain, Stream, generator
from icl.sampling import PretrainMixture
from icl.tasks.skills import SkillComposition, coefficients, features

TAU = 0.1  # full marks: at most 10% of the function's energy on the queries left unexplained
RECOVERY_TAU = 0.1  # a component is recovered within sqrt(0.1) ~ 32% of its coefficient
Predict = Callable[[Tensor, Tensor], Tensor]
SPLIT_OF = {"single": "all", "seen": "train", "heldout": "heldout"}  # prompt group -> skill_composition split


@dataclasses.dataclass
class PromptSet:
    """Prompts of one group: context ``xs`` (P, n, D), ``ys`` (P, n), queries ``qxs`` (P, M, D),
    the functions' ``params`` and their values ``fq`` (P, M) and atoms ``qfeat`` (P, M, A) there."""

    group: str  # single | seen | heldout
    k: int
    n_tuples: int
    xs: Tensor
    ys: Tensor
    qxs: Tensor
    params: dict[str, Tensor]
    qfeat: Tensor
    fq: Tensor


def draw_prompts(
    task: SkillComposition,
    group: str,
    k: int,
    n_dims: int,
    n_context: int,
    n_queries: int,
    n_prompts: int,
    seed: int,
    index: int,
) -> PromptSet:
    """``n_prompts`` prompts of ``group``: ``single`` (each atom alone, atoms in turn), ``seen``
    (the whitelist's tuples of size k) or ``heldout``; x ~ N(0, I). Drawn from the EVAL domain,
    keyed by (seed, ``index``)."""
    sub = dataclasses.replace(task, split=SPLIT_OF[group], k=k)
    g_in = generator(seed, index, Stream.INPUTS, domain=Domain.EVAL)
    g_par = generator(seed, index, Stream.PARAMS, domain=Domain.EVAL)
    xs = torch.randn(n_prompts, n_context + n_queries, n_dims, generator=g_in)
    if group == "single":  # stratified: atom i % A for prompt i, so every atom has its prompts
        n_atoms = len(task.atoms) * n_dims
        support = torch.nn.functional.one_hot(torch.arange(n_prompts) % n_atoms, n_atoms).bool()
        params = {"w": torch.randn(n_prompts, n_atoms, generator=g_par) * support, "support": support}
    else:
        params = sub.sample_params(n_prompts, n_dims, g_par)
    ys = sub.apply(params, xs)
    qxs = xs[:, n_context:]
    return PromptSet(
        group,
        k,
        len(sub.tuple_list(n_dims)),
        xs[:, :n_context],
        ys[:, :n_context],
        qxs,
        params,
        features(qxs.double(), task.atoms),
        ys[:, n_context:].double(),
    )


@torch.no_grad()
def query_predictions(predictor: Any, prompts: PromptSet, chunk: int = 4096) -> Tensor:
    """(P, M): the prediction at each query from the prompt's whole context, as the last position
    of a sequence context + query (P * M sequences, ``chunk`` at a time). A predictor with a
    ``given(params)`` method (an oracle) is first told the parameters of each sequence's function."""
    xs, ys, qxs = prompts.xs, prompts.ys, prompts.qxs
    P, n, D = xs.shape
    M = qxs.shape[1]
    seq_x = torch.cat([xs[:, None].expand(P, M, n, D), qxs[:, :, None]], dim=2).reshape(P * M, n + 1, D)
    seq_y = torch.cat([ys[:, None].expand(P, M, n), torch.zeros(P, M, 1, dtype=ys.dtype)], dim=2).reshape(P * M, n + 1)
    params = {key: value.repeat_interleave(M, dim=0) for key, value in prompts.params.items()}
    out = []
    for s in range(0, P * M, chunk):
        rows = slice(s, s + chunk)
        bound = (
            predictor.given({key: v[rows] for key, v in params.items()}) if hasattr(predictor, "given") else predictor
        )
        out.append(bound(seq_x[rows], seq_y[rows])[:, n])
    return torch.cat(out).reshape(P, M).double()


def prompt_scores(preds: Tensor, prompts: PromptSet, recovery_tau: float) -> tuple[Tensor, Tensor]:
    """Per prompt: the normalised error (P,) and which atoms were recovered (P, A) (meaningful on
    the prompt's support only)."""
    err = ((preds - prompts.fq) ** 2).sum(1) / (prompts.fq**2).sum(1).clamp_min(1e-300)
    implied = torch.linalg.lstsq(prompts.qfeat, preds[..., None]).solution[..., 0]
    coef = coefficients(prompts.params).double()
    recovered = (implied - coef) ** 2 <= recovery_tau * coef**2
    return err, recovered & prompts.params["support"]


def composition_metrics(
    predictors: dict[str, Any],
    task: SkillComposition,
    n_dims: int,
    n_context: int,
    *,
    n_prompts: int = 200,
    n_queries: int | None = None,
    tau: float = TAU,
    recovery_tau: float = RECOVERY_TAU,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per predictor, group (``single``, then ``seen`` and ``heldout`` per tuple size of
    the whitelist) and k: ``full_marks`` (with its standard error), ``component_fraction``,
    ``independence`` and ``gap``. A predictor with a ``given(params)`` method (an oracle) is
    told each batch's true parameters through it. ``n_queries`` defaults to twice the atoms."""
    n_atoms = len(task.atoms) * n_dims
    n_queries = 2 * n_atoms if n_queries is None else n_queries
    if not 0 < tau < 1 or not 0 < recovery_tau < 1:
        raise ICLError(f"composition: tau {tau}, recovery_tau {recovery_tau}; allowed: numbers in (0, 1)")
    if n_queries <= n_atoms:
        raise ICLError(f"composition: n_queries {n_queries}; allowed: more than the {n_atoms} atoms")
    if n_prompts < n_atoms:  # every atom needs singleton prompts for its competence
        raise ICLError(f"composition: n_prompts {n_prompts}; allowed: at least the {n_atoms} atoms")
    sizes = sorted({len(t) for t in dataclasses.replace(task, split="train", k=None).tuple_list(n_dims)})
    groups = [("single", 1)] + [(g, k) for g in ("seen", "heldout") for k in sizes]
    rows: list[dict[str, Any]] = []
    competence: dict[str, Tensor] = {}
    for index, (group, k) in enumerate(groups):
        if not dataclasses.replace(task, split=SPLIT_OF[group], k=k).tuple_list(n_dims):
            continue
        prompts = draw_prompts(task, group, k, n_dims, n_context, n_queries, n_prompts, seed, index)
        support = prompts.params["support"]
        for name, predictor in predictors.items():
            preds = query_predictions(predictor, prompts)
            err, recovered = prompt_scores(preds, prompts, recovery_tau)
            full = (err < tau).double()
            if group == "single":
                per_atom = full.new_zeros(n_atoms).index_add_(0, support.long().argmax(1), full)
                competence[name] = per_atom / support.sum(0).clamp_min(1)
            indep = torch.where(support, competence[name][None, :], 1.0).prod(1)
            p = full.mean().item()
            rows.append(
                {
                    "predictor": name,
                    "group": group,
                    "k": k,
                    "n_prompts": n_prompts,
                    "n_tuples": prompts.n_tuples,
                    "full_marks": p,
                    "full_marks_se": math.sqrt(p * (1 - p) / n_prompts),
                    "component_fraction": (recovered.sum(1) / support.sum(1)).mean().item(),
                    "independence": indep.mean().item(),
                    "gap": p - indep.mean().item(),
                    "median_error": err.median().item(),
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]], tau: float, recovery_tau: float, n_context: int) -> str:
    head = (
        f"# Skill composition\n\nContext of {n_context} examples; full marks: normalised error < {tau:g}; "
        f"component recovered: (c_hat - c)^2 <= {recovery_tau:g} c^2; gap = full marks - independence "
        "prediction (product of single-skill competences).\n\n"
        "| predictor | tuples | tuple size k | full marks | component fraction | independence | gap | median error |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['predictor']} | {r['group']} | {r['k']} | {r['full_marks']:.3f} +- {r['full_marks_se']:.3f} | "
        f"{r['component_fraction']:.3f} | {r['independence']:.3f} | {r['gap']:+.3f} | {r['median_error']:.3g} |\n"
        for r in rows
    )
    return head + body


def report_run(
    run: str | Path,
    out_dir: str | Path | None = None,
    *,
    n_context: int | None = None,
    n_prompts: int = 200,
    n_queries: int | None = None,
    tau: float = TAU,
    recovery_tau: float = RECOVERY_TAU,
    alpha: float = 0.01,
) -> list[dict[str, Any]]:
    """The composition metrics of a run trained on skill_composition (its last checkpoint), beside
    oracle_support, dictionary_lasso (``alpha``), least_squares and zero, with a context of
    ``n_context`` examples (default: the run's sweep-table k, eval.table_k or min(16, N - 1));
    written to ``out_dir`` (default RUN/eval/composition) as composition.json and composition.md.
    ``n_queries`` defaults to twice the atoms."""
    model, cfg = load_model(run)
    mixture = PretrainMixture.from_config(list(cfg.data.mixture), cfg.data.n_dims)
    comp = mixture.component(SkillComposition.name)
    if comp is None:
        raise ICLError(f"{run}: not trained on skill_composition; allowed: a run whose data.mixture has it")
    task = comp.task
    n_context = table_k(cfg, cfg.data.n_points) if n_context is None else n_context
    if not 1 <= n_context < cfg.data.n_points:
        raise ICLError(f"composition: n_context {n_context}; allowed: an integer in 1..{cfg.data.n_points - 1}")
    n_queries = 2 * len(task.atoms) * cfg.data.n_dims if n_queries is None else n_queries
    predictors = {
        "model": model.predict,
        "oracle_support": OracleSupport([0], task.atoms),
        "dictionary_lasso": DictionaryLasso(alpha, task.atoms),
        "least_squares": LeastSquares(),
        "zero": Zero(),
    }
    seed = cfg.eval.seed
    rows = composition_metrics(
        predictors,
        task,
        cfg.data.n_dims,
        n_context,
        n_prompts=n_prompts,
        n_queries=n_queries,
        tau=tau,
        recovery_tau=recovery_tau,
        seed=seed,
    )
    out = Path(out_dir) if out_dir is not None else Path(run) / "eval" / "composition"
    settings = {
        "n_context": n_context,
        "n_prompts": n_prompts,
        "n_queries": n_queries,
        "tau": tau,
        "recovery_tau": recovery_tau,
        "alpha": alpha,
        "seed": seed,
    }
    atomic_write(out / "composition.json", json.dumps({"settings": settings, "rows": rows}, indent=1))
    atomic_write(out / "composition.md", markdown(rows, tau, recovery_tau, n_context))
    return rows
