"""Dense and sparse linear functions f(x) = w.x (scaled to unit variance by default)."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from icl.tasks.base import FunctionClass, Params, gaussian, require


@dataclasses.dataclass
class DenseLinear(FunctionClass):
    """f(x) = w.x / sqrt(d), w ~ N(0, I_d) (paper 1). ``normalize=False``: f(x) = w.x
    (paper 2), whose variance is d for x ~ N(0, I_d)."""

    name = "dense_linear"
    bayes_posterior = "gaussian_linear"
    normalize: bool = True
    w_scale: float = 1.0  # multiplies w: > 1 or < 1 gives paper 2's "weights scaled" shift

    def check(self, n_dims: int) -> None:
        # The prior's scale: 0 would make every function 0 and the Bayes posterior undefined.
        require(self.w_scale > 0, "dense_linear.w_scale", "a number > 0", self.w_scale)

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        return {"w": gaussian((n, n_dims), generator) * self.w_scale}

    def scale(self, n_dims: int) -> float:
        return 1.0 / math.sqrt(n_dims) if self.normalize else 1.0

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        w = params["w"].to(xs)
        return torch.einsum("bnd,bd->bn", xs, w) * self.scale(w.shape[-1])


@dataclasses.dataclass
class SparseLinear(FunctionClass):
    """f(x) = w.x / sqrt(nnz): ``nnz`` coordinates chosen uniformly without replacement carry
    N(0, 1) weights, the rest are 0. Under a curriculum with fewer active dims than ``nnz``,
    every active coordinate is used. ``normalize=False``: f(x) = w.x (paper 2)."""

    name = "sparse_linear"
    bayes_posterior = "sparse_supports"
    nnz: int = 2
    normalize: bool = True
    w_scale: float = 1.0

    def check(self, n_dims: int) -> None:
        require(1 <= self.nnz <= n_dims, "sparse_linear.nnz", f"an integer in 1..{n_dims} (the input dims)", self.nnz)
        require(self.w_scale > 0, "sparse_linear.w_scale", "a number > 0", self.w_scale)

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        k = min(self.nnz, n_dims)
        # A uniformly random k-subset: the first k indices of a uniformly random permutation.
        order = torch.rand(n, n_dims, generator=generator, device=generator.device).argsort(dim=1)
        support = torch.zeros(n, n_dims, dtype=torch.bool, device=generator.device)
        support.scatter_(1, order[:, :k], True)
        w = gaussian((n, n_dims), generator) * support * self.w_scale
        return {"w": w, "support": support}

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        w = params["w"].to(xs)
        k = min(self.nnz, w.shape[-1])
        scale = 1.0 / math.sqrt(k) if self.normalize else 1.0
        return torch.einsum("bnd,bd->bn", xs, w) * scale
