"""Checkpoints are read weights-only: a pickle payload in a .ckpt never runs, whichever command
reads it (eval, train --resume, eval --baselines checkpoint:, report, sweep --dry-run), and is
refused in one line. A tampered checkpoint (reshaped tensor, missing global_step, Adam moment of
the wrong shape, state_dict not a mapping) is refused in one line on --resume before anything in
the run is rewritten. A good checkpoint still resumes, through Lightning's reader too."""

import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from support import TINY, check_one_line, snapshot

from icl.checkpoint.io import read_checkpoint
from icl.checkpoint.load import load_model
from icl.checkpoint.validate import check_resumable
from icl.checkpoint.writer import AtomicCheckpointIO
from icl.cli import main
from icl.config import load_config
from icl.errors import ICLError
from icl.runs import prepare_new_run, train

FORMS = ["pickle", "zip", "legacy"]
REFUSED = r"refused: it holds objects other than tensors and plain values.*allowed: checkpoints written by icl"
SWEEP_BASE = {  # the run of the fixture, as a sweep's base config (one point, named "run")
    "data": {"n_dims": 3, "n_points": 6, "batch_size": 8},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_points": 8},
    "train": {"steps": 4, "lr": 1e-3, "progress_bar": False, "log_every": 2, "checkpoint_every": 3},
    "eval": {"n_prompts": 20},
}


class Payload:
    """Unpickling this creates the directory ``marker``: proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant(ckpt: dict, form: str, path: Path, marker: Path) -> None:
    """A good checkpoint's contents plus a payload entry, saved as a raw pickle, a torch zip
    archive or torch's legacy format."""
    bad = {**ckpt, "payload": Payload(marker)}
    if form == "pickle":
        with path.open("wb") as f:
            pickle.dump(bad, f)
    else:
        torch.save(bad, path, _use_new_zipfile_serialization=form == "zip")


def tamper(src: Path, dst: Path, change) -> None:
    ckpt = torch.load(src, weights_only=True)
    change(ckpt)
    torch.save(ckpt, dst)


def move_pos(c):
    c["state_dict"]["model.pos"] = c["state_dict"]["model.pos"].reshape(8, 32)


def del_step(c):
    del c["global_step"]


def shrink_moment(c):
    c["optimizer_states"][0]["state"][1]["exp_avg"] = torch.zeros(5)


def list_state(c):
    c["state_dict"] = list(c["state_dict"].values())


