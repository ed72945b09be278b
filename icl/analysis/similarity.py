"""Representation similarity between two feature matrices of the same N inputs (rows): mutual
k-nearest-neighbour alignment, biased and unbiased linear CKA, CKNNA (Huh et al., "The Platonic
Representation Hypothesis", 2024) and SVCCA (Raghu et al., 2017), all in float64.

Every metric is a ``Metric``: ``prepare(feats)`` builds what depends on one side only (Gram
matrices, neighbour sets, bases) once, and ``scores(side_a, side_b, perm)`` scores every pair of
prepared layers with the rows of side b permuted by ``perm``. The permutation null
(icl/analysis/null.py) then costs index gathers, never a recomputation of features; the plain
functions (``mutual_knn``, ``cka``, ...) are the identity permutation of the same code.
Memory is O(N^2) per prepared layer (N <= 4096 is the intended range).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from icl.errors import ICLError

CLAMP_QUANTILE = 0.95  # Huh et al.'s outlier clamp
DEFAULT_K = 10  # neighbours of mutual kNN and CKNNA (Huh et al.)
SVCCA_VARIANCE = 0.99  # SVCCA keeps the top directions explaining this share of the variance

Prepared = dict[str, Any]


def preprocess(feats: Tensor, quantile: float = CLAMP_QUANTILE) -> Tensor:
    """Huh et al.'s preprocessing: clamp every value at the ``quantile`` of |values| (over the
    whole matrix), then scale each row to unit L2 norm (zero rows stay zero); float64 (N, E)."""
    x = feats.double().reshape(feats.shape[0], -1)
    if x.numel():
        cap = torch.quantile(x.abs().flatten(), quantile)
        x = x.clamp(-cap, cap)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _gram(x: Tensor) -> Tensor:
    x = x.double().reshape(x.shape[0], -1)
    return x @ x.T


def _ratio(num: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """num / sqrt(a b), 0 where a side has no signal (a constant representation)."""
    den = (a.clamp_min(0) * b.clamp_min(0)).sqrt()
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.zeros_like(num))


TIE_LEVELS = 10**9  # inner products equal to 1e-9 of the largest |inner product| are ties


def _neighbours(gram: Tensor, k: int) -> Tensor:
    """(N, k) indices of each row's k largest inner products, itself excluded. Inner products
    within rounding noise of each other are ties, broken by the smaller row index: rows that
    coincide after normalisation (e.g. the fingerprints of 1-sparse functions with the same
    support) get the same neighbours in two representations that differ only by float noise."""
    n = gram.shape[0]
    if not 1 <= k <= n - 1:
        raise ICLError(f"neighbours k: got {k}; allowed: 1 .. N - 1 = {n - 1}")
    levels = torch.round(gram / gram.abs().max().clamp_min(1e-300) * TIE_LEVELS).long()
    key = levels * n + (n - 1 - torch.arange(n, device=gram.device))  # one int64 per pair, no ties
    key.fill_diagonal_(torch.iinfo(torch.int64).min)
    return key.topk(k, dim=1).indices


def _entries(stack: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """stack[:, rows, cols] of an (L, N, N) stack for broadcastable index tensors, as one flat
    index_select (several times faster than advanced indexing on CPU)."""
    n = stack.shape[-1]
    flat = (rows * n + cols).flatten()
    shape = torch.broadcast_shapes(rows.shape, cols.shape)
    return stack.flatten(1).index_select(1, flat).view(-1, *shape)


def _permute(stack: Tensor, perm: Tensor) -> Tensor:
    """Rows and columns of every (N, N) matrix of ``stack`` (L, N, N) permuted: M[perm][:, perm]."""
    n = perm.shape[0]
    flat = (perm[:, None] * n + perm[None, :]).flatten()  # one gather instead of two
    return stack.flatten(1)[:, flat].view(stack.shape)


class Metric(abc.ABC):
    """A similarity score between two representations of the same inputs; see the module doc."""

    name = ""

    @abc.abstractmethod
    def prepare(self, feats: Tensor) -> Prepared: ...

    @abc.abstractmethod
    def scores(self, side_a: Prepared, side_b: Prepared, perm: Tensor | None = None) -> Tensor:
        """(La, Lb) scores of every layer pair of two stacked sides (``stack``), rows of b permuted."""

    @staticmethod
    def rows(side: Prepared) -> int:
        """N, the inputs of a stacked side."""
        return side["n"][0]

    def stack(self, layers: Sequence[Prepared]) -> Prepared:
        """One side's prepared layers (same N) stacked along a new leading dimension (plain values
        become lists)."""
        return {key: _stack([p[key] for p in layers]) for key in layers[0]}


def _stack(values: list[Any]) -> Any:
    if isinstance(values[0], Tensor):
        return torch.stack(values)
    return values


class MutualKNN(Metric):
    """Mean over inputs of |kNN_A(i) and kNN_B(i)| / k, neighbours by inner product (cosine after
    ``preprocess``). Independent representations score k / (N - 1) on average; identical ones 1."""

    name = "mutual_knn"

    def __init__(self, k: int = DEFAULT_K) -> None:
        self.k = k

    def prepare(self, feats: Tensor) -> Prepared:
        idx = _neighbours(_gram(feats), self.k)
        n = idx.shape[0]
        mask = torch.zeros(n, n, dtype=torch.bool).scatter_(1, idx, True)
        return {"n": n, "idx": idx, "mask": mask}

    def scores(self, side_a: Prepared, side_b: Prepared, perm: Tensor | None = None) -> Tensor:
        idx, mask = side_a["idx"], side_b["mask"]  # (La, N, k), (Lb, N, N)
        n = idx.shape[1]
        perm = torch.arange(n) if perm is None else perm
        rows, cols = perm[:, None], perm[idx]  # neighbour j of i in A, looked up in B at (pi(i), pi(j))
        hits = _entries(mask, rows, cols)  # (Lb, La, N, k)
        return hits.double().mean((-1, -2)).T


# One float64 entry of a Gram read or permuted costs about as much as this many multiply-adds of
# the feature product (memory-bound gathers against a compute-bound matrix product, measured on a
# 2-core CPU): sets which of the two exact forms ``gram_inner`` uses.
GRAM_ENTRY_COST = 10


def _stack_features(layers: Sequence[Prepared], key: str) -> dict[str, Any]:
    """Layers' (N, E_l) features side by side, (N, sum E), and (L, sum E) 0/1 block indicators."""
    feats = [p[key] for p in layers]
    widths = [f.shape[1] for f in feats]
    blocks = torch.zeros(len(feats), sum(widths), dtype=torch.float64)
    start = 0
    for i, w in enumerate(widths):
        blocks[i, start : start + w] = 1.0
        start += w
    return {"n": [p["n"] for p in layers], "x": torch.cat(feats, 1), "blocks": blocks, "grams": None}


