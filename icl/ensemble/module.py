"""The LightningModule of an ensemble: M members of one shape trained as one StackedTransformer,
each on its own data stream, with its own learning rate and schedule, gradient clipping,
non-finite guard and metrics rows. What differs from ICLModule is only what M members need;
the loss, the schedule and the metrics row are ICLModule's."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from icl.config import from_dict
from icl.ensemble.optim import StackedAdam
from icl.ensemble.stacked import StackedTransformer
from icl.ensemble.stream import StackedStepStream
from icl.errors import ICLError, NonFiniteError
from icl.model import ICLTransformer
from icl.rng import Stream, derive_seed
from icl.sampling import Sampler
from icl.speed import keep_freed_memory
from icl.trackers import CSVMetrics
from icl.training.loss import prefix_losses
from icl.training.module import StepRate, build_optimizer, metrics_row

# The stacked parameters are views into one (M, P) buffer and so are their gradients: autograd
# accumulates into them in place, which is the point; its note about strides does not apply.
warnings.filterwarnings("ignore", ".*do not obey the gradient layout contract.*")


class EnsembleModule(L.LightningModule):
    """Training of ``len(configs)`` members, ``configs`` being each member's resolved config as a
    plain dict (stored in its checkpoints). Every member starts from the weights its solo run
    would (initialisation keyed by its seed) and sees the batches its solo run would.

    Per member: ``skipped_steps`` (train.nonfinite=skip), ``diverged`` (member -> the step of its
    first non-finite loss or gradient under train.nonfinite=stop: from then on it is frozen, logs
    nothing and gets no checkpoint), ``member_loggers`` (set by the runner), ``on_diverged``
    (called once per diverged member, with the member and the step)."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.configs = configs
        self.cfgs = [from_dict(c) for c in configs]
        models = []
        for cfg in self.cfgs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(cfg.seed, Stream.INIT))
                models.append(ICLTransformer(cfg.model, cfg.data.n_dims))
        self.model = StackedTransformer.from_models(models)
        self.samplers = [Sampler(cfg.data, cfg.seed) for cfg in self.cfgs]
        self.shared = self.cfgs[0].train  # the settings every member shares (icl.ensemble.grouping)
        self.train_forward = torch.compile(self.model.forward) if self.shared.compile else self.model.__call__
        M = len(configs)
        self.skipped_steps = [0] * M
        self.diverged: dict[int, int] = {}
        self.member_loggers: list[list[Logger]] = [[] for _ in range(M)]
        self.on_diverged: Callable[[int, int], None] | None = None
        self._status: dict[str, torch.Tensor] | None = None  # on the device; read at sync points
        self._clips: torch.Tensor | None = None  # (M,) train.grad_clip per member (inf: off)
        self._rate = StepRate()

    @property
    def members(self) -> int:
        return len(self.configs)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        step, xs, ys = batch
        preds = self.train_forward(xs, ys)  # (M, B, N)
        losses, per_position = prefix_losses(preds, ys, self.shared.loss)  # (M,), (M, N); train.loss is shared
        self._losses = torch.cat([losses.detach()[:, None], per_position.detach()], dim=1)  # (M, 1 + N)
        # Each member's parameters get the gradient of its own loss alone.
        return losses.sum()

    def on_before_optimizer_step(self, optimizer) -> None:
        """After backward: each member's non-finite guard and gradient clipping, then the metrics
        rows of a log step (with each member's gradient norm before clipping). Decided on the
        device; read on the host every step on the CPU (free) and at log steps and checkpoint saves
        elsewhere (no per-step host sync)."""
        opt: StackedAdam = self.optimizers(use_pl_optimizer=False)
        grad = opt.grad  # (M, P)
        status = self._device_status()
        # max |g| per member: exact and cannot overflow, unlike a norm (as ICLModule._finite)
        finite = torch.isfinite(self._losses[:, 0]) & torch.linalg.vector_norm(grad, float("inf"), dim=1).isfinite()
        if self.shared.nonfinite == "skip":
            status["skipped"] += ~finite
            apply = finite
        else:
            newly = status["alive"] & ~finite
            status["first_bad"] = torch.where(newly, self.global_step, status["first_bad"])
            status["alive"] &= finite
            apply = status["alive"]
        log = self._is_log_step()
        norms = torch.linalg.vector_norm(grad, 2.0, dim=1) if log or self._clips is not None else None
        if self._clips is not None:  # torch.nn.utils.clip_grad_norm_ per member, as Lightning calls it
            grad.mul_((self._clips / (norms + 1e-6)).clamp(max=1.0)[:, None])
        on_host = self.device.type == "cpu"
        if on_host:
            self._sync_status()
        opt.apply = None if on_host and bool(apply.all()) else apply
        if log:
            if not on_host:
                self._sync_status()
            self._log_rows([group["lr"] for group in opt.param_groups], norms)

    def _device_status(self) -> dict[str, torch.Tensor]:
        if self._status is None:
            M, dev = self.members, self.device
            alive = torch.tensor([m not in self.diverged for m in range(M)], device=dev)
            self._status = {
                "alive": alive,
                "first_bad": torch.full((M,), -1, dtype=torch.long, device=dev),
                "skipped": torch.tensor(self.skipped_steps, dtype=torch.long, device=dev),
            }
            clips = [cfg.train.grad_clip or float("inf") for cfg in self.cfgs]
            self._clips = torch.tensor(clips, device=dev) if any(cfg.train.grad_clip for cfg in self.cfgs) else None
        return self._status

    def _sync_status(self) -> None:
        """Read the members' non-finite verdicts on the host: record newly diverged members and
        warn at a member's first skipped step. Raises NonFiniteError once every member diverged."""
        if self._status is None:
            return
        first_bad = self._status["first_bad"].tolist()
        skipped = self._status["skipped"].tolist()
        for m, step in enumerate(first_bad):
            if step >= 0 and m not in self.diverged:
                self.diverged[m] = step
                if self.on_diverged is not None:
                    self.on_diverged(m, step)
        for m, n in enumerate(skipped):
            if n and not self.skipped_steps[m]:
                print(
                    f"icl: warning: {self.cfgs[m].name}: non-finite loss or gradient: update skipped "
                    "(train.nonfinite=skip); later skips are counted in train/skipped_steps",
                    file=sys.stderr,
                )
        self.skipped_steps = skipped
        if len(self.diverged) == self.members:
            raise NonFiniteError(min(self.diverged.values()))

    def _is_log_step(self) -> bool:
        step = self.global_step + 1
        return step % self.shared.log_every == 0 or step == self.shared.steps

    def _log_rows(self, lrs: list[float], norms: torch.Tensor) -> None:
        # As ICLModule._log_row: written here so that the rows precede this step's checkpoint.
        # One host sync per logged step; steps/s is the ensemble's, every member's.
        values = torch.cat([self._losses, norms.to(self._losses)[:, None]], dim=1).tolist()
        dims, points = self.samplers[0].curriculum.at(self.global_step)
        skip = self.shared.nonfinite == "skip"
        alive = [m for m in range(self.members) if m not in self.diverged]
        rate = self._rate(self.global_step + 1)
        for m in alive:
            *losses, norm = values[m]
            row = metrics_row(losses, dims, points, self.skipped_steps[m] if skip else None, lrs[m], norm, rate)
            for logger in self.member_loggers[m]:
                logger.log_metrics(row, step=self.global_step)
        mean = sum(values[m][0] for m in alive) / len(alive)
        shown = {"train/loss": mean, "curriculum/dims": float(dims), "curriculum/points": float(points)}
        self.log_dict({k: torch.tensor(v) for k, v in shown.items()}, prog_bar=True, logger=False)

    def configure_optimizers(self):
        t = self.shared
        # The param-group layout a solo run's optimiser writes, for the members' checkpoints.
        solo_group = build_optimizer([torch.zeros(1)], t).state_dict()["param_groups"][0]
        opt = StackedAdam(
            self.model.parameters(),
            lrs=[cfg.train.lr for cfg in self.cfgs],
            weight_decays=[cfg.train.weight_decay for cfg in self.cfgs],
            betas=tuple(t.betas),
            eps=t.eps,
            decoupled=t.optimizer == "adamw",
            solo_group=solo_group,
        )
        # Plain functions, so the scheduler's state records None for each (as a solo run's does).
        factors = [lambda s, t=c.train: t.lr_factor(s) for c in self.cfgs]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        if self.trainer.world_size != 1:
            raise ICLError("ensemble training: allowed: one process on one device (train.devices=1)")
        on_device = self.samples_on_device()
        self._stream = StackedStepStream(self.samplers, self.trainer.global_step, sample=not on_device)
        nw = 0 if on_device else self.cfgs[0].data.num_workers
        return DataLoader(self._stream, batch_size=None, num_workers=nw, persistent_workers=nw > 0)

    def samples_on_device(self) -> bool:
        mode = self.shared.sampling
        if mode == "auto":
            return self.device.type != "cpu" and self.cfgs[0].data.num_workers == 0
        return mode == "device"

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self._stream.batch(batch, self.device) if isinstance(batch, int) else batch

    def on_train_start(self) -> None:
        self._rate.start(self.global_step)

    def on_fit_start(self) -> None:
        torch.set_float32_matmul_precision("high" if self.shared.tf32 else "highest")
        if self.shared.keep_freed_memory:
            keep_freed_memory()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The ensemble's checkpoint, which icl.ensemble.checkpoints splits into one solo
        checkpoint per member that has not diverged."""
        self._sync_status()
        rows = []
        for loggers in self.member_loggers:
            for logger in loggers:
                logger.save()
            csv = [lg for lg in loggers if isinstance(lg, CSVMetrics)]
            rows.append(csv[0].n_rows if csv else None)
        checkpoint["icl_configs"] = self.configs
        checkpoint["icl_skipped_steps"] = list(self.skipped_steps)
        checkpoint["icl_diverged"] = sorted(self.diverged)
        checkpoint["icl_metrics_rows"] = rows

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = list(checkpoint.get("icl_skipped_steps", [0] * self.members))
        step = int(checkpoint["global_step"])
        # Each member's own train.lr, schedule and weight decay, not the checkpoint's (as ICLModule).
        (opt,) = checkpoint["optimizer_states"]
        (sched,) = checkpoint["lr_schedulers"]
        for m, cfg in enumerate(self.cfgs):
            t = cfg.train
            lr = t.lr * t.lr_factor(step)
            (group,) = opt["members"][m]["param_groups"]
            group.update(lr=lr, initial_lr=t.lr, weight_decay=t.weight_decay)
            sched["base_lrs"][m] = t.lr
            sched["_last_lr"][m] = lr
