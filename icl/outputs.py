"""What icl may replace or delete. Every directory icl writes as an output carries a marker file naming
its kind (run, eval, report); a path is replaced only when it is absent, holds no files, or is an icl
output of the same kind, and never when it is or holds a run or lies inside a run's own files."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from icl.errors import ICLError
from icl.fileio import TMP_SUFFIX, atomic_write, fsync_dir
from icl.yamlio import read_yaml

MARKER = ".icl-output"  # holds one word: the kind of output the directory is
CONFIG_FILE = "config.yaml"  # a run directory's resolved config
LOCK_FILE = ".lock"  # a run's lock (icl.runstate); clearing a run for --overwrite keeps it
RUN, EVAL, REPORT = "run", "eval", "report"
KINDS = (RUN, EVAL, REPORT)
STAGING = ".partial"  # <out>.partial: results being written, renamed to <out> when complete
PREVIOUS = ".old"  # <out>.old: the results being replaced, for the moment between two renames
EVAL_AREA = "eval"  # the only part of a run's own directory other outputs may go into
# A bounded look below a directory: a cheap guard against deleting runs, not a proof that none exist.
WALK_DEPTH = 4
WALK_ENTRIES = 10_000

DESCRIBE = {
    RUN: "a run directory (checkpoints, config, metrics)",
    EVAL: "an icl eval output",
    REPORT: "an icl report output",
}
ALLOWED = {
    RUN: "a run directory, or a new or empty path",
    EVAL: "a new directory, or an earlier icl eval output to replace",
    REPORT: "a new directory, or an earlier icl report output to replace",
}
ICL_CONFIG_KEYS = {"out_dir", "data", "model", "train", "eval"}  # top-level sections every saved run config has
EARLIER = {RUN: "a run directory", EVAL: "an earlier icl eval output", REPORT: "an earlier icl report output"}
# Outputs written before markers existed are recognised by their files: flat directories of these
# names, with the file that is written last (LEGACY_LAST) present unless the directory is a staging one.
LEGACY_SUFFIXES = {EVAL: (".json", ".csv", ".png"), REPORT: (".md", ".csv", ".png")}
LEGACY_LAST = {EVAL: "summary.md", REPORT: "report.md"}


def mark(path: str | Path, kind: str) -> None:
    """Record in ``path`` that icl wrote it as an output of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"output kind {kind!r}; allowed: {', '.join(KINDS)}")
    atomic_write(Path(path) / MARKER, kind + "\n")


def kind_of(path: str | Path) -> str | None:
    """``run``, ``eval`` or ``report`` for a directory icl wrote (by its marker, or by its files for
    outputs written before markers existed); None for anything else."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return None
    if is_run(path):
        return RUN
    marker = _marker(path)
    if marker is not None:
        return marker
    for kind in (EVAL, REPORT):
        if _legacy(path, kind, staging=False):
            return kind
    return None


def is_run(path: str | Path) -> bool:
    """A run directory: marked as one, or an icl config.yaml beside checkpoints/ (runs written before
    markers existed). The config is read so that a project folder with its own config.yaml and
    checkpoints/ is not taken for a run that --overwrite may delete."""
    path = Path(path)
    return _marker(path) == RUN or (_run_shaped(path) and _icl_config(path / CONFIG_FILE))


def holds_files(path: str | Path) -> bool:
    """Whether removing ``path`` could lose anything: any entry but a directory or a run's lock file
    (bookkeeping: icl sweep takes it before the run has any file), or a walk cut short."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return os.path.lexists(path)
    for entry in _walk(path):
        if entry is None:
            return True
        if not entry.is_dir(follow_symlinks=False) and not (entry.name == LOCK_FILE and entry.is_file()):
            return True
    return False


def staging_path(out: Path) -> Path:
    return out.with_name(out.name + STAGING)


def previous_path(out: Path) -> Path:
    return out.with_name(out.name + PREVIOUS)


