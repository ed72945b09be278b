"""Minimum-norm least squares and ridge regression on every prefix, from one batched SVD of
the masked design matrices (rows j >= i zeroed for prefix i)."""

from __future__ import annotations

import torch
from torch import Tensor

from icl.baselines.base import (
    Predictor,
    batch_chunks,
    check_inputs,
    is_number,
    prefix_mask,
    require,
)


def _prefix_svd(xs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SVD of every prefix's design matrix, padded to N rows with zeros.

    Zero rows with zero targets change neither the singular values nor the min-norm solution,
    so every prefix is one problem of the same shape. SVD rather than normal equations:
    solving with X^T X squares the condition number, which near k = d is large.
    Returns U (B, N, N, K), S (B, N, K), Vh (B, N, K, D) with K = min(N, D).
    """
    mask = prefix_mask(xs.shape[1], xs.device)  # [i, j] = 1 iff j < i
    design = mask[None, :, :, None] * xs.double()[:, None, :, :]  # (B, i, j, D)
    return torch.linalg.svd(design, full_matrices=False)


def _spectral_fit(xs: Tensor, ys: Tensor, lam: float) -> Tensor:
    """Predictions x_i . w_i with w_i = V diag(filter(s)) U^T y over the context of prefix i.

    ``lam = 0``: min-norm least squares, singular values below eps * max(k, D) * s_max are
    treated as zero (numpy.linalg.lstsq's default rcond for a k x D matrix).
    ``lam > 0``: ridge, filter s / (s^2 + lam).
    """
    b, n, d = xs.shape
    out = torch.empty(b, n, dtype=torch.float64, device=xs.device)
    mask = prefix_mask(n, xs.device)
    rows = torch.arange(n, device=xs.device, dtype=torch.float64)
    for sl in batch_chunks(b, n * n * max(n, d)):
        x64, y64 = xs[sl].double(), ys[sl].double()
        u, s, vh = _prefix_svd(x64)
        y_ctx = mask[None] * y64[:, None, :]  # (B, i, j)
        proj = torch.einsum("bijk,bij->bik", u, y_ctx) * _filter(s, rows, d, lam)  # (B, N, K)
        w = torch.einsum("bikd,bik->bid", vh, proj)  # (B, N, D)
        out[sl] = (w * x64).sum(-1)
    return out


def _filter(s: Tensor, rows: Tensor, d: int, lam: float) -> Tensor:
    """The spectral filter of ``_spectral_fit`` for singular values s (..., K) of designs with
    ``rows`` rows (broadcast against s without its last dim)."""
    if lam > 0:
        return s / (s * s + lam)
    rcond = torch.finfo(torch.float64).eps * torch.clamp(rows, min=d)
    cutoff = rcond[..., None] * s[..., :1]
    return torch.where(s > cutoff, 1.0 / torch.where(s > cutoff, s, 1.0), 0.0)


def context_fit(xs: Tensor, ys: Tensor, lam: float) -> Tensor:
    """w (B, D) in float64 fit on all the k points of each prompt xs (B, k, D), ys (B, k), with the
    filter of ``_spectral_fit`` (lam = 0: min-norm least squares, lam > 0: ridge): the weights behind
    the prediction at query k, from one SVD per prompt."""
    check_inputs(xs, ys)
    u, s, vh = torch.linalg.svd(xs.double(), full_matrices=False)  # (B, k, K), (B, K), (B, K, D)
    rows = torch.tensor(float(xs.shape[1]), dtype=torch.float64, device=xs.device)
    proj = torch.einsum("bjk,bj->bk", u, ys.double()) * _filter(s, rows, xs.shape[2], lam)
    return torch.einsum("bkd,bk->bd", vh, proj)


class LeastSquares(Predictor):
    """Minimum-norm least squares on every prefix (numpy ``lstsq`` semantics): the
    Bayes-optimal limit for a noiseless isotropic Gaussian prior on w, with expected error
    1 - k/d for k < d on normalised dense data with x ~ N(0, I)."""

    name = "least_squares"

    def __init__(self) -> None:
        self.label = "least_squares"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        return _spectral_fit(xs, ys, 0.0).to(ys.dtype)


class Ridge(Predictor):
    """w = (X^T X + lam I)^-1 X^T y on every prefix (no 1/n on the data term): the posterior
    mean for w ~ N(0, v I) and noise variance sigma^2 when lam = sigma^2 / v."""

    name = "ridge"

    def __init__(self, lam: float = 0.1) -> None:
        allowed = "a number > 0 (use least_squares for lam = 0)"
        require(is_number(lam) and lam > 0, "ridge.lam", allowed, lam)
        self.lam = float(lam)
        self.label = f"ridge(lam={lam:g})"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        return _spectral_fit(xs, ys, self.lam).to(ys.dtype)
