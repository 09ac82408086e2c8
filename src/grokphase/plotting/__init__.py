"""Figures drawn from saved result Datasets (never recomputing theory or simulations).

Every ``plot_*`` function takes a Dataset (as produced by :mod:`grokphase.theory.results` or loaded
with :func:`grokphase.io.load_dataset`) and a path; ``.png`` and ``.pdf`` are both supported, and a
PNG is also written as PDF when ``also_pdf=True``.
"""


from __future__ import annotations

from pathlib import Path

import xarray as xr

from grokphase.errors import ResultFileError
from grokphase.plotting.free_energy import plot_free_energy
from grokphase.plotting.sims import (plot_modular_compare, plot_modular_sim, plot_single_index_compare,
                                     plot_teacher_student_compare,
                                     plot_teacher_student_sim)
from grokphase.plotting.single_index import plot_family, plot_family_phase_diagram, plot_family_sweep
from grokphase.plotting.theory import (plot_finite_n, plot_gp_learning_curve, plot_modular_gp, plot_modular_sweep,
                                       plot_phase_diagram, plot_teacher_student_sweep)

PLOTTERS = {
    "sims.modular": plot_modular_sim,
    "sims.teacher_student": plot_teacher_student_sim,
    "analysis.teacher_student.compare": plot_teacher_student_compare,
    "analysis.single_index.compare": plot_single_index_compare,
    "analysis.single_index.family": plot_family,
    "theory.single_index.sweep": plot_family_sweep,
    "theory.single_index.phase_diagram": plot_family_phase_diagram,
    "analysis.modular.compare": plot_modular_compare,
    "theory.modular.sweep": plot_modular_sweep,
    "theory.modular.phase_diagram": plot_phase_diagram,
    "theory.modular.gp": plot_modular_gp,
    "theory.teacher_student.sweep": plot_teacher_student_sweep,
    "theory.teacher_student.phase_diagram": plot_phase_diagram,
    "theory.teacher_student.gp": plot_gp_learning_curve,
    "theory.teacher_student.finite_n": plot_finite_n,
    "analysis.free_energy": plot_free_energy,
}


def plot_result(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Dispatch on the dataset's ``grokphase_kind``."""
    kind = ds.attrs.get("grokphase_kind")
    if kind not in PLOTTERS:
        raise ResultFileError(f"no plot is defined for results of kind {kind!r}")
    return PLOTTERS[kind](ds, path, also_pdf)
