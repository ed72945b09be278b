"""Evaluations cannot be stale: every record names its checkpoint (path, step, weights hash) and
settings; `icl report` and `icl eval` reuse a cached one only when both match, so a sweep extended
with `icl train --resume` is re-evaluated, and an unchanged one is not. The gap-closed metric is in
both outputs."""

import csv
import json

import pytest
from test_report import make_sweep

from icl.checkpoint.load import load_model
from icl.cli import main
from icl.evaluation.provenance import model_sha256
from icl.report.cache import CLASSES_DIR

SPARSE = [{"name": "sparse_linear", "weight": 1, "params": {"nnz": 1}}]
BASE = {"data": {"n_dims": 4, "n_points": 6, "batch_size": 8}, "eval": {"n_prompts": 30, "table_k": 3}}


def rows(path):
    return list(csv.DictReader(path.open()))


def no_evaluation(*args, **kwargs):
    raise AssertionError("evaluated again: the cache should have been reused")


def test_extended_sweep_is_re_evaluated_and_an_unchanged_one_is_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep_dir = make_sweep(tmp_path, "ext", BASE, [SPARSE])
    (run,) = [p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file()]
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "r1")]) == 0
    cached = run / "eval" / CLASSES_DIR / "class.sparse_linear_nnz_1.json"
    before = json.loads(cached.read_text())
    assert before["checkpoint"]["global_step"] == 4
    assert before["checkpoint"]["sha256"] == model_sha256(load_model(run)[0])
    assert before["settings"]["n_prompts"] == 30 and before["settings"]["baselines"] == ["least_squares", "bayes"]
    assert rows(tmp_path / "r1" / "runs.csv")[0]["evaluated step"] == "4"
    # The gap-closed table and figure: defined where least squares and Bayes differ (k = 2, 3 < d on nnz 1),
    # undefined where both predict 0 (k = 0) or are exact (k >= d = 4).
    gap = [r for r in rows(tmp_path / "r1" / "gap_closed.csv") if r["eval class"] == "sparse_linear(nnz=1)"]
    assert [int(r["k"]) for r in gap if r["gap_closed"] != ""] in ([2, 3], [1, 2, 3])
    assert (tmp_path / "r1" / "gap_closed.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Gap closed" in (tmp_path / "r1" / "report.md").read_text()

    # Unchanged: every evaluation is reused (nothing is computed) and the tables are the same.
    with monkeypatch.context() as mp:
        mp.setattr("icl.report.cache.error_curves", no_evaluation)
        mp.setattr("icl.report.cache.evaluate_suite", no_evaluation)
        assert main(["report", str(sweep_dir), "--out", str(tmp_path / "r2")]) == 0
    for name in ("fig1.csv", "fig3_error.csv", "gap_closed.csv", "runs.csv"):
        assert (tmp_path / "r2" / name).read_text() == (tmp_path / "r1" / name).read_text()

    # Extended: the runs table, the figures' numbers and the recorded step all move to step 8.
    assert main(["train", "--resume", str(run), "train.steps=8", "--no-eval"]) == 0
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "r3")]) == 0
    after = json.loads(cached.read_text())
    assert after["checkpoint"]["global_step"] == 8
    assert after["checkpoint"]["sha256"] != before["checkpoint"]["sha256"]
    assert after["curves"]["model"] != before["curves"]["model"]
    assert after["curves"]["least_squares"] == before["curves"]["least_squares"]  # same prompts
    runs_row = rows(tmp_path / "r3" / "runs.csv")[0]
    assert (runs_row["steps"], runs_row["evaluated step"]) == ("8", "8")
    for name in ("fig1.csv", "fig3_error.csv"):
        assert (tmp_path / "r3" / name).read_text() != (tmp_path / "r1" / name).read_text()
    suite = json.loads((run / "eval" / "paper1_dense_sparse" / "sparsity.nnz_1.json").read_text())
    assert suite["checkpoint"]["global_step"] == 8

    # Other settings are not the cached ones: more prompts are evaluated anew.
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "r4"), "--n-prompts", "40"]) == 0
    assert json.loads(cached.read_text())["settings"]["n_prompts"] == 40


def test_icl_eval_records_its_checkpoint_and_reuses_only_a_matching_result(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep_dir = make_sweep(tmp_path, "ev", BASE, [SPARSE])
    (run,) = [p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file()]
    args = ["eval", str(run), "--suite", "dense_vs_sparse", "--n-prompts", "30", "--baselines", "least_squares,bayes"]
    assert main(args) == 0
    out = run / "eval" / "dense_vs_sparse"
    rec = json.loads((out / "cross.sparse_nnz_1.json").read_text())
    assert rec["checkpoint"] == {
        "path": str((run / "checkpoints" / "last.ckpt").resolve()),
        "global_step": 4,
        "sha256": model_sha256(load_model(run)[0]),
    }
    assert rec["settings"] == {
        "suite": "dense_vs_sparse",
        "scenario": "cross.sparse_nnz_1",
        "n_prompts": 30,
        "seed": rec["settings"]["seed"],
        "baselines": ["least_squares", "bayes"],
        "convention": "mse",
        "gap_closed": rec["gap_closed_text"],
        "definition": {"title": "sparse linear, nnz 1", "n_points": 6, "query": None},
    }
    # The gap closed: in the JSON, the CSV (metric gap_closed) and the summary's table.
    gap = rec["gap_closed"]["model"]
    assert gap["mean"][0] is None and gap["mean"][2] is not None
    assert gap["ci_low"][2] <= gap["mean"][2] <= gap["ci_high"][2]
    csv_gap = [r for r in rows(out / "cross.sparse_nnz_1.csv") if r["metric"] == "gap_closed"]
    assert [r["predictor"] for r in csv_gap] == ["model"] * 6 and csv_gap[0]["mean"] == ""
    assert float(csv_gap[2]["mean"]) == pytest.approx(gap["mean"][2], rel=1e-5)
    summary = (out / "summary.md").read_text()
    assert "| gap closed |" in summary and "step 4, weights sha256" in summary
    capsys.readouterr()

    # The same checkpoint and settings: reused; other settings: evaluated again.
    stamp = (out / "summary.md").stat().st_mtime_ns
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out and (out / "summary.md").stat().st_mtime_ns == stamp
    assert main([*args, "--recompute"]) == 0
    assert "reused" not in capsys.readouterr().out
    assert main([*args[:-1], "least_squares"]) == 0
    assert "reused" not in capsys.readouterr().out
    assert "gap_closed" not in json.loads((out / "cross.sparse_nnz_1.json").read_text())  # no Bayes: no gap

    # A newer checkpoint: evaluated again, recording the new step.
    assert main(["train", "--resume", str(run), "train.steps=6", "--no-eval"]) == 0
    assert main(args) == 0
    assert "reused" not in capsys.readouterr().out
    assert json.loads((out / "cross.sparse_nnz_1.json").read_text())["checkpoint"]["global_step"] == 6
