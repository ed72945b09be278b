"""A run under signals, a second process, changed optimiser settings on resume, and refused
writes: SIGTERM/SIGINT save and resume bit-exactly; one process per run directory; a resume
uses the train.lr it is given; a full disk or a read-only directory is one line and loses
nothing."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import TINY, hold_lock, snapshot

from icl.checkpoint.io import read_checkpoint
from icl.cli import main
from icl.runs import RESUME_LOG

STEPS = 300
RUN = [*TINY, f"train.steps={STEPS}", "train.checkpoint_every=50", "train.log_every=5", "eval.n_prompts=20"]


def one_error_line(err: str, rc: int, expected_rc: int, pattern: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("run directory:")]
    assert rc == expected_rc and "Traceback" not in err, err
    assert len(lines) == 1 and pattern in lines[0], err
    return lines[0]


def assert_same_state(a: Path, b: Path) -> None:
    ca, cb = (read_checkpoint(d / "checkpoints" / "last.ckpt") for d in (a, b))
    assert ca["global_step"] == cb["global_step"]
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    for i in sa:
        for key in sa[i]:
            assert torch.equal(sa[i][key], sb[i][key]), (i, key)
    assert ca["lr_schedulers"] == cb["lr_schedulers"] and ca["loops"] == cb["loops"]
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


@pytest.fixture(scope="module")
def signalled(tmp_path_factory):
    """Two training processes stopped by SIGTERM and SIGINT after their first periodic
    checkpoint, and the uninterrupted reference trained in this process meanwhile."""
    tmp = tmp_path_factory.mktemp("signals")
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # bit-exact needs one thread count
    procs = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        cmd = [sys.executable, "-m", "icl", "train", *RUN, "--no-eval", "--run-dir", str(tmp / sig.name)]
        procs[sig] = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    for sig, proc in procs.items():
        first = tmp / sig.name / "checkpoints" / "step=0000050.ckpt"
        deadline = time.monotonic() + 300
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(sig)
    results = {sig: (proc.wait(timeout=300), proc.stderr.read()) for sig, proc in procs.items()}
    assert main(["train", *RUN, "--no-eval", "--run-dir", str(tmp / "reference")]) == 0
    return tmp, results


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_current_step_and_the_resume_is_bit_exact(signalled, capsys, sig, code):
    tmp, results = signalled
    rc, err = results[sig]
    run_dir = tmp / sig.name
    line = one_error_line(err, rc, code, f"icl: stopped: {sig.name} after step ")
    step = int(line.split("after step ")[1].split(":")[0])
    assert 50 <= step < STEPS, "the signal must land mid-run"
    assert f"saved {run_dir / 'checkpoints' / 'last.ckpt'}" in line and f"--resume {run_dir}" in line
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == step
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    assert main(["train", "--resume", str(run_dir), "--no-eval"]) == 0, capsys.readouterr().err
    assert_same_state(tmp / "reference", run_dir)


def test_a_second_process_on_a_run_is_refused_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    short = [*TINY, "train.steps=4", "--no-eval"]
    assert main(["train", *short, "--run-dir", str(run_dir)]) == 0
    holder = hold_lock(run_dir)
    try:
        before = snapshot(tmp_path)
        for argv in (
            ["train", "--resume", str(run_dir), "train.steps=6", "--no-eval"],
            ["train", *short, "--overwrite", "--run-dir", str(run_dir)],
        ):
            capsys.readouterr()
            rc = main(argv)
            one_error_line(capsys.readouterr().err, rc, 2, f"by another icl process (pid {holder.pid} on ")
            assert snapshot(tmp_path) == before
    finally:
        holder.kill()  # as a crash would: its lock file stays behind, its lock does not
        holder.wait()
    assert (run_dir / ".lock").is_file()
    assert main(["train", "--resume", str(run_dir), "train.steps=6", "--no-eval"]) == 0
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6


def test_resume_uses_the_given_learning_rate(tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["train", *TINY, "train.steps=8", "--no-eval", "--run-dir", str(base)]) == 0
    same, tiny_lr = tmp_path / "same", tmp_path / "tiny_lr"
    shutil.copytree(base, same)
    shutil.copytree(base, tiny_lr)
    assert main(["train", "--resume", str(same), "train.steps=12", "--no-eval"]) == 0
    assert main(["train", "--resume", str(tiny_lr), "train.steps=12", "train.lr=1e-12", "--no-eval"]) == 0
    start, moved, held = (read_checkpoint(d / "checkpoints" / "last.ckpt") for d in (base, same, tiny_lr))
    assert held["global_step"] == moved["global_step"] == 12
    for k, w in start["state_dict"].items():
        assert (moved["state_dict"][k] - w).abs().max() > 1e-4, k  # lr 1e-3 moves every tensor
        assert (held["state_dict"][k] - w).abs().max() < 1e-9, k  # lr 1e-12 moves none
    assert held["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-12
    assert held["lr_schedulers"][0]["base_lrs"] == [1e-12]
    assert "train.lr 0.001 -> 1e-12" in (tiny_lr / RESUME_LOG).read_text()


def test_a_diverged_run_resumes_with_another_learning_rate(tmp_path, capsys):
    """The advice of the non-finite guard's message, followed: it works."""
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "train.steps=6", "--no-eval", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    rc = main(["train", "--resume", str(run_dir), "train.steps=12", "train.lr=1e30", "--no-eval"])
    line = one_error_line(capsys.readouterr().err, rc, 3, "non-finite loss or gradient at step 7;")
    assert "checkpoints/ keeps the last good state" in line and "resume with another train.lr" in line
    assert (run_dir / "diverged").is_file()
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert main(["train", "--resume", str(run_dir), "train.steps=12", "train.lr=1e-3", "--no-eval"]) == 0
    last = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 12 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert not (run_dir / "diverged").exists()


