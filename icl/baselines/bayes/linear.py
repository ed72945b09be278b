"""Posteriors of the linear classes: a Gaussian-prior linear model (dense: the whole input;
sparse: every support of the known size, averaged by marginal likelihood)."""

from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import Tensor

from icl.baselines.base import prefix_stats
from icl.baselines.bayes.common import HypothesisAverage, PosteriorOptions, sequential_log_evidence
from icl.baselines.linalg import cholesky, forward_solve
from icl.errors import ICLError
from icl.tasks import DenseLinear, SparseLinear


def gaussian_linear(
    gram: Tensor,
    xty: Tensor,
    ys: Tensor,
    query: Tensor,
    prior_var: float,
    noise_var: float,
) -> tuple[Tensor, Tensor]:
    """Posterior-mean prediction and log evidence for y = beta.x + N(0, noise_var) with
    beta ~ N(0, prior_var I_s), from the context statistics of every prefix (gram
    (B, N, ..., s, s), xty (B, N, ..., s)), the labels ys (B, N) and the queries (B, N, ..., s).

    With A = X^T X + (sigma^2 / v) I = L L^T, z = L^-1 X^T y and q = L^-1 x_query: the
    posterior mean is ridge with lam = sigma^2 / v, q . z, and the predictive variance of the
    query's label is sigma^2 (1 + |q|^2); for the first s prefixes, the dual form instead (see
    below). The log evidence of each prefix is the chain-rule sum of the earlier steps'
    predictive densities (``sequential_log_evidence``), which stays exact in float64 down to
    noise levels near float32 rounding, where the closed form (y^T y - z^T z) / sigma^2
    cancels catastrophically.
    """
    s = gram.shape[-1]
    ridge = noise_var / prior_var
    eye = torch.eye(s, dtype=gram.dtype, device=gram.device)
    low = cholesky(gram + ridge * eye)
    z, q = forward_solve(low, xty), forward_solve(low, query)
    pred = (z * q).sum(-1)
    pred_var = noise_var * (1 + (q * q).sum(-1))
    # Fewer points than features: X^T X is singular and the primal solve, regularised only by
    # the tiny sigma^2 / v of a noiseless class, loses ~1e-3 to the rounding of X^T X. The
    # dual (kernel) form is well conditioned there: one Cholesky of v X X^T + sigma^2 I over
    # the first min(N, s) points gives every such prefix's one-step prediction and variance
    # (row i of the factor only involves points j <= i).
    k = min(ys.shape[1], s)
    feats = query[:, :k].movedim(1, -2)  # (B, ..., k, s)
    kernel = prior_var * feats @ feats.transpose(-1, -2) + noise_var * torch.eye(
        k, dtype=gram.dtype, device=gram.device
    )
    low_k = cholesky(kernel)
    y_k = ys[:, :k].reshape(ys.shape[0], *([1] * (feats.ndim - 3)), k).expand(feats.shape[:-1])
    innov = forward_solve(low_k, y_k)  # standardised one-step residuals
    pred_k = (low_k.tril(-1) * innov[..., None, :]).sum(-1)  # sum over j < i only
    var_k = torch.diagonal(low_k, dim1=-2, dim2=-1) ** 2
    pred = torch.cat([pred_k.movedim(-1, 1), pred[:, k:]], 1)
    pred_var = torch.cat([var_k.movedim(-1, 1), pred_var[:, k:]], 1)
    return pred, sequential_log_evidence(ys, pred, pred_var)


def _positive(value: float, field: str) -> None:
    if not value > 0:
        raise ICLError(f"bayes: {field}: got {value!r}; allowed: a number > 0")


