"""Run directories: create or resume a run, build the Lightning Trainer (loggers, checkpoints,
progress), train, then evaluate the final model in distribution.

Layout of a run directory::

    config.yaml             the resolved config (also inside every checkpoint)
    checkpoints/            step=0001000.ckpt ... every train.checkpoint_every steps, last.ckpt
    metrics.csv             CSV log (train/loss, train/loss@k per position, curriculum/*)
    tensorboard/ wandb/     when those loggers are enabled
    eval/<suite>/           summary.md, <scenario>.{json,csv,png}, sweep tables (icl eval)
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # lightning 2.6 vs torch 2.13

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only

from icl.checkpoint import read_checkpoint
from icl.config import Config, load_config, save_config, to_dict
from icl.errors import ICLError
from icl.evaluation.run import PeriodicEval, evaluate_suite
from icl.trackers import build_loggers
from icl.training import ICLModule

CONFIG_FILE = "config.yaml"


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*IterableDataset.*__len__.*")


def secondary_rank() -> bool:
    """True in the non-zero ranks of a multi-process launch (Lightning's DDP launcher re-runs the
    command line; torchrun and SLURM start every rank): they train but leave the run directory,
    its config and results to rank 0."""
    return (rank_zero_only.rank or 0) > 0


def prepare_new_run(cfg: Config, run_dir: str | Path | None, overwrite: bool) -> Path:
    path = Path(run_dir) if run_dir else Path(cfg.out_dir) / (cfg.name or "run")
    if secondary_rank():
        return path
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ICLError(
                f"run directory {path} exists; use --resume {path} to continue it, --overwrite to replace it, "
                "or name=... for a new run"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / CONFIG_FILE)
    return path


def load_run_config(run_dir: str | Path, overrides: list[str]) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ICLError(f"--resume {run_dir}: not a run directory (no {CONFIG_FILE})")
    return load_config([path], overrides)


def train(cfg: Config, run_dir: Path, resume: bool = False, evaluate: bool = True) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir``; return the final evaluation records."""
    quiet_lightning()
    ckpt_path = None
    resume_step = None
    if resume:
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        ckpt = read_checkpoint(ckpt_path)
        resume_step = int(ckpt["global_step"])
        if resume_step >= cfg.train.steps:
            raise ICLError(
                f"--resume {run_dir}: already trained {resume_step} steps; "
                f"raise train.steps (now {cfg.train.steps}) to continue"
            )
        if not secondary_rank():
            save_config(cfg, run_dir / CONFIG_FILE)
    config = to_dict(cfg)
    tcfg = cfg.train
    module = ICLModule(config)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step={step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=tcfg.checkpoint_every,
        save_top_k=-1,
        save_last=True,
    )
    callbacks: list[Any] = [checkpoints]
    if cfg.eval.every:
        callbacks.append(PeriodicEval(cfg))
    if tcfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, min(50, tcfg.log_every))))
    trainer = L.Trainer(
        max_steps=tcfg.steps,
        max_epochs=-1,
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        strategy=tcfg.strategy,
        num_nodes=tcfg.num_nodes,
        precision=tcfg.precision,
        gradient_clip_val=tcfg.grad_clip or None,
        log_every_n_steps=tcfg.log_every,
        logger=build_loggers(tcfg, run_dir, cfg.name or run_dir.name, config, resume_step) or False,
        callbacks=callbacks,
        enable_progress_bar=tcfg.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        # Spawned or forked workers would train, but last.ckpt below would then be written by the
        # launching process, which holds neither the optimizer state nor the step count.
        raise ICLError(
            f"train.strategy: got {tcfg.strategy!r}; allowed: auto or ddp (one process per device, started by "
            "Lightning, torchrun or SLURM), not spawn/fork-based strategies"
        )
    trainer.fit(module, ckpt_path=str(ckpt_path) if ckpt_path else None)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    if not evaluate or trainer.global_rank != 0:
        return {}
    return evaluate_suite(module.model, cfg, "in_distribution", run_dir / "eval" / "in_distribution")
