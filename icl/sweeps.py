"""Sweeps: W&B sweep files (grid over dotted config keys) expanded into runs, trained locally
(sequentially or by N worker processes, resumable) or registered with W&B for `wandb agent`.

A sweep file is a plain W&B sweep config. Its ``command`` is what every grid point runs, on
this machine or under ``wandb agent`` on any other::

    command: [icl, sweep, sweeps/NAME.yaml, --point, BASE.yaml ..., "${args_no_hyphens}"]

``icl sweep FILE --point BASE.yaml ... key=value ...`` trains one grid point in
``OUT_DIR/<sweep name>/<run name>``, the run name being a pure function of the swept values;
a finished point is skipped, an interrupted one resumed from its last checkpoint. Locally,
points of one shape train together as one ensemble (``icl sweep FILE --members NAME ...``,
icl/ensemble/), each still in its own run directory.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from icl import runs, runstate
from icl.checkpoint.load import load_model
from icl.config import Config, load_config, parse_override
from icl.console import duration
from icl.ensemble.checkpoints import common_step
from icl.ensemble.grouping import group
from icl.ensemble.run import train_ensemble
from icl.errors import DIVERGED_FILE, EXIT_DIVERGED, ICLError, NonFiniteError
from icl.evaluation.run import evaluate_suite
from icl.fileio import atomic_write
from icl.yamlio import read_yaml

ARGS = "${args_no_hyphens}"  # W&B's macro: the point's parameters as key=value
# Top-level keys of W&B's sweep schema that a grid sweep of `icl` can use (W&B refuses others).
WANDB_KEYS = ("program", "name", "description", "method", "metric", "parameters", "command", "project", "entity")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # W&B's pattern for parameter names
MAX_NAME = 100  # longer run names are cut and made unique by a hash of the values
PROGRESS_EVERY_S = 60.0  # a console line per training point this often
# Exit codes of a worker that SIGINT or SIGTERM stopped (icl.interrupts: 128 + the signal's number)
STOPPED_EXITS = (128 + signal.SIGINT, 128 + signal.SIGTERM)


@dataclass
class Point:
    """One grid point: its run name and the ``key=value`` overrides that define it."""

    name: str
    values: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        return [render(k, v) for k, v in self.values.items()]


@dataclass
class Sweep:
    path: Path
    name: str
    parameters: dict[str, list[Any]]  # key -> values; a constant is a single value
    command: list[str]
    base: list[str]  # the YAML configs every point starts from (from the command)
    spec: dict[str, Any]  # the file as W&B receives it
    extra: list[str] = field(default_factory=list)  # key=value for every point (`icl sweep FILE key=value`)

    def set_extra(self, overrides: list[str]) -> None:
        """``key=value`` overrides applied to every point after its own values (not to swept keys)."""
        for item in overrides:
            key = parse_override(item)[0]
            if key in self.parameters:
                raise ICLError(
                    f"override {item!r}: {key} is a parameter of {self.path}; allowed: keys the sweep does not vary"
                )
        self.extra = list(overrides)

    def run_name(self, values: dict[str, Any]) -> str:
        """Deterministic name from the swept (multi-valued) parameters, in file order."""
        parts = [f"{key.split('.')[-1]}-{_slug(values[key])}" for key, vals in self.parameters.items() if len(vals) > 1]
        name = "__".join(parts) or "run"
        if len(name) > MAX_NAME:
            digest = hashlib.sha1(repr(sorted(values.items())).encode()).hexdigest()[:8]
            name = f"{name[: MAX_NAME - 9]}.{digest}"
        return name

    def points(self) -> list[Point]:
        """The grid in file order (the last parameter varies fastest)."""
        keys = list(self.parameters)
        return [
            Point(self.run_name(dict(zip(keys, combo, strict=True))), dict(zip(keys, combo, strict=True)))
            for combo in itertools.product(*self.parameters.values())
        ]

    def sweep_dir(self, cfg: Config) -> Path:
        return Path(cfg.out_dir) / self.name

    def config(self, point: Point) -> Config:
        try:
            return load_config(self.base, [*point.overrides, *self.extra, f"name={point.name}"])
        except ICLError as e:
            raise ICLError(f"{self.path}: point {point.name}: {e}") from None


def render(key: str, value: Any) -> str:
    """A parameter as W&B's agent writes it for ``${args_no_hyphens}``: ``f"{key}={value}"``.
    Lists and mappings come out as Python literals, which parse back as YAML flow."""
    return f"{key}={value}"


def _slug(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(_slug(v) for v in value)
    if isinstance(value, dict):  # numbers after their key; strings (class names) and nested values alone
        return "_".join(
            f"{k}{_slug(v)}" if isinstance(v, (int, float)) else _slug(v) for k, v in value.items() if v not in ({}, [])
        )
    return re.sub(r"[^A-Za-z0-9.]+", "_", str(value)).strip("_") or "x"


def _survives_command_line(value: Any) -> bool:
    # Bare numbers may change spelling (1e-05 reads back as a string) but the config coerces them.
    return isinstance(value, (int, float)) and not isinstance(value, bool) or yaml.safe_load(str(value)) == value


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file's structure (configs are checked by ``check``)."""
    path = Path(path)
    spec = read_yaml(path, "sweep file")
    if not isinstance(spec, dict):
        raise ICLError(f"{path}: top level must be a W&B sweep mapping (method, parameters, command, ...)")
    unknown = [k for k in spec if k not in WANDB_KEYS]
    if unknown:
        raise ICLError(
            f"{path}: unknown top-level key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(WANDB_KEYS)}"
        )
    if spec.get("method") != "grid":
        raise ICLError(f"{path}: method: got {spec.get('method')!r}; allowed: grid")
    name = spec.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ICLError(f"{path}: name: got {name!r}; allowed: letters, digits, '-', '_', '.' (the runs' directory)")
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ICLError(f"{path}: parameters: allowed: a mapping of dotted config keys to {{values: [...]}}")
    parameters: dict[str, list[Any]] = {}
    for key, p in params.items():
        if not isinstance(key, str) or not PARAM_NAME.match(key):
            raise ICLError(
                f"{path}: parameter {key!r}: allowed: a dotted config key (W&B pattern {PARAM_NAME.pattern})"
            )
        if not isinstance(p, dict) or set(p) not in ({"values"}, {"value"}):
            raise ICLError(f"{path}: parameter {key}: allowed: {{values: [...]}} or {{value: x}} (grid search)")
        vals = p["values"] if "values" in p else [p["value"]]
        if not isinstance(vals, list) or not vals:
            raise ICLError(f"{path}: parameter {key}: values: allowed: a non-empty list")
        for v in vals:
            if v is None or not _survives_command_line(v):
                raise ICLError(
                    f"{path}: parameter {key}: value {v!r} does not survive the command line as `{render(key, v)}`; "
                    "allowed: numbers, strings, true/false, and lists or mappings of them"
                )
        parameters[key] = vals
    command = spec.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise ICLError(
            f"{path}: command: allowed: a list of strings like [icl, sweep, {path}, --point, BASE.yaml, {ARGS}]"
        )
    shape = f"[icl, sweep, {path}, --point, BASE.yaml ..., {ARGS}]"
    if len(command) < 5 or command[:2] != ["icl", "sweep"] or command[3] != "--point" or command[-1] != ARGS:
        raise ICLError(f"{path}: command: got {command}; allowed: {shape}")
    if Path(command[2]).resolve() != path.resolve():
        raise ICLError(
            f"{path}: command names sweep file {command[2]!r}; allowed: this file's path relative to the "
            "directory you run from (the repository root)"
        )
    base = command[4:-1]
    bad = [b for b in base if not b.endswith((".yaml", ".yml"))]
    if bad or not base:
        raise ICLError(f"{path}: command: base configs between --point and {ARGS}: got {base}; allowed: YAML files")
    return Sweep(path, name, parameters, command, base, spec)


