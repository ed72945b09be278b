"""Least squares on squared inputs: the baseline matched to the ``quadratic`` function class."""

from __future__ import annotations

from torch import Tensor

from icl.baselines.base import Predictor, check_inputs
from icl.baselines.linear import LeastSquares


class QuadraticLeastSquares(Predictor):
    """Minimum-norm least squares on the features x * x: f(x) = w . (x * x) is linear in them,
    so on noiseless quadratic data the fit is exact once the context has d points."""

    name = "quadratic_least_squares"  # the registry key, i.e. the name in --baselines

    def __init__(self) -> None:  # keyword arguments would be the baseline's parameters
        self.label = "quadratic_least_squares"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:  # preds[:, i] from xs[:, :i+1], ys[:, :i] only
        check_inputs(xs, ys)
        return LeastSquares().predict(xs * xs, ys)
