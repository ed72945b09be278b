"""Reliability: a run killed with SIGKILL (mid-run, and mid-save by fault injection) resumes to
the uninterrupted run bit for bit; determinism across processes; the non-finite guard;
pre-flight checks before any training step."""

import csv
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import TINY

from icl.checkpoint.io import read_checkpoint
from icl.checkpoint.validate import resume_checkpoint
from icl.checkpoint.writer import FAULT_KILL_IN_SAVE
from icl.cli import main
from icl.config import load_config
from icl.errors import ICLError
from icl.rng import Domain
from icl.runs import RESUME_LOG, checkpoint_bytes, prepare_new_run, train
from icl.runstate import run_state
from icl.sampling import Sampler
from icl.training.module import ICLModule

STEPS = 40
RUN = [*TINY, f"train.steps={STEPS}", "train.checkpoint_every=4", "eval.n_prompts=50"]


def spawn(tmp: Path, name: str, *args: str, env_extra: dict | None = None) -> subprocess.Popen:
    # Same intra-op thread count as this process: CPU reductions are bit-exact only for a fixed count.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), **(env_extra or {})}
    cmd = [sys.executable, "-m", "icl", "train", *RUN, "--run-dir", str(tmp / name), *args]
    with open(tmp / f"{name}.log", "w") as log:  # a file, not a pipe nobody reads while the process runs
        return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)