TAMPERED = [  # (run directory, change to its last.ckpt, regex of the one line)
    (
        "pos",
        move_pos,
        r"weights do not match its config: size mismatch for model\.pos: \(8, 32\) in the checkpoint, "
        r"\(16, 16\) in the model",
    ),
    ("no_step", del_step, r"last\.ckpt: global_step: got nothing; allowed: an integer >= 0"),
    (
        "moment",
        shrink_moment,
        r"size mismatch for optimizer_states\[0\]\['state'\]\[1\]\['exp_avg'\] "
        r"\(of model\.read_in\.weight\): \(5,\) in the checkpoint, \(16, 3\)",
    ),
    ("list", list_state, r"last\.ckpt: state_dict: got a list of 19; allowed: a mapping of tensor names to tensors"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """One tiny trained run (steps 4, checkpoints at 3 and last), copied into every bad case."""
    d = tmp_path_factory.mktemp("checkpoint_safety")
    cfg = load_config([], [*TINY, "train.steps=4"])
    run = prepare_new_run(cfg, d / "run", overwrite=False)
    train(cfg, run, evaluate=False)
    last = run / "checkpoints" / "last.ckpt"
    good = torch.load(last, weights_only=True)
    (d / "base.yaml").write_text(yaml.safe_dump(SWEEP_BASE))
    for form in FORMS:
        marker = d / f"ran-{form}"
        plant(good, form, d / f"bad-{form}.ckpt", marker)
        shutil.copytree(run, d / f"resume_last-{form}")
        plant(good, form, d / f"resume_last-{form}" / "checkpoints" / "last.ckpt", marker)
        shutil.copytree(run, d / f"resume_newer-{form}")
        plant(good, form, d / f"resume_newer-{form}" / "checkpoints" / "step=0000009.ckpt", marker)
        # `icl report` loads the newest checkpoint of a finished run: here a periodic one past train.steps
        shutil.copytree(run, d / f"report-{form}" / "run")
        plant(good, form, d / f"report-{form}" / "run" / "checkpoints" / "step=0000005.ckpt", marker)
        # `icl sweep --dry-run` reads last.ckpt of every point for its step
        spec = {
            "name": f"dry-{form}",
            "program": "icl",
            "method": "grid",
            "parameters": {"seed": {"values": [0]}},
            "command": ["icl", "sweep", f"dry-{form}.yaml", "--point", "base.yaml", "${args_no_hyphens}"],
        }
        (d / f"dry-{form}.yaml").write_text(yaml.safe_dump(spec))
        point = d / "runs" / f"dry-{form}" / "run"
        shutil.copytree(run, point)
        plant(good, form, point / "checkpoints" / "last.ckpt", marker)
    for name, change, _ in TAMPERED:
        shutil.copytree(run, d / f"tampered-{name}")
        tamper(last, d / f"tampered-{name}" / "checkpoints" / "last.ckpt", change)
    shutil.copytree(run, d / "good")
    return d


def run_cli(lab: Path, monkeypatch, capsys, argv: list[str]) -> tuple[int, str, str]:
    """``icl ARGV`` in ``lab``; asserts that no file there changed and no payload ran."""
    monkeypatch.chdir(lab)
    for marker in lab.glob("ran-*"):
        marker.rmdir()  # left by a case that already failed; each case proves itself
    before = snapshot(lab)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(argv)
    out, err = capsys.readouterr()
    assert not list(lab.glob("ran-*")), f"a payload ran: {argv}"
    assert snapshot(lab) == before, argv  # nothing changed, lost or left behind
    # torch warns before refusing some pickles; on a console that would be a second line
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]
    return rc, out, err


@pytest.mark.parametrize("form", FORMS)
def test_payloads_are_live(lab, tmp_path, form):
    """The planted files do run code when unpickled without weights_only, so the tests below can fail."""
    marker = tmp_path / "ran"
    plant(torch.load(lab / "run" / "checkpoints" / "last.ckpt", weights_only=True), form, tmp_path / "x.ckpt", marker)
    with (tmp_path / "x.ckpt").open("rb") as f:
        pickle.load(f) if form == "pickle" else torch.load(f, weights_only=False)
    assert marker.is_dir()


LOADERS = [  # (id, argv with {f} for the form, regex of the one line, or None where the command succeeds)
    ("eval_checkpoint", ["eval", "bad-{f}.ckpt"], r"bad-{f}\.ckpt: " + REFUSED),
    (
        "resume_bad_last",
        ["train", "--resume", "resume_last-{f}", "train.steps=8"],
        r"--resume resume_last-{f}: .*last\.ckpt: " + REFUSED + r"; move it away to resume from step=0000003\.ckpt",
    ),
    (
        "resume_newer_bad_periodic",
        ["train", "--resume", "resume_newer-{f}", "train.steps=12"],
        r"step=0000009\.ckpt: " + REFUSED + r"; move it away to resume from last\.ckpt",
    ),
    (
        "eval_baseline_checkpoint",
        ["eval", "run", "--baselines", "checkpoint:bad-{f}.ckpt"],
        r"bad-{f}\.ckpt: " + REFUSED,
    ),
    # a finished run whose newest checkpoint is the payload: report needs its model, and refuses it
    ("report", ["report", "report-{f}"], r"step=0000005\.ckpt: " + REFUSED),
    # an unreadable last.ckpt is no error for a listing: the point shows as partial (step=3 of 4)
    ("sweep_dry_run", ["sweep", "dry-{f}.yaml", "--dry-run"], None),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("argv,pattern", [c[1:] for c in LOADERS], ids=[c[0] for c in LOADERS])
def test_payload_never_runs_and_is_refused_in_one_line(lab, monkeypatch, capsys, form, argv, pattern):
    rc, out, err = run_cli(lab, monkeypatch, capsys, [a.format(f=form) for a in argv])
    if pattern is None:
        assert rc == 0 and "Traceback" not in err, err
        assert re.search(r"\] run: partial\n", out), out  # listed by its periodic checkpoint, step 3 of 4
    else:
        check_one_line(rc, err, pattern.format(f=form))


@pytest.mark.parametrize("name,pattern", [(c[0], c[2]) for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_tampered_checkpoint_is_refused_on_resume_before_anything_is_rewritten(lab, monkeypatch, capsys, name, pattern):
    rc, _, err = run_cli(lab, monkeypatch, capsys, ["train", "--resume", f"tampered-{name}", "train.steps=8"])
    check_one_line(rc, err, pattern)
    assert "move it away to resume from step=0000003.ckpt" in err


def test_lightnings_reader_is_the_safe_one(lab):
    io = AtomicCheckpointIO()
    with pytest.raises(ICLError, match=REFUSED):
        io.load_checkpoint(lab / "bad-legacy.ckpt", weights_only=False)  # asked for unsafe: still weights-only
    with pytest.raises(ICLError, match=r"global_step: got nothing"):
        io.load_checkpoint(lab / "tampered-no_step" / "checkpoints" / "last.ckpt")
    assert not list(lab.glob("ran-*"))


def test_good_checkpoint_resumes_through_the_safe_reader(lab, monkeypatch, capsys):
    loads = []
    original = AtomicCheckpointIO.load_checkpoint

    def spy(self, path, *args, **kwargs):
        loads.append(Path(path).name)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "load_checkpoint", spy)
    monkeypatch.chdir(lab)
    assert main(["train", "--resume", "good", "train.steps=6", "--no-eval"]) == 0, capsys.readouterr().err
    assert loads == ["last.ckpt"]  # Lightning read the resume checkpoint through AtomicCheckpointIO
    last = lab / "good" / "checkpoints" / "last.ckpt"
    resumed = read_checkpoint(last)
    check_resumable(resumed, last)
    assert resumed["global_step"] == 6
    model, _ = load_model(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
