"""The LightningModule (squared loss on every prefix, optimiser and schedule, logging) and the
step-indexed training data stream. Thin: maths lives in model.py and sampling.py."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import sys
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from icl.errors import ICLError, NonFiniteError
from icl.model import ICLTransformer
from icl.rng import Stream, derive_seed
from icl.sampling import Sampler

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "warmup_rsqrt")
LOGGERS = ("csv", "tensorboard", "wandb")
WANDB_MODES = ("offline", "online", "disabled")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")
NONFINITE = ("stop", "skip")
SAMPLING = ("auto", "loader", "device")


@dataclasses.dataclass
class WandbConfig:
    mode: str = "offline"  # offline (default: no network, no login) | online | disabled
    project: str = "icl"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainConfig:
    steps: int = 500_000
    lr: float = 1e-4
    optimizer: str = "adam"
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    fused_optimizer: bool = True  # one fused Adam kernel per step (CPU and CUDA); same maths
    compile: bool = False  # torch.compile the training forward (eager for evaluation); docs/performance.md
    tf32: bool = False  # allow TF32 matmuls (NVIDIA Ampere+): ~1e-3 relative error, much faster fp32 matmuls
    # glibc malloc keeps freed memory for reuse instead of returning it to the OS after every step
    # (no page faults per step; the process keeps its peak memory until it exits). Linux/glibc only.
    keep_freed_memory: bool = True
    # Where batches are drawn: loader (DataLoader, data.num_workers processes), device (in the
    # training process, directly on the training device: no host-to-device copy), auto (device on
    # accelerators when data.num_workers = 0, else loader). Same (seed, step) -> same batch.
    sampling: str = "auto"
    # constant: linear warm-up over warmup_steps (0 = none), then lr (paper 2: 1e-4, no warm-up).
    # warmup_rsqrt: linear warm-up, then lr * sqrt(warmup_steps / step) (paper 1).
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    precision: str = "32-true"  # bf16-mixed: bf16 autocast (CUDA, or CPUs with bf16 support)
    accelerator: str = "auto"  # auto | cpu | gpu | ...: passed to Lightning
    devices: Any = "auto"  # per node; "auto" = all visible devices
    strategy: str = "auto"  # auto picks ddp for several devices; docs/sweeps.md shows multi-node launches
    num_nodes: int = 1  # machines in a multi-node DDP job (SLURM srun or torchrun on each node)
    checkpoint_every: int = 1000  # steps between kept checkpoints (plus last.ckpt)
    log_every: int = 50
    loggers: list[str] = dataclasses.field(default_factory=lambda: ["csv"])
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    progress_bar: bool = True
    # A NaN/Inf loss or gradient: stop (error naming the step; checkpoints keep the last good
    # state) or skip (no update for that step, counted in train/skipped_steps).
    nonfinite: str = "stop"

    def check(self) -> None:
        if self.steps < 1:
            raise ICLError(f"train.steps: got {self.steps}; allowed: an integer >= 1")
        # Comparisons are written so that NaN fails them; config.check_numbers refuses infinities.
        if not self.lr > 0:
            raise ICLError(f"train.lr: got {self.lr}; allowed: a number > 0")
        if not self.eps > 0:  # Adam divides by sqrt(v) + eps
            raise ICLError(f"train.eps: got {self.eps}; allowed: a number > 0")
        if not self.weight_decay >= 0:
            raise ICLError(f"train.weight_decay: got {self.weight_decay}; allowed: a number >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ICLError(f"train.optimizer: got {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ICLError(f"train.schedule: got {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.schedule == "warmup_rsqrt" and self.warmup_steps < 1:
            raise ICLError(
                f"train.warmup_steps: got {self.warmup_steps}; allowed: an integer >= 1 with schedule warmup_rsqrt"
            )
        if self.warmup_steps < 0:
            raise ICLError(f"train.warmup_steps: got {self.warmup_steps}; allowed: an integer >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ICLError(f"train.betas: got {list(self.betas)}; allowed: two numbers in [0, 1)")
        if not self.grad_clip >= 0:
            raise ICLError(f"train.grad_clip: got {self.grad_clip}; allowed: a number >= 0 (0 = off)")
        if self.precision not in PRECISIONS:
            raise ICLError(f"train.precision: got {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.num_nodes < 1:
            raise ICLError(f"train.num_nodes: got {self.num_nodes}; allowed: an integer >= 1")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ICLError("train.checkpoint_every / train.log_every: allowed: integers >= 1")
        bad = [x for x in self.loggers if x not in LOGGERS]
        if bad:
            raise ICLError(f"train.loggers: got {bad}; allowed: any of {', '.join(LOGGERS)}")
        if self.nonfinite not in NONFINITE:
            raise ICLError(f"train.nonfinite: got {self.nonfinite!r}; allowed: {', '.join(NONFINITE)}")
        if self.sampling not in SAMPLING:
            raise ICLError(f"train.sampling: got {self.sampling!r}; allowed: {', '.join(SAMPLING)}")
        if self.wandb.mode not in WANDB_MODES:
            raise ICLError(f"train.wandb.mode: got {self.wandb.mode!r}; allowed: {', '.join(WANDB_MODES)}")


class _FlatParameters:
    """Mixin for a torch optimiser: it steps one flat tensor whose consecutive slices are the
    parameters. Their ``.data`` and ``.grad`` become views of one flat parameter and one flat
    gradient buffer (autograd accumulates into the views), so a fused update is one kernel over
    one tensor instead of one per parameter: about 4% of a ``tiny`` step, less for larger models
    (docs/performance.md). Build it after the model is on its device and in its dtype.

    Same maths as the per-parameter optimiser as long as every parameter gets a gradient at
    every step (true of ICLTransformer, tested): a parameter without one would still see the
    update of a zero gradient. Same checkpoint format: ``state_dict`` splits the flat state per
    parameter and ``load_state_dict`` takes per-parameter state, so checkpoints written with or
    without it resume with either."""

    def __init__(self, params, **kwargs) -> None:
        self._params = list(params)
        first = self._params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in self._params):
            raise ValueError("flat parameters need one dtype and one device")
        flat = torch.empty(sum(p.numel() for p in self._params), dtype=first.dtype, device=first.device)
        self._grad = torch.zeros_like(flat)
        self._slices: list[slice] = []
        offset = 0
        with torch.no_grad():
            for p in self._params:
                part = slice(offset, offset + p.numel())
                flat[part].copy_(p.reshape(-1))
                p.data = flat[part].view_as(p)
                self._slices.append(part)
                offset = part.stop
        self._grads = [self._grad[part].view_as(p) for part, p in zip(self._slices, self._params, strict=True)]
        self._flat = torch.nn.Parameter(flat)
        super().__init__([self._flat], **kwargs)
        self.zero_grad()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zeroes the flat gradient; ``set_to_none`` is ignored (the views must stay attached).
        A gradient someone replaced or dropped is re-attached. To skip an update, set the grad
        of ``param_groups``' (flat) parameter to None after the backward."""
        for p, g in zip(self._params, self._grads, strict=True):
            if p.grad is not g:
                p.grad = g
        self._grad.zero_()
        self._flat.grad = self._grad

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        flat_state = sd["state"].get(0, {})
        state = {}
        if flat_state:
            for i, (part, p) in enumerate(zip(self._slices, self._params, strict=True)):
                state[i] = {
                    k: v[part].view_as(p)
                    if k != "step" and torch.is_tensor(v) and v.shape == self._flat.shape
                    # Own step tensors: the unfused optimiser increments each in place.
                    else (v.clone() if torch.is_tensor(v) else v)
                    for k, v in flat_state.items()
                }
        (group,) = sd["param_groups"]
        return {"state": state, "param_groups": [{**group, "params": list(range(len(self._params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        ids = [i for g in groups for i in g["params"]]
        if len(groups) != 1 or len(ids) != len(self._params):
            raise ValueError(
                f"optimizer state: {len(groups)} group(s) of {len(ids)} parameters; this model has 1 of "
                f"{len(self._params)}"
            )
        per = state_dict["state"]
        flat_state = {}
        if per:
            missing = [i for i in ids if i not in per]
            if missing:
                raise ValueError(f"optimizer state: no state for parameter(s) {missing[:5]}")
            for k, v in per[ids[0]].items():
                if k != "step" and torch.is_tensor(v) and v.shape == self._params[0].shape:
                    v = torch.cat([per[i][k].reshape(-1).to(self._flat) for i in ids])
                flat_state[k] = v
        super().load_state_dict(
            {"state": {0: flat_state} if per else {}, "param_groups": [{**groups[0], "params": [0]}]}
        )


class FlatAdam(_FlatParameters, torch.optim.Adam):
    pass


class FlatAdamW(_FlatParameters, torch.optim.AdamW):
    pass


def keep_freed_memory() -> bool:
    """Stop glibc malloc from handing the memory a training step frees back to the OS.

    By default glibc serves large blocks with mmap and trims the heap once more than twice the
    last such block's size is free at its top; a training step frees its activations at the end,
    so the next step faults every page in again (measured, our step in a process of its own:
    about 600 page faults per step at `tiny` and 6000 at `small`, d = 5; 18.3 -> 16.2 ms per
    step at `tiny`). Fixed thresholds keep blocks up to 64 MiB (32 MiB where glibc refuses 64)
    on the heap and trim only above 1 GiB free.
    Process-wide; returns whether it applied (False off Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not (mallopt(M_MMAP_THRESHOLD, 64 << 20) or mallopt(M_MMAP_THRESHOLD, 32 << 20)):
        return False
    # Only together with the fixed mmap threshold: a trim threshold alone also freezes glibc's
    # adaptive mmap threshold where it stands (128 KiB at start), sending every activation to mmap
    # (measured: 30.4-31.4 ms per step at `tiny`, slower than glibc's default).
    return bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def lr_factor(step: int, schedule: str, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    s = step + 1
    warm = min(1.0, s / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "warmup_rsqrt" and s > warmup_steps:
        return math.sqrt(warmup_steps / s)
    return warm


class StepStream(IterableDataset):
    """Yields the training batch of every step from ``start`` on, forever.

    Batches are ``sampler.sample_batch(step)``, a pure function of (seed, step), so resume
    only needs the start step. With W workers, worker w yields steps start + w, start + w + W,
    ...; the DataLoader's round-robin over workers then restores the step order. Under data
    parallelism rank r of R keeps rows [r B/R, (r+1) B/R) of the global batch, so the
    concatenated batch is the single-process one. With ``sample=False`` it yields the step
    numbers alone and the training module draws ``batch(step, device)`` on its device.
    """

    def __init__(self, sampler: Sampler, start: int, rank: int = 0, world: int = 1, sample: bool = True) -> None:
        self.sampler, self.start, self.rank, self.world, self.sample = sampler, start, rank, world, sample

    def batch(self, step: int, device: torch.device | str = "cpu") -> tuple[int, torch.Tensor, torch.Tensor]:
        """(step, xs, ys): this rank's rows of the batch of ``step``, drawn on ``device``."""
        B = self.sampler.cfg.batch_size
        lo, hi = self.rank * B // self.world, (self.rank + 1) * B // self.world
        batch = self.sampler.sample_batch(step, device=device)
        return step, batch.xs[lo:hi], batch.ys[lo:hi]

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start + wid
        while True:
            yield self.batch(step) if self.sample else step
            step += nw


class ICLModule(L.LightningModule):
    """Training of an ICLTransformer on a Sampler's stream. ``config`` is the resolved config
    as a plain dict; it is stored in every checkpoint (``icl_config``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from icl.config import from_dict

        self.config = config
        cfg = from_dict(config)
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # initialisation is keyed by the seed alone
            torch.manual_seed(derive_seed(cfg.seed, Stream.INIT))
            self.model = ICLTransformer(cfg.model, cfg.data.n_dims)
        self.sampler = Sampler(cfg.data, cfg.seed)
        # A function, not a module attribute, so the checkpoint's state_dict keys stay unchanged.
        self.train_forward = torch.compile(self.model.forward) if cfg.train.compile else self.model.__call__
        self.skipped_steps = 0  # steps whose update train.nonfinite=skip dropped
        self._first_bad: torch.Tensor | None = None  # on accelerators: first non-finite step, or -1

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self.model(xs, ys)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        step, xs, ys = batch
        preds = self.train_forward(xs, ys)
        per_position = ((preds.float() - ys.float()) ** 2).mean(dim=0)
        loss = per_position.mean()
        self._losses = torch.cat([loss.detach()[None], per_position.detach()])  # checked and logged below
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Runs after backward, before the update and before this step's checkpoint: the
        non-finite guard, then the metrics row of this step."""
        self._guard_nonfinite(optimizer)
        if (self.global_step + 1) % self.cfg.train.log_every == 0:
            self._log_row()

    def _guard_nonfinite(self, optimizer) -> None:
        finite = torch.isfinite(self._losses[0])
        # The optimiser's parameters: the model's, or the one flat tensor holding them all.
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.cfg.train.precision != "16-mixed":  # fp16 overflows are the GradScaler's: it skips them itself
            grads = [p.grad for p in params if p.grad is not None]
            if grads:  # max |g| per tensor: exact and cannot overflow, unlike a norm
                finite &= torch.isfinite(torch.stack(torch._foreach_norm(grads, float("inf")))).all()
        # Under DDP the gradients are already all-reduced, so every rank reaches the same verdict.
        if self.cfg.train.nonfinite == "skip":
            # Deciding before the update needs the flag on the host: one sync per step on an
            # accelerator, the price of the opt-in skip. Without gradients Adam leaves parameters
            # and moments untouched; the schedule and the data stream still advance.
            if not finite:
                for p in params:
                    p.grad = None
                if self.skipped_steps == 0 and self.global_rank == 0:
                    print(
                        f"icl: warning: non-finite loss or gradient at step {self.global_step}: update skipped "
                        "(train.nonfinite=skip); later skips are counted in train/skipped_steps",
                        file=sys.stderr,
                    )
                self.skipped_steps += 1
        elif self._check_on_host():  # stop before the update
            if not finite:
                raise NonFiniteError(self.global_step)
        else:
            # No per-step host sync: remember the first bad step on the device and read it at log
            # steps and before every checkpoint save, so no checkpoint ever holds a state after it.
            if self._first_bad is None:
                self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
            self._first_bad = torch.where(finite | (self._first_bad >= 0), self._first_bad, self.global_step)
            if (self.global_step + 1) % self.cfg.train.log_every == 0:
                self._raise_if_nonfinite()

    def _check_on_host(self) -> bool:
        """Read the non-finite flag every step? Free on CPU; a sync on accelerators."""
        return self.device.type == "cpu"

    def _raise_if_nonfinite(self) -> None:
        if self._first_bad is not None and (step := int(self._first_bad)) >= 0:
            raise NonFiniteError(step)

    def _log_row(self) -> None:
        # Written here, not through self.log: Lightning hands self.log values to the loggers only
        # after on_train_batch_end, i.e. after this step's checkpoint, and a kill in between would
        # lose the row on resume. Under DDP each rank holds a slice of the batch: the mean over
        # ranks describes the global batch. One .tolist() = one host sync per logged step.
        values = self.trainer.strategy.reduce(self._losses, reduce_op="mean").tolist()
        dims, points = self.sampler.curriculum.at(self.global_step)
        row = {"train/loss": values[0], **{f"train/loss@{k}": v for k, v in enumerate(values[1:])}}
        row.update({"curriculum/dims": float(dims), "curriculum/points": float(points)})
        if self.cfg.train.nonfinite == "skip":
            row["train/skipped_steps"] = float(self.skipped_steps)
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
        if tcfg.fused_optimizer:
            opt_cls = FlatAdamW if tcfg.optimizer == "adamw" else FlatAdam
        else:
            opt_cls = torch.optim.AdamW if tcfg.optimizer == "adamw" else torch.optim.Adam
        opt = opt_cls(
            self.model.parameters(),
            lr=tcfg.lr,
            betas=tuple(tcfg.betas),
            eps=tcfg.eps,
            weight_decay=tcfg.weight_decay,
            fused=tcfg.fused_optimizer or None,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tcfg.schedule, tcfg.warmup_steps))
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
        lr = t.lr * lr_factor(step, t.schedule, t.warmup_steps)
        for state in checkpoint.get("optimizer_states", []):
            for group in state["param_groups"]:
                group.update(lr=lr, initial_lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
        for sched in checkpoint.get("lr_schedulers", []):
            sched["base_lrs"] = [t.lr] * len(sched["base_lrs"])
            sched["_last_lr"] = [lr] * len(sched["base_lrs"])
