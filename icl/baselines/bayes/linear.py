"""Posteriors of the linear classes: a Gaussian-prior linear model (dense: the whole input;
sparse: every support of the known size, averaged by marginal likelihood)."""

from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import Tensor

from icl.baselines.base import prefix_stats
from icl.baselines.bayes.common import HypothesisAverage, PosteriorOptions, gaussian_log_norm
from icl.baselines.linalg import backward_solve, cholesky, forward_solve, logdet_from_cholesky
from icl.errors import ICLError
from icl.tasks import DenseLinear, SparseLinear


def gaussian_linear(
    gram: Tensor,
    xty: Tensor,
    yty: Tensor,
    count: Tensor,
    query: Tensor,
    prior_var: float,
    noise_var: float,
) -> tuple[Tensor, Tensor]:
    """Posterior-mean prediction and log evidence for y = beta.x + N(0, noise_var) with
    beta ~ N(0, prior_var I_s), from the context statistics (gram (..., s, s), xty (..., s),
    yty, count) and the query (..., s).

    With A = X^T X + (sigma^2 / v) I: the posterior mean is A^-1 X^T y (ridge with lam =
    sigma^2 / v) and, by Woodbury and the determinant lemma,
    log p(y | X) = -k/2 log(2 pi sigma^2) - 1/2 [s log(v / sigma^2) + log det A]
                   - (y^T y - y^T X A^-1 X^T y) / (2 sigma^2),
    all from one Cholesky factor of the s x s matrix A.
    """
    s = gram.shape[-1]
    ridge = noise_var / prior_var
    eye = torch.eye(s, dtype=gram.dtype, device=gram.device)
    low = cholesky(gram + ridge * eye)
    z = forward_solve(low, xty)
    beta = backward_solve(low, z)
    pred = (beta * query).sum(-1)
    log_det = s * math.log(prior_var / noise_var) + logdet_from_cholesky(low)
    fit = (yty - (z * z).sum(-1)).clamp_min(0)
    log_ev = gaussian_log_norm(count, noise_var) - 0.5 * log_det - 0.5 * fit / noise_var
    return pred, log_ev


def _positive(value: float, field: str) -> None:
    if not value > 0:
        raise ICLError(f"bayes: {field}: got {value!r}; allowed: a number > 0")


class DenseLinearPosterior:
    """f(x) = c w.x with w ~ N(0, w_scale^2 I_d), c = 1/sqrt(d) if normalised: the effective
    weights c w have prior variance v = (c w_scale)^2, so the posterior mean is ridge with
    lam = sigma^2 / v."""

    name = "gaussian_linear"

    def __init__(self, task: DenseLinear, noise_var: float) -> None:
        _positive(task.w_scale, "dense_linear.w_scale")
        self.task, self.noise_var = task, noise_var

    @classmethod
    def from_task(cls, task: DenseLinear, noise_std: float, options: PosteriorOptions) -> DenseLinearPosterior:
        return cls(task, max(noise_std, options.noise_floor) ** 2)

    def prior_var(self, n_dims: int) -> float:
        return (self.task.w_scale * self.task.scale(n_dims)) ** 2

    def evaluate(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        st = prefix_stats(xs, ys)
        return gaussian_linear(st.gram, st.xty, st.yty, st.count, xs, self.prior_var(xs.shape[-1]), self.noise_var)


class SparseLinearPosterior:
    """nnz of d coordinates chosen uniformly, N(0, w_scale^2) on them, f scaled by
    1/sqrt(nnz) if normalised: the posterior is a mixture over all C(d, nnz) supports, each
    a Gaussian linear model on its coordinates, weighted by its marginal likelihood (uniform
    prior over supports). Exact, so the support count is capped by ``max_supports``."""

    name = "sparse_supports"

    def __init__(self, task: SparseLinear, noise_var: float, max_supports: int) -> None:
        _positive(task.w_scale, "sparse_linear.w_scale")
        self.task, self.noise_var, self.max_supports = task, noise_var, max_supports

    @classmethod
    def from_task(cls, task: SparseLinear, noise_std: float, options: PosteriorOptions) -> SparseLinearPosterior:
        return cls(task, max(noise_std, options.noise_floor) ** 2, options.max_supports)

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

    def evaluate(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = xs.shape
        sup = self.supports(d, xs.device)
        n_sup, s = sup.shape
        scale = 1.0 / math.sqrt(s) if self.task.normalize else 1.0
        prior_var = (self.task.w_scale * scale) ** 2
        st = prefix_stats(xs, ys)
        acc = HypothesisAverage()
        chunk = max(1, (1 << 22) // (b * n * s * s))
        for start in range(0, n_sup, chunk):
            idx = sup[start : start + chunk]  # (m, s)
            gram = st.gram[:, :, idx[:, :, None], idx[:, None, :]]  # (B, N, m, s, s)
            pred, log_ev = gaussian_linear(
                gram,
                st.xty[:, :, idx],
                st.yty[..., None],
                st.count[None, :, None],
                xs[:, :, idx],
                prior_var,
                self.noise_var,
            )
            acc.add(log_ev, pred)
        pred, log_sum = acc.result()
        return pred, log_sum - math.log(n_sup)
