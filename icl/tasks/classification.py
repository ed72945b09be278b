"""Linear classification y = sign(w . x) (paper 2's linear classification class), judged by the 0/1
error of sign(prediction)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from icl.tasks.base import FunctionClass, Params, gaussian


@dataclasses.dataclass
class LinearClassification(FunctionClass):
    """y = sign(w . x), w ~ N(0, I_d) (paper 2): labels +-1, judged by the 0/1 error of sign(pred).

    w . x = 0 (probability 0 for continuous inputs) gives +1. Labels are balanced for inputs
    symmetric about 0, so E y = 0 and Var y = 1. Scaling w changes no label: no parameters.

    ``metric = "zero_one"``: evaluation reports the 0/1 error of sign(prediction) (MSE stays in
    the records as ``curves_mse``). Training uses ``train.loss``: ``squared`` (the default) or
    ``logistic``, softplus(-y * prediction), which paper 2's code uses for this class."""

    name = "linear_classification"
    metric = "zero_one"
    bayes_posterior = None  # none implemented (the posterior over w given signs has no closed form)

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        return {"w": gaussian((n, n_dims), generator)}

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        margin = torch.einsum("bnd,bd->bn", xs, params["w"].to(xs))
        return torch.where(margin >= 0, 1.0, -1.0).to(xs.dtype)
