"""The sides of the benchmark: one training step of ``ICLModule``'s model, or of an ensemble's
stacked module (``EnsembleModule``), with its own optimiser, schedule and loss, as a function of
the batch, on a torch device (the CPU unless told)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from icl.bench.cases import Case
from icl.config import Config, to_dict
from icl.ensemble.module import EnsembleModule
from icl.ensemble.stream import StackedStepStream
from icl.sampling import Sampler
from icl.training.loss import prefix_losses
from icl.training.module import ICLModule


@dataclasses.dataclass
class Side:
    """One way of running the training step; ``step(xs, ys)`` does forward, loss, backward, update.
    ``data``: the (xs, ys) batches this side trains on, where they differ from the other sides'
    (an ensemble's stacked batches); None: the batches the timing is given."""

    name: str
    step: Callable[[Tensor, Tensor], Tensor]
    params: int
    data: list[tuple[Tensor, Tensor]] | None = None


def on_device(data: list[tuple[Tensor, Tensor]], device: torch.device | str) -> list[tuple[Tensor, Tensor]]:
    """The batches ``data`` on ``device``, copied once up front (the timed steps copy nothing)."""
    return [(xs.to(device), ys.to(device)) for xs, ys in data]


def _training_step(module, autocast: torch.dtype | None, device: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
    """The training step of ``module`` (ICLModule or EnsembleModule) on ``device`` with its own
    optimiser and schedule; an ensemble's members' losses are summed, so each member gets its own
    gradient. The module moves to ``device`` before its optimiser is built: the flat optimisers
    allocate their buffers on the parameters' device (as under Lightning, which moves it first)."""
    module.to(device)
    optim = module.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]

    def step(xs: Tensor, ys: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            preds = module.train_forward(xs, ys)
        loss, _ = prefix_losses(preds, ys)  # () solo, (M,) ensemble
        opt.zero_grad(set_to_none=True)
        (loss if loss.dim() == 0 else loss.sum()).backward()
        opt.step()
        sched.step()  # per step, as Lightning does with interval "step"
        return loss.detach()

    return step


def our_side(
    cfg: Config, name: str = "ours", autocast: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> Side:
    """``ICLModule``'s training step on ``device`` without the Lightning loop; ``autocast``: an
    autocast dtype (the bench uses it on the CPU). It trains on the batches it is given, which
    must be on ``device`` (``on_device``)."""
    module = ICLModule(to_dict(cfg))
    return Side(name, _training_step(module, autocast, torch.device(device)), module.model.num_params())


def member_configs(case: Case, members: int) -> list[Config]:
    """The configs of an ensemble of ``members`` at ``case``, differing by seed alone (member m: seed m)."""
    return [case.config(f"seed={m}") for m in range(members)]


def stacked_batches(cfgs: list[Config], n: int) -> list[tuple[Tensor, Tensor]]:
    """The stacked (xs (M, B, N, D), ys (M, B, N)) of the first ``n`` training steps of the members
    ``cfgs``: member m's rows are its solo run's batches."""
    stream = StackedStepStream([Sampler(cfg.data, cfg.seed) for cfg in cfgs], 0)
    return [stream.batch(s)[1:] for s in range(n)]


def ensemble_side(
    cfgs: list[Config],
    name: str,
    data: list[tuple[Tensor, Tensor]] | None = None,
    device: torch.device | str = "cpu",
) -> Side:
    """``EnsembleModule``'s training step of the members ``cfgs`` (one stacked module) on ``device``
    without the Lightning loop or its per-member guards; ``params``: all members' together.
    ``data``: its own stacked batches, moved to ``device`` here, once."""
    device = torch.device(device)
    module = EnsembleModule([to_dict(cfg) for cfg in cfgs])
    params = sum(p.numel() for p in module.model.parameters())
    return Side(name, _training_step(module, None, device), params, on_device(data, device) if data else None)
