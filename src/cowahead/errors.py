"""The one exception type for user errors.

A verb's ``main`` catches it and prints its message as one line on stderr;
anything else is a bug and keeps its traceback.
"""


class CowaheadError(Exception):
    """Something the user can fix: bad input, a missing tool, a bad option."""
