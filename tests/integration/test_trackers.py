"""Trackers: CSV by default, TensorBoard, and wandb offline with no network and no login; what they
receive (full error curves of every evaluation, figures, learning rate, gradient norm, steps/s) and
`icl eval --log-to-run`. The TensorBoard event files and the wandb offline run are read back."""

import csv
import json
import shutil
import struct
import time
import warnings
from pathlib import Path

import pytest
import yaml
from support import TINY

from icl.checkpoint.io import read_checkpoint
from icl.cli import main
from icl.config import load_config
from icl.runs import prepare_new_run, train

SCENARIO = "in_dist.dense_linear"
PERIODIC = ("model", "least_squares", "averaging")  # eval.periodic_baselines below, and the model
N_POINTS = 6  # TINY's data.n_points: curves have k = 0..5
TRACKED = [
    *TINY,
    "train.steps=4",
    "train.log_every=1",
    "train.warmup_steps=3",  # the logged lr changes from step to step
    "train.grad_clip=0.01",  # far below the gradients' norm: the logged norm is the unclipped one
    "train.loggers=[csv,tensorboard,wandb]",
    "train.wandb.mode=offline",
    "eval.every=2",
    "eval.periodic_n_prompts=16",
    "eval.periodic_baselines=[least_squares,averaging]",
    "eval.n_prompts=16",
    "eval.baselines=[least_squares,bayes]",
]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DISABLE_NETWORK", "true")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained 4 steps with every tracker, periodic evaluation and the final evaluation."""
    mp = pytest.MonkeyPatch()
    mp.delenv("WANDB_MODE", raising=False)
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.setenv("WANDB_DISABLE_NETWORK", "true")
    cfg = load_config([], TRACKED)
    run_dir = prepare_new_run(cfg, tmp_path_factory.mktemp("trackers") / "t", overwrite=False)
    train(cfg, run_dir)
    mp.undo()
    return cfg, run_dir


def events(log_dir: Path):
    """Every event file of a TensorBoard run directory, read back as TensorBoard reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar."""
    acc = events(log_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def images(log_dir: Path) -> dict[str, list]:
    acc = events(log_dir)
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (LevelDB log format: 32 KiB blocks of chunks with a
    7-byte header; the file opens with the 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and n == 0):  # block padding
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def finished_records(offline_dir: Path, timeout_s: float = 60.0) -> list:
    """The records of a finished wandb offline run. wandb's service process writes the file after
    ``finish()`` returns: wait for the run's exit record."""
    (path,) = offline_dir.glob("*.wandb")
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def wandb_history(offline_dir: Path) -> list[dict]:
    """The history rows of a finished wandb offline run, values decoded from JSON."""
    rows = []
    for r in finished_records(offline_dir):
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    return rows


def media(history: list[dict], key: str) -> list[dict]:
    """The media objects (tables, images) logged under ``key``, one per row that has one: wandb
    stores their fields as ``key/<field>``."""
    found = []
    for row in history:
        fields = {k.removeprefix(key + "/"): v for k, v in row.items() if k.startswith(key + "/")}
        if fields:
            found.append(fields)
    return found


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def final_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval" / "in_distribution" / f"{SCENARIO}.json").read_text())


def test_csv_tensorboard_and_offline_wandb(tmp_path, capfd):
    cfg = load_config([], [*TINY, "train.steps=4", "train.loggers=[csv,tensorboard,wandb]", "train.wandb.mode=offline"])
    run_dir = prepare_new_run(cfg, tmp_path / "t", overwrite=False)
    train(cfg, run_dir, evaluate=False)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 3]
    assert {"train/loss", "train/loss@0", "train/loss@5", "curriculum/dims", "curriculum/points"} <= set(rows[0])
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    hparams = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["train.steps"] == 4 and hparams["model.n_layer"] == cfg.model.n_layer  # resolved config
    offline = offline_runs(run_dir)
    assert len(offline) == 1 and [r for r in wandb_history(offline[0]) if "train/loss" in r]
    assert (run_dir / "wandb_id").read_text().strip() in offline[0].name
    assert "anonymous" not in capfd.readouterr().err  # no needless wandb warning
    tags = scalars(run_dir / "tensorboard")
    assert "train/loss" in tags and "hp_metric" not in tags


