"""Exceptions the CLI prints as one line, without a traceback: bad user input (exit 2) and a run
stopped by the non-finite guard (exit 3)."""

EXIT_DIVERGED = 3  # exit codes: 2 bad input, 3 training stopped on a non-finite loss, 130 interrupted
DIVERGED_FILE = "diverged"  # in a run directory: train.nonfinite=stop stopped it; `icl sweep` does not retry it


class ICLError(Exception):
    """A mistake in a config, CLI argument, checkpoint or scenario, with a message that names
    the problem and what is allowed."""


class NonFiniteError(ICLError):
    """Training met a NaN/Inf loss or gradient with train.nonfinite=stop."""

    def __init__(self, step: int | None = None, message: str | None = None) -> None:
        super().__init__(
            message
            or f"train: non-finite loss or gradient at step {step}; training stopped and checkpoints/ keeps the last "
            "good state (lower train.lr or set train.grad_clip, or resume with train.nonfinite=skip)"
        )
