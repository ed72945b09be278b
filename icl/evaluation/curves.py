"""Error curves: squared error of every predictor at every number k of in-context examples,
on a seeded evaluation set that never overlaps the training streams."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from icl.inputs import InputConfig
from icl.rng import Domain
from icl.sampling import PretrainMixture, Sampler

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
        """Mean over prompts and a percentile-bootstrap interval, per predictor and k."""
        rng = np.random.default_rng(seed)
        out = {}
        for name, err in self.sq_errors.items():
            P = err.shape[0]
            idx = rng.integers(0, P, size=(n_boot, P))
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
    device: str | torch.device = "cpu",
) -> CurveResult:
    """Evaluate every predictor on the same ``n_prompts`` prompts (EVAL domain), at the curriculum's final length and dims unless overridden."""
    n_points = n_points or sampler.cfg.n_points
    n_dims = n_dims or sampler.cfg.n_dims
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in predictors}
    for block in range((n_prompts + BLOCK - 1) // BLOCK):
        batch = sampler.sample_batch(
            block, batch_size=BLOCK, domain=Domain.EVAL, device=device,
            n_points=n_points, n_dims=n_dims, inputs=inputs, mixture=mixture,
        ).slice(0, min(BLOCK, n_prompts - block * BLOCK))
        for name, predict in predictors.items():
            preds = predict(batch.xs, batch.ys)
            chunks[name].append(((preds.double() - batch.ys.double()) ** 2).cpu().numpy())
    return CurveResult({k: np.concatenate(v) for k, v in chunks.items()}, n_dims)
