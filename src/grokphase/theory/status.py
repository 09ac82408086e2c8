"""Solver status codes and phase labels shared by every model's theory.

The solvers return a :class:`Status` and a :class:`Phase` as integer arrays and never raise inside
``jit``; :func:`raise_on_failure` is where the Python boundary turns a bad status into a clear
:class:`~grokphase.errors.SolverError` naming the first failing parameter point.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Mapping

import numpy as np

from grokphase.errors import SolverError


class Status(enum.IntEnum):
    """Solver outcome, returned as an integer array (never raised inside jit)."""

    CONVERGED = 0
    MAX_ITER = 1        # Newton did not reach the tolerance in maxiter steps
    LINE_SEARCH = 2     # backtracking could not increase F (and the residual is not small)
    UNRESOLVED = 3      # the q-grid does not resolve p(q) (half-grid check failed)
    TRUNCATED = 4       # p(q) has mass beyond the grid's end
    NONFINITE = 5       # a non-finite number appeared
    NO_BRANCH = 6       # scaling limit: no GMFL-I solution continues the GFL branch

    @property
    def label(self) -> str:
        return self.name.lower()


class Phase(enum.IntEnum):
    GFL = 0
    GMFL_I = 1
    GMFL_II = 2

    @property
    def label(self) -> str:
        return {0: "GFL", 1: "GMFL-I", 2: "GMFL-II"}[int(self)]


PHASE_LABELS = {int(p): p.label for p in Phase}


def raise_on_failure(status: np.ndarray, flat, what: str, hints: Mapping[Status, str] | None = None) -> None:
    """SolverError unless every entry of ``status`` is CONVERGED.

    ``flat``: the flattened parameter dataclass the status belongs to (one point per entry); the
    message names the first failing point by every field of it, the number of failures and the
    status's label, followed by ``hints[status]`` in parentheses when given."""
    status = np.asarray(status).ravel()
    bad = np.flatnonzero(status != Status.CONVERGED)
    if bad.size == 0:
        return
    i = int(bad[0])
    names = [f.name for f in dataclasses.fields(flat)]
    point = ", ".join(f"{k}={float(np.asarray(getattr(flat, k))[i]):.6g}" for k in names)
    code = Status(int(status[i]))
    hint = f" ({hints[code]})" if hints and code in hints else ""
    raise SolverError(f"{what} solver failed at {bad.size} of {status.size} points, first at ({point}): "
                      f"{code.label}{hint}")
