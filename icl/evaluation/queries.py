"""Query shifts and their registry ``QUERY_SHIFTS``: the query at position i is drawn differently
from the context before it (paper 2's robustness suite and more), as query inputs (B, N, D) for
every position at once; and predicting at such queries with any predictor. User modules add
shifts with ``register``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from icl.errors import ICLError
from icl.plugins import check_free

# (context xs, fresh inputs, generator) -> (context xs, query xs). A shift that keeps the context
# returns its xs object itself; a new context tensor gets its labels recomputed (curves.shift_queries).
QueryShift = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


def orthant_context(xs: Tensor, fresh: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Context inputs folded into one random orthant per prompt; queries from the full
    distribution (``fresh``). The context changes, so its labels are recomputed."""
    signs = torch.randint(0, 2, (xs.shape[0], 1, xs.shape[2]), generator=gen, device=xs.device) * 2 - 1
    return xs.abs() * signs, fresh


def orthogonal(xs: Tensor, fresh: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Queries orthogonal to the context before them (``orthogonal_queries``)."""
    return xs, orthogonal_queries(xs, fresh)


def repeat(xs: Tensor, fresh: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Each query equal to an earlier context input (``repeated_queries``)."""
    return xs, repeated_queries(xs, fresh, gen)


def negated(xs: Tensor, fresh: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Query i = -x_j for a uniformly chosen earlier context input x_j (query 0 is fresh): odd
    functions (linear) flip their value there, even ones (quadratic) repeat it."""
    queries = repeated_queries(xs, fresh, gen)
    return xs, torch.cat([queries[:, :1], -queries[:, 1:]], dim=1)


QUERY_SHIFTS: dict[str, QueryShift] = {
    "orthant_context": orthant_context,
    "orthogonal": orthogonal,
    "repeat": repeat,
    "negated": negated,
}


def register(name: str, shift: QueryShift) -> None:
    """Add a query shift under ``name`` (what scenarios' ``query`` names); the same function again
    does nothing."""
    if not (callable(shift) and name.isidentifier()):
        raise ICLError(f"query shift {name!r}: allowed: a snake_case name and a function (xs, fresh, gen) -> (xs, qxs)")
    check_free("query shift", name, shift, QUERY_SHIFTS)
    QUERY_SHIFTS[name] = shift


def query_shift(name: str) -> QueryShift:
    """The registered shift ``name``; an unknown name is an ICLError listing the known ones."""
    if name not in QUERY_SHIFTS:
        raise ICLError(f"unknown query shift {name!r}; allowed: {', '.join(QUERY_SHIFTS)}")
    return QUERY_SHIFTS[name]


def orthogonal_queries(xs: Tensor, fresh: Tensor) -> Tensor:
    """Query i = ``fresh[:, i]`` projected onto the orthogonal complement of span(x_0..x_{i-1})
    (zero once the context spans R^d). Gram-Schmidt over positions, batched over prompts."""
    B, N, d = xs.shape
    x64, f64 = xs.double(), fresh.double()
    basis = torch.zeros(B, 0, d, dtype=torch.float64, device=xs.device)

    def residual(v: Tensor) -> Tensor:  # v minus its projection on the current basis
        return v - torch.einsum("bkd,bk->bd", basis, torch.einsum("bkd,bd->bk", basis, v))

    out = []
    for i in range(N):
        out.append(residual(f64[:, i]))
        v = residual(residual(x64[:, i]))  # twice: classical Gram-Schmidt loses orthogonality once
        norm = v.norm(dim=-1, keepdim=True)
        keep = norm > 1e-8 * x64[:, i].norm(dim=-1, keepdim=True).clamp_min(1e-300)
        basis = torch.cat([basis, torch.where(keep, v / norm.clamp_min(1e-300), 0.0)[:, None]], dim=1)
    return torch.stack(out, dim=1).to(xs.dtype)


def repeated_queries(xs: Tensor, fresh: Tensor, gen: torch.Generator) -> Tensor:
    """Query i = a uniformly chosen earlier context input x_j, j < i (query 0 is fresh)."""
    B, N, _ = xs.shape
    i = torch.arange(N, device=xs.device)
    j = (torch.rand(B, N, generator=gen, device=xs.device) * i.clamp_min(1)).floor().long()
    picked = torch.gather(xs, 1, j[..., None].expand_as(xs))
    return torch.where((i == 0)[None, :, None], fresh, picked)


def predict_at_queries(predict, xs: Tensor, ys: Tensor, qxs: Tensor) -> Tensor:
    """Prediction at position i for context (xs[:, :i], ys[:, :i]) and query qxs[:, i], for
    every i, in one call: copy i of the prompt has x_i replaced by the query, and causality
    (the predictor contract) makes its later positions irrelevant."""
    B, N, D = xs.shape
    idx = torch.arange(N, device=xs.device)
    rep = xs.unsqueeze(0).repeat(N, 1, 1, 1)
    rep[idx, :, idx] = qxs.transpose(0, 1)
    preds = predict(rep.reshape(N * B, N, D), ys.repeat(N, 1)).reshape(N, B, N)
    return preds[idx, :, idx].T
