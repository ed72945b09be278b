"""`icl eval` end to end, periodic evaluation, and clear refusals of bad checkpoints,
suites and baselines (no partial results left behind)."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from support import TINY

from icl.checkpoint import load_model
from icl.config import load_config
from icl.evaluation.run import evaluate_suite
from icl.runs import prepare_new_run, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = load_config([], [*TINY, "train.steps=4", "eval.every=2", "eval.periodic_n_prompts=20", "model.max_points=10"])
    path = prepare_new_run(cfg, root / "run", overwrite=False)
    train(cfg, path, evaluate=False)
    return path


def icl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "icl", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_periodic_evaluation_is_logged(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    logged = {int(r["step"]) for r in rows if r.get("eval/in_dist.dense_linear/model/mse@3")}
    assert logged == {2, 4}
    assert any(r.get("eval/in_dist.dense_linear/least_squares/mse@3") for r in rows)


def test_icl_eval_writes_every_output_and_is_reproducible(run_dir, tmp_path):
    for out in ("a", "b"):
        res = icl(
            "eval",
            str(run_dir),
            "--suite",
            "paper1_dense_sparse",
            "--n-prompts",
            "30",
            "--baselines",
            "least_squares,averaging,lasso,bayes,bayes_train",
            "--out",
            str(tmp_path / out),
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {
        "summary.md",
        "table.sparsity.csv",
        "cross.dense.json",
        "cross.dense.csv",
        "cross.dense.png",
        "sparsity.nnz_3.png",
        "in_dist.dense_linear.json",
    } <= files
    rec_a = json.loads((tmp_path / "a" / "sparsity.nnz_2.json").read_text())
    rec_b = json.loads((tmp_path / "b" / "sparsity.nnz_2.json").read_text())
    assert rec_a["curves"] == rec_b["curves"]
    assert rec_a["convention"] == "mse" and set(rec_a["curves"]) == {
        "model",
        "least_squares",
        "averaging",
        "lasso",
        "bayes",
        "bayes_train",
    }


def test_icl_eval_paper2_convention_and_longer_prompts(run_dir, tmp_path):
    res = icl(
        "eval",
        str(run_dir / "checkpoints" / "last.ckpt"),
        "--suite",
        "length",
        "--n-prompts",
        "20",
        "--convention",
        "mse_over_d",
        "--baselines",
        "least_squares",
        "--out",
        str(tmp_path / "len"),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "len" / "longer.dense_linear.json").read_text())
    assert rec["convention"] == "mse_over_d" and len(rec["k"]) == 10


def test_a_checkpoint_as_baseline_reproduces_that_model(run_dir, tmp_path):
    model, cfg = load_model(run_dir)
    records = evaluate_suite(
        model, cfg, "in_distribution", tmp_path / "out", baselines=["checkpoint:" + str(run_dir)], n_prompts=30
    )
    curves = records["in_dist.dense_linear"]["curves"]
    assert set(curves) == {"model", f"checkpoint({run_dir.name})"}
    assert curves["model"] == curves[f"checkpoint({run_dir.name})"]


def test_one_dimensional_runs_get_prediction_sweeps(tmp_path):
    cfg = load_config(
        [],
        [
            *TINY,
            "data.n_dims=1",
            "train.steps=2",
            "data.mixture=[{name: dense_linear, weight: 0.5}, {name: sinusoid, weight: 0.5}]",
        ],
    )
    path = prepare_new_run(cfg, tmp_path / "one", overwrite=False)
    train(cfg, path, evaluate=False)
    res = icl("eval", str(path), "--suite", "frequency_sweep", "--n-prompts", "20", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = path / "eval" / "frequency_sweep"
    assert (out / "frequency.w_0.5.sweep.png").is_file() and (out / "table.frequency.csv").is_file()


@pytest.mark.parametrize(
    "make,args,match",
    [
        (None, ["nowhere"], "checkpoint not found"),
        ("truncated", [], "not a readable checkpoint"),
        ("foreign", [], "not an icl checkpoint"),
        ("ok", ["--suite", "nope"], "unknown suite or scenario 'nope'"),
        ("ok", ["--baselines", "least_squares,oracle"], "unknown baseline 'oracle'"),
        ("ok", ["--baselines", "checkpoint:nowhere"], "checkpoint not found"),
        ("ok", ["--convention", "mae"], "mse, mse_over_d"),
        ("ok", ["--n-prompts", "0"], "n-prompts"),
        ("ok", ["--n-prompts", "many"], "invalid int value"),
        ("short", ["--suite", "length"], "not longer than the training prompts"),
    ],
)
def test_bad_eval_input_is_one_line_and_leaves_no_results(run_dir, tmp_path, make, args, match):
    target = None
    if make == "ok":
        target = str(run_dir)
    elif make == "truncated":
        data = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
        (tmp_path / "t.ckpt").write_bytes(data[: len(data) // 2])
        target = str(tmp_path / "t.ckpt")
    elif make == "foreign":
        torch.save({"weights": torch.zeros(2)}, tmp_path / "f.ckpt")
        target = str(tmp_path / "f.ckpt")
    elif make == "short":
        cfg = load_config([], [*TINY, "train.steps=1", "model.max_points=6"])
        path = prepare_new_run(cfg, tmp_path / "short", overwrite=False)
        train(cfg, path, evaluate=False)
        target = str(path)
    argv = ["eval", *([target] if target else []), *args]
    res = icl(*argv, "--out", str(tmp_path / "out"), cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert match in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
