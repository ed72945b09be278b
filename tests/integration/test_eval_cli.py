"""`icl eval` end to end, periodic evaluation, checkpoints as baselines and 1-D prediction
sweeps (bad input: tests/integration/test_bad_inputs.py)."""

import csv
import json
import re
import subprocess
import sys

import pytest
from support import TINY

from icl.checkpoint.load import load_model
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
    args = ["--n-prompts", "30", "--baselines", "least_squares,averaging,lasso,bayes,bayes_train"]
    for out in ("a", "b"):
        cmd = [sys.executable, "-m", "icl", "eval", str(run_dir), "--suite", "paper1_dense_sparse", *args]
        # One pipe for both streams, read as the lines come: progress must not wait for the end.
        proc = subprocess.Popen(
            [*cmd, "--out", str(tmp_path / out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        lines, running = [], []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            running.append(proc.poll() is None)
        assert proc.wait(timeout=600) == 0, "\n".join(lines)
    progress = [(i, line) for i, line in enumerate(lines) if re.match(r"\[\d+/\d+\] ", line)]
    names = ["in_dist.dense_linear", "sparsity.nnz_1", "sparsity.nnz_2", "sparsity.nnz_3"]
    assert [line.split(":")[0] for _, line in progress] == [f"[{i}/4] {n}" for i, n in enumerate(names, 1)]
    assert all(re.search(r": \d+:\d\d:\d\d, model MSE at k=5 \d+\.\d{4}$", line) for _, line in progress)
    done = next(i for i, line in enumerate(lines) if line.startswith("evaluation written to"))
    assert progress[-1][0] < done and running[progress[0][0]]  # printed while the evaluation ran
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {
        "summary.md",
        "table.sparsity.csv",
        "sparsity.nnz_3.png",
        "sparsity.nnz_3.pdf",
        "in_dist.dense_linear.json",
        "in_dist.dense_linear.png",
        "in_dist.dense_linear.pdf",
    } <= files
    # cross.dense and cross.sparse_nnz_2 are the same evaluations as in_dist.dense_linear and sparsity.nnz_2.
    assert not any(name.startswith("cross.") for name in files)
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "- cross.dense: left out, the same evaluation as in_dist.dense_linear" in summary
    assert "| predictor | k=1 | k=2 | k=3 | k=4 | k=5 |" in summary  # every k <= d = 3, 3d/2, N - 1
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


def test_two_checkpoints_of_one_run_are_both_kept_under_distinct_names(run_dir, tmp_path):
    model, cfg = load_model(run_dir)
    step3 = run_dir / "checkpoints" / "step=0000003.ckpt"
    records = evaluate_suite(
        model,
        cfg,
        "in_distribution",
        tmp_path / "out",
        baselines=["checkpoint:" + str(run_dir), "checkpoint:" + str(step3)],
        n_prompts=20,
    )
    curves = records["in_dist.dense_linear"]["curves"]
    last, early = f"checkpoint({run_dir.name}:last)", f"checkpoint({run_dir.name}:step=0000003)"
    assert set(curves) == {"model", last, early}
    assert curves["model"] == curves[last] and curves[early] != curves[last]


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
