"""Errors a user can fix: entry points print their one-line message and exit non-zero, no traceback."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input (file, option, model), whose message names the fix."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""


def run_cli(app: Callable[[], object], program: str) -> None:
    """Run a command-line app: a UserError becomes one line on stderr and exit status 2."""
    try:
        app()
    except UserError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(2)
