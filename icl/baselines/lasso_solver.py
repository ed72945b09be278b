"""Batched LASSO on Gram statistics G = X^T X / n, c = X^T y / n, q = y^T y / n (scikit-learn's
``Lasso(fit_intercept=False)`` objective): the exact homotopy path for many small problems at
once, certified by the duality gap, with a proximal-gradient fallback."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

_TIE = 1e-12  # events closer than this (relative to lambda) count as "now" and are skipped
_INF = float("inf")


def _parts(gram: Tensor, xty: Tensor, yty: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For w (P, K, D): X^T r / n, |r|^2 / n and r.y / n, each with leading dims (P, K)."""
    gw = w @ gram  # G symmetric: (w G)_i = (G w)_i
    cw = (xty[:, None, :] * w).sum(-1)
    r2 = (yty[:, None] - 2 * cw + (w * gw).sum(-1)).clamp_min(0)
    return xty[:, None, :] - gw, r2, yty[:, None] - cw


def objective(gram: Tensor, xty: Tensor, yty: Tensor, alpha: Tensor, w: Tensor) -> Tensor:
    """(1/(2n)) |y - X w|^2 + alpha |w|_1 for w (P, K, D) and alpha (P, K)."""
    _, r2, _ = _parts(gram, xty, yty, w)
    return 0.5 * r2 + alpha * w.abs().sum(-1)


def duality_gap(gram: Tensor, xty: Tensor, yty: Tensor, alpha: Tensor, w: Tensor) -> Tensor:
    """scikit-learn's duality gap for ``Lasso`` divided by n (so it is on the scale of the
    objective): the dual point is the residual rescaled to satisfy |X^T theta|_inf <= alpha.
    w (P, K, D), alpha (P, K) -> (P, K)."""
    grad, r2, r_dot_y = _parts(gram, xty, yty, w)
    dual_norm = grad.abs().amax(-1)
    scale = torch.where(dual_norm > alpha, alpha / dual_norm.clamp_min(1e-300), torch.ones_like(dual_norm))
    return 0.5 * r2 * (1 + scale**2) + alpha * w.abs().sum(-1) - scale * r_dot_y


