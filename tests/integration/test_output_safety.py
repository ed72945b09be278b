"""What icl may replace (icl/outputs.py): commands that would replace or delete a run, a sweep, a run's
own files or a directory icl did not write are refused in one line, exit 2, with every file intact;
icl's own earlier outputs (marked, or written before markers existed) are still replaced."""

import os
import shutil
from pathlib import Path

import pytest
from support import TINY, check_one_line, snapshot

from icl import outputs
from icl.cli import main
from icl.config import load_config
from icl.errors import ICLError
from icl.runs import prepare_new_run, train

NEW = [*TINY, "train.steps=4", "--no-eval"]

# (id, argv, regex the one stderr line must match). Paths are relative to the fixture directory.
CASES = [
    (
        "eval_out_is_the_run",
        ["eval", "run", "--out", "run"],
        r"--out run: is a run directory \(checkpoints, config, metrics\); allowed: a new directory, or an earlier "
        r"icl eval output to replace$",
    ),
    (
        "eval_out_is_a_legacy_run",
        ["eval", "run", "--out", "legacy_run"],
        r"--out legacy_run: is a run directory \(checkpoints, config, metrics\)",
    ),
    (
        "eval_out_is_the_checkpoints",
        ["eval", "run", "--out", "run/checkpoints"],
        r"--out run/checkpoints: is inside run run's own files; allowed: run/eval/\.\.\. or a path outside the run$",
    ),
    (
        "eval_out_is_new_path_in_run",
        ["eval", "run", "--out", "run/results"],
        r"--out run/results: is inside run run's own files; allowed: run/eval/\.\.\.",
    ),
    ("eval_out_is_the_eval_area", ["eval", "run", "--out", "run/eval"], r"--out run/eval: is inside run run's own"),
    ("eval_out_is_a_sweep", ["eval", "run", "--out", "sweep"], r"--out sweep: holds run sweep/a \(a sweep or project"),
    (
        "eval_out_holds_runs_deep",
        ["eval", "run", "--out", "project"],
        r"--out project: holds run project/runs/deep/q \(a sweep or project directory\); allowed: a new directory",
    ),
    (
        "eval_out_is_foreign",
        ["eval", "run", "--out", "foreign"],
        r"--out foreign: is not empty and not an icl eval output \(no \.icl-output marker\); allowed: a new directory",
    ),
    ("eval_out_is_a_report", ["eval", "run", "--out", "sweep/report"], r"--out sweep/report: is an icl report output"),
    (
        "eval_out_inside_an_eval_output",
        ["eval", "run", "--out", "run/eval/done/sub"],
        r"--out run/eval/done/sub: is inside an icl eval output run/eval/done; allowed: a path outside it",
    ),
    (
        "eval_user_partial_dir",
        ["eval", "run", "--out", "mine"],
        r"--out mine: mine\.partial exists and is not an icl eval output \(icl writes new results there before "
        r"renaming them to mine\); allowed: move or rename mine\.partial$",
    ),
    ("eval_user_old_dir", ["eval", "run", "--out", "kept"], r"--out kept: kept\.old exists and is not an icl eval"),
    ("eval_out_is_a_link", ["eval", "run", "--out", "link"], r"--out link: is a symbolic link; allowed: a real dir"),
    ("eval_out_is_dot", ["eval", "run", "--out", "."], r"--out \.: ends in '\.' or '\.\.'; allowed: a path that"),
    ("eval_out_is_a_file", ["eval", "run", "--out", "afile"], r"--out afile: is a file; allowed: a directory"),
    (
        "report_out_is_the_sweep",
        ["report", "sweep", "--out", "sweep"],
        r"--out sweep: holds run sweep/a \(a sweep or project directory\); allowed: a new directory, or an earlier "
        r"icl report output to replace$",
    ),
    ("report_out_is_a_run", ["report", "sweep", "--out", "sweep/a"], r"--out sweep/a: is a run directory"),
    ("report_out_is_an_eval", ["report", "sweep", "--out", "run/eval/done"], r"run/eval/done: is an icl eval output"),
    (
        "overwrite_foreign_dir",
        ["train", *NEW, "--overwrite", "--run-dir", "foreign"],
        r"--overwrite: foreign is not an icl run directory \(no config\.yaml/checkpoints\); allowed: a run "
        r"directory, or a new or empty path$",
    ),
    (
        "overwrite_project_with_its_own_config",
        ["train", *NEW, "--overwrite", "--run-dir", "mlproject"],
        r"--overwrite: mlproject is not an icl run directory \(its config\.yaml is not an icl config\)",
    ),
    (
        "overwrite_a_sweep",
        ["train", *NEW, "--overwrite", "--run-dir", "sweep"],
        r"--overwrite: sweep holds run sweep/a",
    ),
    (
        "overwrite_run_holding_a_run",
        ["train", *NEW, "--overwrite", "--run-dir", "nested"],
        r"--overwrite: nested holds another run nested/inner; allowed: a run directory that holds no run",
    ),
    (
        "overwrite_an_eval_output",
        ["train", *NEW, "--overwrite", "--run-dir", "run/eval/done"],
        r"--overwrite: run/eval/done is inside run run's own files; allowed: a path outside the run$",
    ),
    (
        "new_run_inside_a_run",
        ["train", *NEW, "--run-dir", "run/checkpoints/again"],
        r"run directory run/checkpoints/again: is inside run run's own files; allowed: a path outside the run$",
    ),
    (
        "foreign_dir_without_overwrite",
        ["train", *NEW, "--run-dir", "foreign"],
        r"run directory foreign exists and is not an icl run directory; allowed: a new or empty path",
    ),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config([], [*TINY, "train.steps=4"])
    run = prepare_new_run(cfg, d / "run", overwrite=False)
    train(cfg, run, evaluate=False)
    return run


@pytest.fixture(scope="module")
def workdir(tiny_run, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("output_safety")
    run = d / "run"
    shutil.copytree(tiny_run, run)
    done = run / "eval" / "done"  # an earlier eval output inside the run's eval area
    done.mkdir(parents=True)
    outputs.mark(done, outputs.EVAL)
    (done / "summary.md").write_text("# earlier results\n")
    legacy = d / "legacy_run"
    shutil.copytree(tiny_run, legacy)
    (legacy / outputs.MARKER).unlink()  # a run written before markers existed
    for name in ("a", "b"):
        shutil.copytree(tiny_run, d / "sweep" / name)
    report = d / "sweep" / "report"
    report.mkdir()
    outputs.mark(report, outputs.REPORT)
    (report / "report.md").write_text("# earlier report\n")
    shutil.copytree(tiny_run, d / "project" / "runs" / "deep" / "q")
    code = d / "mlproject"
    (code / "checkpoints").mkdir(parents=True)
    (code / "config.yaml").write_text("lr: 0.1\nlayers: 4\n")  # someone else's config beside checkpoints/
    (code / "checkpoints" / "model.pt").write_bytes(b"weights")
    shutil.copytree(tiny_run, d / "nested")
    shutil.copytree(tiny_run, d / "nested" / "inner")
    (d / "foreign").mkdir()
    (d / "foreign" / "thesis.tex").write_text("precious")
    (d / "mine.partial").mkdir()
    (d / "mine.partial" / "notes.txt").write_text("a user's folder that happens to end in .partial")
    (d / "kept.old").mkdir()
    (d / "kept.old" / "data.csv").write_text("1,2\n")
    os.symlink(run, d / "link")
    (d / "afile").write_text("precious")
    return d


@pytest.mark.parametrize("argv,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_replacing_what_icl_did_not_write_is_refused_and_loses_nothing(workdir, monkeypatch, capsys, argv, pattern):
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    rc = main(list(argv))
    check_one_line(rc, capsys.readouterr().err, pattern)
    assert snapshot(workdir) == before  # nothing removed, changed or left behind


def test_refusals_come_before_the_model_is_loaded(workdir, monkeypatch, capsys):
    import icl.checkpoint.load

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the output directory was checked")

    monkeypatch.setattr(icl.checkpoint.load, "load_model", fail)
    monkeypatch.chdir(workdir)
    check_one_line(main(["eval", "run", "--out", "run"]), capsys.readouterr().err, r"is a run directory")


def _copy_run(tiny_run: Path, dest: Path) -> Path:
    shutil.copytree(tiny_run, dest)
    return dest


def _checkpoints(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}


def test_eval_again_replaces_its_own_earlier_output(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path / "r")
    ckpts = _checkpoints(run)
    out = run / "eval" / "in_distribution"
    assert main(["eval", str(run), "--n-prompts", "5"]) == 0
    assert outputs.kind_of(out) == outputs.EVAL and (out / outputs.MARKER).read_text() == "eval\n"
    assert "5 prompts per scenario" in (out / "summary.md").read_text()
    assert main(["eval", str(run), "--n-prompts", "6"]) == 0, capsys.readouterr().err
    assert "6 prompts per scenario" in (out / "summary.md").read_text()
    assert (out / outputs.MARKER).is_file()
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["in_distribution"]  # no .partial or .old left
    assert _checkpoints(run) == ckpts and (run / "config.yaml").is_file()


def test_legacy_outputs_and_stale_staging_are_replaced(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path / "r")
    out = run / "eval" / "in_distribution"
    out.mkdir(parents=True)  # an eval output written before markers existed
    (out / "summary.md").write_text("# old\n")
    (out / "in_dist.dense_linear.json").write_text("{}")
    (out / "in_dist.dense_linear.png").write_bytes(b"png")
    stale = run / "eval" / "in_distribution.partial"  # left by a kill, before markers existed
    stale.mkdir()
    (stale / "in_dist.dense_linear.csv").write_text("k\n")
    (stale / "summary.md.tmp").write_text("half")
    assert outputs.kind_of(out) == outputs.EVAL
    assert main(["eval", str(run), "--n-prompts", "5"]) == 0, capsys.readouterr().err
    assert (out / outputs.MARKER).is_file() and "# old" not in (out / "summary.md").read_text()
    assert not stale.exists()
    legacy_report = tmp_path / "report"
    legacy_report.mkdir()
    for name in ("report.md", "fig1.csv", "fig1.png", "notes.md"):
        (legacy_report / name).write_text("x")
    assert outputs.kind_of(legacy_report) == outputs.REPORT
    outputs.check_replaceable(legacy_report, outputs.REPORT, "--out")
    (legacy_report / "sub").mkdir()  # no longer the shape of a report: someone else's files may be in it
    assert outputs.kind_of(legacy_report) is None
    with pytest.raises(ICLError, match="is not empty and not an icl report output"):
        outputs.check_replaceable(legacy_report, outputs.REPORT, "--out")


def test_eval_into_an_empty_directory_is_accepted(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path / "r")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # only directories: nothing to lose
    assert main(["eval", str(run), "--n-prompts", "5", "--out", str(empty)]) == 0, capsys.readouterr().err
    assert (empty / "summary.md").is_file() and outputs.kind_of(empty) == outputs.EVAL


def test_overwrite_replaces_a_run_and_marks_it(tiny_run, tmp_path):
    cfg = load_config([], [*TINY, "train.steps=4"])
    legacy = _copy_run(tiny_run, tmp_path / "legacy")
    (legacy / outputs.MARKER).unlink()
    assert outputs.kind_of(legacy) == outputs.RUN  # config.yaml of an icl config beside checkpoints/
    for run in (_copy_run(tiny_run, tmp_path / "marked"), legacy):
        (run / ".lock").write_text("pid 1 on host\n")  # the run's lock: kept for the process holding it
        assert prepare_new_run(cfg, run, overwrite=True) == run
        assert (run / outputs.MARKER).read_text() == "run\n" and (run / "config.yaml").is_file()
        assert list((run / "checkpoints").iterdir()) == [] and (run / ".lock").is_file()
    locked_only = tmp_path / "locked_only"  # icl sweep takes the lock before the run has a file
    locked_only.mkdir()
    (locked_only / ".lock").write_text("")
    prepare_new_run(cfg, locked_only, overwrite=True)
    assert outputs.kind_of(locked_only) == outputs.RUN


def test_a_new_run_is_marked_and_an_empty_directory_is_accepted(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["train", *NEW, "--run-dir", str(tmp_path / "empty")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "empty" / outputs.MARKER).read_text() == "run\n"
    assert (tmp_path / "empty" / "checkpoints" / "last.ckpt").is_file()
