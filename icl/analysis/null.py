"""Alignment between two multi-layer representations: the maximum of a similarity metric over
layer pairs, and a permutation null that repeats that maximisation for every permutation of one
side's rows, so that the choice of the best pair is paid for. Calibrated score = raw - mean(null),
p = (1 + #{null >= raw}) / (P + 1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from icl.analysis.similarity import Metric, Prepared
from icl.errors import ICLError
from icl.rng import derive_seed

PERMUTATION_KEY = 0x6E756C6C  # keys the null's permutations: seed -> (this key, pair) -> permutations


@dataclasses.dataclass
class Alignment:
    """``table`` (La, Lb): the metric for every layer pair; ``raw`` its maximum at layers ``best``;
    ``null`` (P,): the maximum over layer pairs under each permutation of one side's rows."""

    table: Tensor
    raw: float
    best: tuple[int, int]
    null: Tensor

    @property
    def calibrated(self) -> float:
        return self.raw - float(self.null.mean()) if self.null.numel() else float("nan")

    @property
    def p_value(self) -> float:
        return float((1 + (self.null >= self.raw).sum()) / (self.null.numel() + 1))

    def record(self, layers_a: Sequence[object], layers_b: Sequence[object]) -> dict:
        """JSON-ready summary, naming the best layers by ``layers_a`` / ``layers_b``."""
        return {
            "raw": self.raw,
            "calibrated": self.calibrated,
            "p_value": self.p_value,
            "null_mean": float(self.null.mean()) if self.null.numel() else None,
            "null_std": float(self.null.std()) if self.null.numel() > 1 else None,
            "n_permutations": int(self.null.numel()),
            "best_layers": [layers_a[self.best[0]], layers_b[self.best[1]]],
            "table": self.table.tolist(),
        }


def permutations(n: int, n_perm: int, seed: int, key: int = 0) -> Tensor:
    """(n_perm, n) row permutations, a pure function of (seed, key)."""
    g = torch.Generator().manual_seed(derive_seed(seed, PERMUTATION_KEY, key))
    return torch.stack([torch.randperm(n, generator=g) for _ in range(n_perm)]) if n_perm else torch.zeros(0, n)


def align(metric: Metric, side_a: Prepared, side_b: Prepared, n_perm: int, seed: int, key: int = 0) -> Alignment:
    """Max over layer pairs of ``metric`` between two stacked prepared sides
    (``metric.stack([metric.prepare(f) for f in layers])``) and its permutation null of ``n_perm``
    permutations of one side's rows; ``key`` tells apart the nulls of different source pairs."""
    if n_perm < 0:
        raise ICLError(f"permutations: got {n_perm}; allowed: an integer >= 0")
    table = metric.scores(side_a, side_b)
    flat = int(table.argmax())
    best = (flat // table.shape[1], flat % table.shape[1])
    # The metrics are symmetric, so permuting either side gives the same null distribution: the
    # side with fewer layers is permuted, the cheaper gather (one layer of an algorithm, say).
    fixed, moved = (side_b, side_a) if table.shape[0] < table.shape[1] else (side_a, side_b)
    perms = permutations(metric.rows(moved), n_perm, seed, key)
    null = torch.tensor([float(metric.scores(fixed, moved, perm).max()) for perm in perms], dtype=torch.float64)
    return Alignment(table, float(table.max()), best, null)
