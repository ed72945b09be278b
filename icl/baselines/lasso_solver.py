"""Batched LASSO on Gram statistics G = X^T X / n, c = X^T y / n, q = y^T y / n (scikit-learn's
``Lasso(fit_intercept=False)`` objective): the exact homotopy path for many small problems at
once, certified by the duality gap, with a proximal-gradient fallback."""

from __future__ import annotations

import warnings

import numpy as np
import torch
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

    An iteration is about a hundred operations on small arrays, so per-call overhead is much
    of the cost: on CPU the loop runs in numpy on the tensors' own memory (numpy's per-call
    cost is about a third of torch's; the path is about 1.5x faster), on other devices in
    torch. Both run the same code, ``_path``.
    """
    if xty.device.type == "cpu":
        arrays = (t.detach().numpy() for t in (gram, xty, alphas))
        with np.errstate(divide="ignore", invalid="ignore"):
            coef, ok = _path(np, *arrays, max_steps)
        return torch.from_numpy(coef), torch.from_numpy(ok)
    return _path(torch, gram, xty, alphas, max_steps)


def _full(xp, ref, shape, value):
    """``shape`` filled with ``value``: bool, int64 or ``ref``'s float dtype, on ``ref``'s device."""
    if xp is np:
        dtype = {bool: bool, int: np.int64}.get(type(value), ref.dtype)
        return np.zeros(shape, dtype) if value == 0 else np.full(shape, value, dtype)
    dtype = {bool: torch.bool, int: torch.int64}.get(type(value), ref.dtype)
    return torch.full(tuple(shape), value, dtype=dtype, device=ref.device)


def _arange(xp, ref, n: int):
    return np.arange(n) if xp is np else torch.arange(n, device=ref.device)


def _widen(xp, t, m: int, value, dims: int = 1):
    """``t`` with its last ``dims`` axes padded to length m with ``value``."""
    out = _full(xp, t, tuple(t.shape[: t.ndim - dims]) + (m,) * dims, value)
    out[(...,) + tuple(slice(0, k) for k in t.shape[t.ndim - dims :])] = t
    return out


def _path(xp, gram, xty, alphas, max_steps):
    """``lasso_path`` on numpy arrays (xp = numpy) or torch tensors (xp = torch)."""
    n_prob, d = xty.shape
    n_targets = alphas.shape[1]
    out = _full(xp, xty, (n_prob, n_targets, d), 0.0)
    ok = _full(xp, xty, (n_prob,), True)
    lam_max = xp.amax(abs(xty), -1)
    target = (alphas >= lam_max[:, None]).sum(-1)  # targets above lam_max have w = 0
    ids = xp.where(target < n_targets)[0]
    if len(ids) == 0:
        return out, ok
    max_steps = max_steps if max_steps is not None else 8 * d + 8 * n_targets + 16
    side_sign = _full(xp, xty, (2 * d,), 1.0)  # a join at +lambda or -lambda
    side_sign[d:] = -1.0

    # State of the running problems (rows follow ``ids``); the slot state has m columns.
    al, target = alphas[ids], target[ids]
    grad = xty[ids]  # c - G w (a copy: advanced indexing)
    lam = lam_max[ids]
    rows = _arange(xp, xty, len(ids))  # 0..R-1; its first k entries serve as 0..k-1 for subsets
    first = abs(grad).argmax(-1)
    rows_of_gram = gram.reshape(-1, d)  # G symmetric: column j of problem p is row p * d + j
    gcol = rows_of_gram[ids * d + first]
    m = min(d, 4)  # slots: grown by doubling when a row needs more
    coord = _full(xp, xty, (len(ids), m), -1)  # slot -> coordinate (-1: empty)
    coord[:, 0] = first
    sign = _full(xp, xty, (len(ids), m), 0.0)
    sign[:, 0] = xp.sign(grad[rows, first])
    inv = _full(xp, xty, (len(ids), m, m), 0.0)  # G_AA^-1 on the slots
    inv[:, 0, 0] = 1.0 / gcol[rows, first]
    cols = _full(xp, xty, (len(ids), d, m), 0.0)  # G[:, A] on the slots
    cols[:, :, 0] = gcol
    coef = _full(xp, xty, (len(ids), m), 0.0)
    # Which events may happen, as 0 (allowed) or inf added to their steps: joins of inactive
    # coordinates on either side (columns 0..2d-1) and drops of occupied slots (2d..).
    blocked = _full(xp, xty, (len(ids), 2 * d + m), 0.0)
    blocked[rows, first] = _INF
    blocked[rows, d + first] = _INF
    blocked[:, 2 * d + 1 :] = _INF
    barred = _full(xp, xty, (len(ids),), -1)  # the join (coordinate, side) blocked for one segment
    # Finished rows stay frozen (step 0) until a quarter of the rows are finished: compacting
    # the state at every finish would copy all of it on almost every iteration.
    live = _full(xp, xty, (len(ids),), True)
    any_barred = False

    for _ in range(max_steps):
        # Candidate events as steps in lambda: joins at +lambda (columns 0..d-1), joins at
        # -lambda (d..2d-1), drops of slot coefficients (2d..); the smallest positive wins.
        direction = (inv @ sign[..., None])[..., 0]  # d w_A / d(-lambda)
        slope = (cols @ direction[..., None])[..., 0]  # d grad / d(-lambda) = G d
        lam_c = lam[:, None]
        hits = xp.concatenate(
            [(lam_c - grad) / (1 - slope), (lam_c + grad) / (1 + slope), -coef / direction], 1
        )
        candidates = xp.where(hits > _TIE * lam_c, hits + blocked, _INF)
        event = candidates.argmin(-1)
        event_step = candidates[rows, event]
        if n_targets == 1:
            alpha_next = al[:, 0]
        else:
            alpha_next = al[rows, xp.where(target < n_targets, target, n_targets - 1)]
        stop_step = lam - alpha_next
        stop = (stop_step <= event_step) | ~live
        step = xp.where(stop, stop_step, event_step)
        step = xp.where(live & (step > 0), step, 0.0)
        coef += step[:, None] * direction
        grad -= step[:, None] * slope
        lam = xp.where(stop, alpha_next, lam - step)
        is_join = event < 2 * d
        jr, dr = xp.where(~stop & is_join)[0], xp.where(~stop & ~is_join)[0]
        singular = None  # rows whose join was numerically singular, if any
        if any_barred:  # the bar set by last iteration's drops lasts one segment
            br = xp.where(barred >= 0)[0]
            blocked[br, barred[br]] = 0.0
            barred = xp.full_like(barred, -1)
        any_barred = len(dr) > 0

        if len(jr):  # bordering of G_AA^-1 with the joining coordinate
            ev = event[jr]
            jj = ev % d
            border = cols[jr, jj]  # G[j, A]
            inv_j, coord_j = inv[jr], coord[jr]
            u = (inv_j @ border[..., None])[..., 0]
            gcol = rows_of_gram[ids[jr] * d + jj]
            g_jj = gcol[rows[: len(jr)], jj]
            schur = g_jj - (border * u).sum(-1)
            good = schur > 1e-13 * g_jj
            if not bool(good.all()):
                singular = xp.zeros_like(stop)
                singular[jr[~good]] = True
                jr, ev, jj, u, gcol, schur, inv_j, coord_j = (
                    t[good] for t in (jr, ev, jj, u, gcol, schur, inv_j, coord_j)
                )
            if bool((coord_j >= 0).all(-1).any()):  # no free slot: grow
                m = min(d, 2 * m)
                coord, sign, coef, u, coord_j = (
                    _widen(xp, t, m, v)
                    for t, v in ((coord, -1), (sign, 0.0), (coef, 0.0), (u, 0.0), (coord_j, -1))
                )
                cols, inv = _widen(xp, cols, m, 0.0), _widen(xp, inv, m, 0.0, dims=2)
                inv_j = _widen(xp, inv_j, m, 0.0, dims=2)
                blocked = _widen(xp, blocked, 2 * d + m, _INF)
            js = coord_j.argmin(-1)  # the first free slot (-1 is below every coordinate)
            u[rows[: len(jr)], js] = -1.0
            inv[jr] = inv_j + u[:, :, None] * (u / schur[:, None])[:, None, :]
            coord[jr, js] = jj
            sign[jr, js] = side_sign[ev]
            cols[jr, :, js] = gcol
            blocked[jr, jj] = _INF
            blocked[jr, d + jj] = _INF
            blocked[jr, 2 * d + js] = 0.0

        if len(dr):  # Schur downdate of G_AA^-1 removing the dropped slot
            ds = event[dr] - 2 * d
            h = inv[dr, :, ds]
            inv[dr] -= h[:, :, None] * (h / h[rows[: len(dr)], ds][:, None])[:, None, :]
            inv[dr, ds, :] = 0.0
            inv[dr, :, ds] = 0.0
            dc = coord[dr, ds]
            # The dropped coordinate sits on the +-lambda boundary it left: for the next
            # segment it may re-join on the other side only (no zero-length event).
            blocked[dr, dc] = 0.0
            blocked[dr, d + dc] = 0.0
            blocked[dr, 2 * d + ds] = _INF
            barred[dr] = dc + d * (sign[dr, ds] < 0)
            blocked[dr, barred[dr]] = _INF
            coord[dr, ds] = -1
            sign[dr, ds] = 0.0
            coef[dr, ds] = 0.0
            cols[dr, :, ds] = 0.0

        reached = stop & live
        if bool((reached if singular is None else reached | singular).any()):
            # Record the targets reached on this segment; freeze problems with none left.
            sr = xp.where(reached)[0]
            out[ids[sr], target[sr]] = _scatter_slots(xp, coef[sr], coord[sr], d)
            target = target + reached
            live = live & (target < n_targets)
            if singular is not None:
                fr = xp.where(singular)[0]
                ok[ids[fr]] = False
                _fill_remaining(xp, out, ids[fr], target[fr], _scatter_slots(xp, coef[fr], coord[fr], d))
                live = live & ~singular
            n_live = int(live.sum())
            if n_live == 0:
                return out, ok
            if 4 * (len(live) - n_live) < len(live):
                continue
            kr = xp.where(live)[0]
            state = (ids, al, target, grad, lam, coord, sign, inv, cols, coef, blocked, barred, live)
            ids, al, target, grad, lam, coord, sign, inv, cols, coef, blocked, barred, live = (
                t[kr] for t in state
            )
            rows = rows[: len(kr)]

    lr = xp.where(live)[0]
    ok[ids[lr]] = False
    _fill_remaining(xp, out, ids[lr], target[lr], _scatter_slots(xp, coef[lr], coord[lr], d))
    return out, ok


def _fill_remaining(xp, out, ids, target, coef) -> None:
    """Write ``coef`` into every target not yet recorded (a stopped path's best answer)."""
    remaining = _arange(xp, out, out.shape[1])[None, :] >= target[:, None]
    out[ids] = xp.where(remaining[..., None], coef[:, None, :], out[ids])


def _scatter_slots(xp, coef, coord, d: int):
    full = _full(xp, coef, (coef.shape[0], d + 1), 0.0)
    rows = _arange(xp, coef, coef.shape[0])[:, None]
    full[rows, xp.where(coord >= 0, coord, d)] = coef  # empty slots land in column d
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
