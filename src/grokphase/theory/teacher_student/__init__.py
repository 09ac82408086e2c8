r"""Teacher-student model: cubic teacher, erf student (paper Sec. 2.1, 3.1, App. A; THEORY.md §3).

Data ``x ~ N(0, I_d)``, teacher ``y = H1(w*·x) + eps H3(w*·x)`` (eq. 1), student
``f(x) = sum_i a_i erf(w_i·x)`` (eq. 2) with priors ``a_i ~ N(0, sa2/N)``, ``w_i ~ N(0, sw2/d I)``.

In the equivalent-kernel (EK) limit the discrepancy is ``s2 * tbar = b H1 + c H3`` (eq. 12) and every
hidden neuron is summarised by its overlap ``q = w·w*`` with the single-neuron action (eq. 13)

    S(q) = d [ q^2/(2 sw2) - (2u/pi) (q^2/D) (b - 2 c q^2/D)^2 ],   D = 1 + 2 (sw2 + q^2),
    u = n^2 sa2 / (s2^2 d N),   r = s2 N / n.

Everything here follows from one concave free energy (THEORY.md §2, written in ``v = [b, sqrt(6) c]``)

    F(v) = v·yhat - |v|^2/2 - r log( z(v) / z(0) ),   yhat = [1, sqrt(6) eps],
    z(v) = \int dq exp(-S(q; v)),

whose stationarity ``v = (I + (n/s2) Qt)^{-1} yhat`` is the self-consistency of App. A.3 (with the
factor ``s2/n`` the paper drops) and whose Hessian is negative definite.  ``F/r = G/N`` is the free
energy per hidden neuron relative to the prior.

Two solvers:

* :func:`solve_finite_d` — maximises F by damped Newton with an exact (closed-form) Hessian, the
  integrals over q done by a trapezoid rule on a sinh-mapped grid in log space (spectrally
  accurate for this analytic integrand) with an a-posteriori resolution check; vmappable over every
  parameter.
* :func:`solve_limit` — the scaling limit (eq. 11, Table 1; alpha, beta -> infinity at fixed u, r):
  the GFL branch, the first-order transition where the droplet minima ±q* become degenerate with
  q = 0 (Claim IV), and the GMFL-I mixed branch with the degeneracy pinned.

Two approximations (THEORY.md §3b), chosen by ``approximation=`` on every solver:

* ``"exact"`` (default): t = |w_perp|^2 is a second order parameter.  The neuron law is
  p(q, t) ∝ t^{(d-3)/2} exp(-d (q^2 + t)/(2 sw2) + (u d/2)(v·g(q, t))^2), g at D = 1 + 2(q^2 + t);
  the q-integral is the same sinh-mapped trapezoid rule, the t-integral a trapezoid rule in
  s = log(t/t0), t0 = sw2 (d-1)/d the prior mode, with spacing half a prior standard deviation
  sqrt(2/(d-1)) (see :func:`t_grid_size`).  The quadrature weights do not depend on v, so the
  discrete F is still a log-sum-exp of convex quadratics: exactly concave, same Newton solver.
  In the scaling limit Shat(q, t) = (q^2 + t)/(2 sw2) - log(t)/2 - (2u/pi) x (b - 2 c x)^2,
  x = q^2/D; minimising over t at fixed x gives t*(x) = sw2 (1 - 2x) exactly, and the droplet
  cost relative to the bulk saddle (0, sw2) becomes x/(2 sw2 (1-2x)) - log(1-2x)/2 - (2u/pi) m(x).
* ``"concentrated"``: the paper's Claim II, t fixed at sw2 (one order parameter q).

Modules (everything is re-exported here, so ``teacher_student.solve_finite_d`` etc. keep working):

* :mod:`.params` — :class:`TeacherStudentParams`, the approximations;
* :mod:`.action` — overlaps g(q, t) and the single-neuron actions;
* :mod:`.quadrature` — the q- and t-rules, grid sizes, the prior kernel;
* :mod:`.free_energy` — F(v), its gradient and Hessian on a grid;
* :mod:`.finite_d` — the Newton solver, :func:`solve_finite_d`, the density p(q);
* :mod:`.limit` — the scaling limit; :mod:`.transition` — Claim IV's transition;
* :mod:`.frozen` — metastable branches with the droplet occupation frozen (hysteresis);
* :mod:`.ridge` — the renormalised ridge, the finite-n (eigenlearning) correction of the EK theory.

Status codes and phases live in :mod:`grokphase.theory.status`, batching in
:mod:`grokphase.theory.batching`; both are shared with the modular model.
"""

