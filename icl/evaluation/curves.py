"""Error curves: squared error of every predictor at every number k of in-context examples,
on a seeded evaluation set that never overlaps the training streams."""

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

Predict = Callable[[Tensor, Tensor], Tensor]

# Evaluation prompts are drawn in blocks of this many, block j keyed by step j of the EVAL
# domain: the first P prompts of a scenario are the same whatever P is.
BLOCK = 100


@dataclasses.dataclass
class CurveResult:
    """Squared errors (P prompts, N positions) per predictor; position k has k examples."""

    sq_errors: dict[str, np.ndarray]
    n_dims: int

    def summary(self, n_boot: int = 1000, level: float = 0.9, seed: int = 0) -> dict[str, dict[str, list[float]]]:
        """Mean over prompts and a percentile-bootstrap interval, per predictor and k. Every
        predictor is resampled with the same prompts (a paired bootstrap), so predictors with
        equal errors get equal intervals."""
        P = next(iter(self.sq_errors.values())).shape[0]
        idx = np.random.default_rng(seed).integers(0, P, size=(n_boot, P))
        out = {}
        for name, err in self.sq_errors.items():
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
    curriculum's final length and dims unless overridden; ``query`` names a QUERY_SHIFTS entry."""
    if query is not None:
        query_shift(query)  # an unknown name fails before any work
    n_points = n_points or sampler.cfg.n_points
    n_dims = n_dims or sampler.cfg.n_dims
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in predictors}
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
            chunks[name].append(((preds.double() - targets.double()) ** 2).cpu().numpy())
    return CurveResult({k: np.concatenate(v) for k, v in chunks.items()}, n_dims)


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
