"""Train several run directories as one ensemble: the checks a solo run makes, for every member;
one Lightning fit of the EnsembleModule; every member's checkpoints, metrics, resume log and
final evaluation in its own run directory (icl/runs.py does the same for one run)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from icl import runs, runstate
from icl.checkpoint.io import LAST, read_checkpoint
from icl.checkpoint.validate import check_resumable
from icl.config import Config, to_dict
from icl.ensemble.checkpoints import MemberCheckpointIO, common_step
from icl.ensemble.grouping import differences, solo_only
from icl.ensemble.module import EnsembleModule
from icl.errors import DIVERGED_FILE, ICLError, NonFiniteError, WriteError
from icl.evaluation.periodic import PeriodicEval
from icl.evaluation.run import evaluate_suite
from icl.fileio import atomic_write
from icl.interrupts import StopOnSignal
from icl.progress import progress_callbacks
from icl.resources import check_resources
from icl.runstate import checkpoint_steps
from icl.trackers import build_loggers, close_loggers, log_suite


class MembersPeriodicEval(Callback):
    """PeriodicEval for every member that has not diverged, logged to the member's own loggers."""

    def __init__(self, cfgs: list[Config]) -> None:
        self.evals = [PeriodicEval(cfg) for cfg in cfgs]
        self.every = cfgs[0].eval.every

    def on_train_batch_end(self, trainer, module: EnsembleModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every:
            return
        for m, ev in enumerate(self.evals):
            if m not in module.diverged:
                ev.log_curves(module.member_loggers[m], module.model.member(m), module.device, step)


def check_members(cfgs: list[Config]) -> None:
    """Refuse configs that cannot train as one ensemble, naming the first reason."""
    for cfg in cfgs:
        reason = solo_only(cfg)
        if reason:
            raise ICLError(f"ensemble member {cfg.name}: {reason}; allowed: train it alone (--ensemble off)")
    diff = differences(cfgs)
    if diff:
        raise ICLError(
            f"ensemble members differ in {', '.join(diff[:5])}; allowed to differ: seed, data.mixture, data.inputs, "
            "train.lr / schedule / warmup_steps / weight_decay / grad_clip, loggers, eval (but eval.every)"
        )


def train_ensemble(
    cfgs: list[Config], run_dirs: list[Path], evaluate: bool = True, resume_hint: str | None = None
) -> dict[Path, str]:
    """Train (or continue) the runs ``run_dirs`` (prepared new runs, or partial ones with a
    checkpoint at one common step) as one ensemble; returns each run's outcome, ``trained`` or
    ``diverged``. ``resume_hint``: the command that continues them, for the line a signal prints."""
    runs.quiet_lightning()
    run_dirs = [Path(d) for d in run_dirs]
    check_members(cfgs)
    for cfg in cfgs:
        runs.check_run_config(cfg)
    with contextlib.ExitStack() as held:
        for d in run_dirs:  # held until training and evaluation end
            held.enter_context(runstate.locked(d))
        started = [bool(checkpoint_steps(d)) for d in run_dirs]
        start, resume_from, changes, keep_rows = None, None, [[] for _ in cfgs], [None for _ in cfgs]
        if any(started):
            start = common_step(run_dirs)
            if start is None or not all(started):
                raise ICLError(
                    f"ensemble of {', '.join(d.name for d in run_dirs)}: no checkpoint step common to all; "
                    "allowed: new runs, or runs stopped together (train them alone with --ensemble off)"
                )
            resume_from = [checkpoint_steps(d)[start] for d in run_dirs]
            for m, (cfg, d, path) in enumerate(zip(cfgs, run_dirs, resume_from, strict=True)):
                try:
                    ckpt = read_checkpoint(path)
                    check_resumable(ckpt, path)
                except ICLError as e:
                    raise ICLError(f"--resume {d}: {e}") from None
                if start >= cfg.train.steps:
                    raise ICLError(f"--resume {d}: already trained {start} steps; raise train.steps to continue")
                changes[m] = runs.resume_changes(ckpt["icl_config"], cfg, d)
                keep_rows[m] = ckpt.get("icl_metrics_rows")
        runs.check_hardware(dataclasses.replace(cfgs[0], train=dataclasses.replace(cfgs[0].train, devices=1)))
        check_resources(cfgs[0], processes=len(cfgs))
        for cfg, d in zip(cfgs, run_dirs, strict=True):
            runs.check_writable(d)
            runs.check_disk(cfg, d, start or 0)
        return _fit(cfgs, run_dirs, start, resume_from, changes, keep_rows, evaluate, resume_hint)


def _fit(cfgs, run_dirs, start, resume_from, changes, keep_rows, evaluate, resume_hint) -> dict[Path, str]:
    configs = [to_dict(cfg) for cfg in cfgs]
    t = cfgs[0].train
    module = EnsembleModule(configs)
    for m, (cfg, d) in enumerate(zip(cfgs, run_dirs, strict=True)):
        module.member_loggers[m] = build_loggers(cfg.train, d, cfg.name or d.name, configs[m], start, keep_rows[m])
    module.on_diverged = lambda m, step: _mark_diverged(run_dirs[m], cfgs[m], step)
    ckpt_dirs = [d / "checkpoints" for d in run_dirs]
    checkpoints = ModelCheckpoint(
        dirpath=ckpt_dirs[0],  # names the files; MemberCheckpointIO writes them in every member's directory
        filename="step={step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=t.checkpoint_every,
        save_top_k=-1,
        save_last=True,
        enable_version_counter=False,
    )
    stop = StopOnSignal(ckpt_dirs[0] / LAST, run_dirs[0], resume_hint)
    callbacks: list[Any] = [stop, checkpoints]
    if cfgs[0].eval.every:
        callbacks.append(MembersPeriodicEval(cfgs))
    progress, bar = progress_callbacks(t.progress_bar, t.log_every)
    callbacks += progress
    trainer = L.Trainer(
        max_steps=t.steps,
        max_epochs=-1,
        accelerator=t.accelerator,
        devices=1,
        precision=t.precision,
        log_every_n_steps=t.log_every,
        logger=False,
        plugins=[MemberCheckpointIO(run_dirs, resume_from)],
        callbacks=callbacks,
        enable_progress_bar=bar,
        enable_model_summary=False,
        default_root_dir=str(run_dirs[0]),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    for m, (cfg, d) in enumerate(zip(cfgs, run_dirs, strict=True)):
        if resume_from is not None:
            runs.record_resume(cfg, d, resume_from[m], start, changes[m])
        (d / DIVERGED_FILE).unlink(missing_ok=True)
    names = ", ".join(d.name for d in run_dirs)
    print(f"ensemble of {len(run_dirs)} runs in {run_dirs[0].parent}: {names}", file=sys.stderr)
    finished = False
    try:
        with stop.installed():
            trainer.fit(module, ckpt_path=str(resume_from[0]) if resume_from else None)
            trainer.save_checkpoint(ckpt_dirs[0] / LAST)
        finished = True
    except NonFiniteError:
        finished = True  # every member diverged; each one's marker is written
    except OSError as e:
        raise WriteError(
            f"{e.filename or run_dirs[0]}: {e.strerror or e}; training stopped at step {trainer.global_step} and "
            "every checkpoint already written is intact (free space or fix the permission, then run the sweep again)"
        ) from None
    finally:
        if not finished:  # the members' runs share this process: end each one
            for loggers in module.member_loggers:
                close_loggers(loggers)
    outcome = {}
    for m, (cfg, d) in enumerate(zip(cfgs, run_dirs, strict=True)):
        loggers = module.member_loggers[m]
        if m in module.diverged:
            outcome[d] = "diverged"
            close_loggers(loggers)
            continue
        if module.skipped_steps[m]:
            print(
                f"icl: warning: {cfg.name}: train.nonfinite=skip skipped {module.skipped_steps[m]} of "
                f"{trainer.global_step} steps (train/skipped_steps in metrics.csv)",
                file=sys.stderr,
            )
        if evaluate:
            out = d / "eval" / "in_distribution"
            records = evaluate_suite(module.model.member(m).eval(), cfg, "in_distribution", out)
            log_suite(loggers, records, trainer.global_step, out, "in_distribution")  # curves, figures
        close_loggers(loggers)  # each member's wandb run ends complete on disk
        outcome[d] = "trained"
    return outcome


def _mark_diverged(run_dir: Path, cfg: Config, step: int) -> None:
    """What a solo run's non-finite stop leaves: the marker `icl sweep` does not retry, one line."""
    e = NonFiniteError(step, checkpointed=runstate.newest_checkpoint(run_dir) is not None)
    atomic_write(run_dir / DIVERGED_FILE, f"{e}\n")
    print(f"icl: {cfg.name or run_dir.name}: {e}", file=sys.stderr)
