"""`icl probe RUN` end to end on a tiny model trained by `icl train`, and its bad arguments: one
line, a non-zero exit, nothing written."""

import csv
import json

import pytest
from support import TINY

from icl.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    args = [*TINY, "model.n_layer=2", "train.steps=3", f"out_dir={root}", "name=run"]
    assert main(["train", *args, "--no-eval"]) == 0
    return root / "run"


def test_icl_probe_writes_scores_controls_and_figures(run_dir, tmp_path, capsys):
    out = tmp_path / "probe"
    args = ["--n-prompts", "120", "--probe-seeds", "2", "--ks", "2,6", "--probe", "both", "--out", str(out)]
    assert main(["probe", str(run_dir), *args]) == 0
    assert "target component skipped: the mixture has one class" in capsys.readouterr().out
    record = json.loads((out / "probe.json").read_text())
    assert record["layers"] == [0, 1, 2] and record["ks"] == [2, 6] and record["probes"] == ["ridge", "mlp"]
    assert record["prompts"] == "the run's mixture"
    assert record["split"] == {"train": 72, "val": 24, "test": 24}
    assert list(record["targets"]) == ["w", "ols", "ridge", "lasso", "xty"]
    assert record["targets"]["w"]["control"] == "re-paired ols" and record["lasso_alpha"] == 0.01
    for probe in ("ridge", "mlp"):
        entry = record["results"][probe]["ols"]
        r2 = entry["model"]["real"]["r2"]
        assert len(r2["mean"]) == 3 and len(r2["mean"][0]) == 2
        for low, mean, high in zip(r2["low"], r2["mean"], r2["high"], strict=True):
            assert all(lo <= m <= hi for lo, m, hi in zip(low, mean, high, strict=True))
        assert entry["did"]["score"] == "r2" and len(entry["did"]["by_layer"]["mean"]) == 3
    assert len(record["error_curve"]["model"]) == 6
    rows = list(csv.DictReader((out / "probe.csv").open()))
    # 2 probes x 5 targets x 2 representations x 2 variants x 2 scores, and 2 x 5 did rows, each 3 layers x 2 i's
    assert len(rows) == (2 * 5 * 2 * 2 * 2 + 2 * 5) * 3 * 2
    for probe in ("ridge", "mlp"):
        for stem in ("layers", "ks", "did"):
            assert (out / f"probe_{stem}_{probe}.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "7"], "icl: error: --layers: got 7; allowed: all or numbers in 0 (embedding) .. 2"),
        (["--ks", "9"], "icl: error: --ks: got 9; allowed: numbers in 1 .. 6 for --position y"),
        (["--position", "z"], "icl: error: --position: got 'z'; allowed: y, x, mean"),
        (["--targets", "w,beta"], "icl: error: --targets: got 'beta'; allowed: a comma-separated list of w, ols,"),
        (["--probe", "svm"], "icl: error: --probe: got 'svm'; allowed: both, ridge, mlp"),
        (["--n-prompts", "3"], "icl: error: --n-prompts: got 3; allowed: an integer in 10..1000000"),
        (["--targets", "support"], "icl: error: --targets: none of support applies to this run's mixture"),
        (["extra"], "icl: error: unrecognized arguments: extra"),
        (["--prompts", "sinusoid"], "icl: error: --prompts: got 'sinusoid'; allowed: a class of the run's mixture"),
    ],
)
def test_bad_arguments_give_one_line(run_dir, tmp_path, capsys, args, message):
    out = tmp_path / "probe"
    assert main(["probe", str(run_dir), "--n-prompts", "40", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not out.exists()


def test_a_missing_run_gives_one_line(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icl: error:") and err.count("\n") == 1
