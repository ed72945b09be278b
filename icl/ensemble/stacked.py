"""M ICLTransformers of one shape as one module: every parameter gains a leading member axis and
every matmul becomes a batched one, so a step of M small models is one step of big kernels.

Parameter names equal ICLTransformer's (``blocks.0.attn.qkv.weight`` ...), and member m's
tensors are the [m] slices, so a member's state dict is a solo model's. No loss, no data."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from icl.errors import ICLError
from icl.model import ACTIVATIONS, ICLTransformer, ModelConfig, sinusoidal_positions
from icl.speed import use_matmul_attention

# Shapes in comments: M members, then as in icl/model.py: B batch, N points, D input dims,
# T tokens, E embedding width, H heads, Q query tokens.


class StackedLinear(nn.Module):
    """M nn.Linear layers: ``weight`` (M, out, in), ``bias`` (M, out); member m's are nn.Linear's."""

    def __init__(self, members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(members, n_out))

    def forward(self, x: Tensor) -> Tensor:
        """(M, ..., in) -> (M, ..., out): member m's rows through member m's layer."""
        M, n_in = x.shape[0], x.shape[-1]
        y = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(M, -1, n_in), self.weight.transpose(1, 2))
        return y.view(*x.shape[:-1], y.shape[-1])


class StackedLayerNorm(nn.Module):
    """M nn.LayerNorm layers over the last axis: ``weight`` and ``bias`` (M, E)."""

    def __init__(self, members: int, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, width))
        self.bias = nn.Parameter(torch.zeros(members, width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """(M, ..., E) -> (M, ..., E)."""
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return torch.addcmul(self.bias.view(shape), normed, self.weight.view(shape))


class StackedAttention(nn.Module):
    """SelfAttention (icl/model.py) of M members: the members' sequences form one batch of M B
    sequences once the projections are done."""

    def __init__(self, members: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = StackedLinear(members, cfg.n_embd, 3 * cfg.n_embd)
        self.proj = StackedLinear(members, cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, h: Tensor, bias: Tensor, queries: slice | None = None) -> Tensor:
        """(M, B, T, E) -> (M, B, Q, E); ``bias`` and ``queries`` as in SelfAttention."""
        M, B, T, E = h.shape
        H = self.n_head
        qkv = self.qkv(h).view(M * B, T, 3, H, E // H)  # (M B, T, 3, H, E/H)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each (M B, H, T, E/H)
        if queries is not None:
            q = q[:, :, queries]  # (M B, H, Q, E/H)
        p_drop = self.dropout if self.training else 0.0
        if use_matmul_attention(T, h.device):
            scale = 1.0 / math.sqrt(q.shape[-1])
            if T > q.shape[-1]:
                scores = ((q * scale) @ k.transpose(-1, -2)).add_(bias)  # (M B, H, Q, T)
            else:
                scores = (q @ k.transpose(-1, -2)).mul_(scale).add_(bias)  # (M B, H, Q, T)
            out = F.dropout(scores.softmax(-1), p_drop, self.training) @ v  # (M B, H, Q, E/H)
        else:
            square = queries is None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if square else bias.to(q.dtype), is_causal=square, dropout_p=p_drop
            )  # (M B, H, Q, E/H)
        Q = q.shape[2]
        return self.proj(out.transpose(1, 2).reshape(M, B, Q, E))  # (M, B, Q, E)


class StackedBlock(nn.Module):
    """Block (icl/model.py) of M members: pre-LN attention, then the GELU MLP (``model.activation``)."""

    def __init__(self, members: int, cfg: ModelConfig) -> None:
        super().__init__()
        E = cfg.n_embd
        self.ln1 = StackedLayerNorm(members, E)
        self.attn = StackedAttention(members, cfg)
        self.ln2 = StackedLayerNorm(members, E)
        self.fc = StackedLinear(members, E, cfg.mlp_ratio * E)
        self.fc_out = StackedLinear(members, cfg.mlp_ratio * E, E)
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = ACTIVATIONS[cfg.activation]

    def forward(self, h: Tensor, bias: Tensor, queries: slice | None = None) -> Tensor:
        """(M, B, T, E) -> (M, B, Q, E)."""
        a = self.drop(self.attn(self.ln1(h), bias, queries))  # (M, B, Q, E)
        h = h + a if queries is None else h[:, :, queries] + a  # (M, B, Q, E)
        return h + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(h)), approximate=self.approximate)))  # (M, B, Q, E)


class StackedTransformer(nn.Module):
    """ICLTransformer (icl/model.py) of ``members`` models of one shape: ``forward(xs, ys)`` takes
    each member's batch, xs (M, B, N, D) and ys (M, B, N), and returns each member's predictions
    (M, B, N), member m's computed by member m's weights alone. Same token format, same causal
    structure, same skipped work (the last y token; the last block's y tokens)."""

    def __init__(self, cfg: ModelConfig, n_dims: int, members: int) -> None:
        super().__init__()
        cfg.check()
        if members < 1:
            raise ICLError(f"ensemble members: got {members}; allowed: an integer >= 1")
        self.cfg, self.n_dims, self.members = cfg, n_dims, members
        width = n_dims + (1 if cfg.token_format == "interleaved_flag" else 0)
        self.read_in = StackedLinear(members, width, cfg.n_embd)
        n_tokens = 2 * cfg.max_points
        if cfg.positions == "learned":
            self.pos = nn.Parameter(torch.zeros(members, n_tokens, cfg.n_embd))
        else:
            table = sinusoidal_positions(n_tokens, cfg.n_embd).expand(members, -1, -1).clone()
            self.register_buffer("pos", table, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(StackedBlock(members, cfg) for _ in range(cfg.n_layer))
        self.ln_f = StackedLayerNorm(members, cfg.n_embd)
        self.read_out = StackedLinear(members, cfg.n_embd, 1)

    @classmethod
    def from_models(cls, models: list[ICLTransformer]) -> StackedTransformer:
        """The stack of ``models`` (one shape), member m holding a copy of ``models[m]``'s tensors."""
        first = models[0]
        if any(m.cfg != first.cfg or m.n_dims != first.n_dims for m in models):
            raise ICLError("ensemble members: allowed: models of one shape (model config and input dims)")
        stacked = cls(first.cfg, first.n_dims, len(models))
        solo = [dict(m.named_parameters()) | dict(m.named_buffers()) for m in models]
        with torch.no_grad():
            for name, t in [*stacked.named_parameters(), *stacked.named_buffers()]:
                t.copy_(torch.stack([s[name] for s in solo]))
        return stacked

    def member_state(self, m: int) -> dict[str, Tensor]:
        """Member ``m``'s weights as an ICLTransformer state dict (copies, not views)."""
        return {name: t[m].detach().clone() for name, t in self.state_dict().items()}

    def member(self, m: int) -> ICLTransformer:
        """A solo ICLTransformer holding a copy of member ``m``'s weights, on the same device."""
        model = ICLTransformer(self.cfg, self.n_dims).to(self.read_out.weight.device)
        model.load_state_dict(self.member_state(m))
        return model.train(self.training)

    def embed(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Token embeddings (M, B, T, E), T = 2N, positions included."""
        M, B, N, D = xs.shape
        if M != self.members:
            raise ICLError(f"ensemble batch: got {M} members; this ensemble has {self.members}")
        if D != self.n_dims:
            raise ICLError(f"input dims: got {D}; this model takes {self.n_dims}")
        if N > self.cfg.max_points:
            raise ICLError(
                f"prompt length: got {N} points; this model takes at most {self.cfg.max_points} (model.max_points)"
            )
        W, b = self.read_in.weight, self.read_in.bias  # (M, E, D or D + 1), (M, E)
        h_x = torch.baddbmm(b.unsqueeze(1), xs.reshape(M, B * N, D), W[:, :, :D].transpose(1, 2))
        h_x = h_x.view(M, B, N, -1)  # (M, B, N, E)
        b_y = b + W[:, :, D] if self.cfg.token_format == "interleaved_flag" else b  # (M, E): the flag is 1 on y
        h_y = torch.addcmul(b_y[:, None, None], ys[..., None], W[:, None, None, :, 0])  # (M, B, N, E)
        h = rearrange([h_x, h_y], "two m b n e -> m b (n two) e")  # (M, B, T, E)
        return self.drop(h + self.pos[:, None, : 2 * N])  # (M, B, T, E)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions (M, B, N) from xs (M, B, N, D) and ys (M, B, N)."""
        h = self.embed(xs, ys)[:, :, :-1]  # (M, B, T, E), T = 2N - 1 from here on
        T = h.shape[2]
        bias = torch.full((T, T), float("-inf"), device=h.device).triu(1)  # (T, T)
        for block in self.blocks[:-1]:
            h = block(h, bias)  # (M, B, T, E)
        x_tokens = slice(0, None, 2)
        h = self.blocks[-1](h, bias[x_tokens], x_tokens)  # (M, B, N, E)
        return self.read_out(self.ln_f(h))[..., 0]  # (M, B, N)
