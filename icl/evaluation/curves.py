"""Error curves: squared error (and, where the scenario's classes declare another metric, that
error too) of every predictor at every number k of in-context examples, on a seeded evaluation
set that never overlaps the training streams."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from icl.evaluation.queries import predict_at_queries, query_shift
from icl.inputs import InputConfig, sample_inputs
from icl.rng import Domain, Stream, generator
from icl.sampling import Batch, PretrainMixture, Sampler
from icl.tasks import mixture_metric

Predict = Callable[[Tensor, Tensor], Tensor]

# Evaluation prompts are drawn in blocks of this many, block j keyed by step j of the EVAL
# domain: the first P prompts of a scenario are the same whatever P is.
BLOCK = 100

# A metric (icl.tasks.METRICS, declared by each function class) -> the error of each prediction.
# zero_one: sign(pred) differs from the label's sign (labels +-1; a prediction of 0 is an error).
ERRORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": lambda preds, targets: (preds - targets) ** 2,
    "zero_one": lambda preds, targets: (preds * targets <= 0).to(preds.dtype),
}


def scenario_metric(mixture: PretrainMixture) -> str:
    """The metric of a mixture's data: the one its classes of positive weight all declare
    (zero_one where all are classification classes), else mse."""
    return mixture_metric(c.task for c in mixture.components if c.weight > 0)


@dataclasses.dataclass
class CurveResult:
    """Squared errors (P prompts, N positions) per predictor; position k has k examples.
    ``metric``: the scenario's metric (``scenario_metric``); where it is not mse,
    ``metric_errors`` holds each predictor's errors in it (e.g. 0/1 errors)."""

    sq_errors: dict[str, np.ndarray]
    n_dims: int
    metric: str = "mse"
    metric_errors: dict[str, np.ndarray] | None = None

    def errors(self, metric: str | None = None) -> dict[str, np.ndarray]:
        """Per-predictor errors in ``metric`` (default: the scenario's): mse or ``self.metric``."""
        metric = metric or self.metric
        if metric == "mse":
            return self.sq_errors
        if metric != self.metric or self.metric_errors is None:
            raise ValueError(f"metric {metric!r} was not computed; these curves have mse and {self.metric}")
        return self.metric_errors

    def summary(
        self, n_boot: int = 1000, level: float = 0.9, seed: int = 0, metric: str | None = None
    ) -> dict[str, dict[str, list[float]]]:
        """Mean over prompts and a percentile-bootstrap interval, per predictor and k, in ``metric``
        (default: the scenario's). Every predictor is resampled with the same prompts (a paired
        bootstrap), so predictors with equal errors get equal intervals."""
        errors = self.errors(metric)
        P = next(iter(errors.values())).shape[0]
        idx = np.random.default_rng(seed).integers(0, P, size=(n_boot, P))
        out = {}
        for name, err in errors.items():
            boots = err[idx].mean(axis=1)  # (n_boot, N)
            lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)
            out[name] = {"mean": err.mean(axis=0).tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist()}
        return out


@torch.no_grad()
def error_curves(
    predictors: dict[str, Predict],
    sampler: Sampler,
    n_prompts: int,
    *,
    n_points: int | None = None,
    n_dims: int | None = None,
    mixture: PretrainMixture | None = None,
    inputs: InputConfig | None = None,
    query: str | None = None,
    device: str | torch.device = "cpu",
) -> CurveResult:
    """Evaluate every predictor on the same ``n_prompts`` prompts (EVAL domain), at the
    curriculum's final length and dims unless overridden; ``query`` names a QUERY_SHIFTS entry.
    Squared errors always; the errors in the mixture's metric too where it is not mse."""
    if query is not None:
        query_shift(query)  # an unknown name fails before any work
    n_points = n_points or sampler.cfg.n_points
    n_dims = n_dims or sampler.cfg.n_dims
    metric = scenario_metric(mixture or sampler.mixture)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in predictors}
    metric_chunks: dict[str, list[np.ndarray]] = {name: [] for name in predictors}
    for block in range((n_prompts + BLOCK - 1) // BLOCK):
        batch = sampler.sample_batch(
            block,
            batch_size=BLOCK,
            domain=Domain.EVAL,
            device=device,
            n_points=n_points,
            n_dims=n_dims,
            inputs=inputs,
            mixture=mixture,
        ).slice(0, min(BLOCK, n_prompts - block * BLOCK))
        targets = batch.ys
        if query is not None:
            batch, qxs, targets = shift_queries(
                batch, query, sampler, block, mixture or sampler.mixture, inputs or sampler.cfg.inputs
            )
        for name, predict in predictors.items():
            preds = (
                predict(batch.xs, batch.ys) if query is None else predict_at_queries(predict, batch.xs, batch.ys, qxs)
            )
            chunks[name].append(ERRORS["mse"](preds.double(), targets.double()).cpu().numpy())
            if metric != "mse":
                metric_chunks[name].append(ERRORS[metric](preds.double(), targets.double()).cpu().numpy())
    extra = {k: np.concatenate(v) for k, v in metric_chunks.items()} if metric != "mse" else None
    return CurveResult({k: np.concatenate(v) for k, v in chunks.items()}, n_dims, metric, extra)


def shift_queries(
    batch: Batch, query: str, sampler: Sampler, block: int, mixture: PretrainMixture, inputs: InputConfig
) -> tuple[Batch, Tensor, Tensor]:
    """Apply the query shift ``query``: returns the (possibly changed) context batch, the query
    inputs and their labels (B, N), from their own EVAL streams (substream 1)."""
    B, N, D = batch.xs.shape
    d = batch.info["n_dims"]
    dev = batch.xs.device
    g = generator(sampler.seed, block, Stream.INPUTS, substream=1, domain=Domain.EVAL, device=dev)
    fresh = torch.nn.functional.pad(sample_inputs(inputs, B, N, d, g), (0, D - d))
    xs, qxs = query_shift(query)(batch.xs, fresh, g)
    ys = batch.ys
    if xs is not batch.xs:  # a moved context keeps its label noise: f(new x) + (y - f(old x))
        ys = mixture.evaluate(batch.info, xs[..., :d]) + (batch.ys - mixture.evaluate(batch.info, batch.xs[..., :d]))
    g_noise = generator(sampler.seed, block, Stream.NOISE, substream=1, domain=Domain.EVAL, device=dev)
    qys = mixture.evaluate(batch.info, qxs[..., :d])
    qys = qys + batch.info["noise_std"][:, None] * torch.randn(B, N, generator=g_noise, device=dev)
    return Batch(xs, ys, batch.info), qxs, qys
