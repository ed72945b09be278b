"""Batched linear algebra for many tiny symmetric positive-definite systems: a Cholesky
factorisation vectorised over the batch (torch's batched LAPACK calls pay a per-matrix cost
that dominates at these sizes) and the solves and log-determinants built on it."""

from __future__ import annotations

import torch
from torch import Tensor


def cholesky(a: Tensor) -> Tensor:
    """Lower-triangular L with L L^T = a for a (..., s, s) SPD; a Python loop over the s
    columns, each step vectorised over all leading dims. Non-positive pivots give NaN."""
    s = a.shape[-1]
    low = torch.zeros_like(a)
    for j in range(s):
        row = low[..., j, :j]
        pivot = torch.sqrt(a[..., j, j] - (row * row).sum(-1))
        low[..., j, j] = pivot
        if j + 1 < s:
            below = low[..., j + 1 :, :j]
            col = a[..., j + 1 :, j] - (below * row[..., None, :]).sum(-1)
            low[..., j + 1 :, j] = col / pivot[..., None]
    return low


def forward_solve(low: Tensor, b: Tensor) -> Tensor:
    """z with L z = b, for L (..., s, s) lower-triangular and b (..., s)."""
    s = low.shape[-1]
    z = torch.zeros_like(b)
    for j in range(s):
        z[..., j] = (b[..., j] - (low[..., j, :j] * z[..., :j]).sum(-1)) / low[..., j, j]
    return z


def backward_solve(low: Tensor, z: Tensor) -> Tensor:
    """x with L^T x = z."""
    s = low.shape[-1]
    x = torch.zeros_like(z)
    for j in reversed(range(s)):
        x[..., j] = (z[..., j] - (low[..., j + 1 :, j] * x[..., j + 1 :]).sum(-1)) / low[..., j, j]
    return x


def logdet_from_cholesky(low: Tensor) -> Tensor:
    return 2.0 * torch.log(torch.diagonal(low, dim1=-2, dim2=-1)).sum(-1)
