"""Trackers: CSV by default, TensorBoard, and wandb offline with no network and no login."""

import csv

import yaml
from support import TINY

from icl.config import load_config
from icl.runs import prepare_new_run, train


def test_csv_tensorboard_and_offline_wandb(tmp_path, monkeypatch, capfd):
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
    assert "anonymous" not in capfd.readouterr().err  # no needless wandb warning
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((run_dir / "tensorboard").rglob("events.out.tfevents.*")))).Reload()
    assert "train/loss" in events.Tags()["scalars"] and "hp_metric" not in events.Tags()["scalars"]


def test_ensemble_members_log_to_their_own_offline_wandb_runs(tmp_path, monkeypatch):
    from icl.ensemble.run import train_ensemble

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DISABLE_NETWORK", "true")
    extra = ["train.steps=4", "train.loggers=[csv,wandb]", "train.wandb.mode=offline"]
    cfgs = [load_config([], [*TINY, *extra, f"seed={s}", f"name=m{s}"]) for s in (0, 1)]
    dirs = [prepare_new_run(c, tmp_path / c.name, overwrite=False) for c in cfgs]
    train_ensemble(cfgs, dirs, evaluate=False)
    for d in dirs:
        (offline,) = (d / "wandb").glob("offline-run-*")
        assert (d / "wandb_id").read_text().strip() in offline.name
        # each member's run got its own rows (train/loss at steps 1 and 3), none finished early
        assert (next(offline.glob("*.wandb")).read_bytes().count(b"train/loss@0")) >= 2
