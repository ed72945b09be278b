"""Size arithmetic of the gpt2 family (the model itself is icl/model.py's ICLTransformer): its
exact parameter count and the activations one layer holds for the backward pass."""

from __future__ import annotations

import torch

from icl.model import ModelConfig, token_width
from icl.speed import use_matmul_attention

# Training activations, in floats of the parameter dtype per layer: ACT_FLOATS + 2 * mlp_ratio
# per token and unit of width (layer-norm inputs and outputs, q, k, v, the attention output, its
# projection, the residual sums; the MLP's hidden layer before and after the GELU), and
# SCORE_FLOATS per head and (query, key) pair where attention runs as two matmuls (short prompts
# on the CPU: scores and softmax; fused attention stores none). Fitted to the peak RSS of
# training steps (the slope over batch 64 -> 256 of tiny and small at d = 20, N = 41 and
# d = 5, N = 11): predictions within -12% .. +18% of the measured slopes.
ACT_FLOATS = 12
SCORE_FLOATS = 2


def param_count(model: ModelConfig, n_dims: int) -> int:
    """The exact number of parameters of ``ICLTransformer(model, n_dims)`` (tested against the
    built model): read-in, learned positions, per block two layer norms, qkv, output projection
    and the MLP, final layer norm and read-out."""
    E, r = model.n_embd, model.mlp_ratio
    read_in = (token_width(model, n_dims) + 1) * E
    positions = 2 * model.max_points * E if model.positions == "learned" else 0
    # ln1, ln2: 2E each; qkv: 3E^2 + 3E; proj: E^2 + E; fc: rE^2 + rE; fc_out: rE^2 + E
    block = (4 + 2 * r) * E * E + (9 + r) * E
    return read_in + positions + model.n_layer * block + 2 * E + E + 1


def activation_floats(model: ModelConfig, batch: int, n_points: int, fused_attention: bool = False) -> int:
    """Floats one layer holds for the backward pass (see ACT_FLOATS). ``fused_attention``: the
    run is on an accelerator, whose attention kernel keeps no scores; on the CPU that holds where
    attention does not run as two matmuls (``icl.speed.use_matmul_attention``)."""
    T = 2 * n_points - 1  # the last y token feeds no prediction and is left out
    per_token = (ACT_FLOATS + 2 * model.mlp_ratio) * model.n_embd
    scores = not fused_attention and use_matmul_attention(T, torch.device("cpu"))
    return batch * (T * per_token + (SCORE_FLOATS * model.n_head * T * T if scores else 0))
