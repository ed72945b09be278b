"""The training section of the config (TrainConfig, WandbConfig, the allowed option values) and
the learning-rate schedule it names. Imports nothing from Lightning."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from icl.errors import ICLError
from icl.tasks import mixture_metric

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "warmup_rsqrt", "warmup_cosine")
LOGGERS = ("csv", "tensorboard", "wandb")
WANDB_MODES = ("offline", "online", "disabled")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")
NONFINITE = ("stop", "skip")
SAMPLING = ("auto", "loader", "device")
LOSSES = ("squared", "logistic")  # icl/training/loss.py computes each


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
    # warmup_cosine: linear warm-up, then a cosine from lr down to lr * final_lr_fraction at
    # train.steps.
    schedule: str = "constant"
    warmup_steps: int = 0
    final_lr_fraction: float = 0.0  # warmup_cosine: the lr at train.steps, as a fraction of lr
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
    # squared: (pred - y)^2 at every prefix. logistic: softplus(-y pred), for +-1 labels only: every
    # class of the mixture a classification class (metric zero_one, e.g. linear_classification)
    # without label noise. Paper 2's code trains linear classification with logistic.
    loss: str = "squared"

    def lr_factor(self, step: int) -> float:
        """This config's multiplier of train.lr at optimiser step ``step`` (0-based)."""
        return lr_factor(step, self.schedule, self.warmup_steps, self.steps, self.final_lr_fraction)

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
        if not 0 <= self.final_lr_fraction <= 1:
            raise ICLError(f"train.final_lr_fraction: got {self.final_lr_fraction}; allowed: a number in [0, 1]")
        if self.schedule == "warmup_cosine" and self.warmup_steps >= self.steps:
            raise ICLError(
                f"train.warmup_steps: got {self.warmup_steps}; allowed: fewer than train.steps ({self.steps}) with "
                "schedule warmup_cosine"
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
        if self.loss not in LOSSES:
            raise ICLError(f"train.loss: got {self.loss!r}; allowed: {', '.join(LOSSES)}")
        if self.sampling not in SAMPLING:
            raise ICLError(f"train.sampling: got {self.sampling!r}; allowed: {', '.join(SAMPLING)}")
        if self.wandb.mode not in WANDB_MODES:
            raise ICLError(f"train.wandb.mode: got {self.wandb.mode!r}; allowed: {', '.join(WANDB_MODES)}")

    def check_mixture(self, mixture: Any) -> None:
        """``train.loss`` against the training mixture (a PretrainMixture): logistic needs +-1
        labels, so every component of positive weight must be a classification class (metric
        zero_one) without label noise."""
        if self.loss != "logistic":
            return
        bad = [
            c.label
            for c in mixture.components
            if c.weight > 0 and (mixture_metric([c.task]) != "zero_one" or c.noise_std > 0)
        ]
        if bad:
            raise ICLError(
                f"train.loss: got 'logistic' with data.mixture component(s) {', '.join(bad)}; allowed: logistic only "
                "where every component is a classification class (+-1 labels, e.g. linear_classification) without "
                "noise_std, else squared"
            )


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int = 0, final_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based); ``total_steps``
    and ``final_fraction`` shape warmup_cosine's decay (train.steps, train.final_lr_fraction)."""
    s = step + 1
    warm = min(1.0, s / warmup_steps) if warmup_steps > 0 else 1.0
    if s <= warmup_steps or schedule == "constant":
        return warm
    if schedule == "warmup_rsqrt":
        return math.sqrt(warmup_steps / s)
    progress = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))  # warmup_cosine
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
