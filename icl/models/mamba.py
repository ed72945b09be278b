"""The mamba family: the transformer's token stream and read-in (icl/model.py), model.n_layer
Mamba blocks (selective state-space models, Gu & Dao 2023) of width model.n_embd and state size
model.d_state, and a linear read-out at the x tokens. Pure PyTorch; the ``mamba-ssm`` CUDA
kernel runs the scan where that package is installed and the tensors are on a CUDA device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icl.model import ModelConfig, ReadIn, token_width

try:  # optional: never required, never installed by icl
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
except (ImportError, OSError):  # absent, or built for another torch / CUDA
    selective_scan_fn = None

# Shapes in comments: B batch, T tokens, E width (model.n_embd), I inner width (EXPAND * E),
# S state size (model.d_state), R rank of the step-size projection (dt_rank(E)).
EXPAND = 2  # inner width per unit of model width (Mamba's default)
D_CONV = 4  # kernel of the short causal depthwise convolution (Mamba's default)
DT_MIN, DT_MAX = 1e-3, 0.1  # initial step sizes, log-uniform in this range (Mamba's default)
# Floats per token and unit of inner width one block holds for the backward pass, counted from the
# tensors autograd saves in a CPU training step: SCAN_FLOATS per unit of state (the scan's decay
# and its state at every token, I x S each) and OTHER_FLOATS (projections, convolution, step
# sizes, gates, norm), times ALLOWANCE: gpt2's constants, fitted to the peak memory of training
# steps, are 1.23x its saved tensors (icl/models/gpt2.py).
SCAN_FLOATS = 2
OTHER_FLOATS = 15
ALLOWANCE = 1.25


def dt_rank(width: int) -> int:
    return math.ceil(width / 16)


def selective_scan(x: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
    """The selective scan, token by token: h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t (h_0 = 0),
    y_t = h_t C_t. x, delta (B, T, I); A (I, S); Bm, Cm (B, T, S). Returns y (B, T, I). A reference
    loop over tokens (prompts are short: T = 2N - 1), in time-major layout so that each token's
    slice is contiguous; autograd keeps the decay and one state per token (2 S floats per token
    and channel)."""
    x, delta, Bm, Cm = (t.transpose(0, 1).contiguous() for t in (x, delta, Bm, Cm))  # (T, B, ...)
    decay = torch.exp(delta[..., None] * A)  # (T, B, I, S)
    drive = (delta * x)[..., None] * Bm[:, :, None, :]  # (T, B, I, S), freed after the loop
    # unbind, not indexing: the backward of decay[t] would write a zero-filled (T, B, I, S)
    # gradient per token (quadratic in T), that of unbind stacks the T slices once.
    decays, drives, cs = decay.unbind(0), drive.unbind(0), Cm.unbind(0)
    h = drives[0].clone()  # (B, I, S): h_1, as h_0 = 0; a copy, so that autograd keeps no view of drive
    ys = [(h * cs[0][:, None, :]).sum(-1)]  # (B, I)
    for a, b, c in zip(decays[1:], drives[1:], cs[1:], strict=True):
        h = torch.addcmul(b, a, h)  # (B, I, S)
        ys.append((h * c[:, None, :]).sum(-1))  # (B, I)
    return torch.stack(ys, 1)  # (B, T, I)


def causal_conv(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """The depthwise convolution ``conv`` of x (B, T, I) over tokens, left-padded so that output t
    sees tokens t - D_CONV + 1 .. t only: a sum of D_CONV shifted products, whose backward pass
    is faster on the CPU than nn.Conv1d's at these sizes."""
    T, K = x.shape[1], conv.kernel_size[0]
    padded = F.pad(x, (0, 0, K - 1, 0))  # (B, T + K - 1, I)
    w = conv.weight[:, 0]  # (I, K)
    out = conv.bias + padded[:, :T] * w[:, 0]  # (B, T, I)
    for k in range(1, K):
        out = torch.addcmul(out, padded[:, k : k + T], w[:, k])
    return out


def gated_ssm(x: Tensor, z: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, D: Tensor) -> Tensor:
    """(selective_scan(x, ...) + D x) * silu(z), (B, T, I): with mamba-ssm's fused kernel on CUDA
    where it is installed (the same maths), else in PyTorch."""
    if selective_scan_fn is not None and x.is_cuda:
        y = selective_scan_fn(
            *(t.transpose(1, 2).contiguous() for t in (x, delta)),
            A,
            *(t.transpose(1, 2).contiguous() for t in (Bm, Cm)),
            D.float(),
            z=z.transpose(1, 2).contiguous(),
        )  # (B, I, T)
        return y.transpose(1, 2)  # (B, T, I)
    return (selective_scan(x, delta, A, Bm, Cm) + D * x) * F.silu(z)  # (B, T, I)