def check_replaceable(path: str | Path, kind: str, flag: str) -> None:
    """Raise ICLError (one line naming ``path``, what it is and what is allowed) unless icl may write an
    output of ``kind`` at ``path``, replacing what is there. ``flag`` names the argument in the message
    (``--out``, ``--overwrite``, ``run directory``)."""
    path = Path(path)
    head = f"{flag}: {path}" if flag == "--overwrite" else f"{flag} {path}:"

    def refuse(problem: str, allowed: str = ALLOWED[kind]) -> NoReturn:
        raise ICLError(f"{head} {problem}; allowed: {allowed}")

    # <out>.partial and <out>.old are siblings: a name ending in . or .. has none of its own.
    if path.name in ("", "..") and (kind != RUN or holds_files(path)):
        refuse("ends in '.' or '..'", "a path that ends in a directory name")
    enclosing = _enclosing(path)
    if enclosing is not None:
        where_kind, where = enclosing
        shown = _shown(where, path)
        if where_kind != RUN:
            refuse(f"is inside {DESCRIBE[where_kind]} {shown}", "a path outside it")
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(where)).parts
        if kind == RUN:
            refuse(f"is inside run {shown}'s own files", "a path outside the run")
        if len(rel) < 2 or rel[0] != EVAL_AREA:
            refuse(f"is inside run {shown}'s own files", f"{shown}/{EVAL_AREA}/... or a path outside the run")
    _check_target(path, kind, refuse)
    if kind == RUN:
        return
    for sibling, staging in ((staging_path(path), True), (previous_path(path), False)):
        if not _sibling_ok(sibling, kind, staging):
            role = "writes new results there before" if staging else "moves the results it replaces there while"
            refuse(
                f"{sibling} exists and is not {DESCRIBE[kind]} (icl {role} renaming them to {path.name})",
                f"move or rename {sibling}",
            )


def begin(out: Path, kind: str) -> Path:
    """A fresh, marked ``<out>.partial`` to write the results into; one left by a killed process is
    removed (call ``check_replaceable`` first: a sibling icl did not write is never removed)."""
    partial = staging_path(out)
    _remove_sibling(partial, kind, staging=True)
    partial.mkdir(parents=True)
    mark(partial, kind)
    return partial


def commit(partial: Path, out: Path, kind: str, flag: str) -> None:
    """Swap the finished ``partial`` in as ``out`` with no moment where neither set of results exists: a
    kill between the renames leaves the previous results in ``<out>.old`` and the new ones in
    ``<out>.partial``. ``out`` is checked again because the tree may have changed while it was computed."""
    check_replaceable(out, kind, flag)
    previous = previous_path(out)
    _remove_sibling(previous, kind, staging=False)
    if os.path.lexists(out):
        out.rename(previous)
    partial.rename(out)
    fsync_dir(out.parent)
    shutil.rmtree(previous, ignore_errors=True)  # what was just moved there: checked above


def clear_run(path: Path) -> None:
    """Empty the run directory ``path`` (passed by ``check_replaceable``) for a new run. Its lock file
    stays: the process clearing it may hold it. The marker goes last, so a kill part-way leaves a
    directory that is still known as a run."""
    entries = sorted(os.scandir(path), key=lambda e: e.name == MARKER)
    for entry in entries:
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def discard(partial: Path) -> None:
    """Remove the staging directory this process created, after a failure."""
    shutil.rmtree(partial, ignore_errors=True)


# ------------------------------------------------------------------------------------- helpers


def _marker(path: Path) -> str | None:
    try:
        text = (path / MARKER).read_text(errors="replace").strip()
    except OSError:
        return None
    return text if text in KINDS else None


def _run_shaped(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / "checkpoints").is_dir()


def _icl_config(path: Path) -> bool:
    try:
        data = read_yaml(path)
    except ICLError:
        return False
    return isinstance(data, dict) and ICL_CONFIG_KEYS <= data.keys()


