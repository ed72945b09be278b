"""Baselines that fit nothing: the zero predictor, Garg et al.'s averaging estimator and
k-nearest neighbours, each computed for every prefix at once."""

from __future__ import annotations

import torch
from torch import Tensor

from icl.baselines.base import Predictor, check_inputs, exclusive_cumsum, is_int, require


class Zero(Predictor):
    """Predicts 0: about 1 (the function variance) on every unit-variance class."""

    name = "zero"

    def __init__(self) -> None:
        self.label = "zero"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        return torch.zeros_like(ys)


class Averaging(Predictor):
    """w_hat = mean_{j < i} y_j x_j, pred_i = w_hat . x_i (Garg et al. 2022): unbiased for
    w when x ~ N(0, I) and f(x) = w.x, but with variance that never vanishes for finite k."""

    name = "averaging"

    def __init__(self) -> None:
        self.label = "averaging"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        x64, y64 = xs.double(), ys.double()
        total = exclusive_cumsum(x64 * y64[..., None])  # (B, N, D): sum_{j<i} y_j x_j
        count = torch.arange(xs.shape[1], device=xs.device, dtype=torch.float64).clamp_min(1)
        w_hat = total / count[:, None]
        return (w_hat * x64).sum(-1).to(ys.dtype)


class KNN(Predictor):
    """Uniform average of the y's of the k context points nearest to the query (Euclidean);
    with fewer than k context points, all of them; 0 with no context."""

    name = "knn"

    def __init__(self, k: int = 3) -> None:
        require(is_int(k) and k >= 1, "knn.k", "an integer >= 1", k)
        self.k = k
        self.label = f"knn(k={k})"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        n = xs.shape[1]
        x64, y64 = xs.double(), ys.double()
        dist = torch.cdist(x64, x64)  # (B, query i, context j)
        visible = torch.ones(n, n, dtype=torch.bool, device=xs.device).tril(-1)
        dist = dist.masked_fill(~visible, float("inf"))
        k = min(self.k, n)
        near, idx = dist.topk(k, dim=-1, largest=False)  # (B, N, k)
        valid = torch.isfinite(near)
        ys_near = torch.gather(y64[:, None, :].expand(-1, n, -1), 2, idx)
        total = (ys_near * valid).sum(-1)
        count = valid.sum(-1).clamp_min(1)
        return (total / count).to(ys.dtype)
