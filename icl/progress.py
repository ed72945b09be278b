"""Training progress: the progress bar on a terminal; elsewhere (a sweep's log file, a batch job's
output) one plain line every ``every_s`` seconds and at the end, with no carriage-return redraws."""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from icl.console import duration


class LineProgress(Callback):
    """``step N/total (P%), train/loss X, R steps/s, ETA H:MM:SS`` on stderr every ``every_s``
    seconds of training and after the last step."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._start: tuple[float, int] | None = None
        self._last = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = (time.monotonic(), trainer.global_step)
        self._last = self._start[0]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s or trainer.global_step >= trainer.max_steps:
            self._last = now
            print(self.line(trainer, now), file=sys.stderr, flush=True)

    def line(self, trainer, now: float) -> str:
        t0, step0 = self._start or (now, 0)
        step, total = trainer.global_step, trainer.max_steps
        rate = (step - step0) / max(now - t0, 1e-9)
        loss = trainer.progress_bar_metrics.get("train/loss")
        parts = [f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)"]
        if loss is not None:
            parts.append(f"train/loss {float(loss):.4f}")
        parts.append(f"{rate:.1f} steps/s")
        if rate > 0 and step < total:
            parts.append(f"ETA {duration((total - step) / rate)}")
        return ", ".join(parts)


def progress_callbacks(enabled: bool, log_every: int) -> tuple[list[Any], bool]:
    """(callbacks, Lightning's enable_progress_bar) for train.progress_bar: the bar on a terminal,
    plain lines elsewhere, nothing when off."""
    if not enabled:
        return [], False
    if sys.stderr.isatty():
        return [TQDMProgressBar(refresh_rate=max(1, min(50, log_every)))], True
    return [LineProgress()], False