def lasso_path(gram: Tensor, xty: Tensor, alphas: Tensor, max_steps: int | None = None) -> tuple[Tensor, Tensor]:
    """Exact LASSO solutions at the decreasing penalties ``alphas`` (P, K) by homotopy.

    Follows the piecewise-linear solution path from lambda = |c|_inf (where w = 0) downwards;
    on each segment w_A moves along G_AA^-1 s_A, and a segment ends when an inactive
    correlation reaches +-lambda (join), an active coefficient reaches 0 (drop) or lambda
    reaches the next target penalty (record). All problems advance in lock step, one event
    each per iteration; G_AA^-1 is kept per problem on a compact set of slots and updated by
    one rank-one term per event, so an iteration costs O(P D m) for m active slots and the
    number of iterations is the longest path (about the largest active set), not a
    convergence rate. Returns coef (P, K, D) and ``ok`` (P,), False where a numerically
    singular join or the step limit stopped the path (callers verify and polish those).
    """
    n_prob, d = xty.shape
    n_targets = alphas.shape[1]
    dev, dt = xty.device, xty.dtype
    out = torch.zeros(n_prob, n_targets, d, device=dev, dtype=dt)
    ok = torch.ones(n_prob, dtype=torch.bool, device=dev)
    lam_max = xty.abs().amax(-1)
    target = (alphas >= lam_max[:, None]).sum(-1)  # targets above lam_max have w = 0
    ids = torch.nonzero(target < n_targets)[:, 0]
    if ids.numel() == 0:
        return out, ok
    max_steps = max_steps if max_steps is not None else 8 * d + 8 * n_targets + 16
    sides = torch.arange(2 * d, device=dev)

    # State of the running problems (rows follow ``ids``); the slot state has m columns.
    al, target = alphas[ids], target[ids]
    grad = xty[ids].clone()  # c - G w
    lam = lam_max[ids].clone()
    first = grad.abs().argmax(-1)
    rows_of_gram = gram.reshape(-1, d)  # G symmetric: column j of problem p is row p * d + j
    gcol = rows_of_gram.index_select(0, ids * d + first)
    m = min(d, 4)  # slots: grown by doubling when a row needs more
    coord = F.pad(first[:, None], (0, m - 1), value=-1)  # slot -> coordinate (-1: empty)
    sign = F.pad(torch.sign(grad.gather(1, first[:, None])), (0, m - 1))
    inv = F.pad(1.0 / gcol.gather(1, first[:, None])[:, :, None], (0, m - 1, 0, m - 1))
    cols = F.pad(gcol[:, :, None], (0, m - 1))  # G[:, A] on the slots
    coef = torch.zeros_like(sign)
    inactive = torch.arange(d, device=dev)[None, :] != first[:, None]
    barred = torch.full_like(first, -1)  # a (coordinate, side) that may not join next
    # Finished rows stay frozen (step 0) until a quarter of the rows are finished: compacting
    # the state at every finish would copy all of it on almost every iteration.
    live = torch.ones_like(first, dtype=torch.bool)

    for _ in range(max_steps):
        # Candidate events as steps in lambda: joins at +lambda (columns 0..d-1), joins at
        # -lambda (d..2d-1), drops of slot coefficients (2d..); the smallest positive wins.
        direction = (inv @ sign[..., None])[..., 0]  # d w_A / d(-lambda)
        slope = (cols @ direction[..., None])[..., 0]  # d grad / d(-lambda) = G d
        lam_c = lam[:, None]
        up, down = (lam_c - grad) / (1 - slope), (lam_c + grad) / (1 + slope)
        hits = torch.cat([up, down, -coef / direction], 1)
        allowed = torch.cat([inactive, inactive, coord >= 0], 1)
        allowed[:, : 2 * d] &= sides[None, :] != barred[:, None]
        event_step, event = torch.where(allowed & (hits > _TIE * lam_c), hits, _INF).min(-1)
        alpha_next = al.gather(1, target.clamp_max(n_targets - 1)[:, None])[:, 0]
        stop_step = lam - alpha_next
        stop = (stop_step <= event_step) | ~live
        step = torch.where(live, torch.where(stop, stop_step, event_step).clamp_min(0), 0.0)
        coef = torch.addcmul(coef, step[:, None], direction)
        grad = torch.addcmul(grad, step[:, None], slope, value=-1.0)
        lam = torch.where(stop, alpha_next, lam - step)
        is_join = event < 2 * d
        jr, dr = torch.nonzero(~stop & is_join)[:, 0], torch.nonzero(~stop & ~is_join)[:, 0]
        singular = torch.zeros_like(stop)
        barred = torch.full_like(barred, -1)

        if jr.numel():  # bordering of G_AA^-1 with the joining coordinate
            ev = event[jr]
            jj = torch.remainder(ev, d)
            border = cols[jr, jj]  # G[j, A]
            u = (inv.index_select(0, jr) @ border[..., None])[..., 0]
            gcol = rows_of_gram.index_select(0, ids.index_select(0, jr) * d + jj)
            g_jj = gcol.gather(1, jj[:, None])[:, 0]
            schur = g_jj - (border * u).sum(-1)
            good = schur > 1e-13 * g_jj
            if not bool(good.all()):
                singular[jr[~good]] = True
                jr, ev, jj, u, gcol, schur = (t[good] for t in (jr, ev, jj, u, gcol, schur))
            m = coord.shape[1]
            if bool((coord.index_select(0, jr) >= 0).all(-1).any()):  # no free slot: grow
                grow = min(d, 2 * m) - m
                coord = F.pad(coord, (0, grow), value=-1)
                sign, coef, u = (F.pad(t, (0, grow)) for t in (sign, coef, u))
                cols, inv = F.pad(cols, (0, grow)), F.pad(inv, (0, grow, 0, grow))
            js = (coord.index_select(0, jr) < 0).to(torch.int8).argmax(-1)
            u[torch.arange(jr.numel(), device=dev), js] = -1.0
            inv.index_add_(0, jr, u[:, :, None] * (u / schur[:, None])[:, None, :])
            coord[jr, js] = jj
            sign[jr, js] = torch.where(ev < d, 1.0, -1.0).to(dt)
            cols[jr, :, js] = gcol
            inactive[jr, jj] = False

        if dr.numel():  # Schur downdate of G_AA^-1 removing the dropped slot
            ds = event[dr] - 2 * d
            h = inv[dr, :, ds]
            inv.index_add_(0, dr, -h[:, :, None] * (h / h.gather(1, ds[:, None]))[:, None, :])
            inv[dr, ds, :] = 0.0
            inv[dr, :, ds] = 0.0
            dc = coord[dr, ds]
            # The dropped coordinate sits on the +-lambda boundary it left: for the next
            # segment it may re-join on the other side only (no zero-length event).
            barred[dr] = dc + d * (sign[dr, ds] < 0).long()
            inactive[dr, dc] = True
            coord[dr, ds] = -1
            sign[dr, ds] = 0.0
            coef[dr, ds] = 0.0
            cols[dr, :, ds] = 0.0

        reached = stop & live
        flags = torch.stack([reached.any(), singular.any()]).tolist()
        if flags[0] or flags[1]:
            # Record the targets reached on this segment; freeze problems with none left.
            sr = torch.nonzero(reached)[:, 0]
            out[ids[sr], target[sr]] = _scatter_slots(coef[sr], coord[sr], d)
            target = target + reached.long()
            if flags[1]:
                fr = torch.nonzero(singular)[:, 0]
                ok[ids[fr]] = False
                _fill_remaining(out, ids[fr], target[fr], _scatter_slots(coef[fr], coord[fr], d))
            live = live & (target < n_targets) & ~singular
            n_live = int(live.sum())
            if n_live == 0:
                return out, ok
            if 4 * (live.numel() - n_live) < live.numel():
                continue
            kr = torch.nonzero(live)[:, 0]
            state = (ids, al, target, grad, lam, coord, sign, inv, cols, coef, inactive, barred, live)
            ids, al, target, grad, lam, coord, sign, inv, cols, coef, inactive, barred, live = (
                t.index_select(0, kr) for t in state
            )

    lr = torch.nonzero(live)[:, 0]
    ok[ids[lr]] = False
    _fill_remaining(out, ids[lr], target[lr], _scatter_slots(coef[lr], coord[lr], d))
    return out, ok


