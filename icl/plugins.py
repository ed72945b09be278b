"""User modules (the config's ``imports``): Python files or importable modules that register their
own function classes, baselines, scenarios, query shifts and input distributions. Imported before a
config is validated; recorded with absolute paths so a run directory alone imports them again.
Registries refuse a taken name with ``check_free``; the same object registered again is fine."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from icl.errors import ICLError
from icl.yamlio import read_yaml

ALLOWED = "allowed: a list of .py file paths and importable module names, e.g. imports=[my_tasks.py]"
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_file_entry(entry: str) -> bool:
    """A file path (``tasks.py``, ``lib/tasks``) rather than a module name (``my_pkg.tasks``)."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def entries(value: Any, where: str = "imports") -> list[str]:
    """``value`` as a list of entries: a list of non-empty strings (a single string is one entry)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ICLError(f"{where}: got {value!r}; {ALLOWED}")
    return [v.strip() for v in value]


def resolve(entry: str, base: Path | None = None) -> str:
    """A file entry as an absolute path (relative ones from ``base``, default the current directory);
    a module name as it is."""
    if not is_file_entry(entry):
        if not _MODULE_NAME.fullmatch(entry):
            raise ICLError(f"imports: {entry!r} is neither a .py file path nor a module name; {ALLOWED}")
        return entry
    path = Path(entry).expanduser()
    return str(((base or Path.cwd()) / path).resolve())


def import_all(items: Iterable[str], base: Path | None = None) -> list[str]:
    """Import every entry (in order, each once) and return them resolved, without duplicates.
    A file imported before (under any spelling of its path) is not executed again, so its
    registrations are not repeated."""
    resolved = list(dict.fromkeys(resolve(e, base) for e in entries(list(items))))
    for entry in resolved:
        if is_file_entry(entry):
            _import_file(Path(entry))
        else:
            _import_module(entry)
    return resolved


def module_name(path: Path) -> str:
    """The sys.modules name of a user file: its stem and a digest of its absolute path (two files
    with one stem stay apart; one file always maps to one name)."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    return f"icl_user_{stem}_{digest}"


def _import_file(path: Path) -> None:
    name = module_name(path)
    if name in sys.modules:
        return
    if not path.is_file():
        raise ICLError(f"imports: {path}: no such file; {ALLOWED}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ICLError(f"imports: {path}: not a Python file; {ALLOWED}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing: dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if not isinstance(e, Exception):
            raise
        raise ICLError(f"imports: {path} raised on import: {_describe(e)}") from None


def _import_module(name: str) -> None:
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise ICLError(
                f"imports: module {name!r} not found on sys.path; allowed: an installed module, one on "
                "PYTHONPATH, or a .py file path"
            ) from None
        raise ICLError(f"imports: module {name!r} raised on import: {_describe(e)}") from None
    except Exception as e:
        raise ICLError(f"imports: module {name!r} raised on import: {_describe(e)}") from None


def _describe(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    if isinstance(e, ICLError):  # already one line naming the problem (e.g. a registry's name clash)
        return lines[0] if lines else type(e).__name__
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def recorded_imports(target: str | Path) -> list[str] | None:
    """The ``imports`` a run records in its config.yaml, read without torch, for a run directory or
    a checkpoint inside one: [] for a target that does not exist (it imports nothing), None where
    the target exists but its run config cannot be read (unknown)."""
    p = Path(target)
    if not p.exists():
        return []
    run_dir = p if p.is_dir() else (p.parent.parent if p.parent.name == "checkpoints" else p.parent)
    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    try:
        loaded = read_yaml(config)
        return entries(loaded.get("imports") or []) if isinstance(loaded, dict) else None
    except ICLError:
        return None


def check_free(kind: str, name: str, obj: Any, registry: dict[str, Any]) -> None:
    """Refuse ``name`` where ``registry`` holds another object under it (the same object again is
    fine: a module imported twice registers twice)."""
    held = registry.get(name)
    if held is not None and held is not obj:
        raise ICLError(
            f"{kind} {name!r}: already registered to {_where(held)}, not {_where(obj)}; allowed: a name not "
            f"taken ({', '.join(sorted(registry))})"
        )


def check_complete(kind: str, cls: type) -> None:
    """Refuse a class that leaves one of its base's abstract methods undefined, naming them."""
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise ICLError(f"{kind} {cls.__name__}: {', '.join(missing)} not defined; allowed: a class that defines them")


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
