"""SIGTERM (what clusters send before pre-emption) and SIGINT (Ctrl-C) during training: the step
in progress finishes, ``last.ckpt`` is saved atomically at that step, and training stops with one
line and exit code 128 + the signal's number. A second signal stops at once without saving
(every checkpoint on disk is complete: writes are atomic)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import lightning as L

from icl.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(L.Callback):
    """Records SIGTERM/SIGINT in a flag; after the current training step (where the periodic
    checkpoints are written too, so the saved state resumes bit-exactly) saves ``last`` and
    raises Interrupted. Under DDP the ranks agree on the flag every step, so all of them stop
    after the same step and take part in the save."""

    def __init__(self, last: Path, run_dir: Path, resume_hint: str | None = None) -> None:
        self.last, self.run_dir = Path(last), Path(run_dir)
        self.resume_hint = resume_hint or f"`icl train --resume {self.run_dir}`"
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            print(f"icl: stopped by a second {signal.Signals(signum).name}; nothing saved", file=sys.stderr)
            os._exit(128 + signum)
        self.received = signum

    def _install(self) -> None:
        for s in SIGNALS:
            previous = signal.signal(s, self._handle)
            self._previous.setdefault(s, previous)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the signals for the block (main thread only: elsewhere Python cannot install
        handlers and the signals keep their previous behaviour)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._install()
        try:
            yield
        finally:
            for s, previous in self._previous.items():
                signal.signal(s, previous)
            self._previous.clear()

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning installs its own SIGTERM handler when fit starts; it would end fit after the
        # step with exit code 0 and no checkpoint. Take the signals back.
        if self._previous:
            for s in SIGNALS:
                signal.signal(s, self._handle)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:  # one small all-reduce per step, only under DDP
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        signum = self.received or signal.SIGTERM  # a rank that did not see the signal itself
        trainer.save_checkpoint(self.last)
        name = signal.Signals(signum).name
        raise Interrupted(
            signum,
            f"{name} after step {trainer.global_step}: saved {self.last}; continue with {self.resume_hint}",
        )
