"""How checkpoint readers refuse a field: ``require`` raises one line naming the file, the field,
what it holds and what is allowed; ``describe`` says what a value is without printing it whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from icl.errors import ICLError

MISSING = object()  # a key the checkpoint lacks, shown as "got nothing"


def require(ok: bool, p: Path, field: str, got: Any, allowed: str) -> None:
    if not ok:
        raise ICLError(f"{p}: {field}: got {describe(got)}; allowed: {allowed}")


def describe(v: Any) -> str:
    if torch.is_tensor(v):
        return f"a tensor {shape_of(v)} {v.dtype}"
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)
    if isinstance(v, str):
        return repr(v[:60])
    if v is MISSING:
        return "nothing"
    if isinstance(v, dict):
        keys = sorted(map(str, v))
        return f"a mapping with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}" if keys else "{}"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__} of {len(v)}"
    return type(v).__name__


def shape_of(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def tensor_mismatch(want: dict[str, torch.Tensor], got: dict[Any, Any]) -> str | None:
    """The first way ``got`` differs from the names, shapes and dtypes of ``want``, or None."""
    for name, ref in want.items():
        if name not in got:
            return f"missing {name} {shape_of(ref)}"
        t = got[name]
        if not torch.is_tensor(t) or t.layout != torch.strided or t.is_meta:
            return f"{name} is {describe(t)}, not a dense tensor"
        if t.shape != ref.shape:
            return f"size mismatch for {name}: {shape_of(t)} in the checkpoint, {shape_of(ref)} in the model"
        if t.dtype != ref.dtype:
            return f"dtype mismatch for {name}: {t.dtype} in the checkpoint, {ref.dtype} in the model"
    extra = [k for k in got if k not in want]
    return f"unexpected {extra[0]}" if extra else None
