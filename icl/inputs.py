"""Input distributions for x: Gaussian (or a registered base distribution) with isotropic or skewed
covariance, scaled and shifted; usable for training and for evaluation shifts. User modules add base
distributions with ``register``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from icl.errors import ICLError
from icl.plugins import check_free
from icl.rng import Stream, generator

COVARIANCES = ("isotropic", "skewed", "half_subspace")

# (n, n_points, n_dims, generator) -> z (n, n_points, n_dims) on the generator's device, drawn only
# from the generator. Mean 0 and covariance I keep E|x|^2 = d, as the classes' normalisation expects.
BaseDistribution = Callable[[int, int, int, torch.Generator], Tensor]


def gaussian(n: int, n_points: int, n_dims: int, gen: torch.Generator) -> Tensor:
    """z ~ N(0, I_d)."""
    return torch.randn(n, n_points, n_dims, generator=gen, device=gen.device)


DISTRIBUTIONS: dict[str, BaseDistribution] = {"gaussian": gaussian}


def register(name: str, distribution: BaseDistribution) -> None:
    """Add a base distribution for z under ``name`` (data.inputs.distribution, a scenario's
    ``inputs``); the same function again does nothing."""
    if not (callable(distribution) and name.isidentifier()):
        raise ICLError(
            f"input distribution {name!r}: allowed: a snake_case name and a function (n, n_points, n_dims, gen) -> z"
        )
    check_free("input distribution", name, distribution, DISTRIBUTIONS)
    DISTRIBUTIONS[name] = distribution


@dataclasses.dataclass
class InputConfig:
    """x = scale * (A z) + shift, z ~ N(0, I_d) (``distribution=gaussian``; or a registered base
    distribution, DISTRIBUTIONS).

    ``covariance=isotropic``: A = I. ``covariance=skewed``: A = Q diag(sqrt(lambda)) with
    eigenvalues lambda_i proportional to i^(-skew_power), normalised to mean 1 (so E|x|^2 = d
    as in the isotropic case), and Q a random orthogonal basis fixed by ``basis_seed``
    (paper 2's skewed-covariance shift uses skew_power = 1). ``covariance=half_subspace``:
    x ~ N(0, I) inside a random d/2-dimensional subspace (fixed by ``basis_seed``), 0 across it.
    """

    distribution: str = "gaussian"
    covariance: str = "isotropic"
    skew_power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0
    basis_seed: int = 0

    def check(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ICLError(f"data.inputs.distribution: got {self.distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")
        if self.covariance not in COVARIANCES:
            raise ICLError(f"data.inputs.covariance: got {self.covariance!r}; allowed: {', '.join(COVARIANCES)}")
        # Written so that NaN and infinities fail.
        if not 0 < self.scale < math.inf:
            raise ICLError(f"data.inputs.scale: got {self.scale!r}; allowed: a finite number > 0")
        if not 0 <= self.skew_power < math.inf:
            raise ICLError(f"data.inputs.skew_power: got {self.skew_power!r}; allowed: a finite number >= 0")
        if not math.isfinite(self.shift):
            raise ICLError(f"data.inputs.shift: got {self.shift!r}; allowed: a finite number")


@lru_cache(maxsize=128)
def covariance_factor(kind: str, n_dims: int, power: float, basis_seed: int) -> Tensor:
    """A (d, d) with A A^T = Q diag(lambda) Q^T: lambda_i ~ i^-power with mean 1 (skewed), or
    d/2 ones and zeros (half_subspace)."""
    if kind == "half_subspace":
        eig = (torch.arange(n_dims) < max(1, n_dims // 2)).to(torch.float64)
    else:
        eig = torch.arange(1, n_dims + 1, dtype=torch.float64) ** (-power)
        eig = eig * n_dims / eig.sum()
    g = generator(basis_seed, n_dims, Stream.BASIS)
    q, r = torch.linalg.qr(torch.randn(n_dims, n_dims, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal matrix
    return (q * eig.sqrt()).to(torch.float32)


def sample_inputs(cfg: InputConfig, n: int, n_points: int, n_dims: int, gen: torch.Generator) -> Tensor:
    """Draw xs (n, n_points, n_dims) on the generator's device."""
    xs = DISTRIBUTIONS[cfg.distribution](n, n_points, n_dims, gen)
    if cfg.covariance != "isotropic":
        xs = xs @ covariance_factor(cfg.covariance, n_dims, cfg.skew_power, cfg.basis_seed).to(xs.device).T
    if cfg.scale != 1.0:
        xs = xs * cfg.scale
    if cfg.shift != 0.0:
        xs = xs + cfg.shift
    return xs
