"""Algorithm agreement (Akyurek et al., 2023): how close two predictors' answers are on the same
prompts. Squared prediction difference per number k of in-context examples, squared difference of
the weights implied by M unlabelled queries with the context fixed, and the linearity R^2 of each
predictor's predictions (icl/evaluation/fingerprint.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from icl.evaluation.fingerprint import implied_weights, linearity_r2
from icl.inputs import InputConfig
from icl.rng import Domain
from icl.sampling import PretrainMixture, Sampler

Predict = Callable[[Tensor, Tensor], Tensor]
SEP = " vs "  # a pair's display name: "model vs least_squares" (never parsed)


def pair_label(a: str, b: str) -> str:
    return f"{a}{SEP}{b}"


def pairs(names: Iterable[str], reference: str | None = None) -> list[tuple[str, str]]:
    """Every unordered pair of ``names``, or ``reference`` against each other name."""
    names = list(names)
    if reference is not None:
        return [(reference, n) for n in names if n != reference]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def prediction_difference(a: Tensor, b: Tensor) -> Tensor:
    """(N,) mean over prompts of (a - b)^2 at each position k (k in-context examples); a, b (P, N)."""
    return ((a.double() - b.double()) ** 2).mean(0)


def weight_difference(fp_a: Tensor, fp_b: Tensor, queries: Tensor) -> float:
    """Mean over prompts of |w_a - w_b|^2, the weights implied by two fingerprints (P, M) at the
    same ``queries`` (M, D)."""
    return float(((implied_weights(fp_a, queries) - implied_weights(fp_b, queries)) ** 2).sum(1).mean())


def linearity(fp: Tensor, queries: Tensor) -> float:
    """Mean linearity R^2 over the prompts where it is defined (NaN where none is)."""
    r2 = linearity_r2(fp, queries)
    ok = ~r2.isnan()
    return float(r2[ok].mean()) if ok.any() else float("nan")


def agreement_table(preds: Mapping[str, Tensor], reference: str | None = None) -> dict[str, list[float]]:
    """{"a vs b": squared prediction difference per k} for every pair (or ``reference`` vs each)."""
    return {pair_label(a, b): prediction_difference(preds[a], preds[b]).tolist() for a, b in pairs(preds, reference)}


@torch.no_grad()
def agreement_curves(
    predictors: Mapping[str, Predict],
    sampler: Sampler,
    n_prompts: int,
    block: int,
    device: str | torch.device = "cpu",
    reference: str = "model",
    *,
    n_points: int | None = None,
    n_dims: int | None = None,
    inputs: InputConfig | None = None,
    mixture: PretrainMixture | None = None,
) -> dict[str, list[float]]:
    """``agreement_table`` of ``reference`` vs every other predictor on an evaluation scenario's
    prompts, the prompts of its error curves (icl.evaluation.curves): ``n_prompts`` in blocks of
    ``block``, block j the EVAL batch of step j, at the final length and dims unless overridden."""
    preds: dict[str, list[Tensor]] = {name: [] for name in predictors}
    for j in range((n_prompts + block - 1) // block):
        batch = sampler.sample_batch(
            j,
            batch_size=block,
            domain=Domain.EVAL,
            device=device,
            n_points=n_points or sampler.cfg.n_points,
            n_dims=n_dims or sampler.cfg.n_dims,
            inputs=inputs,
            mixture=mixture,
        ).slice(0, min(block, n_prompts - j * block))
        for name, predict in predictors.items():
            preds[name].append(predict(batch.xs, batch.ys).double().cpu())
    joined = {name: torch.cat(chunks) for name, chunks in preds.items()}
    return agreement_table(joined, reference if reference in joined else None)
