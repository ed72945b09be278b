"""Experiment trackers: a resumable CSV log in the run directory (default), TensorBoard and
wandb (online, offline or disabled; never prompts for a login)."""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from icl.errors import ICLError


class CSVMetrics(Logger):
    """Wide CSV (one row per logged step) at ``run_dir/metrics.csv``.

    Unlike Lightning's CSVLogger it never deletes an existing file: on resume from step s it
    keeps the rows logged before s and drops later ones (they are logged again by the resumed
    run), so a resumed run's file equals an uninterrupted run's.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        super().__init__()
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = ["step"]
        self.pending: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.keys = list(reader.fieldnames or ["step"])
                self.rows = [r for r in reader if int(r["step"]) < resume_step]
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

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The resolved config is written to config.yaml by the run; nothing to do here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Lightning adds "epoch", which is meaningless for an endless step-indexed stream.
        row = {"step": step, **{k: float(v) for k, v in metrics.items() if k != "epoch"}}
        if self.pending and self.pending[-1]["step"] == step:
            self.pending[-1].update(row)
        else:
            self.pending.append(row)

    @rank_zero_only
    def save(self) -> None:
        if not self.pending:
            return
        new = sorted({k for r in self.pending for k in r} - set(self.keys))
        self.rows.extend(self.pending)
        if new:
            self.keys.extend(new)
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerows(self.pending)
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def build_loggers(train_cfg, run_dir: Path, run_name: str, config: dict, resume_step: int | None) -> list[Logger]:
    loggers: list[Logger] = []
    for kind in dict.fromkeys(train_cfg.loggers):
        if kind == "csv":
            loggers.append(CSVMetrics(run_dir, resume_step))
        elif kind == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
        elif kind == "wandb" and train_cfg.wandb.mode != "disabled":
            loggers.append(_wandb_logger(train_cfg.wandb, run_dir, run_name, config))
    return loggers


def _wandb_logger(wcfg, run_dir: Path, run_name: str, config: dict) -> Logger:
    os.environ.setdefault("WANDB_SILENT", "true")
    if wcfg.mode == "online" and not os.environ.get("WANDB_API_KEY"):
        import wandb

        if not wandb.api.api_key:
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
        id_file.write_text(run_id)
    return WandbLogger(
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
    )
