"""LASSO baselines on every prefix: fixed penalty (paper 2's sparse-regression baseline) and a
penalty chosen per prompt and prefix by K-fold cross-validation on the context."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from icl.baselines.base import (
    Predictor,
    batch_chunks,
    check_inputs,
    exclusive_cumsum,
    is_int,
    is_number,
    prefix_stats,
    require,
)
from icl.baselines.lasso_solver import solve_lasso


def _check_solver_args(name: str, tol: float, max_iter: int) -> None:
    require(is_number(tol) and 0 < tol < 1, f"{name}.tol", "a number in (0, 1)", tol)
    require(is_int(max_iter) and max_iter >= 1, f"{name}.max_iter", "an integer >= 1", max_iter)


class Lasso(Predictor):
    """w = argmin (1/(2k)) |y - X w|^2 + alpha |w|_1 over the k context points (scikit-learn's
    ``Lasso(alpha, fit_intercept=False)``), for all prompts and prefixes in one batched
    homotopy solve. Every solution is certified by duality gap <= tol * |y|^2 / k."""

    name = "lasso"

    def __init__(self, alpha: float = 0.01, tol: float = 1e-8, max_iter: int = 10_000) -> None:
        allowed = "a number > 0 (use least_squares for alpha = 0)"
        require(is_number(alpha) and alpha > 0, "lasso.alpha", allowed, alpha)
        _check_solver_args("lasso", tol, max_iter)
        self.alpha, self.tol, self.max_iter = float(alpha), float(tol), max_iter
        self.label = f"lasso(alpha={alpha:g})"

    def coefficients(self, xs: Tensor, ys: Tensor) -> Tensor:
        """w (B, N, D) in float64: row i is the fit on the context of prefix i."""
        b, n, d = xs.shape
        st = prefix_stats(xs, ys)
        # The problem on k points, scaled by k: (1/2)|y - X w|^2 + k alpha |w|_1 on the raw sums
        # (same solution; the tolerance scales with it), so the Gram sums need no rescaling.
        alphas = (self.alpha * st.count).repeat(b)[:, None]
        w = solve_lasso(
            st.gram.reshape(b * n, d, d),
            st.xty.reshape(b * n, d),
            st.yty.reshape(b * n),
            alphas,
            self.tol,
            self.max_iter,
        )
        return w[:, 0].reshape(b, n, d)

    def context_coefficients(self, xs: Tensor, ys: Tensor) -> Tensor:
        """w (B, D) in float64 fit on all the k points of each prompt: what row k of ``coefficients``
        holds, from one problem per prompt instead of one per prefix."""
        check_inputs(xs, ys)
        x, y = xs.double(), ys.double()
        b, k, _ = x.shape
        alphas = torch.full((b, 1), self.alpha * k, dtype=torch.float64, device=x.device)
        w = solve_lasso(x.mT @ x, (x * y[..., None]).sum(1), (y * y).sum(1), alphas, self.tol, self.max_iter)
        return w[:, 0]

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        return (self.coefficients(xs, ys) * xs.double()).sum(-1).to(ys.dtype)


class LassoCV(Predictor):
    """LASSO whose penalty is chosen per prompt and prefix by K-fold cross-validation on the
    context (context point j belongs to fold j mod K; ``folds >= N`` is leave-one-out).

    Grid: ``alphas`` if given, else ``n_alphas`` values log-spaced from alpha_max down to
    eps * alpha_max, with alpha_max = |X^T y|_inf / k of the whole context (scikit-learn's
    ``LassoCV`` convention). The CV score is the summed squared error on held-out points;
    ties go to the larger penalty. Every fold's whole grid comes from one homotopy path, and
    the final fit on the whole context rides along as an extra fold.
    """

    name = "lasso_cv"

    def __init__(
        self,
        n_alphas: int = 10,
        eps: float = 1e-3,
        folds: int = 5,
        alphas: Sequence[float] | None = None,
        tol: float = 1e-8,
        max_iter: int = 10_000,
    ) -> None:
        require(
            is_int(n_alphas) and n_alphas >= 1, "lasso_cv.n_alphas", "an integer >= 1", n_alphas
        )
        require(is_number(eps) and 0 < eps <= 1, "lasso_cv.eps", "a number in (0, 1]", eps)
        require(is_int(folds) and folds >= 2, "lasso_cv.folds", "an integer >= 2", folds)
        if alphas is not None:
            ok = isinstance(alphas, (list, tuple)) and len(alphas) > 0
            ok = ok and all(is_number(a) and a > 0 for a in alphas)
            require(ok, "lasso_cv.alphas", "null or a non-empty list of numbers > 0", alphas)
        _check_solver_args("lasso_cv", tol, max_iter)
        self.n_alphas, self.eps, self.folds = n_alphas, float(eps), folds
        self.alphas = None if alphas is None else sorted((float(a) for a in alphas), reverse=True)
        self.tol, self.max_iter = float(tol), max_iter
        grid = f"alphas={len(self.alphas)}" if self.alphas else f"n_alphas={n_alphas}"
        self.label = f"lasso_cv(folds={folds}, {grid})"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        b, n, d = xs.shape
        n_folds = min(self.folds, n)
        n_grid = len(self.alphas) if self.alphas else self.n_alphas
        out = torch.empty(b, n, dtype=torch.float64, device=xs.device)
        per_seq = n * (n_folds + 1) * (d * d + n_grid * d) * 3
        for sl in batch_chunks(b, per_seq):
            out[sl] = self._predict_chunk(xs[sl].double(), ys[sl].double(), n_folds)
        return out.to(ys.dtype)

    def _predict_chunk(self, xs: Tensor, ys: Tensor, n_folds: int) -> Tensor:
        b, n, d = xs.shape
        dev = xs.device
        fold = torch.nn.functional.one_hot(
            torch.arange(n, device=dev) % n_folds, n_folds
        ).double()  # (N, K)
        outer = xs[..., :, None] * xs[..., None, :]
        # Held-out statistics of fold k over the context of prefix i: (B, N, K, ...).
        g_out = exclusive_cumsum(outer[:, :, None] * fold[None, :, :, None, None])
        c_out = exclusive_cumsum((xs * ys[..., None])[:, :, None] * fold[None, :, :, None])
        q_out = exclusive_cumsum((ys * ys)[:, :, None] * fold[None])
        n_out = exclusive_cumsum(fold[None].expand(b, -1, -1))
        g_all, c_all, q_all = (
            g_out.sum(2, keepdim=True),
            c_out.sum(2, keepdim=True),
            q_out.sum(2, keepdim=True),
        )
        n_all = n_out.sum(2, keepdim=True)
        # Training problems: every fold's complement, then the whole context (index K).
        gram = torch.cat([g_all - g_out, g_all], 2)
        xty = torch.cat([c_all - c_out, c_all], 2)
        yty = torch.cat([q_all - q_out, q_all], 2)
        size = torch.cat([n_all - n_out, n_all], 2).clamp_min(1)
        gram, xty, yty = gram / size[..., None, None], xty / size[..., None], yty / size

        alpha_max = xty[:, :, -1].abs().amax(-1)  # (B, N): whole-context alpha_max
        if self.alphas:
            grid = torch.tensor(self.alphas, device=dev, dtype=torch.float64).expand(b, n, -1)
        else:
            ratios = torch.logspace(
                0, math.log10(self.eps), self.n_alphas, device=dev, dtype=torch.float64
            )
            grid = alpha_max[..., None] * ratios
        n_grid = grid.shape[-1]
        k1 = n_folds + 1
        coef = solve_lasso(
            gram.reshape(-1, d, d),
            xty.reshape(-1, d),
            yty.reshape(-1),
            grid[:, :, None].expand(-1, -1, k1, -1).reshape(-1, n_grid),
            self.tol,
            self.max_iter,
        ).reshape(b, n, k1, n_grid, d)

        w_cv = coef[:, :, :n_folds]  # (B, N, K, A, D)
        sse = (
            q_out[..., None]
            - 2 * (w_cv * c_out[:, :, :, None]).sum(-1)
            + (torch.einsum("bnkad,bnkde->bnkae", w_cv, g_out) * w_cv).sum(-1)
        )
        best = sse.sum(2).argmin(-1)  # (B, N); first minimum = largest penalty
        w = coef[:, :, n_folds].gather(2, best[..., None, None].expand(-1, -1, 1, d))[:, :, 0]
        return (w * xs).sum(-1)
