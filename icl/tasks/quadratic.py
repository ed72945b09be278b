"""Quadratic regression f(x) = w . (x * x) (paper 2's quadratic class), scaled to unit variance."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from icl.tasks.base import FunctionClass, Params, gaussian


@dataclasses.dataclass
class Quadratic(FunctionClass):
    """f(x) = w . (x * x) / sqrt(3 d), w ~ N(0, I_d). Var f = 1 for x ~ N(0, I_d):
    E f^2 = sum_i E[w_i^2] E[x_i^4] / (3 d) = d * 1 * 3 / (3 d), as E x^4 = 3 for a standard
    normal and the cross terms vanish (E w_i w_j = 0). ``normalize=False``: paper 2's
    f(x) = w . (x * x) / sqrt(3), variance d, as the other classes' ``normalize=False``."""

    name = "quadratic"  # the registry key, i.e. the config name
    bayes_posterior = None  # none implemented (on the features x * x it would be Gaussian linear)
    normalize: bool = True  # dataclass fields are the config parameters

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        return {"w": gaussian((n, n_dims), generator)}

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        w = params["w"].to(xs)
        scale = 1.0 / math.sqrt(3 * (w.shape[-1] if self.normalize else 1))
        return torch.einsum("bnd,bd->bn", xs * xs, w) * scale
