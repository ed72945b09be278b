"""A user module (README "Extending"): a piecewise-linear function class and a scenario family,
registered from outside the package. Train with `imports=[examples/piecewise_linear.py]`."""

import dataclasses
import math

import torch

from icl import tasks
from icl.errors import ICLError
from icl.evaluation import scenarios
from icl.evaluation.scenarios.base import Scenario, single


@dataclasses.dataclass
class PiecewiseLinear(tasks.FunctionClass):
    """f(x) = max_k w_k . x / sqrt(d), k < n_pieces, w_k ~ N(0, I_d): a convex piecewise-linear
    function (n_pieces = 1: a linear one)."""

    name = "piecewise_linear"  # the config name: data.mixture[].name
    n_pieces: int = 3  # a config parameter: data.mixture[].params.n_pieces

    def check(self, n_dims: int) -> None:
        if self.n_pieces < 1:
            raise ICLError(f"piecewise_linear.n_pieces: got {self.n_pieces}; allowed: an integer >= 1")

    def sample_params(self, n, n_dims, generator):
        return {"w": torch.randn(n, self.n_pieces, n_dims, generator=generator, device=generator.device)}

    def apply(self, params, xs):
        w = params["w"].to(xs)
        return torch.einsum("bnd,bkd->bnk", xs, w).amax(dim=-1) / math.sqrt(w.shape[-1])


tasks.register(PiecewiseLinear)  # importing this file twice registers it once


def piecewise_pieces(cfg, mixture):
    """Piecewise-linear data with 1..4 pieces: a sweep table of error against n_pieces."""
    return [
        Scenario(
            f"pieces.n_{k}",
            f"piecewise linear, {k} pieces",
            single("piecewise_linear", {"n_pieces": k}),
            group="pieces",
            value=k,
        )
        for k in range(1, 5)
    ]


scenarios.register(piecewise_pieces)
