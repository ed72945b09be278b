"""Ensemble training end to end: each member's trajectory is its solo run's (weights to 1e-5,
same metrics rows), its checkpoints are ordinary solo checkpoints (`icl eval`, `icl train
--resume`), a killed ensemble resumes to exactly the uninterrupted one, a diverging member is
stopped or skipped alone, and `icl sweep` trains points of one shape as one ensemble."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from icl import runs, runstate
from icl.checkpoint.io import read_checkpoint
from icl.checkpoint.validate import check_resumable
from icl.cli import main
from icl.config import load_config
from icl.ensemble.run import train_ensemble

BASE = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.max_points=8",
    "data.n_dims=3",
    "data.n_points=7",
    "data.batch_size=8",
    "train.progress_bar=false",
    "train.log_every=20",
    "train.checkpoint_every=100",
    "eval.n_prompts=20",
]
# members that differ in what an ensemble lets them: seed, mixture, lr, schedule, clipping, weight decay
VARIANTS = {
    "a": ["seed=1", "train.lr=1e-3"],
    "b": ["seed=2", "train.lr=3e-3", "train.grad_clip=0.5", "train.optimizer=adam", "train.weight_decay=0.01"],
    "c": [
        "seed=3",
        "train.lr=2e-3",
        "data.mixture=[{name: sparse_linear, params: {nnz: 1}}]",
        "train.schedule=warmup_rsqrt",
        "train.warmup_steps=20",
    ],
}


def configs(tmp_path: Path, steps: int, names=VARIANTS, extra=()):
    return [load_config([], [*BASE, *VARIANTS[n], *extra, f"train.steps={steps}", f"name={n}"]) for n in names]


def new_runs(cfgs, root: Path) -> list[Path]:
    dirs = [root / c.name for c in cfgs]
    for c, d in zip(cfgs, dirs, strict=True):
        runs.prepare_new_run(c, d, overwrite=False)
    return dirs


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir)["state_dict"]


def relative_difference(a: dict, b: dict) -> float:
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in b)
    return (num / sum(float((b[k] ** 2).sum()) for k in b)) ** 0.5


def rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_each_member_follows_its_solo_run_and_writes_ordinary_checkpoints(tmp_path, capsys):
    cfgs = configs(tmp_path, 200, extra=["eval.every=100", "eval.periodic_n_prompts=16"])
    dirs = new_runs(cfgs, tmp_path / "ensemble")
    assert set(train_ensemble(cfgs, dirs).values()) == {"trained"}
    for cfg, d in zip(cfgs, dirs, strict=True):
        solo = tmp_path / "solo" / cfg.name
        runs.prepare_new_run(cfg, solo, overwrite=False)
        runs.train(cfg, solo, evaluate=False)
        assert relative_difference(weights(d), weights(solo)) < 1e-5, cfg.name
        ens_rows, solo_rows = rows(d), rows(solo)
        assert [r["step"] for r in ens_rows] == [r["step"] for r in solo_rows]
        assert [r["step"] for r in ens_rows if r["train/loss"]] == ["19", *map(str, range(39, 200, 20))]
        assert float(ens_rows[0]["train/loss"]) == pytest.approx(float(solo_rows[0]["train/loss"]), rel=1e-5)
        # the periodic evaluation of the member at steps 100 and 200, as its solo run's
        key = next(k for k in ens_rows[0] if k.startswith("eval/") and k.endswith("/model/mse@1"))
        evals = [(r["step"], float(r[key])) for r in ens_rows if r[key]]
        solo_evals = [(r["step"], float(r[key])) for r in solo_rows if r[key]]
        assert [s for s, _ in evals] == ["100", "200"] == [s for s, _ in solo_evals]
        assert [v for _, v in evals] == pytest.approx([v for _, v in solo_evals], rel=1e-4)
        ckpt = read_checkpoint(d)
        check_resumable(ckpt, d)  # what Lightning will be handed on a solo resume
        assert ckpt["icl_config"]["name"] == cfg.name and ckpt["global_step"] == 200
        assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == cfg.train.lr
        assert (d / "eval" / "in_distribution" / "summary.md").is_file()
        assert runstate.run_state(d, 200) == "done"
    capsys.readouterr()
    assert main(["eval", str(dirs[2]), "--n-prompts", "20", "--out", str(tmp_path / "eval_c")]) == 0
    assert "sparse_linear" in capsys.readouterr().out
    # a member continues alone, as any run does
    assert main(["train", "--resume", str(dirs[1]), "train.steps=220"]) == 0
    assert read_checkpoint(dirs[1])["global_step"] == 220


def write_sweep(tmp_path: Path, parameters: dict) -> Path:
    base = {
        "data": {"n_dims": 3, "n_points": 6, "batch_size": 8},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_points": 8},
        "train": {"lr": 1e-3, "progress_bar": False, "log_every": 2, "checkpoint_every": 5, "steps": 12},
        "eval": {"n_prompts": 20},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {
        "name": "ens",
        "program": "icl",
        "method": "grid",
        "parameters": parameters,
        "command": ["icl", "sweep", "s.yaml", "--point", "base.yaml", "${args_no_hyphens}"],
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "s.yaml"


def test_a_killed_ensemble_resumes_to_the_uninterrupted_one(tmp_path, monkeypatch, capsys):
    """The process is killed during its 8th checkpoint write: the first member has written its
    step-10 files, the second is cut short in the middle of its own. The sweep's next run resumes
    all three from their common step (5) and ends where an uninterrupted ensemble ends, bit for
    bit, with the same metrics files."""
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, {"seed": {"values": [0, 1, 2]}})
    names = ["seed-0", "seed-1", "seed-2"]
    env = {**os.environ, "ICL_FAULT_KILL_IN_SAVE": "8"}
    cmd = [sys.executable, "-m", "icl", "sweep", "s.yaml", "--members", *names]
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    first, second = (Path("runs/ens") / n for n in names[:2])
    assert runstate.newest_checkpoint(first)[0] == 10 and runstate.newest_checkpoint(second)[0] == 5
    assert list((second / "checkpoints").glob("*.tmp"))
    capsys.readouterr()
    assert main(["sweep", "s.yaml", "--dry-run"]) == 0  # the sweep plans them as one ensemble again
    assert capsys.readouterr().out.count("partial (ensemble of 3)") == 3
    assert main(["sweep", "s.yaml"]) == 0  # runs that plan: one child process
    assert "resumed at step 5" in (first / "resume.log").read_text()
    assert "ensemble of 3 runs" in Path("runs/ens/logs/seed-0+2.log").read_text()
    (tmp_path / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace("name: ens", "name: fresh"))
    assert main(["sweep", "s.yaml", "--members", *names]) == 0
    for n in names:
        resumed, fresh = Path("runs/ens") / n, Path("runs/fresh") / n
        a, b = weights(resumed), weights(fresh)
        assert all(torch.equal(a[k], b[k]) for k in b), n
        assert (resumed / "metrics.csv").read_text() == (fresh / "metrics.csv").read_text()
        # each member's checkpoint remembers its own directory (a solo resume then writes last.ckpt
        # again, not last-v1.ckpt), although the sweep names run directories relative to the cwd
        (state,) = [s for k, s in read_checkpoint(resumed)["callbacks"].items() if k.startswith("ModelCheckpoint")]
        assert state["dirpath"] == str((resumed / "checkpoints").resolve())
        assert state["last_model_path"] == str((resumed / "checkpoints" / "last.ckpt").resolve())


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_diverging_member_is_stopped_or_skipped_alone(tmp_path, capsys, mode):
    # inputs of size 1e30 make member "b"'s squared error overflow at its first step
    cfgs = configs(tmp_path, 60, names=["a", "b"], extra=[f"train.nonfinite={mode}"])
    cfgs[1].data.inputs.scale = 1e30
    dirs = new_runs(cfgs, tmp_path / "ensemble")
    outcome = train_ensemble(cfgs, dirs, evaluate=False)
    err = capsys.readouterr().err
    solo = tmp_path / "solo_a"
    runs.prepare_new_run(cfgs[0], solo, overwrite=False)
    runs.train(cfgs[0], solo, evaluate=False)
    assert relative_difference(weights(dirs[0]), weights(solo)) < 1e-5  # undisturbed
    if mode == "stop":
        assert outcome == {dirs[0]: "trained", dirs[1]: "diverged"}
        assert "non-finite loss or gradient at step 0" in (dirs[1] / "diverged").read_text()
        assert runstate.run_state(dirs[1], 60) == "diverged" and not list((dirs[1] / "checkpoints").glob("*.ckpt"))
        assert "b: train: non-finite loss or gradient at step 0" in err
    else:
        assert outcome == {dirs[0]: "trained", dirs[1]: "trained"}
        assert rows(dirs[1])[-1]["train/skipped_steps"] == "60.0"
        init = weights(dirs[1])
        start = read_checkpoint(dirs[1])["optimizer_states"][0]["state"]
        assert start == {} or float(start[0]["step"]) == 0.0  # no update ever applied
        assert all(torch.isfinite(v).all() for v in init.values())


def test_sweep_groups_points_of_one_shape_into_ensembles(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, {"seed": {"values": [0, 1]}, "data.n_dims": {"values": [2, 3]}})
    assert main(["sweep", "s.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("(ensemble of 2)") == 4
    assert "--members n_dims-2__seed-0 n_dims-2__seed-1" in out and "--members n_dims-3__seed-0 n_dims-3__seed-1" in out
    assert main(["sweep", "s.yaml", "--dry-run", "--ensemble", "off"]) == 0
    assert "ensemble" not in capsys.readouterr().out
    assert main(["sweep", "s.yaml", "--ensemble", "1x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ensemble: got '1x'; allowed: auto, off, or an integer >= 1" in err[0]
    assert main(["sweep", "s.yaml", "--members", "nope"]) == 2
    assert "--members: got ['nope']; allowed: names of s.yaml's points" in capsys.readouterr().err


@pytest.mark.slow  # a child process per run of the sweep: about 12 s
def test_sweep_trains_an_ensemble_in_a_child_process(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, {"seed": {"values": [0, 1]}})
    assert main(["sweep", "s.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.count("started in an ensemble of 2 (log: runs/ens/logs/seed-0+1.log)") == 2
    assert out.count("finished in") == 2
    assert all(runstate.run_state(Path("runs/ens") / n, 12) == "done" for n in ("seed-0", "seed-1"))
    assert main(["sweep", "s.yaml"]) == 0
    assert capsys.readouterr().out.count("skipped (finished") == 2


@pytest.mark.slow  # eight points trained in child processes: about 40 s
def test_sweep_trains_the_same_models_with_and_without_ensembles(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, {"seed": {"values": [0, 1]}, "data.n_dims": {"values": [2, 3]}})
    assert main(["sweep", "s.yaml", "--ensemble", "off", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "ensemble" not in out and out.count("finished in") == 4
    alone = {p.name: weights(p) for p in Path("runs/ens").glob("n_dims-*")}
    (tmp_path / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace("name: ens", "name: together"))
    assert main(["sweep", "s.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.count("started in an ensemble of 2") == 4 and out.count("finished in") == 4
    for name, w in alone.items():
        assert relative_difference(weights(Path("runs/together") / name), w) < 1e-5, name
