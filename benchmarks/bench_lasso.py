"""Batched LASSO vs scikit-learn on paper 2's sparse evaluation batch: wall time and objective
agreement. Prints figures only (no assertions about time).

Batch: 64 prompts, d = 20, 41 points, sparse linear with nnz = 3 (``--nnz``) in paper 2's raw convention
f(x) = w.x, noiseless; every prefix k = 1..40 is one LASSO problem (alpha = 0.01), i.e. 2560
problems. scikit-learn fits ``Lasso(alpha, fit_intercept=False, max_iter=100000)`` (paper 2's
baseline) per prompt and per prefix; it is single-threaded, and torch runs on ``--threads``.

    python benchmarks/bench_lasso.py [--alpha 0.01] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from icl.baselines import Lasso
from icl.rng import Domain
from icl.sampling import ComponentConfig, DataConfig, Sampler


def paper2_sparse_batch(seed: int = 0, nnz: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    mixture = [ComponentConfig("sparse_linear", 1.0, params={"nnz": nnz, "normalize": False})]
    cfg = DataConfig(n_dims=20, n_points=41, batch_size=64, mixture=mixture)
    batch = Sampler(cfg, seed).sample_batch(0, domain=Domain.EVAL)
    return batch.xs, batch.ys


def objective(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> float:
    return float(0.5 * np.mean((y - x @ w) ** 2) + alpha * np.abs(w).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--nnz", type=int, default=3, help="non-zeros of the sparse weights")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-iter", type=int, default=100_000, help="scikit-learn's max_iter")
    ap.add_argument("--no-reference", action="store_true", help="skip the tight-tolerance reference fits")
    args = ap.parse_args()
    from sklearn.linear_model import Lasso as SkLasso

    torch.set_num_threads(args.threads)
    xs, ys = paper2_sparse_batch(nnz=args.nnz)
    b, n, d = xs.shape
    ours = Lasso(args.alpha)
    ours.coefficients(xs, ys)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        coef = ours.coefficients(xs, ys)
        times.append(time.perf_counter() - start)
    t_ours = statistics.median(times)

    x_np, y_np = xs.double().numpy(), ys.double().numpy()
    sk_coef = np.zeros((b, n, d))
    unconverged = 0
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(b):
            for k in range(1, n):
                fit = SkLasso(alpha=args.alpha, fit_intercept=False, max_iter=args.max_iter)
                sk_coef[i, k] = fit.fit(x_np[i, :k], y_np[i, :k]).coef_
        unconverged = sum("did not converge" in str(w.message) for w in caught)
    t_sk = time.perf_counter() - start

    def rel_gaps(ref: np.ndarray) -> np.ndarray:
        """(objective(ours) - objective(ref)) / objective(ref) for every problem."""
        out = []
        for i in range(b):
            for k in range(1, n):
                o_ours = objective(x_np[i, :k], y_np[i, :k], coef[i, k].numpy(), args.alpha)
                o_ref = objective(x_np[i, :k], y_np[i, :k], ref[i, k], args.alpha)
                out.append((o_ours - o_ref) / o_ref)
        return np.array(out)

    gaps = rel_gaps(sk_coef)
    preds = (coef * xs.double()).sum(-1)[:, 1:].numpy()
    sk_preds = (sk_coef * x_np).sum(-1)[:, 1:]

    print(f"problems: {b} prompts x {n - 1} prefixes = {b * (n - 1)} (d={d}, nnz={args.nnz}, alpha={args.alpha:g})")
    print(
        f"ours (torch, {args.threads} thread(s)): median {t_ours * 1e3:.1f} ms over {args.repeats} "
        f"runs (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})"
    )
    print(
        f"scikit-learn Lasso per prompt and prefix (max_iter={args.max_iter}): "
        f"{t_sk * 1e3:.0f} ms, {unconverged} convergence warnings"
    )
    print(f"speed ratio (sklearn / ours): {t_sk / t_ours:.0f}x")
    print(
        f"relative objective gap vs those fits, (ours - sklearn) / sklearn: max {gaps.max():.2e}, "
        f"min {gaps.min():.2e} (negative: ours lower)"
    )
    print(f"max |prediction difference| vs those fits: {np.abs(preds - sk_preds).max():.2e}")
    if not args.no_reference:
        ref = np.zeros((b, n, d))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(b):
                for k in range(1, n):
                    fit = SkLasso(alpha=args.alpha, fit_intercept=False, tol=1e-12, max_iter=10**6)
                    ref[i, k] = fit.fit(x_np[i, :k], y_np[i, :k]).coef_
        t_ref = time.perf_counter() - start
        ref_gaps = rel_gaps(ref)
        print(
            f"reference: scikit-learn with tol=1e-12, max_iter=1e6 ({t_ref:.1f} s): relative "
            f"objective gap max {ref_gaps.max():.2e}, max |.| {np.abs(ref_gaps).max():.2e}"
        )


if __name__ == "__main__":
    main()
