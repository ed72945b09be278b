"""Pieces shared by the Bayes-optimal predictors: the per-component posterior interface and a
streaming log-sum-exp average over hypotheses (supports, frequencies) evaluated in chunks."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Protocol

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class PosteriorOptions:
    """The Bayes predictor's numerical settings (``BayesMixture`` documents each)."""

    noise_floor: float = 1e-3
    sinusoid_noise_floor: float = 0.01
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

    def evaluate(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        """(posterior-mean prediction, log evidence of the context), each (B, N), for float64
        xs (B, N, D) and ys (B, N). The evidence is a proper density of the context labels
        given the context inputs, so evidences of different classes are comparable."""
        ...


def gaussian_log_norm(count: Tensor, noise_var: float) -> Tensor:
    """-k/2 log(2 pi sigma^2): the normalising constant of k independent N(., sigma^2) labels."""
    return -0.5 * count * math.log(2 * math.pi * noise_var)


class HypothesisAverage:
    """Accumulates sum_h exp(logw_h) and sum_h exp(logw_h) pred_h over chunks of hypotheses
    with a running maximum (log-sum-exp), so no chunk can overflow or underflow the rest."""

    def __init__(self) -> None:
        self.peak: Tensor | None = None
        self.mass: Tensor | None = None
        self.weighted: Tensor | None = None

    def add(self, logw: Tensor, pred: Tensor) -> None:
        """logw, pred: (..., H) for H hypotheses of this chunk."""
        peak = logw.amax(-1)
        if self.peak is not None:
            peak = torch.maximum(peak, self.peak)
        w = torch.exp(logw - peak[..., None])
        mass, weighted = w.sum(-1), (w * pred).sum(-1)
        if self.peak is not None:
            rescale = torch.exp(self.peak - peak)
            mass = mass + self.mass * rescale
            weighted = weighted + self.weighted * rescale
        self.peak, self.mass, self.weighted = peak, mass, weighted

    def result(self) -> tuple[Tensor, Tensor]:
        """(weighted mean of pred, log sum_h exp(logw_h))."""
        assert self.peak is not None and self.mass is not None and self.weighted is not None
        return self.weighted / self.mass, self.peak + torch.log(self.mass)
