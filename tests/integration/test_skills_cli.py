"""Skill composition end to end at toy size: a few training steps on the shipped CPU-scale config,
`icl eval --suite skills` (seen vs held-out tuples, dictionary baselines) and the composition
report of the run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from icl.config import load_config
from icl.evaluation.composition import report_run
from icl.runs import prepare_new_run, train

pytestmark = pytest.mark.slow  # a training run, an `icl eval` process and the report: ~40 s on 2 cores

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["train.steps=3", "data.batch_size=8", "model.n_layer=1", "model.n_embd=16", "eval.n_prompts=20"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = load_config([ROOT / "configs/skills/sparse_whitelist.yaml"], SMALL)
    path = prepare_new_run(cfg, tmp_path_factory.mktemp("skills") / "run", overwrite=False)
    train(cfg, path, evaluate=False)
    return path


def test_eval_suite_skills_reports_seen_and_heldout_tuples(run_dir, tmp_path):
    args = ["--suite", "skills", "--n-prompts", "20", "--baselines", "least_squares,oracle_support,dictionary_lasso"]
    proc = subprocess.run(
        [sys.executable, "-m", "icl", "eval", str(run_dir), *args, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("skills.seen_size1", "skills.seen_size2", "skills.heldout_size2"):
        record = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        text = json.dumps(record)
        assert "dictionary_lasso" in text and "model" in text
    # The oracle needs each prompt's tuple: icl eval skips it with a note, never fails the suite.
    assert (
        "oracle_support skipped (oracle_support: needs each prompt's tuple"
        in (tmp_path / "out" / "summary.md").read_text()
    )


def test_composition_report_of_a_run(run_dir, tmp_path):
    rows = report_run(run_dir, tmp_path / "comp", n_prompts=16, n_queries=12)
    by = {(r["predictor"], r["group"], r["k"]): r for r in rows}
    assert set(by) >= {("model", "heldout", 2), ("oracle_support", "seen", 2), ("zero", "single", 1)}
    assert by["oracle_support", "heldout", 2]["full_marks"] == 1.0 and by["zero", "seen", 2]["full_marks"] == 0.0
    saved = json.loads((tmp_path / "comp" / "composition.json").read_text())
    assert saved["rows"] == rows and saved["settings"]["n_context"] == 4  # the config's eval.table_k
    assert "| oracle_support | heldout | 2 | 1.000" in (tmp_path / "comp" / "composition.md").read_text()


def test_icl_compose_writes_the_report_and_refuses_bad_arguments(run_dir, tmp_path, capsys):
    from icl.cli import main

    assert main(["compose", str(run_dir), "--n-prompts", "8", "--k", "3", "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "composition.json").read_text())["settings"]["n_context"] == 3
    for bad, match in ((["--n-prompts", "0"], "--n-prompts: got 0"), (["--k", "99"], "n_context 99")):
        assert main(["compose", str(run_dir), *bad, "--out", str(tmp_path / "x")]) != 0
        assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
