"""Data-parallel training through the `icl train` CLI: 2 CPU processes on gloo (Lightning's DDP
launcher) end with the weights, optimizer state and logged losses of the single-process run."""

import csv
import os
import subprocess
import sys

import pytest
import torch
from support import TINY

from icl.checkpoint.io import read_checkpoint
from icl.config import load_config
from icl.errors import ICLError
from icl.runs import prepare_new_run, train

STEPS = ["train.steps=4", "train.accelerator=cpu"]


def icl_train(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "icl", "train", *TINY, *STEPS, "--no-eval", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def losses(run_dir):
    return [
        {k: float(v) for k, v in row.items() if k.startswith("train/")}
        for row in csv.DictReader(open(run_dir / "metrics.csv"))
    ]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    cfg = load_config([], [*TINY, *STEPS])
    run_dir = prepare_new_run(cfg, tmp_path_factory.mktemp("single") / "run", overwrite=False)
    train(cfg, run_dir, evaluate=False)
    return run_dir


@pytest.mark.slow  # two DDP processes: about 10 s
def test_two_cpu_processes_match_the_single_process_run(single, tmp_path):
    res = icl_train("train.devices=2", "train.strategy=ddp", "--run-dir", "ddp", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = read_checkpoint(single), read_checkpoint(tmp_path / "ddp")
    assert a["global_step"] == b["global_step"] == 4
    assert b["icl_config"]["train"]["devices"] == 2
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-5, atol=1e-6)
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in opt_a:
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt_b[i][key], opt_a[i][key], rtol=1e-4, atol=1e-9)
    # The logged losses are the global batch's (averaged over ranks), not rank 0's half.
    la, lb = losses(single), losses(tmp_path / "ddp")
    assert [sorted(r) for r in la] == [sorted(r) for r in lb] and la
    for ra, rb in zip(la, lb, strict=True):
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), key
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["last.ckpt", "step=0000003.ckpt"]


def test_spawn_strategies_and_bad_node_counts_are_refused_in_one_line(tmp_path):
    # Spawned workers would leave last.ckpt to the launching process, without optimizer state.
    res = icl_train("train.devices=2", "train.strategy=ddp_spawn", "--run-dir", "spawn", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "train.strategy: got 'ddp_spawn'; allowed: auto or ddp" in res.stderr
    assert not (tmp_path / "spawn" / "checkpoints").exists()
    with pytest.raises(ICLError, match="train.num_nodes: got 0; allowed: an integer >= 1"):
        load_config([], [*TINY, "train.num_nodes=0"])