def in_process(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().err


def kill_mid_run(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL ``proc`` at an arbitrary step after its first checkpoint is on disk."""
    first = run_dir / "checkpoints" / "step=0000004.ckpt"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(random.uniform(0.0, 0.3))
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three training subprocesses at once: an uninterrupted run (with its end-of-training
    evaluation), a run SIGKILLed mid-run and a run that SIGKILLs itself in its 3rd checkpoint
    save (writing step=0000008.ckpt); then, in this process, the uninterrupted reference."""
    tmp = tmp_path_factory.mktemp("reliability")
    other = spawn(tmp, "other_process")
    killed = spawn(tmp, "killed", "--no-eval")
    faulted = spawn(tmp, "faulted", "--no-eval", env_extra={FAULT_KILL_IN_SAVE: "3"})
    kill_mid_run(killed, tmp / "killed")
    assert main(["train", *RUN, "--run-dir", str(tmp / "reference")]) == 0
    faulted.wait(timeout=600)
    other.wait(timeout=600)
    assert other.returncode == 0, (tmp / "other_process.log").read_text()
    return {"tmp": tmp, "killed": killed, "faulted": faulted}


def assert_same_training_state(a: Path, b: Path) -> None:
    """Weights, optimizer state, schedule, loop counters and metrics.csv, bit for bit."""
    ca, cb = (read_checkpoint(d / "checkpoints" / "last.ckpt") for d in (a, b))
    assert ca["global_step"] == cb["global_step"] == STEPS
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    oa, ob = ca["optimizer_states"][0], cb["optimizer_states"][0]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for key in oa["state"][i]:
            assert torch.equal(oa["state"][i][key], ob["state"][i][key]), (i, key)
    assert ca["lr_schedulers"] == cb["lr_schedulers"]
    assert ca["loops"] == cb["loops"]
    assert ca["icl_metrics_rows"] == cb["icl_metrics_rows"] == STEPS // 2
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(runs, capsys):
    tmp, killed = runs["tmp"], runs["tmp"] / "killed"
    assert runs["killed"].returncode == -signal.SIGKILL, (tmp / "killed.log").read_text()
    path, ckpt = resume_checkpoint(killed)
    assert 4 <= ckpt["global_step"] < STEPS, "the kill must land mid-run"
    for f in (killed / "checkpoints").glob("*.ckpt"):
        read_checkpoint(f)  # every file that looks complete is complete
    rc, err = in_process(capsys, "train", "--resume", str(killed), "--no-eval")
    assert rc == 0, err
    assert_same_training_state(tmp / "reference", killed)
    log = (killed / RESUME_LOG).read_text().splitlines()
    assert len(log) == 1 and f"resumed at step {ckpt['global_step']} from {path.name}" in log[0], log
    assert "no config changes" in log[0]


def test_sigkill_during_a_checkpoint_save_keeps_the_previous_one_and_resumes_exactly(runs, capsys):
    tmp, faulted = runs["tmp"], runs["tmp"] / "faulted"
    assert runs["faulted"].returncode == -signal.SIGKILL, (tmp / "faulted.log").read_text()
    ckpts = faulted / "checkpoints"
    # saves 1 and 2 (step=0000004.ckpt, last.ckpt at step 4) completed; save 3 died half-way
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step=0000004.ckpt", "step=0000008.ckpt.tmp"]
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 4
    complete = (ckpts / "step=0000004.ckpt").stat().st_size
    assert 0 < (ckpts / "step=0000008.ckpt.tmp").stat().st_size < complete
    with pytest.raises(ICLError, match="not a readable checkpoint"):
        read_checkpoint(ckpts / "step=0000008.ckpt.tmp")
    rc, err = in_process(capsys, "train", "--resume", str(faulted), "--no-eval")
    assert rc == 0, err
    assert not list(ckpts.glob("*.tmp"))
    assert_same_training_state(tmp / "reference", faulted)


def test_resume_takes_a_periodic_checkpoint_newer_than_last_ckpt(runs, capsys):
    """A kill between writing step=N.ckpt and last.ckpt leaves last.ckpt one period behind."""
    tmp = runs["tmp"]
    run_dir = tmp / "between_saves"
    shutil.copytree(tmp / "reference", run_dir, ignore=shutil.ignore_patterns("eval"))
    ckpts = run_dir / "checkpoints"
    for p in ckpts.glob("step=*.ckpt"):
        if int(p.stem.split("=")[1]) > 12:
            p.unlink()
    shutil.copy(ckpts / "step=0000008.ckpt", ckpts / "last.ckpt")
    assert resume_checkpoint(run_dir)[0].name == "step=0000012.ckpt"
    rc, err = in_process(capsys, "train", "--resume", str(run_dir), "--no-eval")
    assert rc == 0, err
    assert_same_training_state(tmp / "reference", run_dir)


def test_same_seed_in_two_processes_gives_identical_run_and_evaluation(runs):
    tmp = runs["tmp"]
    assert_same_training_state(tmp / "reference", tmp / "other_process")
    a, b = tmp / "reference" / "eval" / "in_distribution", tmp / "other_process" / "eval" / "in_distribution"
    files = sorted(p.name for p in a.iterdir() if p.suffix in (".json", ".csv", ".md"))
    assert files and files == sorted(p.name for p in b.iterdir() if p.suffix in (".json", ".csv", ".md"))
    for name in files:
        # identical but for where each run's checkpoint lies (recorded for people)
        mine, theirs = ((d / name).read_text().replace(str(d.parent.parent), "RUN") for d in (a, b))
        assert mine == theirs, name


def test_another_seed_gives_other_weights_and_metrics(runs, capsys):
    tmp = runs["tmp"]
    rc, err = in_process(capsys, "train", *RUN, "train.steps=8", "seed=1", "--run-dir", str(tmp / "seed1"), "--no-eval")
    assert rc == 0, err
    a = read_checkpoint(tmp / "reference" / "checkpoints" / "step=0000008.ckpt")
    b = read_checkpoint(tmp / "seed1" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 8
    assert all(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    rows_a = (tmp / "reference" / "metrics.csv").read_text().splitlines()[1:4]
    rows_b = (tmp / "seed1" / "metrics.csv").read_text().splitlines()[1:4]
    assert len(rows_b) == 3 and not set(rows_a) & set(rows_b)


# ---- non-finite guard ---------------------------------------------------------------------------


def poison(monkeypatch, steps: set[int]) -> None:
    """Training batches of ``steps`` get one label = inf (evaluation batches are untouched)."""
    original = Sampler.sample_batch

    def sample_batch(self, step, *args, **kwargs):
        batch = original(self, step, *args, **kwargs)
        if step in steps and kwargs.get("domain", Domain.TRAIN) == Domain.TRAIN:
            batch.ys[0, -1] = float("inf")
        return batch

    monkeypatch.setattr(Sampler, "sample_batch", sample_batch)


def rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_nonfinite_loss_stops_with_one_line_naming_the_step_and_keeps_last_good_checkpoint(
    runs, tmp_path, monkeypatch, capsys
):
    poison(monkeypatch, {9})
    rc, err = in_process(capsys, "train", *RUN, "--run-dir", str(tmp_path / "nan"))
    assert rc == 3  # not 2 (bad input): the run diverged
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("icl: error: train: non-finite loss or gradient at step 9;"), err
    assert len(lines) == 2 and lines[0].startswith("run directory:") and "Traceback" not in err
    last = read_checkpoint(tmp_path / "nan" / "checkpoints" / "last.ckpt")
    good = read_checkpoint(runs["tmp"] / "reference" / "checkpoints" / "step=0000008.ckpt")
    assert last["global_step"] == 8
    for k in good["state_dict"]:
        assert torch.equal(last["state_dict"][k], good["state_dict"][k])
    assert [int(r["step"]) for r in rows(tmp_path / "nan")] == [1, 3, 5, 7]
    assert not (tmp_path / "nan" / "eval").exists()
    # The marker that keeps `icl sweep` from retrying the point (a resume would diverge again).
    assert "non-finite loss or gradient at step 9" in (tmp_path / "nan" / "diverged").read_text()
    assert run_state(tmp_path / "nan", 40) == "diverged"


def test_nonfinite_check_without_per_step_sync_stops_before_any_later_checkpoint(tmp_path, monkeypatch):
    """The accelerator path (a device-side flag read at log steps and before every save),
    exercised on CPU: step 9 is bad, the next save (global step 12) refuses and names step 9."""
    monkeypatch.setattr(ICLModule, "_check_on_host", lambda self: False)
    poison(monkeypatch, {9})
    cfg = load_config([], [*RUN, "train.log_every=100"])
    run_dir = prepare_new_run(cfg, tmp_path / "deferred", overwrite=False)
    with pytest.raises(ICLError, match="non-finite loss or gradient at step 9;"):
        train(cfg, run_dir, evaluate=False)
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 8
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step=0000004.ckpt",
        "step=0000008.ckpt",
    ]


def test_nonfinite_skip_drops_exactly_the_bad_updates_and_counts_them(runs, tmp_path, monkeypatch, capsys):
    """Steps 4-7 skipped: weights and Adam state after 8 steps equal a clean run's after 4."""
    poison(monkeypatch, {4, 5, 6, 7})
    cfg = load_config([], [*RUN, "train.steps=8", "train.nonfinite=skip"])
    run_dir = prepare_new_run(cfg, tmp_path / "skip", overwrite=False)
    capsys.readouterr()
    train(cfg, run_dir, evaluate=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("icl: warning:")]
    assert len(warnings) == 2, warnings  # the first skip as it happens, then the count at the end
    assert "non-finite loss or gradient at step 4: update skipped" in warnings[0]
    assert "skipped 4 of 8 steps" in warnings[1]
    last = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    clean = read_checkpoint(runs["tmp"] / "reference" / "checkpoints" / "step=0000004.ckpt")
    assert last["global_step"] == 8 and last["icl_skipped_steps"] == 4
    for k in clean["state_dict"]:
        assert torch.equal(last["state_dict"][k], clean["state_dict"][k])
    for i, state in clean["optimizer_states"][0]["state"].items():
        for key in state:
            assert torch.equal(last["optimizer_states"][0]["state"][i][key], state[key])
    got = [(int(r["step"]), float(r["train/skipped_steps"]), float(r["train/loss"])) for r in rows(run_dir)]
    assert [g[:2] for g in got] == [(1, 0.0), (3, 0.0), (5, 2.0), (7, 4.0)]
    assert not math.isfinite(got[2][2]) and all(torch.isfinite(v).all() for v in last["state_dict"].values())


# ---- pre-flight ---------------------------------------------------------------------------------


def test_preflight_refuses_a_run_directory_that_cannot_be_written(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    rc, err = in_process(capsys, "train", *RUN, "--run-dir", str(tmp_path / "file" / "run"))
    assert rc == 2 and err.strip().startswith("icl: error: run directory") and "not writable" in err
    cfg = load_config([], RUN)
    run_dir = prepare_new_run(cfg, tmp_path / "r", overwrite=False)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").write_text("a file where checkpoints/ should be")
    with pytest.raises(ICLError, match="not writable"):
        train(cfg, run_dir, evaluate=False)
    assert not (run_dir / "metrics.csv").exists()


def test_preflight_disk_estimate_bounds_real_checkpoints_and_refuses_a_full_disk(runs, tmp_path, monkeypatch):
    cfg = load_config([], RUN)
    per = checkpoint_bytes(cfg)
    real = (runs["tmp"] / "reference" / "checkpoints" / "step=0000004.ckpt").stat().st_size
    assert per <= real <= per + 64_000  # weights + 2 moments, plus config and loop state
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=per * 10))
    run_dir = tmp_path / "keep"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("old results")
    # STEPS / 4 = 10 periodic checkpoints + last.ckpt and its temporary copy do not fit in 10
    with pytest.raises(ICLError, match=r"not enough free disk for 12 checkpoints.*train.checkpoint_every"):
        prepare_new_run(cfg, run_dir, overwrite=True)
    assert (run_dir / "precious.txt").read_text() == "old results"
    prepare_new_run(load_config([], [*RUN, "train.checkpoint_every=10"]), tmp_path / "fits", overwrite=False)


def test_resume_refuses_changed_model_or_data_and_records_harmless_changes(runs, capsys):
    tmp = runs["tmp"]
    run_dir = tmp / "resume_changes"
    shutil.copytree(tmp / "reference", run_dir, ignore=shutil.ignore_patterns("eval"))
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    for override, key in [
        ("model.n_embd=32", "model.n_embd 16 -> 32"),
        ("data.n_dims=4", "data.n_dims 3 -> 4"),
        ("data.mixture=[{name: sparse_linear}]", "data.mixture"),
        ("seed=5", "seed 0 -> 5"),
    ]:
        rc, err = in_process(capsys, "train", "--resume", str(run_dir), f"train.steps={STEPS + 2}", override)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert key in err and "differs from the checkpoint" in err, err
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == before
    assert not (run_dir / RESUME_LOG).exists()
    args = [f"train.steps={STEPS + 2}", "train.log_every=1", "eval.n_prompts=7", "data.num_workers=0", "--no-eval"]
    rc, err = in_process(capsys, "train", "--resume", str(run_dir), *args)
    assert rc == 0, err
    log = (run_dir / RESUME_LOG).read_text()
    assert f"resumed at step {STEPS} from last.ckpt; changed: " in log
    assert f"eval.n_prompts 50 -> 7; train.log_every 2 -> 1; train.steps {STEPS} -> {STEPS + 2}" in log
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == STEPS + 2
    assert [int(r["step"]) for r in rows(run_dir)][-3:] == [STEPS - 1, STEPS, STEPS + 1]