class MambaBlock(nn.Module):
    """h + mixer(norm(h)): input projection to x and the gate z, a short causal depthwise
    convolution and SiLU on x, the input-dependent step size delta and matrices B and C, the
    selective scan (plus the skip D x), gating by silu(z), output projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        E, S = cfg.n_embd, cfg.d_state
        inner, R = EXPAND * E, dt_rank(E)
        self.split = (R, S, S)
        self.norm = nn.RMSNorm(E)
        self.in_proj = nn.Linear(E, 2 * inner, bias=False)
        # Holds the depthwise kernel (I, 1, D_CONV) and its bias; applied by causal_conv.
        self.conv = nn.Conv1d(inner, inner, D_CONV, groups=inner)
        self.x_proj = nn.Linear(inner, R + 2 * S, bias=False)
        self.dt_proj = nn.Linear(R, inner)
        # S4D-real initialisation: A = -(1, 2, ..., S) for every channel, stored as log(-A).
        self.A_log = nn.Parameter(torch.log(torch.arange(1, S + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, E, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        with torch.no_grad():  # softplus(dt_proj.bias) log-uniform in [DT_MIN, DT_MAX]
            dt = torch.exp(torch.rand(inner) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, h: Tensor) -> Tensor:
        """h (B, T, E) -> (B, T, E); output t depends on tokens <= t only."""
        x, z = self.in_proj(self.norm(h)).chunk(2, -1)  # (B, T, I) each
        x = F.silu(causal_conv(x, self.conv))  # (B, T, I)
        dt, Bm, Cm = self.x_proj(x).split(self.split, -1)  # (B, T, R), (B, T, S), (B, T, S)
        delta = F.softplus(self.dt_proj(dt))  # (B, T, I)
        y = gated_ssm(x, z, delta, -torch.exp(self.A_log), Bm, Cm, self.D)  # (B, T, I)
        return h + self.drop(self.out_proj(y))  # (B, T, E)


class ICLMamba(ReadIn):
    """Predicts y_i from (x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i) for every i at once, as
    ICLTransformer does, with the same tokens ``[x_1, y_1, x_2, y_2, ...]`` (y in coordinate 0;
    ``interleaved_flag`` adds the x/y coordinate) read in by the same linear map. Every block is
    causal (a left-padded convolution, a left-to-right scan), so ``preds[:, i]``, read at token
    2i, depends only on ``xs[:, :i+1]`` and ``ys[:, :i]``. No positions: the scan orders the tokens."""

    def __init__(self, cfg: ModelConfig, n_dims: int) -> None:
        super().__init__(cfg, n_dims)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layer))
        self.norm_f = nn.RMSNorm(cfg.n_embd)
        self.read_out = nn.Linear(cfg.n_embd, 1)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions (B, N) from xs (B, N, D) and ys (B, N): preds[:, i] from x_1, y_1, ..., x_i."""
        h = self.tokens(xs, ys)  # (B, T, E)
        h = self.drop(h[:, :-1])  # (B, T, E): the last y token feeds no prediction, T = 2N - 1
        for block in self.blocks:
            h = block(h)  # (B, T, E)
        return self.read_out(self.norm_f(h[:, 0::2]))[..., 0]  # (B, N): read out at the x tokens


def param_count(model: ModelConfig, n_dims: int) -> int:
    """The exact number of parameters of ``ICLMamba(model, n_dims)``: read-in; per block the norm,
    input projection, convolution, x projection (to delta's rank, B and C), delta's projection,
    A, D and the output projection; final norm and read-out."""
    E, S = model.n_embd, model.d_state
    inner, R = EXPAND * E, dt_rank(E)
    block = E + 2 * E * inner + (D_CONV + 1) * inner + inner * (R + 2 * S) + (R + 1) * inner
    block += inner * S + inner + inner * E
    return (token_width(model, n_dims) + 1) * E + model.n_layer * block + E + E + 1


def activation_floats(model: ModelConfig, batch: int, n_points: int, fused_attention: bool = False) -> int:
    """Floats one block holds for the backward pass (see SCAN_FLOATS); no attention."""
    inner = EXPAND * model.n_embd
    return math.ceil(ALLOWANCE * batch * (2 * n_points - 1) * (SCAN_FLOATS * model.d_state + OTHER_FLOATS) * inner)