class DenseLinearPosterior:
    """f(x) = c w.x with w ~ N(0, w_scale^2 I_d), c = 1/sqrt(d) if normalised: the effective
    weights c w have prior variance v = (c w_scale)^2, so the posterior mean is ridge with
    lam = sigma^2 / v."""

    name = "gaussian_linear"

    def __init__(self, task: DenseLinear, noise_std: float) -> None:
        _positive(task.w_scale, "dense_linear.w_scale")
        self.task, self.noise_std = task, noise_std

    @classmethod
    def from_task(cls, task: DenseLinear, noise_std: float, options: PosteriorOptions) -> DenseLinearPosterior:
        return cls(task, max(noise_std, options.noise_floor))

    def prior_var(self, n_dims: int) -> float:
        return (self.task.w_scale * self.task.scale(n_dims)) ** 2

    def label_std(self, n_dims: int) -> float:
        return math.sqrt(self.prior_var(n_dims) * n_dims)

    def evaluate(self, xs: Tensor, ys: Tensor, min_std: float) -> tuple[Tensor, Tensor]:
        st = prefix_stats(xs, ys)
        noise_var = max(self.noise_std, min_std) ** 2
        return gaussian_linear(st.gram, st.xty, ys, xs, self.prior_var(xs.shape[-1]), noise_var)


class SparseLinearPosterior:
    """nnz of d coordinates chosen uniformly, N(0, w_scale^2) on them, f scaled by
    1/sqrt(nnz) if normalised: the posterior is a mixture over all C(d, nnz) supports, each
    a Gaussian linear model on its coordinates, weighted by its marginal likelihood (uniform
    prior over supports). Exact, so the support count is capped by ``max_supports``."""

    name = "sparse_supports"

    def __init__(self, task: SparseLinear, noise_std: float, max_supports: int) -> None:
        _positive(task.w_scale, "sparse_linear.w_scale")
        self.task, self.noise_std, self.max_supports = task, noise_std, max_supports

    @classmethod
    def from_task(cls, task: SparseLinear, noise_std: float, options: PosteriorOptions) -> SparseLinearPosterior:
        return cls(task, max(noise_std, options.noise_floor), options.max_supports)

    def prior_var(self, n_dims: int) -> float:
        s = min(self.task.nnz, n_dims)
        scale = 1.0 / math.sqrt(s) if self.task.normalize else 1.0
        return (self.task.w_scale * scale) ** 2

    def label_std(self, n_dims: int) -> float:
        return math.sqrt(self.prior_var(n_dims) * min(self.task.nnz, n_dims))

    def supports(self, n_dims: int, device: torch.device) -> Tensor:
        s = min(self.task.nnz, n_dims)
        count = math.comb(n_dims, s)
        if count > self.max_supports:
            raise ICLError(
                f"bayes: sparse_linear(nnz={self.task.nnz}) at d={n_dims} has "
                f"C({n_dims},{s})={count} supports, more than max_supports={self.max_supports}; "
                "allowed: raise max_supports (time and memory grow with the count) or evaluate "
                "at a smaller d or nnz"
            )
        return torch.tensor(list(combinations(range(n_dims), s)), device=device, dtype=torch.long)

    def evaluate(self, xs: Tensor, ys: Tensor, min_std: float) -> tuple[Tensor, Tensor]:
        b, n, d = xs.shape
        sup = self.supports(d, xs.device)
        n_sup, s = sup.shape
        prior_var, noise_var = self.prior_var(d), max(self.noise_std, min_std) ** 2
        st = prefix_stats(xs, ys)
        acc = HypothesisAverage()
        chunk = max(1, (1 << 22) // (b * n * s * s))
        for start in range(0, n_sup, chunk):
            idx = sup[start : start + chunk]  # (m, s)
            gram = st.gram[:, :, idx[:, :, None], idx[:, None, :]]  # (B, N, m, s, s)
            pred, log_ev = gaussian_linear(
                gram,
                st.xty[:, :, idx],
                ys,
                xs[:, :, idx],
                prior_var,
                noise_var,
            )
            acc.add(log_ev, pred)
        pred, log_sum = acc.result()
        return pred, log_sum - math.log(n_sup)