def check(sweep: Sweep) -> list[Config]:
    """Build and validate the config of every grid point, as a run's; names must be distinct."""
    points = sweep.points()
    names = [p.name for p in points]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ICLError(f"{sweep.path}: grid points share run names {dupes}; allowed: distinct values per parameter")
    cfgs = [sweep.config(p) for p in points]
    for point, cfg in zip(points, cfgs, strict=True):
        try:
            runs.check_run_config(cfg)  # what a run checks before it starts: baseline and suite names
        except ICLError as e:
            raise ICLError(f"{sweep.path}: point {point.name}: {e}") from None
    return cfgs


def agent_argv(sweep: Sweep, values: dict[str, Any]) -> list[str]:
    """The command ``wandb agent`` runs for a point, built by W&B's own code (offline)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args_no_hyphens"]
    out: list[str] = []
    for c in sweep.command:
        out += args if c == ARGS else [c]
    return out


def parse_point(sweep: Sweep, overrides: list[str]) -> Point:
    """The grid point that ``key=value`` overrides (as W&B writes them) stand for."""
    values: dict[str, Any] = {}
    for item in overrides:
        key = item.partition("=")[0]
        if key not in sweep.parameters:
            raise ICLError(
                f"--point {item!r}: {key} is not a parameter of {sweep.path}; allowed: {', '.join(sweep.parameters)}"
            )
        match = [v for v in sweep.parameters[key] if render(key, v) == item]
        if not match:
            raise ICLError(f"--point {item!r}: not one of the sweep's values for {key}: {sweep.parameters[key]}")
        values[key] = match[0]
    missing = [k for k in sweep.parameters if k not in values]
    if missing:
        raise ICLError(f"--point: missing parameter(s) {', '.join(missing)} of {sweep.path}")
    return Point(sweep.run_name(values), {k: values[k] for k in sweep.parameters})


def _under_agent() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"))


def run_point(sweep: Sweep, files: list[str], overrides: list[str]) -> str:
    """Train one grid point (what the sweep's command runs); returns what was done."""
    if files != sweep.base:
        raise ICLError(f"--point: base configs {files}; allowed: the sweep's own {sweep.base}")
    point = parse_point(sweep, overrides)
    cfg = sweep.config(point)
    run_dir = sweep.sweep_dir(cfg) / point.name
    if _under_agent():  # report to the run W&B's agent opened for this point
        cfg.train.loggers = list(dict.fromkeys([*cfg.train.loggers, "wandb"]))
        cfg.train.wandb.mode = "online"
        cfg.train.wandb.project = os.environ.get("WANDB_PROJECT") or cfg.train.wandb.project
        cfg.train.wandb.entity = os.environ.get("WANDB_ENTITY") or cfg.train.wandb.entity
        cfg.train.wandb.group = cfg.train.wandb.group or sweep.name
    runstate.acquire(run_dir)  # held until this process ends
    state = runstate.run_state(run_dir, cfg.train.steps)
    print(f"{sweep.name}/{point.name}: {state} ({run_dir})", file=sys.stderr)
    if state == "done":
        return "skipped"
    if state == "diverged":
        marker = run_dir / DIVERGED_FILE
        raise NonFiniteError(message=f"{marker.read_text().strip()} [not retried; delete {marker} to retry]")
    _write_manifest(sweep, run_dir.parent)
    if state in ("absent", "empty"):
        runs.prepare_new_run(cfg, run_dir, overwrite=True)
    if _under_agent():
        # trackers.py reuses run_dir/wandb_id, so the metrics go to the agent's run
        atomic_write(run_dir / "wandb_id", os.environ["WANDB_RUN_ID"])
    if state == "trained":  # killed during the final evaluation
        model, _ = load_model(runstate.newest_checkpoint(run_dir)[1])
        evaluate_suite(model, cfg, "in_distribution", run_dir / "eval" / "in_distribution")
        return "evaluated"
    runs.train(cfg, run_dir, resume=state == "partial")
    return "resumed" if state == "partial" else "trained"


def _write_manifest(sweep: Sweep, sweep_dir: Path) -> None:
    """A copy of the sweep file beside its runs, for `icl report` and for people. A different
    file stored there before (another file with the same ``name``, or an edited one) is kept as
    sweep.prev.yaml, with a warning."""
    target = sweep_dir / "sweep.yaml"
    text = sweep.path.read_text()
    if target.is_file() and target.read_text() != text:
        previous = sweep_dir / "sweep.prev.yaml"
        atomic_write(previous, target.read_text())
        print(
            f"icl: warning: {target} held another sweep file than {sweep.path} (same name: {sweep.name}); "
            f"replaced, the previous one kept as {previous}",
            file=sys.stderr,
        )
    if not target.is_file() or target.read_text() != text:
        atomic_write(target, text)


ENSEMBLE_MODES = ("auto", "off")
AUTO_MEMBERS = 16  # the largest ensemble `--ensemble auto` forms (memory grows with the members)


def ensemble_size(mode: str) -> int:
    """``--ensemble``: auto (up to AUTO_MEMBERS), off (1: every point alone) or N >= 1."""
    if mode == "auto":
        return AUTO_MEMBERS
    if mode == "off":
        return 1
    try:
        n = int(mode)
    except ValueError:
        n = 0
    if n < 1:
        raise ICLError(f"--ensemble: got {mode!r}; allowed: auto, off, or an integer >= 1 (members per ensemble)")
    return n


Todo = tuple[str, Point, Path, str, Config]  # tag, point, run directory, state, config


def plan(todo: list[Todo], size: int, workers: int = 1) -> list[list[Todo]]:
    """The points to train in units: ensembles of points that share a shape (icl.ensemble.grouping),
    at most ``size`` members each, split in at least ``workers`` ensembles where there are enough
    points to keep every worker busy; new points and interrupted ones apart, and interrupted ones
    together only where they stopped at a common checkpoint step; points that only miss their
    final evaluation alone."""
    alone = [[t] for t in todo if size == 1 or t[3] == "trained"]
    units = list(alone)
    for states in (("absent", "empty"), ("partial",)):
        pool = [t for t in todo if size > 1 and t[3] in states]
        for unit in group([(t, t[4]) for t in pool], size, workers):
            if len(unit) > 1 and states == ("partial",) and common_step([t[2] for t in unit]) is None:
                units += [[t] for t in unit]
            else:
                units.append(unit)
    order = {id(t): i for i, t in enumerate(todo)}
    return sorted(units, key=lambda u: order[id(u[0])])


def run_members(sweep: Sweep, names: list[str]) -> int:
    """Train the named grid points as one ensemble (what ``run_local`` starts for a unit of
    several points); points already done are skipped, diverged ones not retried. Exit code:
    0, or EXIT_DIVERGED when a member diverged."""
    by_name = {p.name: p for p in sweep.points()}
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise ICLError(f"--members: got {unknown or names}; allowed: names of {sweep.path}'s points (see --dry-run)")
    cfgs, dirs = [], []
    for name in dict.fromkeys(names):
        cfg = sweep.config(by_name[name])
        run_dir = sweep.sweep_dir(cfg) / name
        runstate.acquire(run_dir)  # held until this process ends
        state = runstate.run_state(run_dir, cfg.train.steps)
        print(f"{sweep.name}/{name}: {state} ({run_dir})", file=sys.stderr)
        if state in ("done", "diverged", "trained"):
            if state == "trained":
                model, _ = load_model(runstate.newest_checkpoint(run_dir)[1])
                evaluate_suite(model, cfg, "in_distribution", run_dir / "eval" / "in_distribution")
            continue
        _write_manifest(sweep, run_dir.parent)
        if state in ("absent", "empty"):
            runs.prepare_new_run(cfg, run_dir, overwrite=True)
        cfgs.append(cfg)
        dirs.append(run_dir)
    if not cfgs:
        return 0
    outcome = train_ensemble(cfgs, dirs, resume_hint=f"`icl sweep {sweep.path}`")
    return EXIT_DIVERGED if "diverged" in outcome.values() else 0


def run_local(sweep: Sweep, workers: int = 1, dry_run: bool = False, ensemble: str = "auto") -> int:
    """Run every grid point here, ``workers`` units at a time, each unit a child process: one
    point alone (the sweep's own command) or, with ``ensemble`` (auto | off | N), several points
    of one shape trained as one ensemble (``icl sweep FILE --members NAME ...``). A crash or kill
    costs at most the units in flight. Returns an exit code."""
    if workers < 1:
        raise ICLError(f"--workers: got {workers}; allowed: an integer >= 1")
    size = ensemble_size(ensemble)
    cfgs = check(sweep)
    points = sweep.points()
    todo, failed, stopped = [], [], []
    for i, (point, cfg) in enumerate(zip(points, cfgs, strict=True), 1):
        run_dir = sweep.sweep_dir(cfg) / point.name
        state = runstate.run_state(run_dir, cfg.train.steps)
        tag = f"[{i}/{len(points)}] {point.name}"
        if state == "done":
            print(f"{tag}: {'done' if dry_run else f'skipped (finished: {run_dir})'}", flush=True)
        elif holder := runstate.lock_holder(run_dir):
            print(f"{tag}: skipped (being trained by another process: {holder})", flush=True)
        elif state == "diverged":
            print(f"{tag}: DIVERGED earlier, not retried (delete {run_dir / DIVERGED_FILE} to retry)", flush=True)
            failed.append(tag)
        else:
            todo.append((tag, point, run_dir, state, cfg))
    units = plan(todo, size, workers)
    if dry_run:
        for unit in units:
            for tag, _, _, state, _ in unit:
                print(f"{tag}: {state}" + (f" (ensemble of {len(unit)})" if len(unit) > 1 else ""))
            print(f"    {' '.join(_shell(a) for a in _unit_argv(sweep, unit))}")
        return 0
    if not units:
        return 1 if failed else 0
    _write_manifest(sweep, sweep.sweep_dir(cfgs[0]))
    env = dict(os.environ)
    # N processes share the cores; without a cap each would start one thread per core.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    running: dict[subprocess.Popen, tuple[list, Path, float, Any]] = {}
    progress = _Progress()
    try:
        while units or running:
            while units and len(running) < workers:
                unit = units.pop(0)
                names = [t[1].name for t in unit]
                log_name = names[0] if len(unit) == 1 else f"{names[0]}+{len(unit) - 1}"
                log_path = unit[0][2].parent / "logs" / f"{log_name}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = log_path.open("a")
                argv = _unit_argv(sweep, unit)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "icl", *argv[1:]], stdout=log, stderr=subprocess.STDOUT, env=env
                )
                running[proc] = (unit, log_path, time.monotonic(), log)
                what = "started" if len(unit) == 1 else f"started in an ensemble of {len(unit)}"
                for t in unit:
                    print(f"{t[0]}: {what} (log: {log_path})", flush=True)
            time.sleep(0.2)
            progress.report([t for unit, *_ in running.values() for t in unit])
            for proc in [p for p in running if p.poll() is not None]:
                unit, log_path, t0, log = running.pop(proc)
                log.close()
                for tag, _, run_dir, _, cfg in unit:
                    state = runstate.run_state(run_dir, cfg.train.steps)
                    if state == "done":
                        print(f"{tag}: finished in {time.monotonic() - t0:.0f} s", flush=True)
                        continue
                    if state == "diverged":
                        what, detail = "DIVERGED", _last_line(run_dir / DIVERGED_FILE)
                    else:  # a worker stopped by a signal says in its last line what it saved
                        what = "STOPPED" if proc.returncode in STOPPED_EXITS else "FAILED"
                        detail = _last_line(log_path)
                    print(f"{tag}: {what} (exit {proc.returncode}): {detail} (log: {log_path})", flush=True)
                    (stopped if what == "STOPPED" else failed).append(tag)
    except KeyboardInterrupt:
        if not _terminal_signalled_workers():
            for proc in running:
                proc.terminate()
        for proc in running:
            proc.wait()
        raise
    if stopped:
        print(f"{len(stopped)} of {len(points)} points stopped by a signal; rerun the same command to resume them")
    if failed:
        print(
            f"{len(failed)} of {len(points)} points failed; rerun the same command to retry them "
            "(diverged points are not retried)",
            file=sys.stderr,
        )
    return 1 if failed or stopped else 0


