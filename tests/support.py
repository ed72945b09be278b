"""Shared test fixtures: a tiny config that trains in seconds on CPU."""

TINY = [
    "data.n_dims=3",
    "data.n_points=6",
    "data.batch_size=8",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.max_points=8",
    "train.lr=1e-3",
    "train.progress_bar=false",
    "train.log_every=2",
    "train.checkpoint_every=3",
    "eval.n_prompts=20",
]


def hold_lock(run_dir):
    """Another process holding the run lock of ``run_dir`` until the caller kills it."""
    import subprocess
    import sys

    code = f"from icl import runstate; import time; runstate.acquire({str(run_dir)!r}); print('held', flush=True); "
    code += "time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def module(*overrides):
    """An ICLModule of the tiny config with ``overrides``."""
    from icl.config import load_config, to_dict
    from icl.training.module import ICLModule

    return ICLModule(to_dict(load_config([], [*TINY, *overrides])))


def loss_after_steps(m, n_steps: int) -> list[float]:
    """Losses of ``n_steps`` plain optimiser steps of module ``m`` on its own stream."""
    from icl.training.stream import StepStream

    opt = m.configure_optimizers()["optimizer"]
    stream = StepStream(m.sampler, 0)
    losses = []
    for step in range(n_steps):
        _, xs, ys = stream.batch(step)
        loss = ((m.train_forward(xs, ys) - ys) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def snapshot(d):
    """Every file's hash, every directory and link under ``d``: two snapshots are equal when a
    command changed, lost and left behind nothing there."""
    import hashlib
    import os
    from pathlib import Path

    state = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink():
                state[str(p.relative_to(d))] = "link to " + os.readlink(p)
            elif p.is_dir():
                state[str(p.relative_to(d))] = "dir"
            else:
                state[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def check_one_line(rc: int, err: str, pattern: str) -> None:
    """Bad input: exit code 2, exactly one stderr line ``icl: error: ...`` matching ``pattern``,
    no traceback."""
    import re

    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("icl: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
