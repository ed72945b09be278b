"""Checkpoints: crash-safe writing (AtomicCheckpointIO), choosing the one to resume from, and
reading them back. Every icl checkpoint carries its resolved config, from which the model is
rebuilt. Bad files are refused with one clear line."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import signal
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from icl.config import Config, from_dict
from icl.errors import ICLError
from icl.fileio import atomic_writer
from icl.model import ICLTransformer

LAST = "last.ckpt"
STEP_FILE = re.compile(r"step=(\d+)\.ckpt")  # ModelCheckpoint's periodic files, step=0001000.ckpt
# Test-only fault injection: with ICL_FAULT_KILL_IN_SAVE=n the process SIGKILLs itself during its
# n-th checkpoint save (1-based), after half of the temporary file is written and synced.
FAULT_KILL_IN_SAVE = "ICL_FAULT_KILL_IN_SAVE"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer made crash-safe: temporary file, fsync, rename, fsync of the
    directory (icl.fileio.atomic_writer). A kill during a save leaves the previous file intact
    and at most a ``*.ckpt.tmp`` that no reader takes for a checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self.kill_at = int(os.environ.get(FAULT_KILL_IN_SAVE) or 0)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        self.saves += 1
        with atomic_writer(Path(path)) as f:
            torch.save(checkpoint, f)
            if self.saves == self.kill_at:
                f.flush()
                f.truncate(f.tell() // 2)
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)


def resume_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest complete checkpoint of a run and its contents: last.ckpt, unless a kill came
    between writing a periodic step=*.ckpt and last.ckpt, which leaves the periodic one newer."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    periodic = sorted((int(m.group(1)), p) for p in ckpt_dir.glob("step=*.ckpt") if (m := STEP_FILE.fullmatch(p.name)))
    last = ckpt_dir / LAST
    if last.is_file():
        try:
            ckpt = read_checkpoint(last)
        except ICLError as e:
            hint = f"; move it away to resume from {periodic[-1][1].name}" if periodic else ""
            raise ICLError(f"--resume {run_dir}: {e}{hint}") from None
        if not periodic or periodic[-1][0] <= ckpt["global_step"]:
            return last, ckpt
    if not periodic:
        raise ICLError(
            f"--resume {run_dir}: no checkpoint in {ckpt_dir} (stopped before the first save); "
            "start the run again with --overwrite"
        )
    return periodic[-1][1], read_checkpoint(periodic[-1][1])


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its checkpoints/last.ckpt)."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise ICLError(f"checkpoint not found: {p} (give a .ckpt file or a run directory with checkpoints/last.ckpt)")
    return p


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise ICLError(
            f"{p}: not a readable checkpoint (truncated or corrupted?): {str(e).splitlines()[0][:200]}"
        ) from None
    if not isinstance(ckpt, dict) or "icl_config" not in ckpt or "state_dict" not in ckpt:
        raise ICLError(f"{p}: not an icl checkpoint (no icl_config / state_dict)")
    return ckpt


def parse_device(name: str | torch.device) -> torch.device:
    """A torch device that exists on this machine, or one line saying why not."""
    allowed = "allowed: cpu or an available accelerator (cuda, cuda:N, mps)"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ICLError(f"--device: got {str(name)!r}, not a torch device type; {allowed}") from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # accelerator not built in, absent, or no such index
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ICLError(f"--device: got {str(name)!r} ({reason}); {allowed}") from None
    return device


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ICLTransformer, Config]:
    """Rebuild the model from a checkpoint's config and load its weights (eval mode)."""
    device = parse_device(device)
    ckpt = read_checkpoint(path)
    cfg = from_dict(ckpt["icl_config"])
    model = ICLTransformer(dataclasses.replace(cfg.model), cfg.data.n_dims)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        # torch's first line is a header ("Error(s) in loading state_dict for ...:"); the next names a tensor
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        raise ICLError(
            f"{resolve_checkpoint(path)}: weights do not match its config: {lines[min(1, len(lines) - 1)][:200]}"
        ) from None
    return model.to(device).eval(), cfg
