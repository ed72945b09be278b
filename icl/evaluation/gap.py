"""The fraction of the least-squares-to-Bayes gap a predictor closes, per k:
(MSE_LS - MSE_pred) / (MSE_LS - MSE_Bayes): 0 where it does as well as least squares, 1 where it
does as well as the Bayes-optimal predictor, with a paired percentile-bootstrap interval."""

from __future__ import annotations

import numpy as np

LS, BAYES = "least_squares", "bayes"  # the two reference predictors (registry names)
# Where MSE_LS - MSE_Bayes <= MIN_GAP * MSE_LS (e.g. noiseless dense data, where least squares is the
# Bayes predictor) or <= FLOOR * MSE_LS at k = 0 (the error of predicting 0: the scale of the data; e.g.
# k >= d on noiseless data, where both are exact up to rounding) the ratio means nothing: it is
# undefined there. A Bayes predictor worse than least squares is sampling or rounding noise: undefined too.
MIN_GAP = 0.05
FLOOR = 1e-3
DEFINITION = (
    "fraction of the least-squares-to-Bayes gap closed, (MSE_LS - MSE) / (MSE_LS - MSE_Bayes): 0 = least "
    f"squares, 1 = Bayes-optimal; undefined where MSE_LS - MSE_Bayes <= {MIN_GAP:g} MSE_LS or "
    f"<= {FLOOR:g} MSE_LS(k = 0)"
)


def gap_closed(
    err: np.ndarray,
    ls_err: np.ndarray,
    bayes_err: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.9,
    seed: int = 0,
    min_gap: float = MIN_GAP,
    floor: float = FLOOR,
) -> dict[str, list[float | None]]:
    """{mean, ci_low, ci_high} per k (None where undefined) from squared errors (P prompts, N
    positions; position k has k examples) of the predictor, least squares and the Bayes predictor on
    the same prompts; undefined where the gap is tiny (MIN_GAP, FLOOR). The
    bootstrap resamples prompts jointly for the three (they saw the same prompts), like
    ``CurveResult.summary`` with the same ``seed``."""
    err, ls_err, bayes_err = (np.asarray(a, dtype=np.float64) for a in (err, ls_err, bayes_err))
    if not err.shape == ls_err.shape == bayes_err.shape or err.ndim != 2:
        shapes = f"{err.shape}, {ls_err.shape}, {bayes_err.shape}"
        raise ValueError(f"squared errors of shapes {shapes}; allowed: three equal (P, N) shapes")
    num_p, den_p = ls_err - err, ls_err - bayes_err  # per prompt; the ratio of their means is the metric
    ls_mean, num, den = ls_err.mean(axis=0), num_p.mean(axis=0), den_p.mean(axis=0)
    defined = (den > min_gap * np.abs(ls_mean)) & (den > floor * abs(ls_mean[0]))
    safe = np.where(defined, den, 1.0)
    point = np.where(defined, num / safe, np.nan)
    idx = np.random.default_rng(seed).integers(0, err.shape[0], size=(n_boot, err.shape[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = num_p[idx].mean(axis=1) / den_p[idx].mean(axis=1)  # (n_boot, N)
    boots = np.where(defined, boots, 0.0)
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)

    def shown(a: np.ndarray) -> list[float | None]:
        return [float(v) if ok and np.isfinite(v) else None for v, ok in zip(a, defined, strict=True)]

    return {"mean": shown(point), "ci_low": shown(lo), "ci_high": shown(hi)}


def gap_closed_all(sq_errors: dict[str, np.ndarray], **kwargs) -> dict[str, dict[str, list[float | None]]]:
    """``gap_closed`` of every predictor but the two references, where both references are present
    (else {})."""
    if LS not in sq_errors or BAYES not in sq_errors:
        return {}
    return {
        name: gap_closed(err, sq_errors[LS], sq_errors[BAYES], **kwargs)
        for name, err in sq_errors.items()
        if name not in (LS, BAYES)
    }


def fmt_gap(stats: dict[str, list[float | None]], k: int) -> str:
    """``0.42 [0.30, 0.55]``, or ``-`` where undefined."""
    m, lo, hi = stats["mean"][k], stats["ci_low"][k], stats["ci_high"][k]
    if m is None:
        return "-"
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{m:.2f}"
