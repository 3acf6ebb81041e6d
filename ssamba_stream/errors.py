"""Errors a user can fix: entry points print their one-line message and exit non-zero, no traceback."""

import sys
import warnings
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (file, option, model), whose message names the fix."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""


class InputWarning(UserWarning):
    """Input that is used but probably not what the user meant (audio far out of range, upsampled)."""


def absence(path: Path, directory: bool = False) -> str:
    """Why ``path`` cannot be opened as a file (or, with ``directory``, as a folder): a folder given
    for a file is told apart from a missing one, so the message points at the real mistake."""
    if directory and path.exists():
        return "is a file, not a directory"
    if not directory and path.is_dir():
        return "is a directory, not a file"
    return "not found"


def run_cli(app: Callable[[], object], program: str) -> None:
    """Run a command-line app: a UserError becomes one line on stderr and exit status 2; an
    InputWarning one 'warning:' line, once."""
    show = warnings.showwarning

    def one_line(message, category, *args, **kwargs) -> None:  # noqa: ANN001 (the warnings hook's signature)
        if issubclass(category, InputWarning):
            print(f"{program}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = one_line
    try:
        app()
    except UserError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(2)
