"""Greedy regression trees (CART, squared error) fit on every prompt and prefix: only the path
from the root to the query's leaf is grown, for all problems at once."""

from __future__ import annotations

import torch
from torch import Tensor

from icl.baselines.base import Predictor, check_inputs, is_int, require

# scikit-learn's constants: values closer than this along a feature are one value (no split
# between them); a node whose impurity is at most EPSILON is a leaf.
FEATURE_THRESHOLD = 1e-7
EPSILON = torch.finfo(torch.float64).eps


class GreedyTree(Predictor):
    """scikit-learn's ``DecisionTreeRegressor(max_depth=max_depth)`` (squared error, best split
    over every feature, thresholds halfway between neighbouring values, leaves down to one
    point) fit on the context of every prefix, predicting the query's leaf mean; 0 with no
    context. ``max_depth=None`` grows until leaves are pure. Garg et al. (2022) use depth 4 and
    unlimited depth on decision-tree targets.

    The prediction needs only the nodes on the query's path, and each node's split depends only on
    the points in it, so each problem keeps one node mask and descends one level per round: the
    split search is a sort per prompt and cumulative sums over (problems, points, features). Ties
    between equally good splits may resolve differently from scikit-learn (which breaks them by
    a random feature order); with continuous inputs and targets there are none."""

    name = "greedy_tree"

    def __init__(self, max_depth: int | None = 4) -> None:
        ok = max_depth is None or (is_int(max_depth) and max_depth >= 1)
        require(ok, "greedy_tree.max_depth", "an integer >= 1 or null (unlimited)", max_depth)
        self.max_depth = max_depth
        self.label = f"greedy_tree(depth={max_depth if max_depth is not None else 'inf'})"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        b, n, _ = xs.shape
        x, y = xs.double(), ys.double()
        out = torch.zeros(b, n, dtype=torch.float64, device=xs.device)
        for i in range(1, n):  # prefix i: context points j < i
            out[:, i] = tree_path_predict(x[:, :i], y[:, :i], x[:, i], self.max_depth)
        return out.to(ys.dtype)


def tree_path_predict(x: Tensor, y: Tensor, query: Tensor, max_depth: int | None) -> Tensor:
    """The leaf mean at ``query`` (P, D) of a greedy tree fit on ``x`` (P, K, D), ``y`` (P, K)."""
    p, k, d = x.shape
    order = x.argsort(1)  # (P, K, D): per feature, the points in increasing order
    xs_sorted = x.gather(1, order)
    ys_sorted = y[:, :, None].expand(-1, -1, d).gather(1, order)
    inside = torch.ones(p, k, dtype=torch.bool, device=x.device)  # the current node's points
    active = torch.ones(p, dtype=torch.bool, device=x.device)  # problems whose node may still split
    depth = 0
    while bool(active.any()) and (max_depth is None or depth < max_depth):
        idx = active.nonzero()[:, 0]
        split = _best_split(xs_sorted[idx], ys_sorted[idx], order[idx], inside[idx], y[idx])
        feature, threshold, found = split
        q = query[idx].gather(1, feature[:, None])[:, 0]
        xf = x[idx].gather(2, feature[:, None, None].expand(-1, k, 1))[..., 0]  # (A, K)
        left = q <= threshold
        keep = torch.where(left[:, None], xf <= threshold[:, None], xf > threshold[:, None])
        inside[idx] = torch.where(found[:, None], inside[idx] & keep, inside[idx])
        active[idx] = found
        depth += 1
    count = inside.sum(1).clamp_min(1)
    return (y * inside).sum(1) / count


def _best_split(xs_sorted: Tensor, ys_sorted: Tensor, order: Tensor, inside: Tensor, y: Tensor):
    """For each problem, the feature and threshold of scikit-learn's best split of the node
    ``inside`` (A, K), and whether the node splits at all (two or more points, impurity above
    EPSILON, a feature with two distinct values)."""
    a, k, d = xs_sorted.shape
    m = inside.gather(1, order.flatten(1)).view(a, k, d).double()  # node membership, sorted order
    ym = ys_sorted * m
    n_left = m.cumsum(1)
    s_left = ym.cumsum(1)
    n_node, s_node = n_left[:, -1:], s_left[:, -1:]  # (A, 1, D), equal across features
    # The next in-node value after each position: splits lie between in-node neighbours only.
    vals = torch.where(m > 0, xs_sorted, torch.inf)
    nxt = vals.flip(1).cummin(1).values.flip(1)
    nxt = torch.cat([nxt[:, 1:], torch.full_like(nxt[:, :1], torch.inf)], 1)
    valid = (m > 0) & (n_left < n_node) & (nxt > xs_sorted + FEATURE_THRESHOLD)
    n_right = n_node - n_left
    proxy = s_left**2 / n_left.clamp_min(1) + (s_node - s_left) ** 2 / n_right.clamp_min(1)
    proxy = proxy.masked_fill(~valid, -torch.inf)
    best = proxy.flatten(1).argmax(1)  # position-major, feature-minor
    pos, feature = best // d, best % d
    rows = torch.arange(a, device=xs_sorted.device)
    lo, hi = xs_sorted[rows, pos, feature], nxt[rows, pos, feature]
    threshold = lo / 2.0 + hi / 2.0
    # As scikit-learn: a midpoint that rounds up to the upper value (or overflows) becomes the lower.
    threshold = torch.where((threshold == hi) | torch.isinf(threshold), lo, threshold)
    n = n_node[:, 0, 0]
    ym_node = (y * inside).sum(1)
    impurity = (y * y * inside).sum(1) / n.clamp_min(1) - (ym_node / n.clamp_min(1)) ** 2
    found = valid.flatten(1).any(1) & (n >= 2) & (impurity > EPSILON)
    return feature, threshold, found


class GreedyTreeFull(GreedyTree):
    """``greedy_tree`` grown without a depth limit (Garg et al.'s second tree baseline), under its
    own name so evaluation can name it."""

    name = "greedy_tree_full"

    def __init__(self, max_depth: int | None = None) -> None:
        super().__init__(max_depth)