def _terminal_signalled_workers() -> bool:
    """Whether the sweep's SIGINT came from its terminal (Ctrl-C), which sends it to the whole
    foreground process group, the workers included: each then saves after its step, and a
    SIGTERM from the sweep on top would be their second signal, stopping them without a save.
    Otherwise (``kill -INT`` of the sweep alone, no terminal) the sweep stops its workers."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):  # no terminal on stdin
        return False


class _Progress:
    """Every PROGRESS_EVERY_S seconds, a console line per training point: its step (from the newest
    row of its metrics.csv), of train.steps, and the time left at its rate since first seen."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.seen: dict[Path, tuple[float, int]] = {}

    def report(self, points: list[Todo]) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        for tag, _, run_dir, _, cfg in points:
            step = logged_steps(run_dir)
            if step is None:
                continue
            # periodic-evaluation rows carry the steps done, training rows one less: a last
            # evaluation row at train.steps would read one step past the end
            step = min(step, cfg.train.steps)
            t0, step0 = self.seen.setdefault(run_dir, (now, step))
            rate = (step - step0) / (now - t0) if now > t0 else 0.0
            eta = f", ETA {duration((cfg.train.steps - step) / rate)}" if rate > 0 else ""
            print(f"{tag}: step {step}/{cfg.train.steps}{eta}", flush=True)


