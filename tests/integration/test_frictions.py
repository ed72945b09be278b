"""Small CLI and logging frictions: `icl --version`, `icl list` and the registry names in
`icl eval --help`, metrics.csv columns in natural order, and the final step's row whatever
train.log_every is (also across a resume)."""

import csv
import importlib.metadata
import random
import shutil
import subprocess
import sys

import pytest
from support import TINY

import icl
from icl.baselines import BASELINES
from icl.cli import main
from icl.config import load_config
from icl.evaluation.queries import QUERY_SHIFTS
from icl.evaluation.scenarios import SCENARIOS, suites
from icl.runs import prepare_new_run, train
from icl.tasks import TASKS
from icl.trackers import CSVMetrics


def test_version_prints_the_installed_version_and_exits_0():
    proc = subprocess.run([sys.executable, "-m", "icl", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"icl {importlib.metadata.version('icl')}\n"


def test_version_falls_back_to_the_package_version(monkeypatch, capsys):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out == f"icl {icl.__version__}\n"


def _sections(text: str) -> dict[str, dict[str, str]]:
    """`icl list` output -> section title -> name -> description."""
    sections: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = sections.setdefault(line.rstrip(":"), {})
        elif line.strip():
            name, _, text = line.strip().partition(" ")
            current[name] = text.strip()
    return sections


def _first_line(obj) -> str:
    return (obj.__doc__ or "").strip().splitlines()[0].strip() if (obj.__doc__ or "").strip() else ""


def test_list_names_every_registered_class_baseline_suite_scenario_and_shift(capsys):
    assert main(["list"]) == 0
    sections = _sections(capsys.readouterr().out)
    by_prefix = {title.split(" (")[0]: entries for title, entries in sections.items()}
    assert list(by_prefix) == ["function classes", "baselines", "suites", "scenario families", "query shifts"]
    for prefix, registry in [
        ("function classes", TASKS),
        ("baselines", BASELINES),
        ("scenario families", SCENARIOS),
        ("query shifts", QUERY_SHIFTS),
    ]:
        assert list(by_prefix[prefix]) == list(registry), prefix
        for name, obj in registry.items():
            assert by_prefix[prefix][name] == _first_line(obj), (prefix, name)
    assert by_prefix["suites"] == {name: ", ".join(families) for name, families in suites().items()}
    assert by_prefix["baselines"]["zero"].startswith("Predicts 0")  # a description, not just the name


def test_list_refuses_extra_arguments(capsys):
    assert main(["list", "extra"]) == 2
    assert "unrecognized arguments: extra" in capsys.readouterr().err


def _eval_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_eval_help_names_the_suites_and_baselines_from_the_registries(capsys, monkeypatch):
    text = _eval_help(capsys)
    for name in [*suites(), *SCENARIOS, *(b for b in BASELINES if b != "checkpoint")]:
        assert name in text, name
    assert "checkpoint:PATH" in text
    # Built from the registries when asked for, not hard-coded: a new entry shows up.
    monkeypatch.setitem(BASELINES, "my_new_baseline", BASELINES["zero"])
    monkeypatch.setitem(suites(), "my_new_suite", ["in_distribution"])
    text = _eval_help(capsys)
    assert "my_new_baseline" in text and "my_new_suite" in text


def test_metrics_columns_sort_naturally_whatever_order_they_arrive_in(tmp_path):
    names = ["train/loss", *(f"train/loss@{k}" for k in range(12)), "curriculum/dims", "eval/s/p/mse@10"]
    names.append("eval/s/p/mse@9")
    headers = []
    for seed in range(3):
        order = names[:]
        random.Random(seed).shuffle(order)
        run_dir = tmp_path / str(seed)
        run_dir.mkdir()
        log = CSVMetrics(run_dir)
        log.log_metrics({k: 1.0 for k in order[:5]}, step=0)  # new columns arrive in a later row
        log.log_metrics({k: 2.0 for k in reversed(order)}, step=1)
        headers.append((run_dir / "metrics.csv").read_text().splitlines()[0])
    assert headers[0] == headers[1] == headers[2]
    header = headers[0].split(",")
    assert header[:3] == ["step", "curriculum/dims", "eval/s/p/mse@9"]
    losses = [h for h in header if h.startswith("train/loss@")]
    assert losses == [f"train/loss@{k}" for k in range(12)]
    assert header.index("train/loss@2") < header.index("train/loss@10")
    # A resumed logger re-reads the file and keeps the same order (and rewrites an old, unsorted header).
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.csv").write_text("step,train/loss@10,train/loss@2\n0,1.0,2.0\n")
    CSVMetrics(old, resume_step=1)
    assert (old / "metrics.csv").read_text().splitlines() == ["step,train/loss@2,train/loss@10", "0,2.0,1.0"]


def test_metrics_csv_of_a_real_run_sorts_positions_naturally(tmp_path):
    cfg = load_config([], [*TINY, "data.n_points=12", "model.max_points=12", "train.steps=2"])
    run_dir = prepare_new_run(cfg, tmp_path / "run", overwrite=False)
    train(cfg, run_dir, evaluate=False)
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert [h for h in header if h.startswith("train/loss@")] == [f"train/loss@{k}" for k in range(12)]


def _steps(run_dir) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader((run_dir / "metrics.csv").open())]


@pytest.mark.parametrize(("log_every", "expected"), [(100, [4]), (2, [1, 3, 4]), (5, [4])])
def test_the_last_step_is_always_logged(tmp_path, log_every, expected):
    cfg = load_config([], [*TINY, "train.steps=5", f"train.log_every={log_every}"])
    run_dir = prepare_new_run(cfg, tmp_path / "run", overwrite=False)
    train(cfg, run_dir, evaluate=False)
    assert _steps(run_dir) == expected


def test_last_step_row_survives_a_resume_byte_for_byte(tmp_path):
    """log_every > steps: the one row (the last step) comes after every periodic checkpoint; a
    run resumed from the first checkpoint writes the same metrics.csv as the uninterrupted run."""
    overrides = [*TINY, "train.steps=7", "train.log_every=100", "train.checkpoint_every=3"]
    cfg = load_config([], overrides)
    ref = prepare_new_run(cfg, tmp_path / "ref", overwrite=False)
    train(cfg, ref, evaluate=False)
    assert _steps(ref) == [6]
    resumed = tmp_path / "resumed"
    shutil.copytree(ref, resumed)
    for name in ("last.ckpt", "step=0000006.ckpt"):  # as if killed after the step-3 save
        (resumed / "checkpoints" / name).unlink()
    assert main(["train", "--resume", str(resumed), "--no-eval"]) == 0
    assert (resumed / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes()
