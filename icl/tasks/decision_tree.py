"""Decision trees (paper 2's class): a complete binary tree of ``depth`` levels splitting on random
coordinates at threshold 0, with N(0, 1) values at its 2^depth leaves."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from icl.tasks.base import FunctionClass, Params, gaussian, require

MAX_DEPTH = 20  # 2^20 leaves per sequence: far beyond paper 2's depth 4, still a bounded batch


@dataclasses.dataclass
class DecisionTree(FunctionClass):
    """Depth-``depth`` binary trees on random coordinates, threshold 0, N(0, 1) leaves (paper 2).

    f(x) is the value of the leaf reached from the root by going right where x[coord] > 0 and left
    otherwise at every internal node (paper 2's sampler). Nodes are numbered breadth first: the
    root is 0, the children of node i are 2i + 1 (left) and 2i + 2 (right), so the 2^depth - 1
    internal nodes come first and leaf j is node 2^depth - 1 + j.

    Parameters per sequence: ``coord`` (2^depth - 1,) the coordinate each internal node tests,
    uniform over the active dims; ``leaf`` (2^depth,) leaf values ~ N(0, 1). f(x) is one leaf
    value, drawn independently of x, so E f = 0 and Var f = 1 for any input distribution (no
    normalisation needed). Example, depth 1: f(x) = leaf[1] if x[coord[0]] > 0 else leaf[0]."""

    name = "decision_tree"
    bayes_posterior = None  # none implemented
    depth: int = 4

    def check(self, n_dims: int) -> None:
        require(1 <= self.depth <= MAX_DEPTH, "decision_tree.depth", f"an integer in 1..{MAX_DEPTH}", self.depth)

    def floats_per_sequence(self, n_points: int, n_dims: int) -> int:
        # coordinates and leaves, then the node index, the tested input and the output per point
        return 2 ** (self.depth + 1) + 4 * n_points

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        internal = 2**self.depth - 1
        coord = torch.randint(0, n_dims, (n, internal), generator=generator, device=generator.device)
        return {"coord": coord, "leaf": gaussian((n, internal + 1), generator)}

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        coord, leaf = params["coord"].to(xs.device), params["leaf"].to(xs)
        node = torch.zeros(xs.shape[:2], dtype=torch.long, device=xs.device)  # (B, N): every point at the root
        for _ in range(self.depth):  # one level per pass, all sequences and points at once
            tested = coord.gather(1, node)  # (B, N) the coordinate each point's node tests
            right = xs.gather(2, tested[..., None])[..., 0] > 0
            node = 2 * node + 1 + right.long()
        return leaf.gather(1, node - coord.shape[1])
