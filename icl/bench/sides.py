"""Our side of the benchmark: one training step of ``ICLModule``'s model with its own optimiser,
schedule and loss, as a function of the batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from icl.config import Config, to_dict
from icl.training.loss import prefix_losses
from icl.training.module import ICLModule


@dataclasses.dataclass
class Side:
    """One way of running the training step; ``step(xs, ys)`` does forward, loss, backward, update."""

    name: str
    step: Callable[[Tensor, Tensor], Tensor]
    params: int


def our_side(cfg: Config, name: str = "ours", autocast: torch.dtype | None = None) -> Side:
    """``ICLModule``'s training step without the Lightning loop; ``autocast``: a CPU autocast dtype."""
    module = ICLModule(to_dict(cfg))
    optim = module.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]

    def step(xs: Tensor, ys: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            preds = module.train_forward(xs, ys)
        loss, _ = prefix_losses(preds, ys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()  # per step, as Lightning does with interval "step"
        return loss.detach()

    return Side(name, step, module.model.num_params())
