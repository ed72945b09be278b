"""Trackers: CSV by default, TensorBoard, and wandb offline with no network and no login."""

import csv

import yaml
from support import TINY

from icl.config import load_config
from icl.runs import prepare_new_run, train


def test_csv_tensorboard_and_offline_wandb(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DISABLE_NETWORK", "true")
    cfg = load_config([], [*TINY, "train.steps=4", "train.loggers=[csv,tensorboard,wandb]", "train.wandb.mode=offline"])
    run_dir = prepare_new_run(cfg, tmp_path / "t", overwrite=False)
    train(cfg, run_dir, evaluate=False)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 3]
    assert {"train/loss", "train/loss@0", "train/loss@5", "curriculum/dims", "curriculum/points"} <= set(rows[0])
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    hparams = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["train.steps"] == 4 and hparams["model.n_layer"] == cfg.model.n_layer  # resolved config
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert (run_dir / "wandb_id").read_text().strip() in offline[0].name
