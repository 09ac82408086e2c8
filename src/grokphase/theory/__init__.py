"""Mean-field (adaptive-kernel) theory of two-layer networks: solvers for the GFL / GMFL phases.

One package per model: :mod:`~grokphase.theory.teacher_student` (cubic teacher, erf student) with
:mod:`~grokphase.theory.gp` (its infinite-width NNGP baseline), and :mod:`~grokphase.theory.modular`
(modular addition, Fourier-mode action) with :mod:`~grokphase.theory.modular_gp` (its NNGP kernel).
Shared by the models: :mod:`~grokphase.theory.status` (status codes, phases, the boundary's
errors), :mod:`~grokphase.theory.batching` (flatten, pad and cut parameter batches) and
:mod:`~grokphase.theory.roots` (jit-compatible root finding); :mod:`~grokphase.theory.results`
assembles solver output into result datasets.  All computations run in float64.
"""

from grokphase.theory import gp, modular, modular_gp, teacher_student

__all__ = ["gp", "modular", "modular_gp", "teacher_student"]
