"""Checkpoint files: their names in a run directory, finding one, and reading it weights-only
(tensors and plain values, never other objects, so nothing in the file runs), with the checks
every reader relies on."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from icl.checkpoint.fields import is_count, require
from icl.errors import ICLError

LAST = "last.ckpt"
LAST_FILE = re.compile(r"last(-v\d+)?\.ckpt")  # ModelCheckpoint's save_last names
STEP_FILE = re.compile(r"step=(\d+)\.ckpt")  # ModelCheckpoint's periodic files, step=0001000.ckpt


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its checkpoints/last.ckpt)."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / LAST
    if not p.is_file():
        raise ICLError(f"checkpoint not found: {p} (give a .ckpt file or a run directory with checkpoints/last.ckpt)")
    return p


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of an icl checkpoint (file or run directory), loaded weights-only: tensors
    and plain values, never other objects, so nothing in the file runs. Checks what every reader
    uses: ``icl_config`` a mapping, ``state_dict`` a mapping of names to tensors, ``global_step``
    (where present) an integer >= 0."""
    p = resolve_checkpoint(path)
    ckpt = _load(p)
    if not isinstance(ckpt, dict) or "icl_config" not in ckpt or "state_dict" not in ckpt:
        raise ICLError(f"{p}: not an icl checkpoint (no icl_config / state_dict)")
    require(isinstance(ckpt["icl_config"], dict), p, "icl_config", ckpt["icl_config"], "a mapping (the run's config)")
    state = ckpt["state_dict"]
    require(isinstance(state, dict), p, "state_dict", state, "a mapping of tensor names to tensors")
    for k, v in state.items():
        require(isinstance(k, str) and torch.is_tensor(v), p, f"state_dict[{k!r}]", v, "a tensor under a str name")
    if "global_step" in ckpt:
        require(is_count(ckpt["global_step"]), p, "global_step", ckpt["global_step"], "an integer >= 0")
    return ckpt


def _load(p: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns on stderr before refusing a pickle protocol it does not read; the refusal says it all
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # A zip archive (torch.save) or a pickle stream (legacy torch.save, pickle.dump) that the
        # weights-only unpickler stopped at: it asks for something beyond tensors and plain values.
        if "Weights only load failed" in str(e) and _head(p) in (b"PK\x03\x04", b"\x80"):
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            example = f", e.g. {found.group(1)}" if found else ""
            raise ICLError(
                f"{p}: refused: it holds objects other than tensors and plain values{example} (weights-only "
                "loading never runs code from a checkpoint); allowed: checkpoints written by icl"
            ) from None
        raise _unreadable(p, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, MemoryError) as e:
        raise _unreadable(p, e) from None


def _head(p: Path) -> bytes:
    with p.open("rb") as f:
        head = f.read(4)
    return head if head == b"PK\x03\x04" else head[:1]


def _unreadable(p: Path, e: BaseException) -> ICLError:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # torch wraps the weights-only unpickler's reason (e.g. "Unsupported operand 110") in advice
    # about weights_only=False that does not apply here
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    reason = next((line for line in lines if not line.startswith(boilerplate)), type(e).__name__)[:200]
    return ICLError(f"{p}: not a readable checkpoint (truncated or corrupted?): {reason}")