def gram_inner(side_a: dict[str, Any], side_b: dict[str, Any], perm: Tensor | None) -> Tensor:
    """(La, Lb) inner products <X_a X_a^T, (X_b X_b^T)[perm, perm]> of every layer pair, by
    whichever exact form is cheaper: ||X_a^T X_b[perm]||_F^2 from the features (narrow layers) or
    the N x N Grams (wide layers; computed once per side, then only permuted)."""
    n, wa = side_a["x"].shape
    wb = side_b["x"].shape[1]
    la, lb = side_a["blocks"].shape[0], side_b["blocks"].shape[0]
    if n * wa * wb <= GRAM_ENTRY_COST * (la + 1) * lb * n * n:
        xb = side_b["x"] if perm is None else side_b["x"][perm]
        cross = (side_a["x"].T @ xb) ** 2  # (sum Ea, sum Eb)
        return side_a["blocks"] @ cross @ side_b["blocks"].T
    ga, gb = _grams(side_a), _grams(side_b)
    gb = gb if perm is None else _permute(gb, perm)
    return ga.flatten(1) @ gb.flatten(1).T


def _grams(side: dict[str, Any]) -> Tensor:
    if side["grams"] is None:
        x, blocks = side["x"], side["blocks"].bool()
        side["grams"] = torch.stack([x[:, b] @ x[:, b].T for b in blocks])
    return side["grams"]


class CKA(Metric):
    """Linear CKA with the biased HSIC estimator, <HKH, HLH> / (|HKH| |HLH|). Independent features
    sit near D / (N + D), not 0 (Huh et al.'s pitfall); compare against the null."""

    name = "cka"

    def prepare(self, feats: Tensor) -> Prepared:
        x = feats.double().reshape(feats.shape[0], -1)
        x = x - x.mean(0, keepdim=True)  # centred features: X X^T = H K H
        return {"n": x.shape[0], "x": x, "self": ((x.T @ x) ** 2).sum()}

    def stack(self, layers: Sequence[Prepared]) -> Prepared:
        return _stack_features(layers, "x") | {"self": torch.stack([p["self"] for p in layers])}

    def scores(self, side_a: Prepared, side_b: Prepared, perm: Tensor | None = None) -> Tensor:
        inner = gram_inner(side_a, side_b, perm)
        return _ratio(inner, side_a["self"][:, None], side_b["self"][None, :])


