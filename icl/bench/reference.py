"""The reference side: paper 2's stack, a HuggingFace ``GPT2Model`` between a linear read-in of
padded (x, y) tokens and a linear read-out, trained with the optimiser ours uses."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from icl.bench.sides import Side
from icl.config import Config


def reference_available() -> bool:
    """Whether ``transformers`` (the optional ``bench`` extra) imports."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


class ReferenceModel(nn.Module):
    """Paper 2's stack: read-in Linear(D, E) on tokens [x, (y, 0, ..., 0)], HuggingFace
    ``GPT2Model`` (built from a config, never downloaded; dropout 0, no cache) and read-out
    Linear(E, 1), read at the x tokens."""

    def __init__(self, cfg: Config) -> None:
        # Imported here: transformers is an optional extra, needed by this side only.
        from transformers import GPT2Config, GPT2Model

        super().__init__()
        m, D, N = cfg.model, cfg.data.n_dims, cfg.data.n_points
        gpt = GPT2Config(
            n_positions=2 * N,
            n_embd=m.n_embd,
            n_layer=m.n_layer,
            n_head=m.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        self.read_in = nn.Linear(D, m.n_embd)
        self.backbone = GPT2Model(gpt)
        self.read_out = nn.Linear(m.n_embd, 1)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        B, N, D = xs.shape
        y_tokens = torch.zeros_like(xs)
        y_tokens[..., 0] = ys
        tokens = torch.stack([xs, y_tokens], dim=2).reshape(B, 2 * N, D)
        h = self.backbone(inputs_embeds=self.read_in(tokens)).last_hidden_state
        return self.read_out(h)[:, 0::2, 0]


def reference_side(cfg: Config) -> Side:
    """The reference with the optimiser ours uses (same class and settings), seeded alike."""
    tcfg = cfg.train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ReferenceModel(cfg)
    opt = torch.optim.Adam(
        model.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas), eps=tcfg.eps, fused=tcfg.fused_optimizer or None
    )

    def step(xs: Tensor, ys: Tensor) -> Tensor:
        loss = ((model(xs, ys) - ys) ** 2).mean()  # paper 2's loss: the mean over all positions
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return Side("reference", step, sum(p.numel() for p in model.parameters()))
