"""The ICL transformer: a GPT-2-style causal decoder with a linear read-in of interleaved
(x, y) tokens and a linear read-out at the x tokens; the model config of every family and the
read-in they share (the other families: icl/models/). No loss, no data."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from icl.errors import ICLError
from icl.speed import use_matmul_attention

# Shapes in comments: B batch, N points per prompt, D input dims, T tokens (2N in a prompt),
# E embedding width, H heads, Q query tokens of an attention (T, or the N x tokens in the last block).

POSITIONS = ("learned", "sinusoidal")
TOKEN_FORMATS = ("interleaved", "interleaved_flag")
# model.activation -> F.gelu's ``approximate``: the exact (erf) GELU, or GPT-2's tanh approximation
# (what checkpoints imported from HuggingFace GPT-2 models were trained with; icl/checkpoint/reference.py).
ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}
# model.family: the sequence model behind the shared read-in and read-out. The registry that builds
# each one is icl/models/__init__.py (tested to hold exactly these names).
FAMILIES = ("gpt2", "lstm", "mamba")


@dataclasses.dataclass
class ModelConfig:
    """Presets (configs/model/*.yaml): tiny 3L/2H/64, small 6L/4H/128, standard 12L/8H/256, and
    lstm_* / mamba_* of about the same parameter counts (docs/model_families.md). ``n_head``,
    ``positions``, ``mlp_ratio`` and ``activation`` are gpt2's; ``d_state`` is mamba's."""

    family: str = "gpt2"  # gpt2 | lstm | mamba
    n_layer: int = 12
    n_head: int = 8
    n_embd: int = 256
    max_points: int = 101  # longest prompt (in (x, y) pairs) the positions cover
    positions: str = "learned"  # learned (paper 2) | sinusoidal (paper 1, fixed)
    token_format: str = "interleaved"
    dropout: float = 0.0
    mlp_ratio: int = 4
    activation: str = "gelu"  # gelu (exact, erf) | gelu_tanh (GPT-2's tanh approximation)
    d_state: int = 16  # mamba: the selective state-space model's state size per channel

    def check(self) -> None:
        if self.family not in FAMILIES:
            raise ICLError(f"model.family: got {self.family!r}; allowed: {', '.join(FAMILIES)}")
        for field in ("n_layer", "n_head", "n_embd", "max_points", "mlp_ratio", "d_state"):
            if getattr(self, field) < 1:
                raise ICLError(f"model.{field}: got {getattr(self, field)}; allowed: an integer >= 1")
        if self.family == "gpt2" and self.n_embd % self.n_head:
            raise ICLError(f"model.n_embd: got {self.n_embd}; allowed: a multiple of model.n_head ({self.n_head})")
        if self.positions not in POSITIONS:
            raise ICLError(f"model.positions: got {self.positions!r}; allowed: {', '.join(POSITIONS)}")
        if self.token_format not in TOKEN_FORMATS:
            raise ICLError(f"model.token_format: got {self.token_format!r}; allowed: {', '.join(TOKEN_FORMATS)}")
        if self.activation not in ACTIVATIONS:
            raise ICLError(f"model.activation: got {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if not 0 <= self.dropout < 1:
            raise ICLError(f"model.dropout: got {self.dropout}; allowed: a number in [0, 1)")


class SelfAttention(nn.Module):
    """Multi-head causal self-attention (GPT-2): one projection to queries, keys and values, the
    softmax of scaled dot products over the keys a query may see, one output projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, h: Tensor, bias: Tensor, queries: slice | None = None) -> Tensor:
        """Causal attention of the tokens ``h[:, queries]`` (all by default) over ``h`` (B, T, E);
        ``bias`` (Q, T) is 0 where a query may attend to a key and -inf elsewhere. Returns (B, Q, E)."""
        B, T, E = h.shape
        H = self.n_head
        # Split on the qkv axis, not after a permute: the backward then stacks the three
        # gradients straight into the (B, T, 3, H, E/H) layout, with no copy after the stack.
        qkv = self.qkv(h).view(B, T, 3, H, E // H)  # (B, T, 3, H, E/H)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each (B, H, T, E/H)
        if queries is not None:
            q = q[:, :, queries]  # (B, H, Q, E/H)
        p_drop = self.dropout if self.training else 0.0
        if use_matmul_attention(T, h.device):
            out = self._matmul_attention(q, k, v, bias, p_drop)  # (B, H, Q, E/H)
        else:
            square = queries is None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if square else bias.to(q.dtype), is_causal=square, dropout_p=p_drop
            )  # (B, H, Q, E/H)
        return self.proj(out.transpose(1, 2).reshape(B, q.shape[2], E))  # (B, Q, E)

    def _matmul_attention(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, p_drop: float) -> Tensor:
        """softmax(q k^T / sqrt(E/H) + bias) v as two batched matmuls: the same maths as the fused
        kernel, the faster form for short prompts on the CPU (icl.speed.use_matmul_attention)."""
        scale = 1.0 / math.sqrt(q.shape[-1])
        # Scale whichever of q (Q x E/H, copied for the matmul anyway) and the scores (Q x T) is
        # smaller; in place on the scores: the product's backward needs q and k, not its output.
        if k.shape[2] > q.shape[-1]:
            scores = ((q * scale) @ k.transpose(-1, -2)).add_(bias)  # (B, H, Q, T)
        else:
            scores = (q @ k.transpose(-1, -2)).mul_(scale).add_(bias)  # (B, H, Q, T)
        weights = F.dropout(scores.softmax(-1), p_drop, self.training)  # (B, H, Q, T)
        return weights @ v  # (B, H, Q, E/H)


class Block(nn.Module):
    """Pre-LN transformer block (GPT-2): h + attn(ln(h)), then h + mlp(ln(h)).

    The MLP uses the exact (erf) GELU by default: GPT-2's tanh approximation differs from it by
    < 1e-3 and is slower on the CPU; ``model.activation=gelu_tanh`` selects it (for checkpoints
    trained with it).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd)
        self.fc_out = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = ACTIVATIONS[cfg.activation]

    def forward(self, h: Tensor, bias: Tensor, queries: slice | None = None) -> Tensor:
        """The block's output (B, Q, E) at the tokens ``queries`` (all by default) of ``h`` (B, T, E);
        ``bias`` as in SelfAttention."""
        a = self.drop(self.attn(self.ln1(h), bias, queries))  # (B, Q, E)
        h = h + a if queries is None else h[:, queries] + a  # (B, Q, E)
        return h + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(h)), approximate=self.approximate)))  # (B, Q, E)


def token_width(cfg: ModelConfig, n_dims: int) -> int:
    """The width of a token: D, plus the x/y flag coordinate of ``interleaved_flag``."""
    return n_dims + (1 if cfg.token_format == "interleaved_flag" else 0)


def check_prompt(xs: Tensor, n_dims: int, max_points: int) -> None:
    """Refuse a prompt (B, N, D) of other dims than the model's or longer than model.max_points."""
    N, D = xs.shape[1:]
    if D != n_dims:
        raise ICLError(f"input dims: got {D}; this model takes {n_dims}")
    if N > max_points:
        raise ICLError(f"prompt length: got {N} points; this model takes at most {max_points} (model.max_points)")


def read_in_tokens(read_in: nn.Linear, xs: Tensor, ys: Tensor, flag: bool) -> Tensor:
    """The linear read-in of the interleaved prompt ``[x_1, y_1, x_2, y_2, ...]`` (ICLTransformer's
    token format; ``flag``: ``interleaved_flag``), (B, T, E) with T = 2N, no positions. Linear, so
    x and y are read in separately (a y token's embedding is y * W[:, 0] + b) and interleaved: the
    same maths as reading in the padded tokens, without materialising them."""
    D = xs.shape[-1]
    W, b = read_in.weight, read_in.bias  # (E, D) or (E, D + 1) with the flag; (E,)
    h_x = F.linear(xs, W[:, :D], b)  # (B, N, E)
    h_y = ys[..., None] * W[:, 0] + b  # (B, N, E)
    if flag:
        h_y = h_y + W[:, D]  # (B, N, E)
    return rearrange([h_x, h_y], "two b n e -> b (n two) e")  # (B, T, E): x_1, y_1, x_2, y_2, ...


class ReadIn(nn.Module):
    """What every model family shares: its config, the input dims, the linear read-in of the
    interleaved tokens (``read_in_tokens``), dropout and the predictor contract. A family adds its
    sequence model, a read-out and ``forward(xs, ys) -> preds (B, N)``."""

    def __init__(self, cfg: ModelConfig, n_dims: int) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.n_dims = n_dims
        self.read_in = nn.Linear(token_width(cfg, n_dims), cfg.n_embd)

    def tokens(self, xs: Tensor, ys: Tensor) -> Tensor:
        """The read-in tokens (B, 2N, E) of a prompt the model accepts (``check_prompt``), no positions."""
        check_prompt(xs, self.n_dims, self.cfg.max_points)
        return read_in_tokens(self.read_in, xs, ys, self.cfg.token_format == "interleaved_flag")

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        """The predictor contract shared with every baseline: ``forward``."""
        return self(xs, ys)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    """Fixed sin/cos position table (Vaswani et al.), shape (n, dim)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (ceil(dim/2),)
    table = torch.zeros(n, dim)  # (n, dim)
    table[:, 0::2] = torch.sin(pos * freqs)
    table[:, 1::2] = torch.cos(pos * freqs[: dim // 2])
    return table


class ICLTransformer(ReadIn):
    """Predicts y_i from (x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i) for every i at once.

    Token format (``interleaved``): a prompt of N pairs becomes T = 2N tokens of width D,
    ``[x_1, y_1, x_2, y_2, ...]``, where a y token carries y in coordinate 0 and zeros
    elsewhere. Worked example, D = 3, N = 2, xs = [[a1, a2, a3], [b1, b2, b3]], ys = [u, v]:

        token 0: [a1, a2, a3]    <- read out here: prediction of u (sees token 0 only)
        token 1: [u,  0,  0 ]
        token 2: [b1, b2, b3]    <- read out here: prediction of v (sees tokens 0..2)
        token 3: [v,  0,  0 ]    (seen by no prediction, so ``forward`` leaves it out)

    ``interleaved_flag`` appends a coordinate that is 0 on x tokens and 1 on y tokens.
    Attention is causal, so ``preds[:, i]`` depends only on ``xs[:, :i+1]`` and ``ys[:, :i]``.
    The read-in is linear, so it is applied to x and y separately (a y token's embedding is
    y * W[:, 0] + b) and the results are interleaved: the same maths as embedding the padded
    tokens, without materialising them (``read_in_tokens``, shared by every family).
    """

    def __init__(self, cfg: ModelConfig, n_dims: int) -> None:
        super().__init__(cfg, n_dims)
        n_tokens = 2 * cfg.max_points
        if cfg.positions == "learned":
            self.pos = nn.Parameter(torch.zeros(n_tokens, cfg.n_embd))
        else:
            self.register_buffer("pos", sinusoidal_positions(n_tokens, cfg.n_embd), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.read_out = nn.Linear(cfg.n_embd, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2L).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2 and "ln" not in name:
                std = (
                    0.02 / math.sqrt(2 * self.cfg.n_layer) if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
                )
                nn.init.normal_(p, std=std)
        if isinstance(self.pos, nn.Parameter):
            nn.init.normal_(self.pos, std=0.01)

    def embed(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Token embeddings (B, T, E), T = 2N, of the interleaved prompt, positions included."""
        h = self.tokens(xs, ys)  # (B, T, E)
        return self.drop(h + self.pos[: h.shape[1]])  # (B, T, E)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions (B, N) from xs (B, N, D) and ys (B, N): preds[:, i] from x_1, y_1, ..., x_i."""
        # The last y token is attended to by no x token, so no prediction depends on it: it is
        # left out of every layer (1 of 2N tokens).
        h = self.embed(xs, ys)[:, :-1]  # (B, T, E), T = 2N - 1 from here on
        T = h.shape[1]
        bias = torch.full((T, T), float("-inf"), device=h.device).triu(1)  # (T, T) causal: key j <= query i
        for block in self.blocks[:-1]:
            h = block(h, bias)  # (B, T, E)
        # Only x tokens are read out, so the last block runs its queries and MLP on them alone:
        # the same predictions for half of that block's work.
        x_tokens = slice(0, None, 2)
        h = self.blocks[-1](h, bias[x_tokens], x_tokens)  # (B, N, E)
        return self.read_out(self.ln_f(h))[..., 0]  # (B, N)