from __future__ import annotations

from grokphase.theory.batching import bucket_size, default_block, default_chunk
from grokphase.theory.status import PHASE_LABELS, Phase, Status
from grokphase.theory.teacher_student.action import (
    SQRT6,
    action,
    overlaps,
    reduced_action,
    reduced_action_qt,
)
from grokphase.theory.teacher_student.finite_d import (
    FAILURE_HINTS,
    MAX_GRID_SIZE,
    MAX_T_LEVEL,
    NEWTON_RTOL,
    RESIDUAL_ACCEPT,
    RESOLUTION_TOL,
    FiniteDSolution,
    log_density,
    log_density_qt,
    solve_finite_d,
    solve_finite_d_batch,
    solve_finite_d_point,
)
from grokphase.theory.teacher_student.free_energy import free_energy_objective
from grokphase.theory.teacher_student.constrained import TeacherStudentProfile, free_energy_profile
from grokphase.theory.teacher_student.frozen import FrozenBranch, solve_frozen_branch
from grokphase.theory.teacher_student.limit import (
    LimitSolution,
    degeneracy_ratio,
    degeneracy_ratio_exact,
    gfl_b,
    solve_limit,
    solve_limit_batch,
    solve_limit_point,
)
from grokphase.theory.teacher_student.params import (
    APPROXIMATIONS,
    DEFAULT_APPROXIMATION,
    DERIVED_AXES,
    PARAM_NAMES,
    TeacherStudentParams,
    check_approximation,
)
from grokphase.theory.teacher_student.quadrature import (
    DEFAULT_T_SIZE,
    SUPPORT_CONTRAST,
    T_FLOOR,
    T_LEVEL_STEP,
    T_SPACING,
    TRUNCATION_CHECK,
    default_grid_size,
    point_grid_sizes,
    prior_kernel,
    q_support,
    t_grid_size,
)
from grokphase.theory.teacher_student.transition import Transition, solve_transition
from grokphase.theory.teacher_student.ridge import (
    RidgeSolution,
    RidgeSpectrum,
    kernel_spectrum,
    renormalised_ridge,
    solve_finite_d_ridge,
)

# Private helpers that tests and benchmarks reach through ``teacher_student._name`` (the module was
# one file before it became this package); kept importable here, not part of the API.
from grokphase.theory.batching import flatten as _flat_params  # noqa: F401
from grokphase.theory.batching import padded as _padded  # noqa: F401
from grokphase.theory.teacher_student.action import _yhat  # noqa: F401
from grokphase.theory.teacher_student.free_energy import _evaluate, _evaluate_grid  # noqa: F401
from grokphase.theory.teacher_student.quadrature import _flat, _grid, _prior_logp, _quadrature  # noqa: F401

__all__ = [
    "APPROXIMATIONS", "DEFAULT_APPROXIMATION", "DEFAULT_T_SIZE", "DERIVED_AXES", "FAILURE_HINTS",
    "MAX_GRID_SIZE", "MAX_T_LEVEL", "NEWTON_RTOL", "PARAM_NAMES", "PHASE_LABELS", "RESIDUAL_ACCEPT",
    "RESOLUTION_TOL", "SQRT6", "SUPPORT_CONTRAST", "TRUNCATION_CHECK", "T_FLOOR", "T_LEVEL_STEP", "T_SPACING",
    "FiniteDSolution", "FrozenBranch", "LimitSolution", "Phase", "Status", "TeacherStudentParams",
    "RidgeSolution", "RidgeSpectrum", "TeacherStudentProfile", "Transition",
    "action", "bucket_size", "check_approximation", "default_block", "default_chunk", "default_grid_size",
    "degeneracy_ratio", "degeneracy_ratio_exact", "free_energy_objective", "kernel_spectrum", "free_energy_profile", "gfl_b",
    "log_density",
    "log_density_qt", "overlaps", "point_grid_sizes", "prior_kernel", "q_support", "reduced_action",
    "reduced_action_qt", "renormalised_ridge", "solve_finite_d", "solve_finite_d_ridge", "solve_finite_d_batch", "solve_finite_d_point", "solve_frozen_branch",
    "solve_limit", "solve_limit_batch", "solve_limit_point", "solve_transition", "t_grid_size",
]