def _fill_remaining(out: Tensor, ids: Tensor, target: Tensor, coef: Tensor) -> None:
    """Write ``coef`` into every target not yet recorded (a stopped path's best answer)."""
    remaining = torch.arange(out.shape[1], device=out.device)[None, :] >= target[:, None]
    out[ids] = torch.where(remaining[..., None], coef[:, None, :], out[ids])


def _scatter_slots(coef: Tensor, coord: Tensor, d: int) -> Tensor:
    full = torch.zeros(coef.shape[0], d + 1, device=coef.device, dtype=coef.dtype)
    full.scatter_(1, torch.where(coord >= 0, coord, d), coef)  # empty slots land in column d
    return full[:, :d]


def proximal_gradient(
    gram: Tensor, xty: Tensor, yty: Tensor, alpha: Tensor, w: Tensor, tol: float, max_iter: int
) -> Tensor:
    """FISTA with adaptive restart from ``w`` (P, D), alpha (P,); each problem stops once its
    duality gap is <= tol * yty (its own stopping rule, so a problem's result does not depend
    on the rest of the batch)."""
    lip = torch.linalg.eigvalsh(gram)[..., -1].clamp_min(1e-300)
    thresh = (alpha / lip)[:, None]

    def converged(v: Tensor) -> Tensor:
        return duality_gap(gram, xty, yty, alpha[:, None], v[:, None])[:, 0] <= tol * yty

    x_prev, y = w.clone(), w.clone()
    t = torch.ones_like(alpha)
    done = converged(w)
    for it in range(max_iter):
        z = y - ((gram @ y[..., None])[..., 0] - xty) / lip[:, None]
        x = torch.sign(z) * (z.abs() - thresh).clamp_min(0)
        x = torch.where(done[:, None], x_prev, x)
        t_next = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        restart = ((y - x) * (x - x_prev)).sum(-1) > 0
        mom = torch.where(restart, 0.0, (t - 1) / t_next)
        y = x + mom[:, None] * (x - x_prev)
        t = torch.where(restart, torch.ones_like(t), t_next)
        x_prev = x
        if it % 10 == 9:
            done = done | converged(x)
            if bool(done.all()):
                break
    return x_prev


def solve_lasso(
    gram: Tensor,
    xty: Tensor,
    yty: Tensor,
    alphas: Tensor,
    tol: float = 1e-8,
    max_iter: int = 10_000,
) -> Tensor:
    """LASSO coefficients (P, K, D) at penalties ``alphas`` (P, K), each row descending.

    Stated accuracy: every returned solution has duality gap <= tol * |y|^2 / n (the same
    criterion as scikit-learn's ``tol``, on the 1/n-scaled objective). The homotopy is exact
    up to rounding, so the gap is normally ~1e-16; a problem above the tolerance is polished
    by proximal gradient for up to ``max_iter`` iterations, and a RuntimeWarning reports any
    that still miss it.
    """
    coef, _ = lasso_path(gram, xty, alphas)
    gap = duality_gap(gram, xty, yty, alphas, coef)
    bad = torch.nonzero(gap > tol * yty[:, None])
    if bad.numel():
        p, k = bad[:, 0], bad[:, 1]
        w = proximal_gradient(gram[p], xty[p], yty[p], alphas[p, k], coef[p, k], tol, max_iter)
        coef[p, k] = w
        still = duality_gap(gram[p], xty[p], yty[p], alphas[p, k][:, None], w[:, None])[:, 0] > tol * yty[p]
        if bool(still.any()):
            warnings.warn(
                f"lasso: {int(still.sum())} of {coef.shape[0] * coef.shape[1]} problems did not "
                f"reach duality gap <= {tol:g} * |y|^2/n in {max_iter} iterations",
                RuntimeWarning,
                stacklevel=2,
            )
    return coef