def _legacy(path: Path, kind: str, staging: bool) -> bool:
    """Whether ``path`` looks like an unmarked ``kind`` output: flat, only the files that kind writes
    (and, in a staging directory cut short by a kill, unfinished ``*.tmp`` writes)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    if not entries or any(not e.is_file(follow_symlinks=False) for e in entries):
        return False
    names = {e.name for e in entries}
    allowed = LEGACY_SUFFIXES[kind] + ((TMP_SUFFIX,) if staging else ())
    if not all(n == LEGACY_LAST[kind] or n.endswith(allowed) for n in names):
        return False
    return staging or LEGACY_LAST[kind] in names


def _walk(path: Path) -> Iterator[os.DirEntry | None]:
    """The entries below ``path``, breadth first, WALK_DEPTH levels deep, without following symbolic
    links; None last when the bounds cut the walk short."""
    level, seen = [path], 0
    for _ in range(WALK_DEPTH):
        below = []
        for d in level:
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)  # the same run named every time
            except OSError:
                continue
            for e in entries:
                seen += 1
                if seen > WALK_ENTRIES:
                    yield None
                    return
                yield e
                if e.is_dir(follow_symlinks=False):
                    below.append(Path(e.path))
        level = below
    if level:
        yield None


def _run_below(path: Path) -> Path | None:
    """The shallowest run under ``path`` (marked, or config.yaml beside checkpoints/), within the bounds."""
    for entry in _walk(path):
        if entry is None:
            return None
        if entry.is_dir(follow_symlinks=False):
            p = Path(entry.path)
            if _marker(p) == RUN or _run_shaped(p):
                return p
    return None


def _enclosing(path: Path) -> tuple[str, Path] | None:
    """The nearest directory above ``path`` that is a run or an eval/report output."""
    for parent in Path(os.path.abspath(path)).parents:
        if is_run(parent):
            return RUN, parent
        marker = _marker(parent)
        if marker is not None:
            return marker, parent
    return None


def _shown(found: Path, like: Path) -> str:
    """``found`` (absolute) written the way the user wrote ``like``: relative if ``like`` was."""
    return str(found) if like.is_absolute() else os.path.relpath(found)


def _check_target(path: Path, kind: str, refuse) -> None:
    if not os.path.lexists(path):
        return
    if path.is_symlink():  # removing or renaming it would act on the link, not on what the user sees
        refuse("is a symbolic link", f"a real directory (new, empty, or {EARLIER[kind]} to replace)")
    if not path.is_dir():
        refuse("is a file", f"a directory (new, empty, or {EARLIER[kind]} to replace)")
    if not holds_files(path):
        return  # nothing in it to lose
    found = kind_of(path)
    if found != RUN and _run_shaped(path):
        found = RUN if kind != RUN else None  # refused below either way
    below = _run_below(path)
    if found == kind and below is None:
        return
    if found is not None and found != kind:
        refuse(f"is {DESCRIBE[found]}")
    if below is not None:
        shown = _shown(Path(os.path.abspath(below)), path)
        if found == kind:
            refuse(f"holds another run {shown}", f"{EARLIER[kind]} that holds no run, or a new or empty path")
        refuse(f"holds run {shown} (a sweep or project directory)")
    if kind == RUN:
        why = "its config.yaml is not an icl config" if _run_shaped(path) else "no config.yaml/checkpoints"
        refuse(f"is not an icl run directory ({why})")
    refuse(f"is not empty and not {DESCRIBE[kind]} (no {MARKER} marker)")


def _sibling_ok(path: Path, kind: str, staging: bool) -> bool:
    if not os.path.lexists(path):
        return True
    if path.is_symlink() or not path.is_dir():
        return False
    if not holds_files(path):
        return True
    if _run_shaped(path) or _marker(path) == RUN or _run_below(path) is not None:
        return False
    return _marker(path) == kind or _legacy(path, kind, staging)


def _remove_sibling(path: Path, kind: str, staging: bool) -> None:
    if not _sibling_ok(path, kind, staging):  # checked by check_replaceable; this keeps removal safe alone
        raise ICLError(f"{path}: exists and is not {DESCRIBE[kind]}; allowed: move or rename it")
    if os.path.lexists(path):
        shutil.rmtree(path)
