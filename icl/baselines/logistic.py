"""L2-regularised logistic regression fit on every prompt and prefix by batched Newton steps:
the baseline for linear classification, whose labels are +-1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from icl.baselines.base import Predictor, batch_chunks, check_inputs, is_int, is_number, prefix_mask, require

# Most halvings of a Newton step in the backtracking line search.
MAX_HALVINGS = 30


class Logistic(Predictor):
    """L2 logistic regression on every prefix, predicting tanh(w . x_i / 2) in (-1, 1):
    w minimises sum_{j < i} log(1 + exp(-s_j w . x_j)) + lam / 2 |w|^2 with s_j = sign(y_j)
    (scikit-learn's ``LogisticRegression(C=1/lam, fit_intercept=False)``); the prediction is
    E[s | x_i] = 2 sigmoid(w . x_i) - 1 = tanh(w . x_i / 2): its sign is the predicted label and
    its squared error against +-1 labels is a proper score. 0 with no context. The L2 term keeps
    w finite on separable contexts (which every context with fewer points than dims is).

    Newton steps with a backtracking line search on every prefix at once, until the largest
    gradient entry is below ``tol`` or ``max_iter`` steps."""

    name = "logistic"

    def __init__(self, lam: float = 0.1, max_iter: int = 50, tol: float = 1e-9) -> None:
        require(is_number(lam) and lam > 0, "logistic.lam", "a number > 0", lam)
        require(is_int(max_iter) and max_iter >= 1, "logistic.max_iter", "an integer >= 1", max_iter)
        require(is_number(tol) and tol > 0, "logistic.tol", "a number > 0", tol)
        self.lam, self.max_iter, self.tol = float(lam), max_iter, float(tol)
        self.label = f"logistic(lam={lam:g})"

    def coefficients(self, xs: Tensor, ys: Tensor) -> Tensor:
        """w (B, N, D) of every prefix (w[:, i] from the points j < i)."""
        check_inputs(xs, ys)
        b, n, d = xs.shape
        w = torch.empty(b, n, d, dtype=torch.float64, device=xs.device)
        for sl in batch_chunks(b, n * n * d):
            w[sl] = self._fit(xs[sl].double(), torch.sign(ys[sl].double()))
        return w

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        w = self.coefficients(xs, ys)
        return torch.tanh((w * xs.double()).sum(-1) / 2).to(ys.dtype)

    def _fit(self, x: Tensor, s: Tensor) -> Tensor:
        b, n, d = x.shape
        # Every prefix's context as one padded problem: row j of problem (b, i) is s_j x_j when
        # j < i, else zero (a zero row adds the constant log 2 to the loss and nothing else).
        z = prefix_mask(n, x.device)[None, :, :, None] * (s[..., None] * x)[:, None]  # (B, i, j, D)
        eye = torch.eye(d, dtype=torch.float64, device=x.device)
        w = torch.zeros(b, n, d, dtype=torch.float64, device=x.device)

        def loss(w_try: Tensor) -> Tensor:  # (B, N)
            margins = (z @ w_try[..., None])[..., 0]
            return F.softplus(-margins).sum(-1) + self.lam / 2 * (w_try * w_try).sum(-1)

        for _ in range(self.max_iter):
            margin = (z @ w[..., None])[..., 0]  # (B, N, N)
            p = torch.sigmoid(-margin)  # d/dm log(1 + e^-m) = -p
            grad = self.lam * w - (z.mT @ p[..., None])[..., 0]
            # A converged prefix stops moving: each prefix's iterates depend on its own data only.
            moving = grad.abs().amax(-1) >= self.tol
            if not bool(moving.any()):
                break
            hess = (z * (p * (1 - p))[..., None]).mT @ z + self.lam * eye
            delta = torch.linalg.solve(hess, grad)
            # Backtracking (Armijo) per prefix: Newton's full step from far away can overshoot on
            # separable contexts; halve the step where the loss does not fall enough.
            current, slope = loss(w), (grad * delta).sum(-1)
            slack = 1e-12 * (1 + current.abs())
            step = moving.to(current.dtype)
            for _ in range(MAX_HALVINGS):
                # (with slack for rounding: near the optimum the decrease is below it)
                ok = loss(w - step[..., None] * delta) <= current - 1e-4 * step * slope + slack
                if bool(ok.all()):
                    break
                step = torch.where(ok, step, step / 2)
            w = w - step[..., None] * delta
        return w
