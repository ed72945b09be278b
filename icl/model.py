"""The ICL transformer: a GPT-2-style causal decoder with a linear read-in of interleaved
(x, y) tokens and a linear read-out at the x tokens. No loss, no data."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from icl.errors import ICLError

POSITIONS = ("learned", "sinusoidal")
TOKEN_FORMATS = ("interleaved", "interleaved_flag")


@dataclasses.dataclass
class ModelConfig:
    """Presets (configs/model/*.yaml): tiny 3L/2H/64, small 6L/4H/128, standard 12L/8H/256."""

    n_layer: int = 12
    n_head: int = 8
    n_embd: int = 256
    max_points: int = 101  # longest prompt (in (x, y) pairs) the positions cover
    positions: str = "learned"  # learned (paper 2) | sinusoidal (paper 1, fixed)
    token_format: str = "interleaved"
    dropout: float = 0.0
    mlp_ratio: int = 4

    def check(self) -> None:
        for field in ("n_layer", "n_head", "n_embd", "max_points", "mlp_ratio"):
            if getattr(self, field) < 1:
                raise ICLError(f"model.{field}: got {getattr(self, field)}; allowed: an integer >= 1")
        if self.n_embd % self.n_head:
            raise ICLError(f"model.n_embd: got {self.n_embd}; allowed: a multiple of model.n_head ({self.n_head})")
        if self.positions not in POSITIONS:
            raise ICLError(f"model.positions: got {self.positions!r}; allowed: {', '.join(POSITIONS)}")
        if self.token_format not in TOKEN_FORMATS:
            raise ICLError(f"model.token_format: got {self.token_format!r}; allowed: {', '.join(TOKEN_FORMATS)}")
        if not 0 <= self.dropout < 1:
            raise ICLError(f"model.dropout: got {self.dropout}; allowed: a number in [0, 1)")


def matmul_attention_max_tokens(threads: int) -> int:
    """Up to this many tokens, attention on the CPU runs as two batched matmuls, which beat the
    fused (flash) CPU kernel there: its per-(sequence, head) tiling overhead dominates short
    prompts. Measured fwd + bwd on a 2-core AVX2 CPU (64 sequences, 8 heads of 32): on one
    thread the matmul form wins at 21 and 41 tokens and loses from 61 on (52.4 ms vs the fused
    kernel's 43.8 at 81); on two threads it wins up to 81 (27.5 vs 30.8 ms) and loses from 121
    on."""
    return 48 if threads == 1 else 96


@torch.compiler.assume_constant_result
def _threads() -> int:
    """torch's intra-op thread count; a constant to ``torch.compile`` (which cannot trace the call
    and would otherwise break the graph at every block): a compiled model keeps the attention
    path of the thread count it was compiled under, which changes its speed, not its results."""
    return torch.get_num_threads()


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, h: Tensor, bias: Tensor, queries: slice | None = None) -> Tensor:
        """Causal attention of the tokens ``h[:, queries]`` (all by default) over ``h``; ``bias``
        (queries, T) is 0 where a query may attend to a key and -inf elsewhere."""
        B, T, E = h.shape
        # Split on the qkv axis, not after a permute: the backward then stacks the three
        # gradients straight into the (B, T, 3, H, hd) layout, with no copy after the stack.
        q, k, v = (t.transpose(1, 2) for t in self.qkv(h).view(B, T, 3, self.n_head, E // self.n_head).unbind(2))
        if queries is not None:
            q = q[:, :, queries]
        p_drop = self.dropout if self.training else 0.0
        if h.device.type != "cpu" or T > matmul_attention_max_tokens(_threads()):
            square = queries is None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if square else bias.to(q.dtype), is_causal=square, dropout_p=p_drop
            )
        else:
            # Scale whichever of q (T x hd, copied for the matmul anyway) and the scores (T x T)
            # is smaller; in place on the scores: the product's backward needs q and k, not its output.
            scale = 1.0 / math.sqrt(q.shape[-1])
            if T > q.shape[-1]:
                scores = ((q * scale) @ k.transpose(-1, -2)).add_(bias)
            else:
                scores = (q @ k.transpose(-1, -2)).mul_(scale).add_(bias)
            weights = F.dropout(scores.softmax(-1), p_drop, self.training)
            out = weights @ v
        return self.proj(out.transpose(1, 2).reshape(B, q.shape[2], E))


class Block(nn.Module):
    """Pre-LN transformer block (GPT-2): h + attn(ln(h)), then h + mlp(ln(h)).

    The MLP uses the exact (erf) GELU: GPT-2's tanh approximation differs by < 1e-3 and is
    about 5x slower on CPU.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd)
        self.fc_out = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: Tensor, bias: Tensor, queries: slice | None = None) -> Tensor:
        """The block's output at the tokens ``queries`` (all by default); ``bias`` as in SelfAttention."""
        a = self.drop(self.attn(self.ln1(h), bias, queries))
        h = h + a if queries is None else h[:, queries] + a
        return h + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(h)))))


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    """Fixed sin/cos position table (Vaswani et al.), shape (n, dim)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freqs)
    table[:, 1::2] = torch.cos(pos * freqs[: dim // 2])
    return table


class ICLTransformer(nn.Module):
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
    tokens, without materialising them.
    """

    def __init__(self, cfg: ModelConfig, n_dims: int) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.n_dims = n_dims
        width = n_dims + (1 if cfg.token_format == "interleaved_flag" else 0)
        self.read_in = nn.Linear(width, cfg.n_embd)
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
        """Token embeddings (B, 2N, E) of the interleaved prompt, positions included."""
        B, N, D = xs.shape
        if D != self.n_dims:
            raise ICLError(f"input dims: got {D}; this model takes {self.n_dims}")
        if N > self.cfg.max_points:
            raise ICLError(
                f"prompt length: got {N} points; this model takes at most {self.cfg.max_points} (model.max_points)"
            )
        W, b = self.read_in.weight, self.read_in.bias
        h_x = F.linear(xs, W[:, :D], b)
        h_y = ys[..., None] * W[:, 0] + b
        if self.cfg.token_format == "interleaved_flag":
            h_y = h_y + W[:, D]
        h = rearrange([h_x, h_y], "two b n e -> b (n two) e")
        return self.drop(h + self.pos[: 2 * N])

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        # The last y token is attended to by no x token, so no prediction depends on it: it is
        # left out of every layer (1 of 2N tokens).
        h = self.embed(xs, ys)[:, :-1]
        T = h.shape[1]
        bias = torch.full((T, T), float("-inf"), device=h.device).triu(1)  # causal: key j <= query i
        for block in self.blocks[:-1]:
            h = block(h, bias)
        # Only x tokens are read out, so the last block runs its queries and MLP on them alone:
        # the same predictions for half of that block's work.
        x_tokens = slice(0, None, 2)
        h = self.blocks[-1](h, bias[x_tokens], x_tokens)
        return self.read_out(self.ln_f(h))[..., 0]

    predict = forward  # the predictor contract shared with every baseline

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
