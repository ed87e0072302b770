"""The one kind of error a user can fix: bad config, bad data, a file that is missing or of
another run. ``ragtune``'s CLI prints such an error as one line and exits 2; any other exception
is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """An error the user can fix; its message says what is wrong and where (file, line, field)."""