def test_metrics_csv_has_full_periodic_curves_lr_and_grad_norm_but_no_wall_clock(run):
    cfg, run_dir = run
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    train_rows = [r for r in rows if r["train/loss"]]
    assert [int(r["step"]) for r in train_rows] == [0, 1, 2, 3]
    assert [float(r["train/lr"]) for r in train_rows] == pytest.approx(
        [cfg.train.lr * cfg.train.lr_factor(s) for s in range(4)]
    )
    assert len({r["train/lr"] for r in train_rows}) > 1
    assert "train/steps_per_s" not in rows[0]  # wall clock: metrics.csv stays exact on resume
    # the norm of step 0's gradient, from the initial weights on step 0's batch, before clipping
    from support import module

    from icl.training.loss import prefix_losses
    from icl.training.module import grad_norm
    from icl.training.stream import StepStream

    m = module(*TRACKED[len(TINY) :])
    _, xs, ys = StepStream(m.sampler, 0).batch(0)
    prefix_losses(m.train_forward(xs, ys), ys)[0].backward()
    expected = float(grad_norm([p.grad for p in m.model.parameters()]))
    assert float(train_rows[0]["train/grad_norm"]) == pytest.approx(expected, rel=1e-5)
    assert expected > 10 * cfg.train.grad_clip
    # the periodic evaluations' full curves (every k, every predictor); the final one is in eval/
    keys = {f"eval/{SCENARIO}/{p}/mse@{k}" for p in PERIODIC for k in range(N_POINTS)}
    assert {k for k in rows[0] if k.startswith("eval/")} == keys
    assert sorted(int(r["step"]) for r in rows if r[f"eval/{SCENARIO}/model/mse@{N_POINTS - 1}"]) == [2, 4]


def test_tensorboard_gets_full_curves_training_signals_and_figures(run):
    cfg, run_dir = run
    tags = scalars(run_dir / "tensorboard")
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    record = final_record(run_dir)
    for pred in PERIODIC:
        for k in range(N_POINTS):
            key = f"eval/{SCENARIO}/{pred}/mse@{k}"
            periodic = [(int(r["step"]), float(r[key])) for r in rows if r[key]]
            final = record["curves"][pred]["mean"][k] if pred in record["curves"] else None
            expected = periodic + ([(4, final)] if final is not None else [])
            assert [s for s, _ in tags[key]] == [s for s, _ in expected], key
            assert [v for _, v in tags[key]] == pytest.approx([v for _, v in expected], rel=1e-5), key
    # the final evaluation's baselines (eval.baselines) at the last step, every k
    for k in range(N_POINTS):
        assert tags[f"eval/{SCENARIO}/bayes/mse@{k}"] == [(4, pytest.approx(record["curves"]["bayes"]["mean"][k]))]
    for name in ("train/lr", "train/grad_norm", "train/steps_per_s"):
        assert [s for s, _ in tags[name]] == [0, 1, 2, 3], name
    assert [v for _, v in tags["train/lr"]] == pytest.approx([cfg.train.lr * cfg.train.lr_factor(s) for s in range(4)])
    assert all(v > 0 for _, v in tags["train/steps_per_s"] + tags["train/grad_norm"])
    (figure,) = images(run_dir / "tensorboard")[f"figures/in_distribution/{SCENARIO}"]
    assert figure.step == 4 and figure.width > 100 and figure.height > 100


