"""Query shifts (paper 2's robustness suite): the query at position i is drawn differently
from the context before it. Each returns query inputs (B, N, d) for every position at once."""

from __future__ import annotations

import torch
from torch import Tensor

QUERY_SHIFTS = ("orthant_context", "orthogonal", "repeat")


def orthant_context(xs: Tensor, fresh: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Context inputs folded into one random orthant per prompt; queries from the full
    distribution (``fresh``). Returns (context xs, query xs)."""
    signs = torch.randint(0, 2, (xs.shape[0], 1, xs.shape[2]), generator=gen, device=xs.device) * 2 - 1
    return xs.abs() * signs, fresh


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
