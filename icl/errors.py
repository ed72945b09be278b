"""Exceptions the CLI prints as one line, without a traceback, each with its exit code: bad user
input (2), a run stopped by the non-finite guard (3), a write the system refused (4), training
stopped by a signal after saving (128 + the signal's number: 130 for SIGINT, 143 for SIGTERM)."""

EXIT_DIVERGED = 3
DIVERGED_FILE = "diverged"  # in a run directory: train.nonfinite=stop stopped it; `icl sweep` does not retry it


class ICLError(Exception):
    """A mistake in a config, CLI argument, checkpoint or scenario, with a message that names
    the problem and what is allowed."""

    exit_code = 2
    label = "error"  # the CLI prints "icl: <label>: <message>"


class NonFiniteError(ICLError):
    """Training met a NaN/Inf loss or gradient with train.nonfinite=stop."""

    exit_code = EXIT_DIVERGED

    def __init__(self, step: int | None = None, message: str | None = None, checkpointed: bool = True) -> None:
        self.step = step
        if message is None:
            if checkpointed:
                then = "checkpoints/ keeps the last good state (lower train.lr or set train.grad_clip, or resume with "
                then += "another train.lr or train.nonfinite=skip)"
            else:
                then = "no checkpoint was saved before it, so there is nothing to resume (start again with --overwrite "
                then += "and a lower train.lr or a train.grad_clip)"
            message = f"train: non-finite loss or gradient at step {step}; training stopped and {then}"
        super().__init__(message)


class WriteError(ICLError):
    """The system refused a write (disk full, read-only file system, no permission); every file
    written before is intact (writes are atomic)."""

    exit_code = 4


class Interrupted(ICLError):
    """Training stopped on SIGTERM or SIGINT after saving its state."""

    label = "stopped"

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
