"""User-facing errors: the CLI prints their message as one line, no traceback."""


class FracBNNError(Exception):
    """A problem with the user's input that they can fix; the message says how."""


class CheckpointError(FracBNNError):
    """A checkpoint file is missing, truncated, corrupt or of the wrong kind."""
