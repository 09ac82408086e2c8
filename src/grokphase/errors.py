"""Exceptions with one-line, user-facing messages (the CLI prints them without a traceback)."""


class GrokphaseError(Exception):
    """Base class of grokphase's user-facing errors."""


class ParameterError(GrokphaseError, ValueError):
    """A parameter is out of range, non-finite, of the wrong shape or malformed."""


class SolverError(GrokphaseError, RuntimeError):
    """A solver did not reach a trustworthy answer (the message names the point and the reason)."""


class ResultFileError(GrokphaseError, OSError):
    """A result file is missing, corrupt, partial or of the wrong kind."""