def test_divergence_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, capsys):
    rc = main(["train", *TINY, "train.steps=6", "train.lr=1e30", "--no-eval", "--run-dir", str(tmp_path / "r")])
    line = one_error_line(capsys.readouterr().err, rc, 3, "non-finite loss or gradient at step 1;")
    assert "no checkpoint was saved before it" in line and "keeps the last good state" not in line
    assert not list((tmp_path / "r" / "checkpoints").glob("*.ckpt"))


def test_a_full_disk_during_a_save_is_one_line_and_keeps_every_checkpoint(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # step=0000003.ckpt and last.ckpt are written, step=0000006.ckpt is not
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f.name))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    rc = main(["train", *TINY, "train.steps=9", "--no-eval", "--run-dir", str(run_dir)])
    line = one_error_line(capsys.readouterr().err, rc, 4, "No space left on device")
    assert f"icl train --resume {run_dir}" in line and "is intact" in line
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step=0000003.ckpt"]
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 3
    monkeypatch.setattr(torch, "save", save)
    assert main(["train", "--resume", str(run_dir), "--no-eval"]) == 0
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 9


@pytest.fixture
def read_only(tmp_path):
    """A finished run, then its directory bind-mounted read-only (skipped where mounts are not
    allowed)."""
    run_dir = tmp_path / "ro" / "run"
    assert main(["train", *TINY, "train.steps=4", "--no-eval", "--run-dir", str(run_dir)]) == 0
    ro = run_dir.parent
    mounted = subprocess.run(["mount", "--bind", ro, ro], capture_output=True).returncode == 0
    if mounted and subprocess.run(["mount", "-o", "remount,ro,bind", ro], capture_output=True).returncode != 0:
        subprocess.run(["umount", ro])
        mounted = False
    if not mounted:
        pytest.skip("no permission to mount a read-only file system here")
    try:
        yield run_dir
    finally:
        subprocess.run(["umount", ro], check=True)


def test_a_read_only_run_directory_is_one_line_and_untouched(read_only, capsys):
    before = snapshot(read_only)
    for argv in (
        ["train", "--resume", str(read_only), "train.steps=8", "--no-eval"],
        ["train", *TINY, "train.steps=4", "--no-eval", "--overwrite", "--run-dir", str(read_only)],
    ):
        capsys.readouterr()
        rc = main(argv)
        one_error_line(capsys.readouterr().err, rc, 2, "is not writable (Read-only file system)")
        assert snapshot(read_only) == before
