"""The error types that cross module boundaries.

`UserError` is a mistake the user can fix (bad path, bad value, unreachable model): the CLI prints its
message on one line and exits 2, never with a traceback. Library code raises it instead of printing.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line (CLI exit code 2)."""
