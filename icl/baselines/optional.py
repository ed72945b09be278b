"""Baselines that need an optional package: the error their constructor raises where it is
missing, which evaluation turns into a one-line skip note instead of a failure."""

from __future__ import annotations

import importlib
from types import ModuleType

from icl.errors import ICLError


class Unavailable(ICLError):
    """A baseline that cannot run here (its optional package is not installed)."""


def require_package(baseline: str, module: str, extra: str) -> ModuleType:
    """Import ``module`` for ``baseline`` or raise Unavailable naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unavailable(
            f"{baseline}: needs the optional package {module}; install it with pip install -e '.[{extra}]'"
        ) from None
