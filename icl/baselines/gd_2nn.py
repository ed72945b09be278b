"""Garg et al.'s gradient-descent baseline for two-layer ReLU targets: one small ReLU network
trained with Adam on the context of every prompt and prefix, all of them as one batched program."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from icl.baselines.base import Predictor, check_inputs, is_int, is_number, require


def init_params(b: int, n: int, d: int, hidden: int, seed: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Initial weights of the B x N networks (network (b, i) serves prompt b's prefix i), drawn
    like torch.nn.Linear's default init: every weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Layouts: w1 (B, N, D, H), b1 (B, N, H),
    w2 (B, N, H), b2 (B, N). A pure function of (seed, B, N, D, hidden)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape: tuple[int, ...], fan_in: int) -> Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul_(bound).to(dtype)

    return {
        "w1": uniform((b, n, d, hidden), d),
        "b1": uniform((b, n, hidden), d),
        "w2": uniform((b, n, hidden), hidden),
        "b2": uniform((b, n), hidden),
    }


class GD2NN(Predictor):
    """For every prompt and prefix i >= 1, a fresh network x -> w2 . relu(W1 x + b1) + b2 with
    ``hidden`` units, trained for ``steps`` Adam steps (learning rate ``lr``) on the mean squared
    error over a minibatch of ``batch_size`` context points (all of them when the context is
    smaller; else a fresh random subset per step), then evaluated at the query; 0 with no context.
    Defaults are Garg et al. (2022)'s: 100 units, Adam, lr 5e-3, batch 100, 100 steps; raise
    ``steps`` for the longer-trained variant.

    All B x N networks train at once as stacked weight tensors; each loss is its own network's
    mean over its own points and the summed loss separates, so every network follows exactly the
    trajectory it would alone. (The reference averages the loss over the batch of prompts too,
    which scales each gradient by 1/B; Adam is invariant to that scale up to its epsilon.)
    Training runs in the input's dtype (float32 for evaluation batches). ``seed`` fixes the
    initial weights and the minibatch draws."""

    name = "gd_2nn"

    def __init__(
        self,
        hidden: int = 100,
        steps: int = 100,
        lr: float = 5e-3,
        batch_size: int = 100,
        seed: int = 0,
    ) -> None:
        require(is_int(hidden) and hidden >= 1, "gd_2nn.hidden", "an integer >= 1", hidden)
        require(is_int(steps) and steps >= 0, "gd_2nn.steps", "an integer >= 0", steps)
        require(is_number(lr) and lr > 0, "gd_2nn.lr", "a number > 0", lr)
        require(is_int(batch_size) and batch_size >= 1, "gd_2nn.batch_size", "an integer >= 1", batch_size)
        require(is_int(seed) and seed >= 0, "gd_2nn.seed", "an integer >= 0", seed)
        self.hidden, self.steps, self.lr, self.batch_size, self.seed = hidden, steps, float(lr), batch_size, seed
        self.label = f"gd_2nn(steps={steps})"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        b, n, d = xs.shape
        dtype = xs.dtype if xs.dtype.is_floating_point else torch.float32
        params = init_params(b, n, d, self.hidden, self.seed, dtype)
        params = {k: v.to(xs.device) for k, v in params.items()}
        x, y = xs.to(dtype), ys.to(dtype)
        out = torch.zeros(b, n, dtype=dtype, device=xs.device)
        # Minibatch draws: their own generator, so the initial weights do not depend on whether
        # any context exceeds batch_size.
        draws = torch.Generator(device=xs.device).manual_seed(self.seed + 1)
        for lo, hi in _prefix_chunks(b, n, self.hidden):
            chunk = {k: v[:, lo:hi] for k, v in params.items()}
            out[:, lo:hi] = self._train_chunk(x, y, lo, hi, chunk, draws)
        return out.to(ys.dtype)

    def _train_chunk(self, x: Tensor, y: Tensor, lo: int, hi: int, p: dict[str, Tensor], draws) -> Tensor:
        """Train the networks of prefixes lo..hi-1 (context points j < hi - 1 suffice) and return
        their predictions at their queries, (B, hi - lo)."""
        b, _, d = x.shape
        g, h, m = hi - lo, self.hidden, hi - 1
        if m == 0:  # prefix 0 alone: no context
            return torch.zeros(b, g, dtype=x.dtype, device=x.device)
        # Per prompt, the first layers of its G networks stack into one (G * H, D + 1) matrix
        # against the context as columns, so the forward pass and the first layer's gradient are
        # one GEMM per prompt; the first layer's bias rides along as column D against a constant-1
        # input. The read-out works per network on (H, m) blocks.
        ones = torch.ones(b, hi, 1, dtype=x.dtype, device=x.device)
        xa = torch.cat([x[:, :hi], ones], -1)  # (B, hi, D + 1)
        xc = xa[:, :m]  # (B, m, D + 1)
        w = torch.cat([p["w1"], p["b1"][:, :, None]], 2).transpose(2, 3).reshape(b, g * h, d + 1)
        w2 = p["w2"].reshape(b * g, 1, h).clone()
        b2 = p["b2"].reshape(b * g, 1, 1).clone()
        params = [w, w2, b2]
        adam = _adam(params, self.lr)
        yc = y[:, None, None, :m].expand(b, g, 1, m).reshape(b * g, 1, m)
        sizes = torch.arange(lo, hi, device=x.device)  # context size of each network
        visible = (torch.arange(m, device=x.device)[None, :] < sizes[:, None]).to(x.dtype)  # (G, m)
        visible = visible[None, :, None, :].expand(b, g, 1, m).reshape(b * g, 1, m)
        for _ in range(self.steps):
            mask = visible if m <= self.batch_size else _minibatch(visible, self.batch_size, draws)
            count = mask.sum(2, keepdim=True).clamp_min(1)  # points per network
            act = torch.bmm(w, xc.mT).relu_().view(b * g, h, m)
            resid = torch.baddbmm(b2, w2, act).sub_(yc)  # (BG, 1, m)
            dout = resid.mul_(mask).div_(count).mul_(2.0)  # d loss / d output
            w2.grad = torch.bmm(dout, act.mT)
            b2.grad = dout.sum(2, keepdim=True)
            dpre = act.sign_().mul_(dout).mul_(w2.mT)  # relu' from act's sign
            w.grad = torch.bmm(dpre.view(b, g * h, m), xc)
            adam.step()
        xq = xa[:, lo:hi]  # (B, G, D + 1): each network's query
        hq = torch.einsum("bghd,bgd->bgh", w.view(b, g, h, d + 1), xq).relu_()
        pred = torch.baddbmm(b2, w2, hq.reshape(b * g, h, 1)).view(b, g)
        return torch.where(sizes[None, :] > 0, pred, torch.zeros_like(pred))


def _adam(params: list[Tensor], lr: float) -> torch.optim.Adam:
    """torch.optim.Adam on the stacked tensors: elementwise, so each network's slice moves as it
    would under its own optimizer. The fused kernel (one pass per tensor, several times faster
    than the default) where this torch has it for the device."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


def _minibatch(visible: Tensor, size: int, draws: torch.Generator) -> Tensor:
    """Mask like ``visible`` (networks, 1, points): for each network, ``size`` of its visible
    points chosen uniformly at random (all of them when fewer)."""
    keys = torch.rand(visible.shape, generator=draws, device=visible.device, dtype=torch.float64)
    keys = keys.masked_fill(visible == 0, float("inf"))
    rank = keys.argsort(2).argsort(2)  # rank of each point's key within its network
    return ((rank < size) & (visible > 0)).to(visible.dtype)


def _prefix_chunks(b: int, n: int, hidden: int, budget: int = 1 << 20):
    """Consecutive prefix ranges [lo, hi) whose hidden activations (B x G x (hi - 1) x hidden)
    hold about ``budget`` elements: prefix i needs only its i context points, so small prefixes
    are grouped together instead of padded to the longest context."""
    lo = 0
    while lo < n:
        hi = lo + 1
        while hi < n and b * (hi + 1 - lo) * hi * hidden <= budget:
            hi += 1
        yield lo, hi
        lo = hi
