"""Experiment trackers: a resumable CSV log in the run directory (default), TensorBoard and
wandb (online, offline or disabled; never prompts for a login); what each one receives from an
evaluation (error curves, figures), and attaching a later evaluation to a run's trackers.
docs/tracking.md lists every key."""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from icl.config import Config, flatten, load_config, to_dict
from icl.errors import ICLError
from icl.fileio import atomic_write
from icl.outputs import CONFIG_FILE
from icl.yamlio import read_yaml

# Wall-clock rates: sent to TensorBoard and wandb, never to metrics.csv, which is a function of the
# run's config and checkpoints alone (a resumed run's file equals an uninterrupted run's).
WALL_CLOCK = ("train/steps_per_s",)

Curves = dict[str, dict[str, list[float]]]  # scenario -> predictor -> mean error at k = 0..n-1


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
    Wall-clock rates (``WALL_CLOCK``) are left out.
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
        row = {"step": step, **{k: float(v) for k, v in metrics.items() if k != "epoch" and k not in WALL_CLOCK}}
        self.rows.append(row)
        new = set(row) - set(self.keys)
        if new or not self.path.is_file():
            self.keys = _column_order([*self.keys, *new])
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)

    @rank_zero_only
    def log_evaluation(
        self, curves: Curves, step: int, metric: str | dict[str, str], figures: dict[str, Path], during_training: bool
    ) -> None:
        """A periodic evaluation's errors at every k: S scenarios x P predictors x N points columns
        (e.g. 3 x 2 x 40 = 240 for paper 1's dense + sparse mixture), which the training rows leave
        empty; docs/tracking.md. An evaluation after training is not added: its curves are in
        eval/<suite>/<scenario>.csv, and metrics.csv stays what training logged (exact on resume)."""
        if during_training:
            self.log_metrics(curve_metrics(curves, metric), step)

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


def metric_name(metric: str | dict[str, str], scenario: str) -> str:
    """The name of ``scenario``'s error: ``metric`` itself, or its entry where ``metric`` maps
    scenarios to names (a suite mixing regression and classification scenarios)."""
    return metric if isinstance(metric, str) else metric.get(scenario, "mse")


def curve_metrics(curves: Curves, metric: str | dict[str, str] = "mse") -> dict[str, float]:
    """``eval/<scenario>/<predictor>/<metric>@<k>`` for every k of every curve."""
    return {
        f"eval/{sc}/{pred}/{metric_name(metric, sc)}@{k}": float(v)
        for sc, by_pred in curves.items()
        for pred, mean in by_pred.items()
        for k, v in enumerate(mean)
    }


def suite_curves(records: dict[str, Any]) -> Curves:
    """The mean curves of an evaluation's records ({scenario: JSON record}, icl.evaluation.run)."""
    return {name: {pred: list(stats["mean"]) for pred, stats in rec["curves"].items()} for name, rec in records.items()}


def suite_figures(out_dir: Path, suite: str) -> dict[str, Path]:
    """``figures/<suite>/<file stem>`` -> PNG for every figure an evaluation wrote to ``out_dir``."""
    return {f"figures/{suite}/{p.stem}": p for p in sorted(Path(out_dir).glob("*.png"))}


def log_evaluation(
    loggers: list[Logger],
    curves: Curves,
    step: int,
    *,
    metric: str | dict[str, str] = "mse",
    figures: dict[str, Path] | None = None,
    during_training: bool = True,
) -> None:
    """Send an evaluation to every logger: the error at every k as scalars
    ``eval/<scenario>/<predictor>/<metric>@<k>`` (metrics.csv: only ``during_training``), a line
    plot per scenario (wandb) and ``figures`` (tag -> PNG) as images (TensorBoard, wandb).
    ``metric``: mse, mse_over_d for paper 2's convention, zero_one for classification, or a mapping
    scenario -> one of those."""
    for lg in loggers:
        lg.log_evaluation(curves, step, metric, figures or {}, during_training)


def log_suite(loggers: list[Logger], records: dict[str, Any], step: int, out_dir: Path, suite: str) -> None:
    """``log_evaluation`` of a finished evaluation (``evaluate_suite``'s records and output directory)
    with its figures, at the model's training step."""
    metric = {name: _record_metric(rec) for name, rec in records.items()}
    figures = suite_figures(out_dir, suite)
    log_evaluation(loggers, suite_curves(records), step, metric=metric, figures=figures, during_training=False)


def _record_metric(record: dict[str, Any]) -> str:
    """What a record's curves measure: its metric where it is not mse (zero_one), else its
    convention (mse or mse_over_d)."""
    metric = record.get("metric", "mse")
    return record["convention"] if metric == "mse" else metric


