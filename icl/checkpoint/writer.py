"""Crash-safe checkpoint writing for Lightning (AtomicCheckpointIO), and the reading Lightning does
when it resumes, routed through icl's weights-only read and resume validation."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from icl.checkpoint.io import read_checkpoint, resolve_checkpoint
from icl.checkpoint.validate import check_resumable
from icl.fileio import atomic_writer

# Test-only fault injection: with ICL_FAULT_KILL_IN_SAVE=n the process SIGKILLs itself during its
# n-th checkpoint save (1-based), after half of the temporary file is written and synced.
FAULT_KILL_IN_SAVE = "ICL_FAULT_KILL_IN_SAVE"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer made crash-safe: temporary file, fsync, rename, fsync of the
    directory (icl.fileio.atomic_writer). A kill during a save leaves the previous file intact
    and at most a ``*.ckpt.tmp`` that no reader takes for a checkpoint. Lightning's own read of
    the checkpoint it resumes from goes through ``read_checkpoint`` and ``check_resumable``."""

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

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # Always weights-only and on the CPU (Lightning moves the state to its devices afterwards),
        # whatever the caller asks: Lightning reads checkpoints only to resume from them.
        ckpt = read_checkpoint(path)
        check_resumable(ckpt, resolve_checkpoint(path))
        return ckpt
