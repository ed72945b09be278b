"""The one exception type for bad user input: the CLI prints its message as one line and
exits non-zero, without a traceback."""


class ICLError(Exception):
    """A mistake in a config, CLI argument, checkpoint or scenario, with a message that names
    the problem and what is allowed."""
