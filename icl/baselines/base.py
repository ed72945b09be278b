"""The predictor contract shared by every baseline, input checks, and the prefix sufficient
statistics that let one batched solve serve every context length at once."""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from icl.errors import ICLError
from icl.sampling import PretrainMixture


class Predictor(abc.ABC):
    """``predict(xs (B, N, D), ys (B, N)) -> preds (B, N)``: ``preds[:, i]`` is the prediction
    of ``ys[:, i]`` from the context ``(xs[:, :i], ys[:, :i])`` and the query ``xs[:, i]``
    only; ``preds[:, 0]`` has no context. ``name`` is the registry key, ``label`` the display
    name (never parsed)."""

    name: ClassVar[str] = ""
    label: str = ""
    # True for baselines that depend on the distribution being evaluated (the Bayes-optimal
    # ones): evaluation builds them per scenario with ``for_scenario``, not once with ``build``.
    scenario_dependent: ClassVar[bool] = False

    @abc.abstractmethod
    def predict(self, xs: Tensor, ys: Tensor) -> Tensor: ...

    def __call__(self, xs: Tensor, ys: Tensor) -> Tensor:
        return self.predict(xs, ys)

    @classmethod
    def for_scenario(cls, scenario: PretrainMixture, train: PretrainMixture) -> Predictor:
        """The predictor for one evaluation scenario, from the scenario's mixture or the training
        mixture (``scenario_dependent`` baselines only)."""
        raise TypeError(f"{cls.name} is not scenario-dependent: build it with build_baseline")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


def check_inputs(xs: Tensor, ys: Tensor) -> None:
    """Raise ICLError unless xs is (B, N, D) and ys is (B, N)."""
    if xs.ndim != 3 or ys.ndim != 2 or tuple(ys.shape) != tuple(xs.shape[:2]):
        raise ICLError(
            f"predictor inputs: got xs {tuple(xs.shape)} and ys {tuple(ys.shape)}; allowed: xs (B, N, D) and ys (B, N)"
        )


def require(cond: bool, field: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ICLError(f"{field}: got {value!r}; allowed: {allowed}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def exclusive_cumsum(t: Tensor, dim: int = 1) -> Tensor:
    """out[:, i] = sum_{j < i} t[:, j] along ``dim``.

    Shift-then-sum (not ``cumsum(t) - t``), so prefix i is computed from entries j < i only
    and is bit-for-bit independent of the rest: the no-leakage property holds exactly.
    """
    dim = dim % t.ndim
    n = t.shape[dim]
    if n > 1 and t.numel() // n >= 4096:
        # One add per position over wide slices: same additions in the same order as
        # torch.cumsum (bit-identical), about 3x faster on CPU for (B, N, D*D) statistics,
        # where cumsum along a middle dimension walks memory with a large stride.
        out = torch.empty_like(t)
        out.select(dim, 0).zero_()
        for i in range(1, n):
            torch.add(out.select(dim, i - 1), t.select(dim, i - 1), out=out.select(dim, i))
        return out
    pad = [0, 0] * (t.ndim - dim - 1) + [1, 0]
    shifted = F.pad(t.narrow(dim, 0, n - 1), pad)
    return torch.cumsum(shifted, dim=dim)


@dataclasses.dataclass
class PrefixStats:
    """Sufficient statistics of every context prefix, in float64: for prefix i (context
    points j < i), ``gram[:, i] = sum x_j x_j^T``, ``xty[:, i] = sum y_j x_j``,
    ``yty[:, i] = sum y_j^2`` and ``count[i] = i``."""

    gram: Tensor  # (B, N, D, D)
    xty: Tensor  # (B, N, D)
    yty: Tensor  # (B, N)
    count: Tensor  # (N,)


def prefix_stats(xs: Tensor, ys: Tensor) -> PrefixStats:
    # Exclusive cumulative sums over points: prefix i is summed from points j < i only, so it
    # is bit-for-bit independent of later points. The Gram sums are scanned in place in one
    # (B, N, D, D) buffer, not built from temporaries of that size: 1.4 ms instead of 2.2 at
    # paper 2's evaluation shapes (64 x 41 x 20), where fresh memory is a large part of the cost.
    xs, ys = xs.double(), ys.double()
    b, n, d = xs.shape
    gram = torch.empty(b, n, d, d, device=xs.device, dtype=torch.float64)
    gram[:, 0] = 0.0
    torch.mul(xs[:, :-1, :, None], xs[:, :-1, None, :], out=gram[:, 1:])
    for i in range(2, n):  # the additions of torch.cumsum, in its order
        gram[:, i] += gram[:, i - 1]
    return PrefixStats(
        gram=gram,
        xty=exclusive_cumsum(xs * ys[..., None], dim=1),
        yty=exclusive_cumsum(ys * ys, dim=1),
        count=torch.arange(n, device=xs.device, dtype=torch.float64),
    )


def prefix_mask(n: int, device: torch.device) -> Tensor:
    """(N, N) float64 mask with [i, j] = 1 iff j < i (context point j is visible to query i)."""
    return torch.ones(n, n, device=device, dtype=torch.float64).tril(-1)


def batch_chunks(batch: int, per_item: int, budget: int = 1 << 23) -> Iterator[slice]:
    """Slices over the batch so that each chunk holds about ``budget`` elements at most, given
    ``per_item`` elements per sequence (a chunk has at least one sequence)."""
    step = max(1, budget // max(per_item, 1))
    for start in range(0, batch, step):
        yield slice(start, min(start + step, batch))
