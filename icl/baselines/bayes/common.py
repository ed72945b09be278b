"""Pieces shared by the Bayes-optimal predictors: the per-component posterior interface, the
noise each component assumes, the sequential (chain-rule) log evidence, and a streaming
log-sum-exp average over hypotheses (supports, frequencies) evaluated in chunks."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from icl.baselines.base import exclusive_cumsum

# Labels are computed and stored in float32 (the sampler's dtype): "noiseless" labels carry a
# rounding error of about 1.5 u S rms and 15 u S at most (u = 2^-24, S the prior's label
# standard deviation; measured on dense and sparse classes at d = 8 and 20). The exact
# sigma -> 0 limit would treat that rounding as an impossible event, so noiseless components
# assume noise of std PRECISION_FACTOR * u * S instead. 4: the true hypothesis loses ~0.07 nats
# per point to rounding (7 at the worst point), against ~13 nats per point that a consistent
# hypothesis gains over one with a free parameter left; 8 let a wrong sparse support that fits
# three points to ~1e-6 by chance keep weight (an error of 7e-3 on one prompt in 200).
PRECISION_FACTOR = 4.0
FLOAT32_UNIT = 2.0**-24


@dataclasses.dataclass(frozen=True)
class PosteriorOptions:
    """The Bayes predictor's numerical settings (``BayesMixture`` documents each)."""

    noise_floor: float = 0.0
    sinusoid_noise_floor: float = 0.0
    max_supports: int = 20_000
    n_grid: int = 2000


class ComponentPosterior(Protocol):
    """The posterior of one function class (with its label noise) given every prefix. ``name``
    is the key a function class's ``bayes_posterior`` gives (icl.baselines.bayes.posteriors)."""

    name: ClassVar[str]

    @classmethod
    def from_task(cls, task, noise_std: float, options: PosteriorOptions) -> ComponentPosterior:
        """The posterior for ``task`` with label noise ``noise_std``."""
        ...

    def label_std(self, n_dims: int) -> float:
        """The prior standard deviation of f(x) for x ~ N(0, I_d): the scale of the labels, from
        which the mixture sets the noise that stands in for float32 rounding."""
        ...

    def evaluate(self, xs: Tensor, ys: Tensor, min_std: float) -> tuple[Tensor, Tensor]:
        """(posterior-mean prediction, log evidence of the context), each (B, N), for float64
        xs (B, N, D) and ys (B, N), assuming a noise std of at least ``min_std``. The evidence
        is a proper density of the context labels given the context inputs, so evidences of
        different classes (at the same ``min_std``) are comparable."""
        ...


def gaussian_log_norm(count: Tensor, noise_var: float) -> Tensor:
    """-k/2 log(2 pi sigma^2): the normalising constant of k independent N(., sigma^2) labels."""
    return -0.5 * count * math.log(2 * math.pi * noise_var)


def sequential_log_evidence(ys: Tensor, pred: Tensor, pred_var: Tensor) -> Tensor:
    """log p(y_0 .. y_{i-1} | x) for every prefix i, by the chain rule: the sum over j < i of
    log N(y_j; pred_j, pred_var_j), where pred_j and pred_var_j are the posterior predictive
    mean and variance of y_j given the first j points (exact for a Gaussian model at any noise
    level). ``ys`` (B, N); ``pred``, ``pred_var`` (B, N, ...) with hypotheses trailing.

    Unlike the closed form's y^T y - y^T X A^-1 X^T y, no term cancels: at noise levels near
    float precision every step's residual y_j - pred_j is computed directly."""
    shape = (*ys.shape, *([1] * (pred.ndim - ys.ndim)))
    resid = ys.reshape(shape) - pred
    step = -0.5 * (torch.log(2 * math.pi * pred_var) + resid * resid / pred_var)
    return exclusive_cumsum(step, dim=1)


class HypothesisAverage:
    """Accumulates sum_h exp(logw_h) and sum_h exp(logw_h) pred_h over chunks of hypotheses
    with a running maximum (log-sum-exp), so no chunk can overflow or underflow the rest."""

    def __init__(self) -> None:
        self.peak: Tensor | None = None
        self.mass: Tensor | None = None
        self.weighted: Tensor | None = None

    def add(self, logw: Tensor, pred: Tensor) -> None:
        """logw, pred: (..., H) for H hypotheses of this chunk (logw may be -inf: weightless)."""
        peak = logw.amax(-1)
        if self.peak is not None:
            peak = torch.maximum(peak, self.peak)
        # Where nothing has weight yet the peak is -inf; scale by 0 there instead (exp -> 0).
        scale = torch.where(torch.isfinite(peak), peak, 0.0)
        w = torch.exp(logw - scale[..., None])
        mass, weighted = w.sum(-1), (w * pred).sum(-1)
        if self.peak is not None:
            rescale = torch.exp(self.peak - scale)
            mass = mass + self.mass * rescale
            weighted = weighted + self.weighted * rescale
        self.peak, self.mass, self.weighted = peak, mass, weighted

    def remove(self, logw: Tensor, pred: Tensor) -> None:
        """Take back hypotheses added earlier (logw, pred: (..., H)), e.g. grid cells that a finer
        grid replaces. What is left is clamped at 0: rounding cannot make it negative."""
        assert self.peak is not None and self.mass is not None and self.weighted is not None
        w = torch.exp(logw - self.peak[..., None])
        self.mass = (self.mass - w.sum(-1)).clamp_min(0)
        left = self.mass > 0
        self.weighted = torch.where(left, self.weighted - (w * pred).sum(-1), 0.0)
        # Nothing left: forget the old peak, so hypotheses added later, however improbable next
        # to the removed ones, set the scale instead of underflowing against it.
        self.peak = torch.where(left, self.peak, -math.inf)

    def result(self) -> tuple[Tensor, Tensor]:
        """(weighted mean of pred, log sum_h exp(logw_h))."""
        assert self.peak is not None and self.mass is not None and self.weighted is not None
        return self.weighted / self.mass, self.peak + torch.log(self.mass)
