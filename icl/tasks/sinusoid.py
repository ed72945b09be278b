"""Sinusoids f(x) = b cos(2 pi w u.x): paper 1's 1-D class and a ridge-function
generalisation to d > 1."""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from icl.tasks.base import FunctionClass, Params, gaussian, require


@lru_cache(maxsize=64)
def cos2_mean(freq_shape: float, freq_scale: float, freq: float | None) -> float:
    """E[cos^2(2 pi w z)] for z ~ N(0, 1), with w fixed or w ~ Gamma(shape, scale).

    cos^2(t) = (1 + cos 2t) / 2 and E cos(4 pi w z) = exp(-8 pi^2 w^2), so the mean is
    (1 + E_w exp(-8 pi^2 w^2)) / 2, integrated numerically over the Gamma density.
    """
    if freq is not None:
        return 0.5 * (1.0 + math.exp(-8 * math.pi**2 * freq**2))
    mean, sd = freq_shape * freq_scale, math.sqrt(freq_shape) * freq_scale
    w = np.linspace(0.0, mean + 40 * sd, 400_001)[1:]
    log_pdf = (freq_shape - 1) * np.log(w) - w / freq_scale
    log_pdf -= math.lgamma(freq_shape) + freq_shape * math.log(freq_scale)
    pdf = np.exp(log_pdf)
    dw = w[1] - w[0]
    return float(0.5 * (1.0 + np.sum(pdf * np.exp(-8 * math.pi**2 * w**2)) * dw))


@dataclasses.dataclass
class Sinusoid(FunctionClass):
    """f(x) = b cos(2 pi w u.x) with w ~ Gamma(freq_shape, freq_scale) (mean 1 by default) or
    fixed (``freq``), b ~ N(0, amp_std^2), and u = 1 when d = 1 (paper 1's form) or uniform
    on the unit sphere when d > 1 (a ridge function along a random direction; u.x ~ N(0, 1)
    for isotropic x, so the 1-D statistics carry over).

    ``normalize=True`` divides b by sqrt(E cos^2(2 pi w z)) (about 1/sqrt(2)), so that
    Var f(x) = amp_std^2 for x ~ N(0, I); ``normalize=False`` keeps b ~ N(0, amp_std^2).
    """

    name = "sinusoid"
    bayes_posterior = "frequency_grid"
    freq_shape: float = 6.0
    freq_scale: float = 1.0 / 6.0
    freq: float | None = None
    amp_std: float = 1.0
    normalize: bool = True

    def check(self, n_dims: int) -> None:
        require(self.freq_shape > 0, "sinusoid.freq_shape", "a number > 0", self.freq_shape)
        require(self.freq_scale > 0, "sinusoid.freq_scale", "a number > 0", self.freq_scale)
        require(self.freq is None or self.freq > 0, "sinusoid.freq", "null or a number > 0", self.freq)
        require(self.amp_std > 0, "sinusoid.amp_std", "a number > 0", self.amp_std)

    def _amp_scale(self) -> float:
        if not self.normalize:
            return self.amp_std
        return self.amp_std / math.sqrt(cos2_mean(self.freq_shape, self.freq_scale, self.freq))

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        dev = generator.device
        if self.freq is None:
            # torch's Gamma sampler takes no generator, so it would break (seed, step) purity.
            freq = _gamma(n, self.freq_shape, generator) * self.freq_scale
        else:
            freq = torch.full((n,), float(self.freq), device=dev)
        amp = gaussian((n,), generator) * self._amp_scale()
        if n_dims == 1:
            direction = torch.ones(n, 1, device=dev)
        else:
            direction = gaussian((n, n_dims), generator)
            direction = direction / direction.norm(dim=-1, keepdim=True)
        return {"amp": amp, "freq": freq, "u": direction}

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        proj = torch.einsum("bnd,bd->bn", xs, params["u"].to(xs))
        freq, amp = params["freq"].to(xs), params["amp"].to(xs)
        return amp[:, None] * torch.cos(2 * math.pi * freq[:, None] * proj)


def _gamma(n: int, shape: float, generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) samples from a seeded generator (Marsaglia & Tsang, 2000).

    Each round proposes for every entry and keeps the first accepted proposal; acceptance is
    > 95% for shape >= 1, so rounds run in blocks of 8 with one host check per block (the
    probability that a block leaves an entry unfinished is < 1e-10). Shapes < 1 use the boost
    Gamma(a) = Gamma(a + 1) U^(1/a).
    """
    boost = shape < 1
    a = shape + 1.0 if boost else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    dev = generator.device
    out = torch.empty(n, device=dev)
    todo = torch.ones(n, dtype=torch.bool, device=dev)
    for _ in range(8):
        for _ in range(8):
            z = torch.randn(n, generator=generator, device=dev)
            u = torch.rand(n, generator=generator, device=dev)
            v = (1 + c * z) ** 3
            log_v = torch.log(v.clamp_min(1e-38))
            ok = (v > 0) & (torch.log(u.clamp_min(1e-38)) < 0.5 * z**2 + d - d * v + d * log_v)
            out = torch.where(ok & todo, d * v, out)
            todo = todo & ~ok
        if not bool(todo.any()):
            break
    require(not bool(todo.any()), "sinusoid.freq_shape", "a shape the Gamma sampler accepts", shape)
    if boost:
        u = torch.rand(n, generator=generator, device=dev)
        out = out * u ** (1.0 / shape)
    return out
