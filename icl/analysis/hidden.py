"""Hidden states of a trained model: the residual stream after the embedding (layer 0) and after
every block (layers 1..L), at every token of the interleaved prompt, read without changing the
model. Token t = 2j holds x_{j+1}, token t = 2j + 1 holds y_{j+1} (icl.model.ICLTransformer), so
the y token after i examples is token 2i - 1 and the x token that queries after i examples is 2i.

One function per model family (HIDDEN, keyed like icl.models.MODELS); ``collect`` streams
prompts in chunks and keeps only the requested layers and tokens, so memory is
O(layers x prompts x tokens x width) of what is kept, never a full activation dump.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from icl.errors import ICLError

POSITIONS = ("y", "x", "mean")  # the y token after i examples, the x token after i, the mean of tokens < 2i


def _gpt2(model: nn.Module, xs: Tensor, ys: Tensor) -> list[Tensor]:
    h = model.embed(xs, ys)  # (B, T, E), positions included
    T = h.shape[1]
    bias = torch.full((T, T), float("-inf"), device=h.device).triu(1)
    out = [h]
    for block in model.blocks:
        h = block(h, bias)
        out.append(h)
    return out


def _mamba(model: nn.Module, xs: Tensor, ys: Tensor) -> list[Tensor]:
    h = model.drop(model.tokens(xs, ys))
    out = [h]
    for block in model.blocks:
        h = block(h)
        out.append(h)
    return out


def _lstm(model: nn.Module, xs: Tensor, ys: Tensor) -> list[Tensor]:
    """Layer by layer with the trained weights of each stacked layer (nn.LSTM returns the last only)."""
    h = model.drop(model.tokens(xs, ys))
    lstm = model.lstm
    out = [h]
    for layer in range(lstm.num_layers):
        single = nn.LSTM(h.shape[-1], lstm.hidden_size, batch_first=lstm.batch_first).to(h.device, h.dtype)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(single, f"{name}_l0").copy_(getattr(lstm, f"{name}_l{layer}"))
        h, _ = single(h)
        out.append(h)
    return out


HIDDEN: dict[str, Callable[[nn.Module, Tensor, Tensor], list[Tensor]]] = {
    "gpt2": _gpt2,
    "lstm": _lstm,
    "mamba": _mamba,
}


def residual_stream(model: nn.Module, xs: Tensor, ys: Tensor) -> list[Tensor]:
    """[embedding, block 1, ..., block L] hidden states, each (B, 2N, E), of prompts xs (B, N, D),
    ys (B, N); the model is used as it is (call ``model.eval()`` for dropout-free states)."""
    family = model.cfg.family
    if family not in HIDDEN:
        raise ICLError(f"hidden states of model.family {family!r}: not available; allowed: {', '.join(HIDDEN)}")
    return HIDDEN[family](model, xs, ys)


def n_layers(model: nn.Module) -> int:
    """Number of hidden-state layers ``residual_stream`` returns: the embedding plus every block."""
    return model.cfg.n_layer + 1


def token_index(position: str, i: int) -> int:
    """The token read for ``position`` after ``i`` in-context examples (1 <= i for y and mean)."""
    if position == "y":
        return 2 * i - 1
    if position == "x":
        return 2 * i
    raise ICLError(f"position: got {position!r}; allowed: {', '.join(POSITIONS)}")


@torch.no_grad()
def collect(
    model: nn.Module,
    xs: Tensor,
    ys: Tensor,
    layers: Sequence[int],
    ks: Sequence[int],
    position: str = "y",
    chunk: int = 256,
) -> Tensor:
    """Hidden states (len(layers), P, len(ks), E) of P prompts at ``position`` after each i in ``ks``
    examples, computed ``chunk`` prompts at a time on the model's device and kept in float32 on
    the CPU. ``mean`` averages the tokens before token 2i (the context of i examples)."""
    if position not in POSITIONS:
        raise ICLError(f"position: got {position!r}; allowed: {', '.join(POSITIONS)}")
    total = n_layers(model)
    bad = [layer for layer in layers if not 0 <= layer < total]
    if bad:
        raise ICLError(f"layers: got {bad}; allowed: 0 (embedding) .. {total - 1}")
    N = xs.shape[1]
    low = 0 if position == "x" else 1
    high = N - 1 if position == "x" else N
    bad = [i for i in ks if not low <= i <= high]
    if bad:
        raise ICLError(f"in-context examples: got {bad}; allowed: {low} .. {high} for position {position!r}")
    device = next(model.parameters()).device
    kept = []
    for start in range(0, xs.shape[0], chunk):
        stream = residual_stream(model, xs[start : start + chunk].to(device), ys[start : start + chunk].to(device))
        per_layer = []
        for layer in layers:
            h = stream[layer]  # (b, T, E)
            if position == "mean":
                csum = h.cumsum(1)  # (b, T, E)
                picked = torch.stack([csum[:, 2 * i - 1] / (2 * i) for i in ks], 1)
            else:
                picked = h[:, [token_index(position, i) for i in ks]]  # (b, K, E)
            per_layer.append(picked.float().cpu())
        kept.append(torch.stack(per_layer))  # (L', b, K, E)
    return torch.cat(kept, 1)
