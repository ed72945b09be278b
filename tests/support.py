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
