"""`icl align` end to end on a tiny run trained a few steps, its bad input, and `icl eval` with
eval.agreement."""

import json
import subprocess
import sys

import pytest
from support import TINY

from icl.cli import main
from icl.config import load_config
from icl.runs import prepare_new_run, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    cfg = load_config([], [*TINY, "model.n_layer=2", "train.steps=6", "model.max_points=10"])
    path = prepare_new_run(cfg, root / "run", overwrite=False)
    train(cfg, path, evaluate=False)
    return path


def test_icl_align_writes_scores_agreement_and_figures(run_dir, tmp_path, capsys):
    out = tmp_path / "align"
    argv = ["align", str(run_dir), "truth", "least_squares", "--metrics", "cka,mutual_knn", "--n-prompts", "48"]
    assert main([*argv, "--permutations", "9", "--context", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cka truth vs least_squares: raw 1.0000" in printed
    record = json.loads((out / "align.json").read_text())
    assert [len(record["alignment"][m]) for m in ("cka", "mutual_knn")] == [3, 3]
    assert record["settings"]["context"] == 3 and record["settings"]["n_prompts"] == 48
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == [
        "agreement.png",
        "layers.run.png",
        "sources.png",
    ]
    again = tmp_path / "again"
    assert main([*argv, "--permutations", "9", "--context", "3", "--out", str(again)]) == 0
    assert json.loads((again / "align.json").read_text())["alignment"] == record["alignment"]  # seeded
    # --prompts restricts the prompts to one class; the run's only class leaves every draw as it was
    one = tmp_path / "one"
    assert main([*argv, "--permutations", "9", "--context", "3", "--prompts", "dense_linear", "--out", str(one)]) == 0
    restricted = json.loads((one / "align.json").read_text())
    assert restricted["settings"]["prompts"] == "dense_linear" and restricted["alignment"] == record["alignment"]


@pytest.mark.slow
def test_icl_align_end_to_end(run_dir, tmp_path):
    out = tmp_path / "align"
    args = [str(run_dir), f"{run_dir}:fingerprint", "truth", "least_squares", "bayes"]
    opts = ["--n-prompts", "64", "--permutations", "9", "--context", "3", "--steps", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "icl", "align", *args, *opts], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert f"alignment written to {out}" in proc.stdout
    record = json.loads((out / "align.json").read_text())
    labels = [s["label"] for s in record["sources"]]
    assert labels == ["run", "run:fingerprint", "truth", "least_squares", "bayes"]
    assert record["sources"][0]["layers"] == ["emb", "1", "2"]
    assert set(record["alignment"]) == {"mutual_knn", "cka", "cka_unbiased", "cknna"}
    for pairs in record["alignment"].values():
        assert len(pairs) == 10
        for rec in pairs:
            assert 1 / 10 <= rec["p_value"] <= 1 and rec["n_permutations"] == 9
            assert rec["raw"] == pytest.approx(max(max(row) for row in rec["table"]))
    # With d = 3 noiseless dense examples least squares is the truth and Bayes is least squares.
    ls_truth = next(r for r in record["alignment"]["cka"] if (r["a"], r["b"]) == ("truth", "least_squares"))
    assert ls_truth["raw"] == pytest.approx(1.0, abs=1e-6)
    assert ls_truth["p_value"] == pytest.approx(0.1)
    diff = record["agreement"]["prediction_difference"]["truth vs least_squares"]
    assert max(diff[3:]) < 1e-8 < diff[1]
    assert record["agreement"]["linearity_r2"]["least_squares"] == pytest.approx(1.0)
    steps = sorted({row["step"] for row in record["trajectory"]})
    assert steps == [3, 6]
    assert {row["reference"] for row in record["trajectory"]} == {"truth", "bayes"}
    for name in (
        "align.csv",
        "agreement.csv",
        "trajectory.csv",
        "sources.png",
        "agreement.png",
        "trajectory.png",
        "trajectory_steps.png",
    ):
        assert (out / name).stat().st_size > 0
    assert (out / "layers.run.png").is_file()
    assert len((out / "align.csv").read_text().splitlines()) == 1 + 4 * 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{run}", "nonsense"], "source 'nonsense': no such checkpoint or run directory, nor an algorithm; allowed:"),
        (["{run}:7", "truth"], "layers [7]; allowed: 0 (embedding) .. 2 or fingerprint"),
        (["{run}:two", "truth"], "layer 'two'; allowed: comma-separated layer indices"),
        (["truth", "least_squares"], "no checkpoint; allowed: at least one RUN"),
        (["{run}", "truth", "--metrics", "cosine"], "--metrics: got 'cosine'; allowed: a comma-separated subset"),
        (["{run}", "truth", "--n-prompts", "5"], "--n-prompts: got 5; allowed:"),
        (["{run}", "truth", "--context", "40"], "--context: got 40; allowed: 1..5"),
        (["{run}", "{run}"], "name the same source twice"),
        (["{run}", "truth", "--prompts", "sinusoid"], "--prompts: got 'sinusoid'; allowed: a class of the run's"),
    ],
)
def test_bad_input_is_one_line(run_dir, tmp_path, capsys, args, message):
    argv = ["align", *(a.format(run=run_dir) for a in args), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_icl_eval_records_agreement_when_asked(run_dir, tmp_path):
    out = tmp_path / "eval"
    argv = ["eval", str(run_dir), "eval.agreement=true", "--n-prompts", "30", "--baselines", "least_squares,bayes"]
    assert main([*argv, "--out", str(out)]) == 0
    record = json.loads((out / "in_dist.dense_linear.json").read_text())
    agreement = record["agreement"]
    assert set(agreement) == {"model vs least_squares", "model vs bayes"}
    assert len(agreement["model vs least_squares"]) == len(record["k"])
    plain = tmp_path / "plain"
    assert main(["eval", str(run_dir), "--n-prompts", "30", "--out", str(plain)]) == 0
    assert "agreement" not in json.loads((plain / "in_dist.dense_linear.json").read_text())
