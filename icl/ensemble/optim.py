"""Adam and AdamW for a StackedTransformer: one update over all members at once, each member with
its own learning rate, weight decay and step count, and a per-member switch that leaves a
member's weights and moments untouched for a step (non-finite guard).

The members' parameters and gradients live in one flat (M, P) tensor each (row m: member m's P
numbers), so every part of the update (moments, bias correction, the step) is a few
element-wise kernels over (M, P) with (M, 1) factors: no per-member loop, no host sync. Adam is
element-wise, so this is a solo Adam per row, written in torch's formula; the results equal a
solo run's to rounding (tests/unit/test_ensemble.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from icl.errors import ICLError


class StackedAdam(torch.optim.Optimizer):
    """Adam (L2 weight decay added to the gradient) or, with ``decoupled``, AdamW, over stacked
    parameters (leading member axis M). One parameter group per member (``lr``,
    ``weight_decay``), so a LambdaLR with one schedule per member drives each member's lr.

    ``grad`` is the (M, P) gradient; ``flat`` the (M, P) parameters. Before ``step``, the
    training module may set ``apply`` (M,) bool: members where it is False get no update this
    step (weights, moments and step count unchanged, as when a solo Adam gets no gradient).
    ``state_dict`` holds one solo Adam state per member (``members``), each in the per-parameter
    layout torch's Adam writes, so a member's state can go into a solo checkpoint as is."""

    def __init__(
        self,
        params,
        lrs: list[float],
        weight_decays: list[float],
        betas: tuple[float, float],
        eps: float,
        decoupled: bool,
        solo_group: dict[str, Any],
    ) -> None:
        self._params = list(params)
        first = self._params[0]
        M = first.shape[0]
        if any(p.shape[0] != M or p.dtype != first.dtype or p.device != first.device for p in self._params):
            raise ICLError("stacked parameters: allowed: one member count, dtype and device")
        if len(lrs) != M or len(weight_decays) != M:
            raise ICLError(f"stacked Adam: {len(lrs)} learning rates for {M} members")
        P = sum(p[0].numel() for p in self._params)
        flat = torch.empty(M, P, dtype=first.dtype, device=first.device)
        self._slices: list[slice] = []
        offset = 0
        with torch.no_grad():
            for p in self._params:
                part = slice(offset, offset + p[0].numel())
                flat[:, part].copy_(p.reshape(M, -1))
                p.data = flat[:, part].view(p.shape)
                self._slices.append(part)
                offset = part.stop
        self.flat = flat
        self.grad = torch.zeros_like(flat)
        self._grads = [self.grad[:, part].view(p.shape) for part, p in zip(self._slices, self._params, strict=True)]
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.steps = torch.zeros(M, 1, dtype=flat.dtype, device=flat.device)  # Adam's t, per member
        self.apply: Tensor | None = None
        self.betas, self.eps, self.decoupled = (float(betas[0]), float(betas[1])), float(eps), decoupled
        self.solo_group = dict(solo_group)
        groups = [{"params": [flat[m]], "lr": lrs[m], "weight_decay": weight_decays[m]} for m in range(M)]
        super().__init__(groups, {"lr": lrs[0], "weight_decay": 0.0})
        self.zero_grad()

    @property
    def members(self) -> int:
        return self.flat.shape[0]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zeroes the flat gradient (``set_to_none`` is ignored: the views must stay attached)."""
        for p, g in zip(self._params, self._grads, strict=True):
            if p.grad is not g:
                p.grad = g
        self.grad.zero_()

    def _column(self, values: list[float]) -> Tensor:
        """(M, 1) tensor of host numbers on the parameters' device, copied without a host sync."""
        t = torch.tensor(values, dtype=self.flat.dtype)[:, None]
        if self.flat.device.type == "cuda":
            return t.pin_memory().to(self.flat.device, non_blocking=True)
        return t.to(self.flat.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        b1, b2 = self.betas
        p, g, m, v = self.flat, self.grad, self.exp_avg, self.exp_avg_sq
        lr = self._column([group["lr"] for group in self.param_groups])  # (M, 1)
        wds = [group["weight_decay"] for group in self.param_groups]
        mask = None if self.apply is None else self.apply[:, None]  # (M, 1)
        if mask is not None:
            g.masked_fill_(~mask, 0.0)  # a skipped member's gradient may be non-finite
            inc = mask.to(p.dtype)
            lr = lr * inc
        self.steps.add_(1.0 if mask is None else inc)
        if any(wds):
            wd = self._column(wds)
            if self.decoupled:
                p.mul_(1.0 - lr * wd)
            else:
                g.addcmul_(p, wd)
        bc1 = 1.0 - b1**self.steps  # (M, 1)
        bc2_sqrt = (1.0 - b2**self.steps).sqrt_()  # (M, 1)
        if mask is None:
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2)
        else:
            # weight 0 and factor 1 leave a skipped member's moments exactly as they were
            m.lerp_(g, (1.0 - b1) * inc)
            v.mul_(torch.where(mask, b2, 1.0))
        v.addcmul_(g, g, value=1.0 - b2)
        # torch's Adam: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps). A skipped member has
        # lr 0 (and a step count that did not move, so bc1 > 0 once it ever stepped).
        step_size = lr / bc1.clamp_min(torch.finfo(p.dtype).tiny)  # (M, 1)
        denom = (v.sqrt() / bc2_sqrt.clamp_min(torch.finfo(p.dtype).tiny)).add_(self.eps)
        p.addcdiv_(m * step_size, denom, value=-1.0)
        self.apply = None
        return loss

    def member_state_dict(self, m: int) -> dict[str, Any]:
        """Member ``m``'s optimiser state as torch's Adam over a solo model's parameters writes it."""
        step = float(self.steps[m, 0])
        state = {}
        if step > 0:
            for i, (part, param) in enumerate(zip(self._slices, self._params, strict=True)):
                shape = param.shape[1:]
                state[i] = {
                    "step": torch.tensor(step),
                    "exp_avg": self.exp_avg[m, part].view(shape).clone(),
                    "exp_avg_sq": self.exp_avg_sq[m, part].view(shape).clone(),
                }
        group = self.param_groups[m]
        solo = {
            **self.solo_group,
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
            "params": list(range(len(self._params))),
        }
        if "initial_lr" in group:
            solo["initial_lr"] = group["initial_lr"]
        return {"state": state, "param_groups": [solo]}

    def state_dict(self) -> dict[str, Any]:
        return {"members": [self.member_state_dict(m) for m in range(self.members)]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Takes ``{"members": [solo Adam state, ...]}`` (checked by icl.checkpoint.validate when
        they were read); each member's lr, weight decay and moments."""
        members = state_dict["members"]
        if len(members) != self.members:
            raise ICLError(f"optimizer state: {len(members)} members; this ensemble has {self.members}")
        with torch.no_grad():
            for m, solo in enumerate(members):
                (group,) = solo["param_groups"]
                self.param_groups[m].update({k: group[k] for k in ("lr", "weight_decay", "initial_lr") if k in group})
                per = solo["state"]
                if not per:
                    self.steps[m] = 0.0
                    self.exp_avg[m].zero_()
                    self.exp_avg_sq[m].zero_()
                    continue
                self.steps[m] = float(per[0]["step"])
                for i, part in enumerate(self._slices):
                    self.exp_avg[m, part].copy_(per[i]["exp_avg"].reshape(-1))
                    self.exp_avg_sq[m, part].copy_(per[i]["exp_avg_sq"].reshape(-1))
