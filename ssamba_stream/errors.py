"""Errors a user can fix: entry points print their one-line message and exit non-zero, no traceback."""


class UserError(Exception):
    """A problem with the user's input (file, option, model), whose message names the fix."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""