def test_wandb_offline_run_gets_the_same(run):
    cfg, run_dir = run
    (offline,) = offline_runs(run_dir)
    history = wandb_history(offline)
    steps = lambda key: [r["trainer/global_step"] for r in history if key in r]  # noqa: E731
    for name in ("train/lr", "train/grad_norm", "train/steps_per_s"):
        assert steps(name) == [0, 1, 2, 3], name
    final_preds = final_record(run_dir)["curves"]
    for pred in PERIODIC:
        for k in range(N_POINTS):  # periodic twice, then the final evaluation (eval.baselines)
            expected = [2, 4, 4] if pred in final_preds else [2, 4]
            assert steps(f"eval/{SCENARIO}/{pred}/mse@{k}") == expected, pred
    assert steps(f"eval/{SCENARIO}/bayes/mse@0") == [4]
    # a line plot of error vs k per evaluation: its table has every (predictor, k)
    tables = media(history, f"eval/{SCENARIO}/curves_table")
    assert len(tables) == 3 and all(t["_type"] == "table-file" for t in tables)
    final = json.loads((offline / "files" / tables[-1]["path"]).read_text())
    by_line = {}
    for row in final["data"]:
        cells = dict(zip(final["columns"], row, strict=True))
        by_line.setdefault(cells["lineKey"], []).append((cells["step"], cells["lineVal"]))
    record = final_record(run_dir)
    assert set(by_line) == set(record["curves"]) == {"model", "least_squares", "bayes"}
    for pred, points in by_line.items():  # x = k
        assert points == [(k, pytest.approx(v)) for k, v in enumerate(record["curves"][pred]["mean"])]
    (image,) = media(history, f"figures/in_distribution/{SCENARIO}")
    assert image["_type"] == "image-file" and (offline / "files" / image["path"]).is_file()
    assert any(r.WhichOneof("record_type") == "exit" for r in finished_records(offline))


def test_icl_eval_log_to_run_adds_the_evaluation_to_both(run, tmp_path, capsys):
    _cfg, source = run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    capsys.readouterr()
    args = ["eval", str(run_dir), "--n-prompts", "16", "--convention", "mse_over_d", "--out", str(tmp_path / "e")]
    assert main([*args, "--log-to-run"]) == 0
    out = capsys.readouterr().out
    run_id = (run_dir / "wandb_id").read_text().strip()
    # TensorBoard: a run of its own beside the training's, so an earlier checkpoint's evaluation
    # would not make TensorBoard drop the training's later points
    log_dir = run_dir / "tensorboard" / "eval" / "step=0000004"
    assert f"evaluation logged at step 4 to tensorboard ({log_dir}), wandb (offline run {run_id})" in out
    record = json.loads((tmp_path / "e" / f"{SCENARIO}.json").read_text())
    tags = scalars(log_dir)
    assert set(tags) == {f"eval/{SCENARIO}/{p}/mse_over_d@{k}" for p in record["curves"] for k in range(N_POINTS)}
    for pred in ("model", "least_squares", "bayes"):
        for k in range(N_POINTS):
            value = record["curves"][pred]["mean"][k]
            assert tags[f"eval/{SCENARIO}/{pred}/mse_over_d@{k}"] == [(4, pytest.approx(value, rel=1e-5))]
    (figure,) = images(log_dir)[f"figures/in_distribution/{SCENARIO}"]
    assert figure.step == 4
    assert scalars(run_dir / "tensorboard") == scalars(source / "tensorboard")  # the training's, unchanged
    # wandb: the run resumed by its id, offline, in a second offline directory of the same id
    first, later = offline_runs(run_dir)
    assert run_id in first.name and run_id in later.name
    history = wandb_history(later)
    logged = {k for r in history for k in r}
    assert {f"eval/{SCENARIO}/{p}/mse_over_d@{k}" for p in record["curves"] for k in range(N_POINTS)} <= logged
    (table,) = media(history, f"eval/{SCENARIO}/curves_table")
    (image,) = media(history, f"figures/in_distribution/{SCENARIO}")
    assert (later / "files" / table["path"]).is_file() and (later / "files" / image["path"]).is_file()
    assert (run_dir / "metrics.csv").read_bytes() == (source / "metrics.csv").read_bytes()  # training's log only


