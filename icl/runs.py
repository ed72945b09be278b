"""Run directories: create or resume a run, build the Lightning Trainer (loggers, checkpoints,
progress), train, then evaluate the final model in distribution.

Layout of a run directory::

    config.yaml             the resolved config (also inside every checkpoint)
    checkpoints/            step=0001000.ckpt ... every train.checkpoint_every steps, last.ckpt
                            (written atomically: a *.ckpt.tmp is an unfinished write)
    metrics.csv             CSV log (train/loss, train/loss@k per position, curriculum/*)
    resume.log              one line per resume: step, checkpoint, config keys changed
    tensorboard/ wandb/     when those loggers are enabled
    eval/<suite>/           summary.md, <scenario>.{json,csv,png}, sweep tables (icl eval)
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # lightning 2.6 vs torch 2.13

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from icl import outputs, runstate
from icl.checkpoint.io import LAST
from icl.checkpoint.validate import resume_checkpoint
from icl.checkpoint.writer import AtomicCheckpointIO
from icl.config import Config, flatten, from_dict, load_config, save_config, to_dict
from icl.errors import DIVERGED_FILE, ICLError, NonFiniteError, WriteError
from icl.evaluation.checks import check_eval_config
from icl.evaluation.periodic import PeriodicEval
from icl.evaluation.run import evaluate_suite
from icl.fileio import TMP_SUFFIX, atomic_write
from icl.interrupts import StopOnSignal
from icl.outputs import CONFIG_FILE
from icl.progress import progress_callbacks
from icl.resources import check_resources, checkpoint_bytes
from icl.sampling import Sampler
from icl.trackers import MetricsCommit, build_loggers, close_loggers, log_suite
from icl.training.module import ICLModule
from icl.yamlio import read_yaml

RESUME_LOG = "resume.log"
# What a resumed run may not change: the model's shape, the training problem and its random
# streams. Everything else (train.*, eval.*, name, out_dir, data.num_workers) may change and is
# recorded in resume.log.
FIXED_ON_RESUME = ("seed",)
FIXED_SECTIONS_ON_RESUME = ("model.", "data.")
FREE_ON_RESUME = ("data.num_workers",)


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


def check_run_config(cfg: Config) -> None:
    """The checks of a run's config that need the registries above icl.config (baseline and
    suite names), made before a run directory is created or a step is trained."""
    check_eval_config(cfg, Sampler(cfg.data, cfg.seed).mixture)


def prepare_new_run(cfg: Config, run_dir: str | Path | None, overwrite: bool) -> Path:
    path = Path(run_dir) if run_dir else Path(cfg.out_dir) / (cfg.name or "run")
    check_run_config(cfg)  # on every rank: each one fails alike rather than wait for the others
    if secondary_rank():
        return path
    if path.exists() and not path.is_dir():
        raise ICLError(f"run directory {path} is a file; allowed: a new or existing directory")
    quiet_lightning()
    check_hardware(cfg)  # before anything is deleted or created
    check_resources(cfg)
    check_disk(cfg, path, 0)
    occupied = outputs.holds_files(path)
    if occupied and not overwrite:
        if outputs.is_run(path):
            raise ICLError(
                f"run directory {path} exists; use --resume {path} to continue it, --overwrite to replace it, "
                "or name=... for a new run"
            )
        raise ICLError(
            f"run directory {path} exists and is not an icl run directory; allowed: a new or empty path, "
            "or name=... for a new run"
        )
    outputs.check_replaceable(path, outputs.RUN, "--overwrite" if overwrite else "run directory")
    check_writable(path)  # creates a new run directory; a run that cannot be written again is not cleared
    runstate.acquire(path)  # refused while another process trains it; held until train() ends
    if occupied:
        outputs.clear_run(path)  # keeps the lock file
        check_writable(path)  # recreates checkpoints/
    outputs.mark(path, outputs.RUN)
    save_config(cfg, path / CONFIG_FILE)
    return path


def check_hardware(cfg: Config) -> None:
    """Let Lightning judge train.accelerator / devices / strategy / num_nodes / precision on this
    machine before anything is written; its refusals become one line. Spawn/fork strategies are
    refused too: the process that writes last.ckpt after fit must be the one that trained."""
    t = cfg.train
    try:
        trainer = L.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=t.strategy,
            num_nodes=t.num_nodes,
            precision=t.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, TypeError, ImportError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ICLError(
            f"train.accelerator={t.accelerator!r}, train.devices={t.devices!r}, train.strategy={t.strategy!r}: {reason}"
        ) from None
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        # Spawned or forked workers would train, but last.ckpt (written after fit) would then come from the
        # launching process, which holds neither the optimizer state nor the step count.
        raise ICLError(
            f"train.strategy: got {t.strategy!r}; allowed: auto or ddp (one process per device, started by "
            "Lightning, torchrun or SLURM), not spawn/fork-based strategies"
        )


def check_writable(run_dir: Path) -> None:
    """Create the run directory and its checkpoints/ and prove a file can be written there."""
    probe = run_dir / "checkpoints" / f".probe-{os.getpid()}"
    try:
        atomic_write(probe, b"")
        probe.unlink()
    except OSError as e:
        raise ICLError(
            f"run directory {run_dir} is not writable ({e.strerror or e}); allowed: a writable path"
        ) from None


def check_disk(cfg: Config, run_dir: Path, start_step: int) -> None:
    """Refuse to start when the checkpoints still to be written cannot fit on the disk."""
    every = cfg.train.checkpoint_every
    # periodic files still to come, plus last.ckpt and its temporary copy during a save
    n = max(0, cfg.train.steps // every - start_step // every) + 2
    need = n * checkpoint_bytes(cfg)
    existing = next(p for p in [run_dir, *run_dir.absolute().parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if need > free:
        raise ICLError(
            f"not enough free disk for {n} checkpoints under {run_dir}: need about {need / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB free; allowed: free space, or raise train.checkpoint_every"
        )


def resume_changes(saved: dict[str, Any], cfg: Config, run_dir: Path) -> list[str]:
    """The config keys a resume changes (``key old -> new``); refuses changes to the fixed ones."""
    old, new = flatten(to_dict(from_dict(saved))), flatten(to_dict(cfg))
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    diffs = {k: f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed}
    fixed = [
        k
        for k in changed
        if (k in FIXED_ON_RESUME or k.startswith(FIXED_SECTIONS_ON_RESUME)) and k not in FREE_ON_RESUME
    ]
    if fixed:
        raise ICLError(
            f"--resume {run_dir}: {'; '.join(diffs[k] for k in fixed)} differs from the checkpoint; allowed to "
            "change on resume: train.*, eval.*, name, data.num_workers (start a new run for another model or data)"
        )
    return [diffs[k] for k in changed]


def record_resume(cfg: Config, run_dir: Path, ckpt_path: Path, step: int, changes: list[str]) -> None:
    """What a resume writes before training: the stale temporary files of a save cut short by a
    kill removed (the files they were replacing are intact), the run's new config, a line in
    resume.log."""
    for stale in (run_dir / "checkpoints").glob("*" + TMP_SUFFIX):
        stale.unlink()
    save_config(cfg, run_dir / CONFIG_FILE)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} resumed at step {step} from {ckpt_path.name}; " + (
        "changed: " + "; ".join(changes) if changes else "no config changes"
    )
    with (run_dir / RESUME_LOG).open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_run_config(run_dir: str | Path, overrides: list[str]) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ICLError(f"--resume {run_dir}: not a run directory (no {CONFIG_FILE})")
    cfg = load_config([path], overrides)
    if not any(item.startswith("name=") for item in overrides):
        # load_config names an unnamed run after its last YAML file, here "config"; keep the run's own name
        cfg.name = str(read_yaml(path).get("name") or "")
    return cfg


def train(cfg: Config, run_dir: Path, resume: bool = False, evaluate: bool = True) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir``; return the final evaluation records."""
    quiet_lightning()
    ckpt_path = resume_step = keep_rows = seen = None
    changes: list[str] = []
    if resume:
        check_run_config(cfg)  # a new run's were checked by prepare_new_run
        ckpt_path, ckpt = resume_checkpoint(run_dir)
        seen = _checkpoint_files(run_dir)
        resume_step = int(ckpt["global_step"])
        if resume_step >= cfg.train.steps:
            raise ICLError(
                f"--resume {run_dir}: already trained {resume_step} steps; "
                f"raise train.steps (now {cfg.train.steps}) to continue"
            )
        changes = resume_changes(ckpt["icl_config"], cfg, run_dir)
        keep_rows = ckpt.get("icl_metrics_rows")
        del ckpt  # fit() reads the file again
    check_hardware(cfg)
    if secondary_rank():
        return _fit(cfg, run_dir, ckpt_path, resume_step, keep_rows, changes, evaluate)
    check_resources(cfg)
    check_writable(run_dir)
    check_disk(cfg, run_dir, resume_step or 0)
    with runstate.locked(run_dir):  # every check above only read; from here on this process writes
        if resume and _checkpoint_files(run_dir) != seen:
            raise ICLError(
                f"--resume {run_dir}: its checkpoints changed while this resume started (another process wrote "
                "them); allowed: run the command again"
            )
        return _fit(cfg, run_dir, ckpt_path, resume_step, keep_rows, changes, evaluate)