def close_loggers(loggers: list[Logger]) -> None:
    """Flush and close every logger and end its wandb run (a finished run is complete on disk)."""
    for lg in loggers:
        lg.finalize("success")
        if isinstance(lg, WandbLogger) and lg._experiment is not None:
            lg.experiment.finish()


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
            tb = _tensorboard_logger(run_dir)
            # The resolved config, under TensorBoard's HPARAMS tab, which takes scalars and strings only.
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(config).items()}
            tb.log_hyperparams(hparams)
            loggers.append(tb)
        elif kind == "wandb" and train_cfg.wandb.mode != "disabled":
            loggers.append(_wandb_logger(train_cfg.wandb, run_dir, run_name, config))
    return loggers


class Tensorboard(TensorBoardLogger):
    """Lightning's TensorBoard logger, with evaluations: scalars per k and figures as images."""

    @property
    def label(self) -> str:
        return f"tensorboard ({self.log_dir})"

    @rank_zero_only
    def log_evaluation(
        self, curves: Curves, step: int, metric: str | dict[str, str], figures: dict[str, Path], during_training: bool
    ) -> None:
        self.log_metrics(curve_metrics(curves, metric), step)
        for tag, path in figures.items():
            self.experiment.add_image(tag, _read_png(path), step, dataformats="HWC")
        self.experiment.flush()


def _read_png(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))  # (H, W, 3) uint8


def _tensorboard_logger(run_dir: Path, version: str = "") -> Tensorboard:
    # no placeholder hp_metric = -1 beside the config
    return Tensorboard(save_dir=str(run_dir), name="tensorboard", version=version, default_hp_metric=False)


class Wandb(WandbLogger):
    """Lightning's wandb logger, with evaluations: scalars per k, a line plot of error vs k per
    scenario (``eval/<scenario>/curves``, one line per predictor; its data is the table
    ``eval/<scenario>/curves_table``) and figures as images, all in one history row."""

    @property
    def label(self) -> str:
        return f"wandb ({self._wandb_init['mode']} run {self._wandb_init['id']})"

    @rank_zero_only
    def log_evaluation(
        self, curves: Curves, step: int, metric: str | dict[str, str], figures: dict[str, Path], during_training: bool
    ) -> None:
        import wandb

        row: dict[str, Any] = {**curve_metrics(curves, metric), "trainer/global_step": step}
        for sc, by_pred in curves.items():
            preds = list(by_pred)
            row[f"eval/{sc}/curves"] = wandb.plot.line_series(
                xs=list(range(len(by_pred[preds[0]]))),
                ys=[by_pred[p] for p in preds],
                keys=preds,
                title=f"{sc}: {metric_name(metric, sc)} vs k (step {step})",
                xname="k",
            )
        row.update({tag: wandb.Image(str(path)) for tag, path in figures.items()})
        self.experiment.log(row)


def _wandb_logger(wcfg, run_dir: Path, run_name: str, config: dict) -> Logger:
    os.environ.setdefault("WANDB_SILENT", "true")
    if wcfg.mode == "online" and not os.environ.get("WANDB_API_KEY"):
        import wandb

        if not wandb.login(prompt=False, verify=False):  # looks for a stored key; never prompts
            raise ICLError(
                "train.wandb.mode=online needs a wandb API key (WANDB_API_KEY or `wandb login`); "
                "allowed without one: offline, disabled"
            )
    # The run id is stored in the run directory, so a resumed run continues the same wandb run.
    id_file = run_dir / "wandb_id"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:8]
        atomic_write(id_file, run_id)
    logger = Wandb(
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


def run_trackers(run_dir: Path, step: int) -> list[Logger]:
    """The TensorBoard and wandb loggers of the run in ``run_dir`` (its config.yaml), to attach a
    later evaluation of its checkpoint of step ``step`` to. TensorBoard writes to
    RUN_DIR/tensorboard/eval/step=<step>/, a run of its own beside the training's: TensorBoard
    drops a tag's later points when an event file goes back to an earlier step (its restart
    handling), which the evaluation of an earlier checkpoint would do. wandb resumes the run whose
    id RUN_DIR/wandb_id holds, in the run's train.wandb.mode (offline: no network). Prints one line
    for each tracker left out (wandb disabled) or when there is none."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ICLError(
            f"--log-to-run: {run_dir} is not a run directory (no {CONFIG_FILE}); allowed: a run or a checkpoint in one"
        )
    cfg: Config = load_config([path], [])
    name = str(read_yaml(path).get("name") or "") or Path(run_dir).name
    kinds = dict.fromkeys(cfg.train.loggers)
    loggers: list[Logger] = []
    if "tensorboard" in kinds:
        loggers.append(_tensorboard_logger(Path(run_dir), f"eval/step={step:07d}"))
    if "wandb" in kinds:
        if cfg.train.wandb.mode == "disabled":
            print(f"icl: note: --log-to-run: wandb skipped ({run_dir}: train.wandb.mode=disabled)", file=sys.stderr)
        else:
            loggers.append(_wandb_logger(cfg.train.wandb, Path(run_dir), name, to_dict(cfg)))
    if not loggers and "wandb" not in kinds:
        print(
            f"icl: note: --log-to-run: {run_dir} has no tracker (train.loggers={list(kinds)}); "
            "trackers: tensorboard, wandb",
            file=sys.stderr,
        )
    return loggers