def test_log_to_run_without_a_tracker_says_so_in_one_line(run, tmp_path, capsys):
    _cfg, source = run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("tensorboard", "wandb", "wandb_id"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["train"]["loggers"] = ["csv", "wandb"]
    config["train"]["wandb"]["mode"] = "disabled"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--n-prompts", "8", "--out", str(tmp_path / "e"), "--log-to-run"]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "--log-to-run" in line]
    assert notes == [f"icl: note: --log-to-run: wandb skipped ({run_dir}: train.wandb.mode=disabled)"]
    assert "evaluation logged" not in captured.out
    assert not (run_dir / "tensorboard").exists() and not (run_dir / "wandb").exists()
    config["train"]["loggers"] = ["csv"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["eval", str(run_dir), "--n-prompts", "8", "--out", str(tmp_path / "e2"), "--log-to-run"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "--log-to-run" in line]
    assert notes == [
        f"icl: note: --log-to-run: {run_dir} has no tracker (train.loggers=['csv']); trackers: tensorboard, wandb"
    ]
    # a checkpoint outside any run directory: refused in one line, before the evaluation
    lone = tmp_path / "lone.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", lone)
    assert main(["eval", str(lone), "--out", str(tmp_path / "e3"), "--log-to-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--log-to-run" in err[0] and "not a run directory" in err[0]
    assert not (tmp_path / "e3").exists()


def test_ensemble_members_log_to_their_own_trackers_and_resume_quietly(tmp_path):
    from icl.ensemble.run import train_ensemble

    extra = ["train.steps=4", "train.loggers=[csv,tensorboard,wandb]", "train.wandb.mode=offline"]
    lrs = {0: 1e-3, 1: 2e-3}
    configs = lambda steps: [  # noqa: E731
        load_config([], [*TINY, *extra, f"seed={s}", f"name=m{s}", f"train.lr={lr}", f"train.steps={steps}"])
        for s, lr in lrs.items()
    ]
    dirs = [prepare_new_run(c, tmp_path / "a" / c.name, overwrite=False) for c in configs(4)]
    train_ensemble(configs(4), dirs, evaluate=False)
    for (seed, lr), d in zip(lrs.items(), dirs, strict=True):
        (offline,) = offline_runs(d)
        assert (d / "wandb_id").read_text().strip() in offline.name
        # each member's run got its own rows (train/loss at steps 1 and 3), none finished early
        history = wandb_history(offline)
        assert [r["trainer/global_step"] for r in history if "train/loss@0" in r] == [1, 3]
        assert [r["train/lr"] for r in history if "train/lr" in r] == pytest.approx([lr, lr])
        tags = scalars(d / "tensorboard")
        assert tags["train/lr"] == [(1, pytest.approx(lr)), (3, pytest.approx(lr))], seed  # its own lr
        for name in ("train/grad_norm", "train/steps_per_s"):
            assert [s for s, _ in tags[name]] == [1, 3] and all(v > 0 for _, v in tags[name]), name
        rows = list(csv.DictReader((d / "metrics.csv").open()))
        assert "train/grad_norm" in rows[0] and "train/steps_per_s" not in rows[0]
    norms = [[v for _, v in scalars(d / "tensorboard")["train/grad_norm"]] for d in dirs]
    assert norms[0] != norms[1]  # per member
    # Resumed after the sweep directory moved: no Lightning warning about the checkpoint directory
    # (not empty; its recorded path changed).
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = [tmp_path / "b" / d.name for d in dirs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_ensemble(configs(6), moved, evaluate=False)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Checkpoint directory" in m or "dirpath has changed" in m], messages
    assert all(read_checkpoint(d)["global_step"] == 6 for d in moved)
