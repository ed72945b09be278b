"""Sweeps: every shipped sweep expands to valid configs, the W&B agent's command (built offline
by W&B's own code) trains the same point as a local run, bad sweep files are refused in one
line, and a killed local sweep continues without redoing finished points."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import hold_lock

from icl import runstate, sweeps
from icl.cli import main
from icl.config import to_dict
from icl.errors import ICLError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))
GRID = {
    "architectures": 3,
    "dense_sparse": 5,
    "dense_relu": 5,
    "linear_sinusoid": 3,
    "model_size": 6,
    "repro_dense_sparse": 5,
    "repro_linear_sinusoid": 3,
    "repro_model_size": 2,
    "repro_selection": 5,
    "repro_selection_seeds": 6,
    "search_mixture_stage1": 4,
    "search_mixture_stage2": 1,
    "search_mixture_stage3": 1,
    "search_mixture_stage4": 1,
    "search_mixture_stage6": 1,
    "search_mixture_stage7": 1,
    "search_specialists_c": 2,
}
TINY_BASE = {
    "data": {"n_dims": 3, "n_points": 6, "batch_size": 8},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_points": 8},
    "train": {"lr": 1e-3, "progress_bar": False, "log_every": 2, "checkpoint_every": 5},
    "eval": {"n_prompts": 20},
}


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # sweep files name their paths relative to the repository root


def write_sweep(name: str, parameters: dict, change: dict | None = None) -> None:
    """In the current directory: base.yaml (TINY_BASE) and s.yaml, a grid sweep over
    ``parameters`` whose command is ``icl sweep s.yaml --point base.yaml``; ``change`` replaces
    top-level keys of the sweep file."""
    Path("base.yaml").write_text(yaml.safe_dump(TINY_BASE))
    spec = {
        "name": name,
        "program": "icl",
        "method": "grid",
        "parameters": parameters,
        "command": ["icl", "sweep", "s.yaml", "--point", "base.yaml", "${args_no_hyphens}"],
        **(change or {}),
    }
    Path("s.yaml").write_text(yaml.safe_dump(spec))


def landed(node, value) -> bool:
    """Whether swept ``value`` is in config ``node``: mappings key by key (the config adds its
    defaults), lists item by item, scalars equal."""
    if isinstance(value, dict):
        return isinstance(node, dict) and all(k in node and landed(node[k], v) for k, v in value.items())
    if isinstance(value, list):
        return isinstance(node, list) and len(node) == len(value) and all(map(landed, node, value))
    return node == value


def test_every_shipped_sweep_expands_to_valid_distinct_configs(in_root):
    assert {p.stem for p in SHIPPED} == set(GRID)
    for path in SHIPPED:
        sweep = sweeps.load_sweep(path.relative_to(ROOT))
        cfgs = sweeps.check(sweep)  # load_config of base configs + every point's overrides
        points = sweep.points()
        assert len(points) == len(cfgs) == GRID[path.stem], path
        assert len({p.name for p in points}) == len(points)
        assert len({json.dumps(to_dict(c), sort_keys=True) for c in cfgs}) == len(cfgs)  # no two points alike
        for point, cfg in zip(points, cfgs, strict=True):
            assert cfg.name == point.name
            assert sweep.sweep_dir(cfg) / point.name == Path("runs") / sweep.name / point.name
            for key, value in point.values.items():  # each swept key landed in the config
                node = to_dict(cfg)
                for part in key.split("."):
                    node = node[int(part)] if isinstance(node, list) else node[part]
                if not isinstance(value, list) or isinstance(value[0], dict):
                    assert landed(node, value), (point.name, key)


def test_mixture_weight_points_set_both_weights_together(in_root):
    sweep = sweeps.load_sweep("sweeps/dense_sparse.yaml")
    cfgs = sweeps.check(sweep)
    weights = [[c.weight for c in cfg.data.mixture] for cfg in cfgs]
    assert weights == [[0, 1], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1, 0]]
    assert all(cfg.data.mixture[1].params == {"nnz": 2} and cfg.data.n_dims == 20 for cfg in cfgs)
    assert sweep.points()[1].name == "mixture-dense_linear_weight0.25-sparse_linear_weight0.75_nnz2"
    sizes = [
        (c.model.n_layer, c.model.n_head, c.model.n_embd)
        for c in sweeps.check(sweeps.load_sweep("sweeps/model_size.yaml"))
    ]
    assert sizes == [(3, 2, 64), (6, 4, 128), (12, 8, 256)] * 2


def test_wandb_agent_command_trains_the_same_point_offline(in_root):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command

    for path in SHIPPED:
        sweep = sweeps.load_sweep(path.relative_to(ROOT))
        spec = yaml.safe_load(path.read_text())
        assert set(spec) <= set(sweeps.WANDB_KEYS) and spec["method"] == "grid" and spec["program"] == "icl"
        assert json.loads(json.dumps(spec)) == spec  # what W&B stores and sends back
        assert create_sweep_command(list(spec["command"])) == spec["command"]  # no env macros to fill
        for point in sweep.points():
            argv = sweeps.agent_argv(sweep, point.values)
            assert argv[:4] == ["icl", "sweep", str(path.relative_to(ROOT)), "--point"]
            files = [a for a in argv[4:] if a.endswith(".yaml")]
            overrides = [a for a in argv[4:] if "=" in a]
            assert files == sweep.base and len(files) + len(overrides) == len(argv) - 4
            parsed = sweeps.parse_point(sweep, overrides)
            assert parsed.name == point.name
            assert to_dict(sweep.config(parsed)) == to_dict(sweep.config(point))


def test_register_without_login_fails_in_one_line(in_root, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    assert main(["sweep", "sweeps/dense_sparse.yaml", "--wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("icl: error: --wandb needs a W&B login")


def test_register_without_network_fails_in_one_line(in_root, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key is found locally; the server is unreachable
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert main(["sweep", "sweeps/repro_dense_sparse.yaml", "--wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("icl: error: --wandb: cannot reach http://127.0.0.1:9")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"early_terminate": {"type": "hyperband"}}, "unknown top-level key(s) early_terminate"),
        ({"method": "random"}, "method: got 'random'; allowed: grid"),
        ({"parameters": {"data.n_dims": {"min": 1, "max": 3}}}, "allowed: {values: [...]} or {value: x}"),
        ({"parameters": {"data.mixture": {"values": [None]}}}, "does not survive the command line"),
        ({"command": ["icl", "train", "base.yaml", "${args_no_hyphens}"]}, "command: got"),
        ({"name": "a/b"}, "name: got 'a/b'"),
    ],
)
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    write_sweep("t", {"seed": {"values": [0, 1]}}, change)
    with pytest.raises(ICLError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        sweeps.load_sweep("s.yaml")
    assert "\n" not in str(e.value)


def test_unknown_config_key_in_a_sweep_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep("t", {"train.stpes": {"values": [1, 2]}})
    assert main(["sweep", "s.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key" in err[0] and "stpes" in err[0]
    assert not Path("runs").exists()


@pytest.mark.slow  # two processes killed and resumed: about 30 s
def test_killed_sweep_skips_finished_points_and_resumes_the_interrupted_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep("resume", {"train.steps": {"values": [6, 7, 300]}})
    short, long = [Path("runs/resume/steps-6"), Path("runs/resume/steps-7")], Path("runs/resume/steps-300")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "icl", "sweep", "s.yaml", "--workers", "2"], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        # Two workers train the short points, then one starts the long point (it needs a free
        # worker). Kill the whole sweep (parent and workers, as a scheduler would) once the long
        # point has written a checkpoint but not finished.
        while time.monotonic() < deadline and proc.poll() is None:
            done = [runstate.run_state(d, n) == "done" for d, n in zip(short, (6, 7), strict=True)]
            if all(done) and list((long / "checkpoints").glob("step=*.ckpt")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert runstate.run_state(long, 300) == "partial"
    stamps = [(d / "checkpoints" / "last.ckpt").stat().st_mtime_ns for d in short]
    capsys.readouterr()
    assert main(["sweep", "s.yaml", "--workers", "2"]) == 0  # the same command again
    out = capsys.readouterr().out
    assert "[1/3] steps-6: skipped (finished" in out and "[2/3] steps-7: skipped (finished" in out
    assert "[3/3] steps-300: started" in out
    assert [(d / "checkpoints" / "last.ckpt").stat().st_mtime_ns for d in short] == stamps  # not retrained
    assert runstate.run_state(long, 300) == "done"
    log = Path("runs/resume/logs/steps-300.log").read_text()
    assert "resume/steps-300: partial" in log and "resume: resumed" in log
    from icl.checkpoint.io import read_checkpoint

    assert read_checkpoint(long)["global_step"] == 300


@pytest.mark.slow  # a sweep under a pseudo-terminal, interrupted: about 15 s
def test_ctrl_c_in_a_terminal_saves_each_worker_once(tmp_path, monkeypatch):
    """Ctrl-C reaches the sweep and its workers (the terminal's foreground process group); each
    worker saves last.ckpt after its step. The sweep must not signal them again: a second signal
    stops a worker without saving."""
    import pty
    import select

    monkeypatch.chdir(tmp_path)
    write_sweep("ctrlc", {"train.steps": {"values": [100000]}, "train.checkpoint_every": {"values": [50000]}})
    env = {**os.environ, "WANDB_MODE": "disabled"}
    pid, fd = pty.fork()
    if pid == 0:  # the sweep, in a new session whose controlling terminal is the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "icl", "sweep", "s.yaml"], env)
    output, sent, deadline = b"", False, time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            trained = [len(_train_rows(p)) for p in Path("runs/ctrlc").glob("*/metrics.csv")]
            if not sent and trained and trained[0] > 3:
                os.write(fd, b"\x03")  # Ctrl-C, as the terminal's line discipline delivers it
                sent = True
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the sweep closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert sent, output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 130, output.decode(errors="replace")
    (run,) = Path("runs/ctrlc").glob("*/checkpoints/last.ckpt")
    log = next(Path("runs/ctrlc/logs").glob("*.log")).read_text()
    assert "SIGINT after step" in log and "nothing saved" not in log, log
    from icl.checkpoint.io import read_checkpoint

    assert read_checkpoint(run.parent.parent)["global_step"] >= 4


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow  # a sweep whose worker is interrupted: about 10 s
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the worker through /proc")
def test_a_worker_stopped_by_a_signal_is_reported_as_stopped_not_failed(tmp_path, monkeypatch):
    """SIGINT to one worker (not to the sweep): it saves and exits 130; the sweep says STOPPED,
    that rerunning resumes it, and exits 1."""
    monkeypatch.chdir(tmp_path)
    write_sweep("stop", {"train.steps": {"values": [100000]}, "train.checkpoint_every": {"values": [50000]}})
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "icl", "sweep", "s.yaml"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            trained = [len(_train_rows(p)) for p in Path("runs/stop").glob("*/metrics.csv")]
            if trained and trained[0] > 3:
                (worker,) = _children(proc.pid)
                os.kill(worker, signal.SIGINT)
                break
            time.sleep(0.05)
        out = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "STOPPED (exit 130): icl: stopped: SIGINT after step" in out and "FAILED" not in out, out
    assert "1 of 1 points stopped by a signal; rerun the same command to resume them" in out, out
    (run,) = Path("runs/stop").glob("*/checkpoints/last.ckpt")
    assert runstate.run_state(run.parent.parent, 100000) == "partial"


def _train_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return [row for row in csv.DictReader(f) if row.get("train/loss")]


def test_run_states_follow_the_most_advanced_checkpoint(tmp_path):
    import shutil

    from icl.config import load_config
    from icl.runs import prepare_new_run, train

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(TINY_BASE))
    run_dir = tmp_path / "run"
    assert runstate.run_state(run_dir, 6) == "absent"
    cfg = load_config([base], ["train.steps=6"])
    prepare_new_run(cfg, run_dir, overwrite=False)
    assert runstate.run_state(run_dir, 6) == "empty"  # config, no checkpoint: start again
    train(cfg, run_dir, evaluate=False)
    ckpts = run_dir / "checkpoints"
    assert runstate.newest_checkpoint(run_dir) == (6, ckpts / "last.ckpt")
    assert runstate.run_state(run_dir, 6) == "trained" and runstate.run_state(run_dir, 7) == "partial"
    # Killed after the final periodic checkpoint but before last.ckpt was replaced.
    shutil.copy(ckpts / "last.ckpt", ckpts / "step=0000006.ckpt")
    shutil.copy(ckpts / "step=0000005.ckpt", ckpts / "last.ckpt")
    assert runstate.newest_checkpoint(run_dir) == (6, ckpts / "step=0000006.ckpt")
    assert runstate.run_state(run_dir, 6) == "trained"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "repro").glob("*.yaml")), ids=lambda p: p.stem)
def test_repro_configs_train_a_few_steps(path, tmp_path):
    from icl.checkpoint.io import read_checkpoint
    from icl.config import load_config
    from icl.runs import prepare_new_run, train

    cfg = load_config([path], ["train.steps=3", "train.progress_bar=false", "train.log_every=1", "eval.every=0"])
    assert cfg.eval.n_prompts >= 1000 and cfg.train.steps == 3
    assert sum(c.weight for c in cfg.data.mixture) == pytest.approx(1)
    run_dir = prepare_new_run(cfg, tmp_path / path.stem, overwrite=False)
    train(cfg, run_dir, evaluate=False)
    assert read_checkpoint(run_dir)["global_step"] == 3
    losses = [float(r["train/loss"]) for r in csv.DictReader((run_dir / "metrics.csv").open())]
    assert len(losses) == 3 and all(0 < v < 100 for v in losses)


def test_dry_run_lists_points_and_shell_ready_commands(tmp_path, monkeypatch, capsys):
    import shlex

    for top in ("configs", "sweeps"):  # the shipped files, with a runs/ of its own (all points absent)
        (tmp_path / top).symlink_to(ROOT / top)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "sweeps/repro_model_size.yaml", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sweep = sweeps.load_sweep("sweeps/repro_model_size.yaml")
    assert len(lines) == 2 * len(sweep.points())
    for i, point in enumerate(sweep.points()):
        assert lines[2 * i].startswith(f"[{i + 1}/2] {point.name}: ")
        assert shlex.split(lines[2 * i + 1]) == sweeps.agent_argv(sweep, point.values)


def test_locked_and_diverged_points_are_not_trained(tmp_path, monkeypatch, capsys):
    """A point another process is training is skipped (and its --point command refused); a
    point the non-finite guard stopped is reported and not retried. Nothing trains here."""
    monkeypatch.chdir(tmp_path)
    write_sweep("guard", {"train.steps": {"values": [6, 7]}})
    busy, diverged = Path("runs/guard/steps-6"), Path("runs/guard/steps-7")
    holder = hold_lock(busy)
    try:
        assert runstate.lock_holder(busy) == f"pid {holder.pid} on {socket.gethostname()}"
        diverged.mkdir(parents=True)
        (diverged / "diverged").write_text("train: non-finite loss or gradient at step 3; ...\n")
        assert main(["sweep", "s.yaml"]) == 1
        out = capsys.readouterr().out
        assert f"[1/2] steps-6: skipped (being trained by another process: pid {holder.pid}" in out
        assert "[2/2] steps-7: DIVERGED earlier, not retried" in out
        assert not (busy / "config.yaml").exists()
        assert main(["sweep", "s.yaml", "--point", "base.yaml", "train.steps=6"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another icl process" in err[0] and f"pid {holder.pid}" in err[0]
        assert main(["sweep", "s.yaml", "--point", "base.yaml", "train.steps=7"]) == 3
        assert "not retried; delete" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert runstate.lock_holder(busy) is None  # the OS released the killed holder's lock


def test_command_line_overrides_reach_every_point_and_child(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep("over", {"seed": {"values": [0, 1]}})
    assert main(["sweep", "s.yaml", "--dry-run", "train.steps=3", "out_dir=smoke"]) == 0
    assert "--set train.steps=3 --set out_dir=smoke" in capsys.readouterr().out  # in the children's commands
    assert main(["sweep", "s.yaml", "seed=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed is a parameter of s.yaml" in err[0]
    names = [p.name for p in sweeps.load_sweep("s.yaml").points()]
    # what the child of that plan runs, here in-process
    assert main(["sweep", "s.yaml", "--members", *names, "--set", "train.steps=3", "--set", "out_dir=smoke"]) == 0
    assert all(runstate.run_state(Path("smoke/over") / n, 3) == "done" for n in names)
    assert not Path("runs").exists()


def test_another_sweep_file_under_the_same_name_is_kept_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep("same", {"seed": {"values": [0, 1]}})
    sweeps._write_manifest(sweeps.load_sweep("s.yaml"), Path("runs/same"))
    first = Path("runs/same/sweep.yaml").read_text()
    write_sweep("same", {"seed": {"values": [0, 1, 2]}})
    sweeps._write_manifest(sweeps.load_sweep("s.yaml"), Path("runs/same"))
    assert "held another sweep file than s.yaml" in capsys.readouterr().err
    assert Path("runs/same/sweep.prev.yaml").read_text() == first
    assert Path("runs/same/sweep.yaml").read_text() == Path("s.yaml").read_text()


def test_training_away_from_a_terminal_prints_plain_progress_lines(tmp_path, capsys):
    from icl.config import load_config
    from icl.runs import prepare_new_run, train

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY_BASE))
    cfg = load_config([tmp_path / "base.yaml"], ["train.steps=12", "train.progress_bar=true"])
    run_dir = tmp_path / "run"
    prepare_new_run(cfg, run_dir, overwrite=False)
    train(cfg, run_dir, evaluate=False)
    err = capsys.readouterr().err
    assert "\r" not in err  # no progress-bar redraws in a log file
    assert "step 12/12 (100%), train/loss " in err and " steps/s" in err
    assert sweeps.logged_steps(run_dir) == 12  # what the sweep console reads for its progress lines
    assert sweeps.logged_steps(tmp_path / "nothing") is None
