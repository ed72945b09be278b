"""Experiment trackers: a resumable CSV log in the run directory (default), TensorBoard and
wandb (online, offline or disabled; never prompts for a login)."""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from icl.config import flatten
from icl.errors import ICLError
from icl.fileio import atomic_write


class CSVMetrics(Logger):
    """Wide CSV (one row per ``log_metrics`` call) at ``run_dir/metrics.csv``, appended as rows
    arrive.

    Unlike Lightning's CSVLogger it never deletes the file of a run being resumed (from step
    ``resume_step``): it keeps the first ``keep_rows`` rows, the ones logged before the checkpoint
    (MetricsCommit stores that count in every checkpoint; older checkpoints lack it, and then the
    rows before ``resume_step`` are kept), and drops the rest, which the resumed run logs again.
    A resumed run's file therefore equals an uninterrupted run's, byte for byte.

    Columns: ``step``, then the metric names in natural order (``train/loss@2`` before
    ``train/loss@10``), a function of the set of names alone, whatever order they arrive in.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, keep_rows: int | None = None) -> None:
        super().__init__()
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = ["step"]
        if resume_step is not None and self.path.is_file():
            text = self.path.read_text()
            lines = text.splitlines(keepends=True)
            if lines and not lines[-1].endswith("\n"):
                lines.pop()  # a row cut short by a kill
            reader = csv.DictReader(lines)
            self.keys = _column_order(reader.fieldnames or ["step"])
            if keep_rows is None:
                self.rows = [r for r in reader if int(r["step"]) < resume_step]
            else:
                self.rows = list(itertools.islice(reader, keep_rows))
            self._rewrite()
        elif self.path.exists():
            self.path.unlink()

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The resolved config is written to config.yaml by the run; nothing to do here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Lightning adds "epoch", which is meaningless for an endless step-indexed stream.
        row = {"step": step, **{k: float(v) for k, v in metrics.items() if k != "epoch"}}
        self.rows.append(row)
        new = set(row) - set(self.keys)
        if new or not self.path.is_file():
            self.keys = _column_order([*self.keys, *new])
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)

    @rank_zero_only
    def save(self) -> None:
        """Make the rows logged so far durable (called before every checkpoint is written)."""
        if self.path.is_file():
            with self.path.open("rb+") as f:
                os.fsync(f.fileno())

    def _rewrite(self) -> None:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=self.keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, buf.getvalue())


def _natural_key(name: str) -> tuple:
    # re.split with a group alternates text and digit runs, so equal positions compare like types;
    # the name itself breaks ties ("@02" vs "@2"), so the order never depends on set iteration.
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))), name


def _column_order(keys) -> list[str]:
    """``step`` first, then the other names in natural order (digit runs compared as numbers)."""
    return ["step", *sorted(set(keys) - {"step"}, key=_natural_key)]


class MetricsCommit(Callback):
    """Before every checkpoint is written: flush every logger and record in the checkpoint how
    many metrics.csv rows precede it (``icl_metrics_rows``), so a resumed run keeps exactly those."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            logger.save()
            if isinstance(logger, CSVMetrics):
                checkpoint["icl_metrics_rows"] = logger.n_rows


def build_loggers(
    train_cfg, run_dir: Path, run_name: str, config: dict, resume_step: int | None, keep_rows: int | None = None
) -> list[Logger]:
    """The configured loggers; on resume (``resume_step``) metrics.csv keeps its first ``keep_rows`` rows."""
    loggers: list[Logger] = []
    for kind in dict.fromkeys(train_cfg.loggers):
        if kind == "csv":
            loggers.append(CSVMetrics(run_dir, resume_step, keep_rows))
        elif kind == "tensorboard":
            # no placeholder hp_metric = -1 beside the config
            tb = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
            # The resolved config, under TensorBoard's HPARAMS tab, which takes scalars and strings only.
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(config).items()}
            tb.log_hyperparams(hparams)
            loggers.append(tb)
        elif kind == "wandb" and train_cfg.wandb.mode != "disabled":
            loggers.append(_wandb_logger(train_cfg.wandb, run_dir, run_name, config))
    return loggers


def _wandb_logger(wcfg, run_dir: Path, run_name: str, config: dict) -> Logger:
    os.environ.setdefault("WANDB_SILENT", "true")
    if wcfg.mode == "online" and not os.environ.get("WANDB_API_KEY"):
        import wandb

        if not wandb.login(prompt=False, verify=False):  # looks for a stored key; never prompts
            raise ICLError(
                "train.wandb.mode=online needs a wandb API key (WANDB_API_KEY or `wandb login`); "
                "allowed without one: offline, disabled"
            )
    from lightning.pytorch.loggers import WandbLogger

    # The run id is stored in the run directory, so a resumed run continues the same wandb run.
    id_file = run_dir / "wandb_id"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:8]
        atomic_write(id_file, run_id)
    logger = WandbLogger(
        name=run_name,
        project=wcfg.project,
        entity=wcfg.entity,
        group=wcfg.group,
        tags=list(wcfg.tags),
        save_dir=str(run_dir),
        mode=wcfg.mode,
        id=run_id,
        resume="allow",
        config=config,
        reinit="create_new",  # an ensemble's members are runs of one process, each its own
    )
    # Lightning passes anonymous=None, which wandb answers with a deprecation warning on every run
    logger._wandb_init.pop("anonymous", None)
    return logger
