"""Two-layer ReLU networks f(x) = b . relu(W x), scaled to unit variance by default."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from icl.tasks.base import FunctionClass, Params, gaussian, require


@dataclasses.dataclass
class ReluNet(FunctionClass):
    """f(x) = b . relu(W x) / sqrt(d h) with W_ij ~ N(0, 2), b ~ N(0, I_h) (paper 1: each
    relu unit has second moment d, so Var f = 1). ``normalize=False``: paper 2's
    f(x) = sqrt(2 / h) b . relu(W x) with W_ij ~ N(0, 1), whose variance is d."""

    name = "relu_2nn"
    hidden: int = 100
    normalize: bool = True

    def check(self, n_dims: int) -> None:
        require(self.hidden >= 1, "relu_2nn.hidden", "an integer >= 1", self.hidden)

    def floats_per_sequence(self, n_points: int, n_dims: int) -> int:
        # W (hidden, d) and b, then the hidden layer (n_points, hidden) before and after the relu.
        return self.hidden * (n_dims + 1 + 2 * n_points) + n_points

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        w_std = math.sqrt(2.0) if self.normalize else 1.0
        return {
            "W": gaussian((n, self.hidden, n_dims), generator) * w_std,
            "b": gaussian((n, self.hidden), generator),
        }

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        W, b = params["W"].to(xs), params["b"].to(xs)
        d = W.shape[-1]
        hidden = torch.relu(torch.einsum("bnd,bhd->bnh", xs, W))
        scale = 1.0 / math.sqrt(d * self.hidden) if self.normalize else math.sqrt(2.0 / self.hidden)
        return torch.einsum("bnh,bh->bn", hidden, b) * scale
