"""The one exception type for user errors.

A verb's ``main`` catches it and prints its message as one line on stderr;
anything else is a bug and keeps its traceback.
"""


class CowaheadError(Exception):
    """Something the user can fix: bad input, a missing tool, a bad option."""


class EngineUnsupported(CowaheadError):
    """The fast engine cannot replay this (large folios, a policy it has no compiled window for); the reference
    model can. A sweep falls back to the model; a verb asked for the engine reports it."""
