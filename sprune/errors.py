"""Errors a user can fix.

A `UserError` is printed by the CLI as a single line (no traceback) and the process exits
with status 2. The message names the file, line or key at fault and says what to do.
"""
from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem in the user's input: bad file, bad option, bad config key.

    The message must fit on one line and tell the user how to fix it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))


class SharedUserError(UserError):
    """A `UserError` every process of a distributed run raises alike (a batch size that
    does not split, configs that differ between processes): rank 0 alone prints it."""
