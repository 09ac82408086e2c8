"""Mean-field (adaptive-kernel) theory of two-layer networks: solvers for the GFL / GMFL phases.

Submodules: :mod:`~grokphase.theory.teacher_student` (cubic teacher, erf student),
:mod:`~grokphase.theory.gp` (the infinite-width NNGP baseline).  All computations run in float64.
"""

from grokphase.theory import gp, teacher_student

__all__ = ["gp", "teacher_student"]
