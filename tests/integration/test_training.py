"""Training end to end on CPU: checkpoints reload to identical predictions, resume equals a
continuous run, the CLI smoke run (bad input: tests/integration/test_bad_inputs.py)."""

import subprocess
import sys

import pytest
import torch
from support import TINY

from icl.checkpoint.io import read_checkpoint
from icl.checkpoint.load import load_model
from icl.config import load_config
from icl.errors import ICLError
from icl.rng import Domain
from icl.runs import prepare_new_run, train
from icl.sampling import Sampler


def run(tmp_path, name, *extra, evaluate=False):
    cfg = load_config([], [*TINY, *extra])
    run_dir = prepare_new_run(cfg, tmp_path / name, overwrite=False)
    train(cfg, run_dir, evaluate=evaluate)
    return run_dir


def state(run_dir):
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def test_five_steps_write_a_checkpoint_that_reloads_to_identical_predictions(tmp_path):
    run_dir = run(tmp_path, "a", "train.steps=5")
    ckpt = state(run_dir)
    assert ckpt["global_step"] == 5
    assert ckpt["icl_config"]["train"]["steps"] == 5
    model, cfg = load_model(run_dir)
    batch = Sampler(cfg.data, 99).sample_batch(0, domain=Domain.EVAL)
    from icl.training.module import ICLModule

    module = ICLModule(ckpt["icl_config"])
    module.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        assert torch.equal(model(batch.xs, batch.ys), module.model.eval()(batch.xs, batch.ys))
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.csv").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "step=0000003.ckpt"]


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a, b = state(run(tmp_path, "a", "train.steps=3")), state(run(tmp_path, "b", "train.steps=3"))
    c = state(run(tmp_path, "c", "train.steps=3", "seed=1"))
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k])
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


def test_resume_equals_continuous(tmp_path):
    full = run(tmp_path, "full", "train.steps=8")
    part = run(tmp_path, "part", "train.steps=4")
    cfg = load_config([part / "config.yaml"], ["train.steps=8"])
    train(cfg, part, resume=True, evaluate=False)
    a, b = state(full), state(part)
    assert a["global_step"] == b["global_step"] == 8
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in opt_a:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_a[i][key], opt_b[i][key])
    rows = lambda p: (p / "metrics.csv").read_text().splitlines()  # noqa: E731
    assert rows(full) == rows(part)


def test_existing_run_directory_is_not_overwritten(tmp_path):
    cfg = load_config([], TINY)
    run_dir = prepare_new_run(cfg, tmp_path / "x", overwrite=False)
    (run_dir / "keep.txt").write_text("precious")
    with pytest.raises(ICLError, match="exists; use --resume"):
        prepare_new_run(cfg, run_dir, overwrite=False)
    assert (run_dir / "keep.txt").read_text() == "precious"


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "icl", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_train_smoke_with_evaluation(tmp_path):
    out = cli("train", *TINY, "train.steps=4", "name=smoke", f"out_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "smoke"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    for f in ("summary.md", "in_dist.dense_linear.json", "in_dist.dense_linear.png"):
        assert (run_dir / "eval" / "in_distribution" / f).is_file()
    assert "in_dist.dense_linear (MSE)" in out.stdout
