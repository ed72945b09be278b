"""The function-class registry: ``TASKS`` (config name -> class, filled by ``icl/tasks/__init__.py``
and by user modules through ``register``) and ``build_task(name, params)``, which turns a config
entry into a checked ``FunctionClass``."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from icl.errors import ICLError
from icl.plugins import check_complete, check_free
from icl.tasks.base import FunctionClass

TASKS: dict[str, type[FunctionClass]] = {}


def register(*classes: type[FunctionClass]) -> None:
    """Add function classes to ``TASKS`` under their ``name`` (the config name). Registering the
    same class again does nothing; another class under a taken name is refused."""
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, FunctionClass) and dataclasses.is_dataclass(cls)):
            raise ICLError(f"function class {cls!r}: allowed: a dataclass subclass of icl.tasks.FunctionClass")
        if not cls.name:
            raise ICLError(f"function class {cls.__name__}: empty name; allowed: a snake_case class attribute `name`")
        check_free("function class", cls.name, cls, TASKS)
        check_complete("function class", cls)
        TASKS[cls.name] = cls


def build_task(name: str, params: dict[str, Any] | None = None) -> FunctionClass:
    """Build a registered function class, rejecting unknown names and parameters."""
    if name not in TASKS:
        raise ICLError(f"unknown function class {name!r}; allowed: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(cls.field_names()))
    if unknown:
        raise ICLError(f"{name}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(cls.field_names())}")
    hints = typing.get_type_hints(cls)
    checked = {k: _check_type(f"{name}.{k}", v, hints[k]) for k, v in params.items()}
    return cls(**checked)


def _check_type(field: str, value: Any, hint: Any) -> Any:
    """Accept ``value`` if it fits the annotation ``hint`` (ints are accepted as floats)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in options:
        origin = typing.get_origin(t) or t
        if t is type(None) and value is None:
            return None
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN passes every range check written as x < lo
                raise ICLError(f"{field}: got {value!r}; allowed: a finite number")
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, (list, tuple)):
            return list(value)
        if t is Any:
            return value
    names = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in options)
    raise ICLError(f"{field}: got {value!r}; allowed: {names}")
