"""The mean-field theory's F(m) next to an umbrella-sampling result (THEORY.md §7, "theory side").

:func:`theory_profiles` solves the Legendre-constrained saddle
(:func:`grokphase.theory.modular.free_energy_profile`,
:func:`grokphase.theory.teacher_student.free_energy_profile`) at the simulated sizes and at each target
s2, on a grid of the same order parameter the simulation biased: the modular target component
(f, y)/(y, y) in the ``"network"`` convention (the log posterior of the simulated network), or the
teacher-student learned fraction of a target degree (the paper's erf model; finite-d exact theory).

The theory's F is -log p(m) of the whole network up to an m-independent constant, as is the
simulation's; both are drawn shifted to their minimum.  Its data term is the full table (modular) or
the equivalent-kernel population average (teacher-student), not the simulation's finite training set,
and it is a mean-field (N -> infinity at fixed ratios) answer: in it F(m) is one convex well at every
s2 (F'' is at least the data term; see the constrained-saddle modules), so a second well in the
simulation's profile is a finite-N effect the theory does not describe."""

from __future__ import annotations

import re

import numpy as np
import xarray as xr

from grokphase.errors import ResultFileError


def _degree(ds: xr.Dataset, coordinate: str | None = None) -> int:
    name = str(ds.attrs.get("umbrella_order_parameter", "")) if coordinate is None else coordinate
    match = re.fullmatch(r"learned_(\d+)", name)
    if not match:
        raise ResultFileError(f"the teacher-student theory profile needs a learned-fraction order parameter "
                              f"(learned_K); this result biased {name!r}")
    return int(match.group(1))


def theory_profiles(ds: xr.Dataset, s2, m, coordinate: str | None = None) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """{s2: (m, F)} of the mean-field theory for the umbrella result ``ds`` at each ``s2``, on the grid
    ``m`` (points the theory cannot solve are dropped, never returned as NaN; an s2 where none solves is
    left out).  Raises :class:`ResultFileError` for a result the theory does not describe (another
    optimiser or parametrisation, a training fraction < 1 (modular), another activation or target
    (teacher-student)) or along a coordinate it has no profile of (``coordinate``: the profile's, default
    the run's primary; modular: the theory's F is along the target component only)."""
    kind = ds.attrs.get("grokphase_kind")
    m = np.asarray(m, np.float64)
    out: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    if kind == "sims.modular":
        if coordinate not in (None, "target_component"):
            raise ResultFileError(f"the modular theory's F(m) is along the target component, not {coordinate!r}")
        from grokphase.analysis.compare import _modular_params
        from grokphase.theory import modular as md
        from grokphase.theory.status import Status
        N, P, sa2, gamma = _modular_params(ds)
        for s in np.atleast_1d(np.asarray(s2, np.float64)):
            prof = md.free_energy_profile(md.ModularParams(N=N, P=P, s2=float(s), sa2=sa2, gamma=gamma), m,
                                          convention="network")
            ok = prof.status == Status.CONVERGED
            if ok.any():
                out[float(s)] = (prof.m[ok], prof.F[ok])
        return out
    if kind == "sims.teacher_student":
        from grokphase.analysis.single_index import require_paper_model
        from grokphase.theory import teacher_student as ts
        from grokphase.theory.status import Status
        require_paper_model(ds, "the theory's free-energy profile")
        degree = _degree(ds, coordinate)
        if degree not in (1, 3):
            raise ResultFileError(f"the paper's model has target degrees 1 and 3, not {degree}")
        base = dict(N=float(ds.attrs["N"]), n=float(ds.attrs["n"]), d=float(ds.attrs["d"]),
                    sa2=float(ds.attrs["sa2"]), sw2=float(ds.attrs["param_sw2"]), eps=float(ds.attrs["param_eps"]))
        for s in np.atleast_1d(np.asarray(s2, np.float64)):
            prof = ts.free_energy_profile(ts.TeacherStudentParams(s2=float(s), **base), m, degree=degree)
            ok = prof.status == Status.CONVERGED
            if ok.any():
                out[float(s)] = (prof.m[ok], prof.F[ok])
        return out
    raise ResultFileError(f"no theory free-energy profile for results of kind {kind!r}")