def _checkpoint_files(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime) of the run's checkpoints: a cheap witness that none changed."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (run_dir / "checkpoints").glob("*.ckpt")}


def _fit(cfg, run_dir, ckpt_path, resume_step, keep_rows, changes, evaluate) -> dict[str, Any]:
    config = to_dict(cfg)
    tcfg = cfg.train
    module = ICLModule(config)
    last = run_dir / "checkpoints" / LAST
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step={step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=tcfg.checkpoint_every,
        save_top_k=-1,
        save_last=True,
    )
    stop = StopOnSignal(last, run_dir)
    callbacks: list[Any] = [stop, checkpoints, MetricsCommit()]
    if cfg.eval.every:
        callbacks.append(PeriodicEval(cfg))
    progress, bar = progress_callbacks(tcfg.progress_bar, tcfg.log_every)
    callbacks += progress
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
        logger=build_loggers(tcfg, run_dir, cfg.name or run_dir.name, config, resume_step, keep_rows) or False,
        plugins=[AtomicCheckpointIO()],
        callbacks=callbacks,
        enable_progress_bar=bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    if not secondary_rank():
        if ckpt_path is not None:
            record_resume(cfg, run_dir, ckpt_path, resume_step, changes)
            runstate.expect_existing_checkpoints()
        print(f"run directory: {run_dir}", file=sys.stderr)  # after every check: bad input stays one line
    marker = run_dir / DIVERGED_FILE
    if not secondary_rank():
        marker.unlink(missing_ok=True)  # a resume (e.g. with train.nonfinite=skip) tries again
    try:
        with stop.installed():
            trainer.fit(module, ckpt_path=str(ckpt_path) if ckpt_path else None)
            trainer.save_checkpoint(last)
    except NonFiniteError as e:
        if e.step is not None and runstate.newest_checkpoint(run_dir) is None:
            e = NonFiniteError(e.step, checkpointed=False)
        if not secondary_rank():
            atomic_write(marker, f"{e}\n")  # `icl sweep` does not retry a diverged point
        raise e from None
    except OSError as e:
        raise WriteError(
            f"{e.filename or run_dir}: {e.strerror or e}; training stopped at step {trainer.global_step} and "
            f"every checkpoint already in {run_dir / 'checkpoints'} is intact (free space or fix the permission, "
            f"then `icl train --resume {run_dir}`)"
        ) from None
    if module.skipped_steps and not secondary_rank():
        print(
            f"icl: warning: train.nonfinite=skip skipped {module.skipped_steps} of {trainer.global_step} steps "
            "(non-finite loss or gradient; train/skipped_steps in metrics.csv)",
            file=sys.stderr,
        )
    if trainer.global_rank != 0:
        return {}
    records = {}
    if evaluate:
        out = run_dir / "eval" / "in_distribution"
        records = evaluate_suite(module.model, cfg, "in_distribution", out)
        log_suite(trainer.loggers, records, trainer.global_step, out, "in_distribution")  # curves, figures
    close_loggers(trainer.loggers)  # the wandb run ends complete on disk
    return records
