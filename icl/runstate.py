"""The state of a run directory as every command sees it: its newest checkpoint, whether it is
absent, partial, trained, done or diverged, and the lock that lets one process at a time write it."""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from icl.checkpoint.io import LAST, STEP_FILE, read_checkpoint
from icl.errors import DIVERGED_FILE, ICLError
from icl.outputs import CONFIG_FILE, LOCK_FILE

_held: dict[Path, IO[str]] = {}  # run directories this process holds, by resolved path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, every lock is granted
    fcntl = None


def expect_existing_checkpoints() -> None:
    """Silence ModelCheckpoint's "Checkpoint directory ... exists and is not empty" warning, which
    a resume always triggers: those files are the checkpoints it resumes from. Call it when a
    resumed fit is set up, so the filter holds in whatever warnings context the fit runs in."""
    warnings.filterwarnings(
        "ignore",
        message=r"Checkpoint directory .* exists and is not empty\.",
        module=r"lightning\.pytorch\.callbacks\.model_checkpoint",
    )


def _key(run_dir: Path) -> Path:
    return Path(run_dir).resolve()


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run's lock ("pid N on HOST"), or None when it is free or held by this
    process. Creates nothing."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or _key(run_dir) in _held or not path.is_file():
        return None
    with path.open() as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def acquire(run_dir: Path) -> None:
    """Take the run's lock for this process (a no-op if it already holds it), or refuse in one line
    naming the holder. The OS releases the lock when the process ends, however it ends, so a lock
    left by a killed process is simply taken over."""
    key = _key(run_dir)
    if key in _held:
        return
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = (run_dir / LOCK_FILE).open("a+")
    except OSError as e:
        reason = e.strerror or e
        raise ICLError(f"run directory {run_dir} is not writable ({reason}); allowed: a writable path") from None
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ICLError(
                f"run directory {run_dir} is in use by another icl process ({holder}); allowed: one process per "
                "run (wait for it to finish or stop it, then --resume)"
            ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held[key] = handle


def release(run_dir: Path) -> None:
    handle = _held.pop(_key(run_dir), None)
    if handle is not None:
        handle.close()  # closing the file releases the lock


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock for the block (taking it if this process does not hold it yet) and
    release it afterwards."""
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)


def checkpoint_steps(run_dir: Path) -> dict[int, Path]:
    """Step -> file of every checkpoint of a run: the periodic step=N.ckpt files and last.ckpt
    (read for its step, and preferred on a tie: the newest write of that step; an unreadable one
    is left out, and `icl train --resume` decides about it)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    found = {int(m.group(1)): p for p in ckpt_dir.glob("step=*.ckpt") if (m := STEP_FILE.fullmatch(p.name))}
    last = ckpt_dir / LAST
    if last.is_file():
        try:
            step = read_checkpoint(last).get("global_step")
        except ICLError:
            step = None
        if isinstance(step, int):
            found[step] = last
    return found


def newest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(global step, path) of the run's most advanced checkpoint: last.ckpt, or a periodic
    step=N.ckpt written just before a kill that came before last.ckpt was replaced."""
    found = checkpoint_steps(run_dir)
    return max(found.items()) if found else None


def run_state(run_dir: Path, steps: int) -> str:
    """absent | empty (no checkpoint yet) | partial | diverged (stopped by the non-finite guard;
    not retried) | trained (no final evaluation) | done."""
    if (run_dir / DIVERGED_FILE).is_file():
        return "diverged"
    if not (run_dir / CONFIG_FILE).is_file():
        present = run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir())
        return "empty" if present else "absent"
    newest = newest_checkpoint(run_dir)
    if newest is None:
        return "empty"
    if newest[0] < steps:
        return "partial"
    return "done" if (run_dir / "eval" / "in_distribution" / "summary.md").is_file() else "trained"
