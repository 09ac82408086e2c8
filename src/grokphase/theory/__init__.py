"""Mean-field (adaptive-kernel) theory of two-layer networks: solvers for the GFL / GMFL phases.

Submodules: :mod:`~grokphase.theory.teacher_student` (cubic teacher, erf student),
:mod:`~grokphase.theory.gp` (its infinite-width NNGP baseline), :mod:`~grokphase.theory.modular`
(modular addition, Fourier-mode action) and :mod:`~grokphase.theory.modular_gp` (its NNGP kernel).  All computations run in float64.
"""

from grokphase.theory import gp, modular, modular_gp, teacher_student

__all__ = ["gp", "modular", "modular_gp", "teacher_student"]
