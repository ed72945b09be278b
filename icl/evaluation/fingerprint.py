"""A predictor's function fingerprint: its predictions at M probe queries shared by all prompts,
with each prompt's context of i examples fixed; the weights those predictions imply (least squares
of the predictions on the queries) and how linear they are (R^2 of that fit)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from icl.errors import ICLError
from icl.inputs import InputConfig, sample_inputs
from icl.rng import Domain, Stream, generator
from icl.sampling import PretrainMixture

Predict = Callable[[Tensor, Tensor], Tensor]

# The probe queries' own stream: substream 0 draws evaluation prompts and 1 the query shifts
# (icl.evaluation.curves), so these inputs are never the inputs of an evaluation prompt.
PROBE_SUBSTREAM = 3


def probe_queries(inputs: InputConfig, n_queries: int, n_active: int, n_dims: int, seed: int) -> Tensor:
    """(M, D) probe queries from the input distribution on ``n_active`` dims (zero beyond, up to
    ``n_dims``), a pure function of ``seed``."""
    if n_queries < 1:
        raise ICLError(f"probe queries: got {n_queries}; allowed: an integer >= 1")
    g = generator(seed, 0, Stream.INPUTS, substream=PROBE_SUBSTREAM, domain=Domain.EVAL)
    q = sample_inputs(inputs, 1, n_queries, n_active, g)[0]
    return torch.nn.functional.pad(q, (0, n_dims - n_active))


@torch.no_grad()
def fingerprint(predict: Predict, xs: Tensor, ys: Tensor, i: int, queries: Tensor, chunk: int = 4096) -> Tensor:
    """(P, M) predictions of ``predict`` at every query after the first ``i`` examples of each of
    the P prompts (xs (P, N, D), ys (P, N)): one prompt of i + 1 points per (prompt, query), the
    query last, batched ``chunk`` sequences at a time. The predictor contract makes the query's
    label (set to 0) irrelevant."""
    P, N, D = xs.shape
    M = queries.shape[0]
    if not 0 <= i < N + 1:
        raise ICLError(f"fingerprint context: got {i} examples; allowed: 0 .. {N}")
    q = queries.to(xs.device, xs.dtype)
    out = torch.empty(P, M, dtype=torch.float64)
    per = max(1, chunk // M)  # prompts per call
    for start in range(0, P, per):
        ctx_x, ctx_y = xs[start : start + per, :i], ys[start : start + per, :i]
        b = ctx_x.shape[0]
        seq_x = torch.cat([ctx_x[:, None].expand(b, M, i, D), q[None, :, None].expand(b, M, 1, D)], 2)
        seq_y = torch.cat([ctx_y[:, None].expand(b, M, i), ctx_y.new_zeros(b, M, 1)], 2)
        preds = predict(seq_x.reshape(b * M, i + 1, D), seq_y.reshape(b * M, i + 1))[:, i]
        out[start : start + b] = preds.reshape(b, M).double().cpu()
    return out


def truth_fingerprint(mixture: PretrainMixture, info: dict, queries: Tensor, n_active: int) -> Tensor:
    """(P, M) noiseless f(query) of every prompt's true function (``info`` of its batch)."""
    P = info["component"].shape[0]
    q = queries[:, :n_active].to(info["component"].device)
    return mixture.evaluate(info, q[None].expand(P, -1, -1).contiguous()).double().cpu()


def implied_weights(fp: Tensor, queries: Tensor) -> Tensor:
    """(P, D) minimum-norm least-squares w with queries @ w ~ predictions, per prompt: a linear
    predictor's own weights when the M queries span the inputs (M >= d)."""
    q = queries.double().cpu()
    return (torch.linalg.pinv(q) @ fp.double().T).T


def linearity_r2(fp: Tensor, queries: Tensor) -> Tensor:
    """(P,) R^2 of the implied-weight fit, 1 - |f - Qw|^2 / |f - mean f|^2 per prompt (NaN where
    the predictions are constant): 1 for a predictor linear in the query."""
    f = fp.double()
    resid = f - implied_weights(f, queries) @ queries.double().cpu().T
    total = ((f - f.mean(1, keepdim=True)) ** 2).sum(1)
    scale = (f**2).sum(1).clamp_min(1e-300)
    r2 = 1 - (resid**2).sum(1) / total.clamp_min(1e-300)
    return torch.where(total > 1e-24 * scale, r2, torch.full_like(r2, float("nan")))