def _hsic1(trace: Tensor, sum_a: Tensor, sum_b: Tensor, cross: Tensor, n: int) -> Tensor:
    """Song et al.'s unbiased HSIC_1 from tr(K~ L~), the sums of K~ and L~ and 1^T K~ L~ 1."""
    return (trace + sum_a * sum_b / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))


class CKAUnbiased(Metric):
    """Linear CKA with the unbiased HSIC_1 estimator (Song et al., 2012): independent features
    score about 0. K~ is the Gram with its diagonal zeroed; everything HSIC_1 needs of it comes
    from the features, its diagonal, row sums and total."""

    name = "cka_unbiased"

    def prepare(self, feats: Tensor) -> Prepared:
        x = feats.double().reshape(feats.shape[0], -1)
        n = x.shape[0]
        if n < 4:
            raise ICLError(f"cka_unbiased: got {n} inputs; allowed: 4 or more")
        diag = (x * x).sum(1)
        rows = x @ x.sum(0) - diag  # row sums of K~
        total = rows.sum()
        trace = ((x.T @ x) ** 2).sum() - (diag * diag).sum()
        self_hsic = _hsic1(trace, total, total, rows @ rows, n)
        return {"n": n, "x": x, "diag": diag, "rows": rows, "sum": total, "self": self_hsic}

    def stack(self, layers: Sequence[Prepared]) -> Prepared:
        out = _stack_features(layers, "x")
        return out | {key: torch.stack([p[key] for p in layers]) for key in ("diag", "rows", "sum", "self")}

    def scores(self, side_a: Prepared, side_b: Prepared, perm: Tensor | None = None) -> Tensor:
        diag_b, rows_b = side_b["diag"], side_b["rows"]
        if perm is not None:
            diag_b, rows_b = diag_b[:, perm], rows_b[:, perm]
        n = side_a["rows"].shape[-1]
        trace = gram_inner(side_a, side_b, perm) - side_a["diag"] @ diag_b.T  # tr(K~ L~)
        cross = side_a["rows"] @ rows_b.T
        hsic = _hsic1(trace, side_a["sum"][:, None], side_b["sum"][None, :], cross, n)
        return _ratio(hsic, side_a["self"][:, None], side_b["self"][None, :])


class CKNNA(Metric):
    """Huh et al.'s CKNNA: unbiased HSIC of the Grams restricted to pairs (i, j) where j is among
    the k nearest neighbours of i in both representations, normalised by each side's own. With
    k = N - 1 it is unbiased CKA. Computed on the N x k neighbour entries of side a only."""

    name = "cknna"

    def __init__(self, k: int = DEFAULT_K) -> None:
        self.k = k

    def prepare(self, feats: Tensor) -> Prepared:
        gram = _gram(feats)
        n = gram.shape[0]
        if n < 4:
            raise ICLError(f"cknna: got {n} inputs; allowed: 4 or more")
        idx = _neighbours(gram, self.k)
        mask = torch.zeros(n, n, dtype=torch.bool).scatter_(1, idx, True)
        side = {
            "n": n,
            "gram": gram,
            "idx": idx,
            "values": gram.gather(1, idx),  # K[i, j] for j in kNN(i)
            "mutual": mask[idx, torch.arange(n)[:, None]],  # i in kNN(j) too
            "mask": mask,
        }
        one = self.stack([side])
        side["self"] = self._hsic(one, one, None)[0, 0]
        return side

    def _hsic(self, side_a: Prepared, side_b: Prepared, perm: Tensor | None) -> Tensor:
        idx = side_a["idx"]  # (La, N, k)
        n = idx.shape[1]
        perm = torch.arange(n) if perm is None else perm
        rows, cols = perm[:, None], perm[idx]
        both = _entries(side_b["mask"], rows, cols).double()  # (Lb, La, N, k): j in kNN_A(i) and kNN_B(i)
        back = _entries(side_b["mask"], cols, rows).double()  # i in kNN_B(j)
        lv = _entries(side_b["gram"], rows, cols)  # L[pi(i), pi(j)]
        kv = both * side_a["values"]  # entries of K' = mask o K
        lv = both * lv  # entries of L' = mask o L
        trace = (kv * lv * back * side_a["mutual"].double()).sum((-1, -2))  # sum K'_ij L'_ji
        flat = idx.expand_as(kv).flatten(-2)
        zeros = torch.zeros(kv.shape[:-1], dtype=torch.float64)
        col_k = zeros.scatter_add(-1, flat, kv.flatten(-2))
        col_l = zeros.scatter_add(-1, flat, lv.flatten(-2))
        # (1^T K' L' 1 + 1^T L' K' 1) / 2: the masked Grams are not symmetric, and the average keeps
        # the score symmetric in its sides (Huh et al. use the first term; equal for k = N - 1).
        cross = ((col_k * lv.sum(-1)).sum(-1) + (col_l * kv.sum(-1)).sum(-1)) / 2
        hsic = _hsic1(trace, kv.sum((-1, -2)), lv.sum((-1, -2)), cross, n)
        return hsic.T  # (La, Lb)

    def scores(self, side_a: Prepared, side_b: Prepared, perm: Tensor | None = None) -> Tensor:
        hsic = self._hsic(side_a, side_b, perm)
        return _ratio(hsic, side_a["self"][:, None], side_b["self"][None, :])


