"""Garg et al.'s learned baselines on a full evaluation batch: wall time of the batched
implementations against per-prompt, per-prefix loops (measured, or extrapolated from a subset of
prefixes where the loop is slow). Prints figures only (no assertions about time).

Batch: 64 prompts, 101 points (prefixes k = 0..100), d = 20; x ~ N(0, I), y from a random
two-layer ReLU network (100 units) per prompt, as in Garg et al.'s relu_2nn_regression task.

    python benchmarks/bench_baselines.py [--threads 2] [--loop-prompts 2] [--only gd_2nn,greedy_tree]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from icl.baselines import GD2NN, GreedyTree, Logistic, Unavailable, build_baseline


def relu_batch(b: int = 64, n: int = 101, d: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, n, d, generator=g)
    w1 = torch.randn(b, d, 100, generator=g) * (2 / 100) ** 0.5
    w2 = torch.randn(b, 100, generator=g)
    ys = (torch.relu(xs @ w1) * w2[:, None]).sum(-1)
    return xs, ys


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def gd_loop(xs, ys, prompts, prefixes, steps=100, hidden=100, lr=5e-3) -> float:
    """The straightforward loop: per prompt and prefix an nn.Module and a torch.optim.Adam."""
    d = xs.shape[2]
    start = time.perf_counter()
    for b in prompts:
        for i in prefixes:
            net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                nn.functional.mse_loss(net(xs[b, :i])[:, 0], ys[b, :i]).backward()
                opt.step()
            with torch.no_grad():
                net(xs[b, i : i + 1])
    return time.perf_counter() - start


def sklearn_tree_loop(xs, ys, depth) -> float:
    from sklearn.tree import DecisionTreeRegressor

    x, y = xs.double().numpy(), ys.double().numpy()
    start = time.perf_counter()
    for b in range(x.shape[0]):
        for i in range(1, x.shape[1]):
            DecisionTreeRegressor(max_depth=depth).fit(x[b, :i], y[b, :i]).predict(x[b, i : i + 1])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loop-prompts", type=int, default=2, help="prompts the slow loops run on (extrapolated)")
    ap.add_argument("--only", default="gd_2nn,greedy_tree,logistic,xgboost")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    xs, ys = relu_batch()
    b, n, _ = xs.shape
    fits = b * (n - 1)
    print(f"batch: {b} prompts x {n} points, d = {xs.shape[2]}; {fits} fits per baseline; {args.threads} threads")
    if "gd_2nn" in only:
        t, _ = timed(lambda: GD2NN().predict(xs, ys))
        print(f"gd_2nn batched (100 steps): {t:.1f} s")
        prefixes = list(range(5, n, 10))  # every 10th prefix: the mean cost of all of them
        prompts = list(range(args.loop_prompts))
        t_loop = gd_loop(xs, ys, prompts, prefixes)
        per_fit = t_loop / (len(prompts) * len(prefixes))
        print(
            f"gd_2nn per-prefix nn.Module + Adam loop: {per_fit * 1e3:.1f} ms per fit "
            f"({len(prompts)} prompts x {len(prefixes)} prefixes) -> {per_fit * fits:.0f} s extrapolated"
        )
    if "greedy_tree" in only:
        for depth in (4, None):
            t, _ = timed(lambda depth=depth: GreedyTree(depth).predict(xs, ys))
            t_sk = sklearn_tree_loop(xs, ys, depth)
            print(f"greedy_tree depth={depth}: batched {t:.1f} s; scikit-learn loop {t_sk:.1f} s")
    if "logistic" in only:
        labels = torch.sign(ys - ys.median(1, keepdim=True).values)
        t, _ = timed(lambda: Logistic().predict(xs, labels))
        print(f"logistic (lam 0.1): {t:.1f} s")
    if "xgboost" in only:
        try:
            model = build_baseline("xgboost", workers=args.threads)
        except Unavailable as e:
            print(f"xgboost skipped ({e})")
            return
        import xgboost

        t, _ = timed(lambda: model.predict(xs, ys))
        print(f"xgboost (exact, native API, {model.workers} threads over prompts): {t:.1f} s")
        k = args.loop_prompts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            for j in range(k):  # the reference's loop: XGBRegressor with the package's defaults
                for i in range(1, n):
                    reg = xgboost.XGBRegressor(n_jobs=1).fit(xs[j, :i].numpy(), ys[j, :i].numpy())
                    reg.predict(xs[j, i : i + 1].numpy())
            t_loop = (time.perf_counter() - start) / k
        print(f"xgboost XGBRegressor loop: {t_loop:.1f} s per prompt ({k} prompts) -> {t_loop * b:.0f} s extrapolated")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