def logged_steps(run_dir: Path) -> int | None:
    """Steps a run has trained as its metrics.csv says (rows are logged after step + 1 steps)."""
    try:
        with (run_dir / "metrics.csv").open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    head = lines[-1].split(",", 1)[0] if lines else ""
    return int(head) + 1 if head.isdigit() else None


def _unit_argv(sweep: Sweep, unit: list) -> list[str]:
    """The command of a unit: the sweep's own command for one point, --members for an ensemble;
    then the sweep's command-line overrides."""
    if len(unit) == 1:
        argv = agent_argv(sweep, unit[0][1].values)
    else:
        argv = ["icl", "sweep", str(sweep.path), "--members", *(t[1].name for t in unit)]
    return argv + [a for item in sweep.extra for a in ("--set", item)]


def _shell(arg: str) -> str:
    """Quote for a POSIX shell; double quotes where that reads better (Python literals)."""
    if "'" in arg and not re.search(r'["$`\\!]', arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(empty log)"


def register(sweep: Sweep, project: str | None, entity: str | None) -> str:
    """Create the sweep on W&B (needs a login and the network); returns ``entity/project/id``."""
    if sweep.extra:
        raise ICLError(
            f"--wandb with overrides {' '.join(sweep.extra)}: W&B runs the sweep file's own command; "
            "allowed: put them in the sweep file or a base config"
        )
    cfg = check(sweep)[0]
    project = project or cfg.train.wandb.project
    entity = entity or cfg.train.wandb.entity
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    if not (os.environ.get("WANDB_API_KEY") or wandb.login(prompt=False, verify=False)):  # local look-up, no prompt
        raise ICLError(
            "--wandb needs a W&B login (WANDB_API_KEY or `wandb login`) and network; "
            "allowed without: icl sweep FILE [--workers N]"
        )
    base_url = os.environ.get("WANDB_BASE_URL") or wandb.setup().settings.base_url
    url = urllib.parse.urlparse(base_url)
    try:  # W&B's client retries for minutes when offline; find out in seconds
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=10).close()
    except OSError as e:
        raise ICLError(
            f"--wandb: cannot reach {base_url} ({e}); allowed without network: icl sweep FILE [--workers N]"
        ) from None
    try:
        sweep_id = wandb.sweep(sweep=dict(sweep.spec), project=project, entity=entity)
        entity = entity or wandb.Api().default_entity
    except Exception as e:  # the client raises many types (HTTP, auth, validation): report one line
        raise ICLError(
            f"--wandb: W&B refused the sweep: {(str(e).strip().splitlines() or [type(e).__name__])[0][:300]}"
        ) from None
    if not sweep_id:
        raise ICLError("--wandb: W&B did not return a sweep id (is the login valid?)")
    return f"{entity}/{project}/{sweep_id}"
