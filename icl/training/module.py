"""The LightningModule: a model of any family (icl/models/) trained on a Sampler's step stream
with the prefix loss; optimiser and schedule, the non-finite guard, the metrics row of each
logged step (loss, learning rate, gradient norm, steps/s), and what every checkpoint records.
Thin: the maths lives in model.py, models/, sampling.py and loss.py."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from icl.config import from_dict
from icl.errors import ICLError, NonFiniteError
from icl.models import build_model
from icl.rng import Stream, derive_seed
from icl.sampling import Sampler
from icl.speed import FlatAdam, FlatAdamW, keep_freed_memory
from icl.training.loss import prefix_losses
from icl.training.stream import StepStream


def metrics_row(
    losses: list[float],
    dims: int,
    points: int,
    skipped: int | None,
    lr: float,
    grad_norm: float,
    steps_per_s: float | None,
) -> dict[str, float]:
    """The row of a logged step: the loss, the loss at every position, the curriculum's dims and
    points, the learning rate of this step's update, the total 2-norm of the gradient before
    clipping, the steps per second since the previous logged step (None: none measured yet; a
    wall-clock rate, which metrics.csv leaves out) and (train.nonfinite=skip) the skipped steps so far."""
    row = {"train/loss": losses[0], **{f"train/loss@{k}": v for k, v in enumerate(losses[1:])}}
    row.update({"curriculum/dims": float(dims), "curriculum/points": float(points)})
    row.update({"train/lr": float(lr), "train/grad_norm": float(grad_norm)})
    if steps_per_s is not None:
        row["train/steps_per_s"] = steps_per_s
    if skipped is not None:
        row["train/skipped_steps"] = float(skipped)
    return row


def grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The total 2-norm of ``grads`` (what clip_grad_norm_ compares with train.grad_clip), on their
    device; 0 without gradients."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)


class StepRate:
    """Training steps per second of wall-clock time between logged steps (what happens between
    them, periodic evaluation and checkpoint writes included)."""

    def __init__(self) -> None:
        self._last: tuple[int, float] | None = None

    def start(self, step: int) -> None:
        self._last = (step, time.perf_counter())

    def __call__(self, step: int) -> float | None:
        """Steps per second since the previous call (or ``start``); None before either."""
        now = time.perf_counter()
        last, self._last = self._last, (step, now)
        if last is None or step <= last[0] or now <= last[1]:
            return None
        return (step - last[0]) / (now - last[1])


def build_optimizer(params, tcfg) -> torch.optim.Optimizer:
    """The optimiser train.optimizer / lr / betas / eps / weight_decay / fused_optimizer name."""
    if tcfg.fused_optimizer:
        opt_cls = FlatAdamW if tcfg.optimizer == "adamw" else FlatAdam
    else:
        opt_cls = torch.optim.AdamW if tcfg.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(
        params,
        lr=tcfg.lr,
        betas=tuple(tcfg.betas),
        eps=tcfg.eps,
        weight_decay=tcfg.weight_decay,
        fused=tcfg.fused_optimizer or None,
    )


class ICLModule(L.LightningModule):
    """Training of the model ``model.family`` names on a Sampler's stream. ``config`` is the
    resolved config as a plain dict; it is stored in every checkpoint (``icl_config``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        cfg = from_dict(config)
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # initialisation is keyed by the seed alone
            torch.manual_seed(derive_seed(cfg.seed, Stream.INIT))
            self.model = build_model(cfg.model, cfg.data.n_dims)
        self.sampler = Sampler(cfg.data, cfg.seed)
        # A function, not a module attribute, so the checkpoint's state_dict keys stay unchanged.
        self.train_forward = torch.compile(self.model.forward) if cfg.train.compile else self.model.__call__
        self.skipped_steps = 0  # steps whose update train.nonfinite=skip dropped
        self._first_bad: torch.Tensor | None = None  # on accelerators: first non-finite step, or -1
        self._rate = StepRate()

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self.model(xs, ys)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        step, xs, ys = batch
        preds = self.train_forward(xs, ys)
        loss, per_position = prefix_losses(preds, ys, self.cfg.train.loss)
        self._losses = torch.cat([loss.detach()[None], per_position.detach()])  # checked and logged below
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Runs after backward, before the update and before this step's checkpoint: the
        non-finite guard, then the metrics row of this step: every train.log_every steps and at
        the last step, so metrics.csv always ends with the final loss (even when log_every > steps).
        Lightning clips gradients (train.grad_clip) after this hook: the logged norm is unclipped."""
        norm = None
        if self._is_log_step():  # before the guard, which drops the gradients of a skipped step
            norm = grad_norm([p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None])
        self._guard_nonfinite(optimizer)
        if norm is not None:
            self._log_row(optimizer.param_groups[0]["lr"], norm)

    def _is_log_step(self) -> bool:
        # A pure function of the step (and the config), so a resumed run logs the rows an
        # uninterrupted one does.
        step = self.global_step + 1
        return step % self.cfg.train.log_every == 0 or step == self.cfg.train.steps

    def _guard_nonfinite(self, optimizer) -> None:
        """train.nonfinite, applied to this step's loss and gradients before the update, by one of
        three paths:

        - skip: drop the update. Deciding before the update needs the flag on the host: one sync
          per step on an accelerator, the price of the opt-in skip.
        - stop, on the CPU: raise before the update (the flag is on the host already).
        - stop, on an accelerator: no per-step host sync; remember the first bad step on the
          device and raise at the next log step or checkpoint save, so no checkpoint ever holds
          a state after it.

        Under DDP the gradients are already all-reduced, so every rank reaches the same verdict."""
        # The optimiser's parameters: the model's, or the one flat tensor holding them all.
        params = [p for group in optimizer.param_groups for p in group["params"]]
        finite = self._finite(params)
        if self.cfg.train.nonfinite == "skip":
            if not finite:
                self._skip_update(params)
        elif self._check_on_host():
            if not finite:
                raise NonFiniteError(self.global_step)
        else:
            if self._first_bad is None:
                self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
            self._first_bad = torch.where(finite | (self._first_bad >= 0), self._first_bad, self.global_step)
            if self._is_log_step():  # before this step's row, as at every log step
                self._raise_if_nonfinite()

    def _finite(self, params: list[torch.Tensor]) -> torch.Tensor:
        """Whether this step's loss and every gradient are finite, as a tensor on the device."""
        finite = torch.isfinite(self._losses[0])
        if self.cfg.train.precision != "16-mixed":  # fp16 overflows are the GradScaler's: it skips them itself
            grads = [p.grad for p in params if p.grad is not None]
            if grads:  # max |g| per tensor: exact and cannot overflow, unlike a norm
                finite &= torch.isfinite(torch.stack(torch._foreach_norm(grads, float("inf")))).all()
        return finite

    def _skip_update(self, params: list[torch.Tensor]) -> None:
        # Without gradients Adam leaves parameters and moments untouched; the schedule and the
        # data stream still advance.
        for p in params:
            p.grad = None
        if self.skipped_steps == 0 and self.global_rank == 0:
            print(
                f"icl: warning: non-finite loss or gradient at step {self.global_step}: update skipped "
                "(train.nonfinite=skip); later skips are counted in train/skipped_steps",
                file=sys.stderr,
            )
        self.skipped_steps += 1

    def _check_on_host(self) -> bool:
        """Read the non-finite flag every step? Free on CPU; a sync on accelerators."""
        return self.device.type == "cpu"

    def _raise_if_nonfinite(self) -> None:
        if self._first_bad is not None and (step := int(self._first_bad)) >= 0:
            raise NonFiniteError(step)

    def _log_row(self, lr: float, norm: torch.Tensor) -> None:
        # Written here, not through self.log: Lightning hands self.log values to the loggers only
        # after on_train_batch_end, i.e. after this step's checkpoint, and a kill in between would
        # lose the row on resume. Under DDP each rank holds a slice of the batch: the mean over
        # ranks describes the global batch (the gradients are all-reduced already: their norm is
        # every rank's). One .tolist() = one host sync per logged step.
        both = torch.cat([self._losses, norm.to(self._losses)[None]])
        *values, norm_value = self.trainer.strategy.reduce(both, reduce_op="mean").tolist()
        dims, points = self.sampler.curriculum.at(self.global_step)
        skipped = self.skipped_steps if self.cfg.train.nonfinite == "skip" else None
        row = metrics_row(values, dims, points, skipped, lr, norm_value, self._rate(self.global_step + 1))
        # Host tensors: Lightning reads every progress-bar value with .item() after *every* step, a
        # device sync per step for values on an accelerator; these are already on the host.
        shown = {"train/loss": values[0], "curriculum/dims": float(dims), "curriculum/points": float(points)}
        self.log_dict({k: torch.tensor(v) for k, v in shown.items()}, prog_bar=True, logger=False)
        for logger in self.loggers:
            logger.log_metrics(row, step=self.global_step)

    def configure_optimizers(self):
        tcfg = self.cfg.train
        # Lightning calls this after moving the model to its device and dtype, where the flat
        # optimiser allocates its buffers.
        opt = build_optimizer(self.model.parameters(), tcfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: tcfg.lr_factor(s))  # a function: state None
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        # Called after a checkpoint is restored, so global_step is the step to resume at.
        world = self.trainer.world_size
        if self.cfg.data.batch_size % world:
            # Equal slices make DDP's gradient average the gradient of the global batch's mean loss.
            raise ICLError(
                f"data.batch_size: got {self.cfg.data.batch_size}; allowed: a multiple of the number of "
                f"processes ({world})"
            )
        on_device = self.samples_on_device()
        self._stream = StepStream(self.sampler, self.trainer.global_step, self.global_rank, world, not on_device)
        nw = 0 if on_device else self.cfg.data.num_workers
        return DataLoader(self._stream, batch_size=None, num_workers=nw, persistent_workers=nw > 0)

    def samples_on_device(self) -> bool:
        mode = self.cfg.train.sampling
        if mode == "auto":
            return self.device.type != "cpu" and self.cfg.data.num_workers == 0
        return mode == "device"

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # With device sampling the loader yields the step number alone (nothing to copy).
        return self._stream.batch(batch, self.device) if isinstance(batch, int) else batch

    def on_train_start(self) -> None:
        self._rate.start(self.global_step)

    def on_fit_start(self) -> None:
        # Process-wide switch; "highest" keeps exact fp32 matmuls when tf32 is off.
        torch.set_float32_matmul_precision("high" if self.cfg.train.tf32 else "highest")
        if self.cfg.train.keep_freed_memory:
            keep_freed_memory()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._raise_if_nonfinite()  # never write a state that follows a non-finite step
        checkpoint["icl_config"] = self.config
        checkpoint["icl_format"] = 1
        checkpoint["icl_skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = checkpoint.get("icl_skipped_steps", 0)
        self._optimiser_settings_from_config(checkpoint)

    def _optimiser_settings_from_config(self, checkpoint: dict[str, Any]) -> None:
        """The resumed run's train.lr, schedule, betas, eps and weight decay, not the checkpoint's.

        Lightning restores the optimiser's param groups and the scheduler's base lr after this
        hook, from this dict, which would silently keep the old values. With an unchanged config
        the values written here equal the stored ones bit for bit (the same product LambdaLR
        computes), so an ordinary resume stays exact."""
        t = self.cfg.train
        step = int(checkpoint["global_step"])
        lr = t.lr * t.lr_factor(step)
        for state in checkpoint.get("optimizer_states", []):
            for group in state["param_groups"]:
                group.update(lr=lr, initial_lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
        for sched in checkpoint.get("lr_schedulers", []):
            sched["base_lrs"] = [t.lr] * len(sched["base_lrs"])
            sched["_last_lr"] = [lr] * len(sched["base_lrs"])