class SVCCA(Metric):
    """SVCCA: each side reduced to its top singular directions explaining ``variance`` of the
    (centred) variance, then the mean canonical correlation between the two subspaces. With few
    inputs per direction canonical correlations are inflated; compare against the null."""

    name = "svcca"

    def __init__(self, variance: float = SVCCA_VARIANCE) -> None:
        self.variance = variance

    def prepare(self, feats: Tensor) -> Prepared:
        x = feats.double().reshape(feats.shape[0], -1)
        x = x - x.mean(0, keepdim=True)
        u, s, _ = torch.linalg.svd(x, full_matrices=False)
        share = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
        keep = int((share < self.variance).sum()) + 1 if s.numel() and s[0] > 0 else 0
        return {"n": x.shape[0], "basis": u[:, :keep]}

    def stack(self, layers: Sequence[Prepared]) -> Prepared:
        return {"n": [p["n"] for p in layers], "basis": [p["basis"] for p in layers]}  # ranks differ: a list

    def scores(self, side_a: Prepared, side_b: Prepared, perm: Tensor | None = None) -> Tensor:
        out = torch.zeros(len(side_a["basis"]), len(side_b["basis"]), dtype=torch.float64)
        for i, qa in enumerate(side_a["basis"]):
            for j, qb in enumerate(side_b["basis"]):
                if qa.shape[1] and qb.shape[1]:
                    qb = qb if perm is None else qb[perm]
                    out[i, j] = torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0).mean()
        return out


METRICS: dict[str, Callable[..., Metric]] = {cls.name: cls for cls in (MutualKNN, CKA, CKAUnbiased, CKNNA, SVCCA)}
NEIGHBOUR_METRICS = ("mutual_knn", "cknna")  # those that take k


def build_metric(name: str, k: int = DEFAULT_K) -> Metric:
    """The metric ``name`` (k: neighbours, for mutual_knn and cknna)."""
    if name not in METRICS:
        raise ICLError(f"unknown similarity metric {name!r}; allowed: {', '.join(METRICS)}")
    return METRICS[name](k) if name in NEIGHBOUR_METRICS else METRICS[name]()


def similarity(name: str, a: Tensor, b: Tensor, k: int = DEFAULT_K) -> float:
    """The metric ``name`` between features a (N, Ea) and b (N, Eb) of the same N inputs, as given
    (apply ``preprocess`` first for Huh et al.'s protocol)."""
    if a.shape[0] != b.shape[0]:
        raise ICLError(f"similarity: {a.shape[0]} and {b.shape[0]} rows; allowed: the same inputs on both sides")
    metric = build_metric(name, k)
    side_a, side_b = metric.stack([metric.prepare(a)]), metric.stack([metric.prepare(b)])
    return float(metric.scores(side_a, side_b)[0, 0])


def mutual_knn(a: Tensor, b: Tensor, k: int = DEFAULT_K) -> float:
    return similarity("mutual_knn", a, b, k)


def cka(a: Tensor, b: Tensor) -> float:
    return similarity("cka", a, b)


def cka_unbiased(a: Tensor, b: Tensor) -> float:
    return similarity("cka_unbiased", a, b)


def cknna(a: Tensor, b: Tensor, k: int = DEFAULT_K) -> float:
    return similarity("cknna", a, b, k)


def svcca(a: Tensor, b: Tensor) -> float:
    return similarity("svcca", a, b)
