"""The GFL -> GMFL-I transition of the teacher-student scaling limit (Claim IV; THEORY.md §3, §3b):
where the droplet minima of Shat become degenerate with q = 0 on the GFL branch, along any parameter
or invariant."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from grokphase.errors import ParameterError
from grokphase.theory.roots import grid_bisect
from grokphase.theory.batching import flatten, padded, to_float64
from grokphase.theory.teacher_student.limit import (
    _m_star,
    _q_from_x,
    _q_t_from_x_exact,
    degeneracy_ratio,
    degeneracy_ratio_exact,
    gfl_b,
)
from grokphase.theory.teacher_student.params import (
    DEFAULT_APPROXIMATION,
    DERIVED_AXES,
    PARAM_NAMES,
    TeacherStudentParams,
    check_approximation,
)


@jax.jit(static_argnames=("approximation",))
def _degeneracy_excess(params: TeacherStudentParams, approximation: str = DEFAULT_APPROXIMATION):
    p = to_float64(params)

    def one(u, r, sw2, eps):
        b = gfl_b(u, r, sw2)
        if approximation == "exact":
            return degeneracy_ratio_exact(b, eps, u, sw2)[0] - 1.0
        return degeneracy_ratio(b, eps, u, sw2) - 1.0

    return jax.vmap(one)(p.u, p.r, p.sw2, p.eps)


class Transition(NamedTuple):
    """GFL -> GMFL-I transition of the scaling limit along one parameter.

    value: the parameter's value at the transition (NaN where no crossing lies in [lo, hi]);
    u, r: the invariants there; b: the GFL discrepancy there; q_star: the droplet overlap;
    t_star: |w_perp|^2 of the droplet saddle (sw2 in the concentrated approximation).
    found: boolean mask of points with a crossing."""

    value: np.ndarray
    u: np.ndarray
    r: np.ndarray
    b: np.ndarray
    q_star: np.ndarray
    found: np.ndarray
    t_star: np.ndarray


def solve_transition(params: TeacherStudentParams, along: str = "s2", lo=None, hi=None, *,
                     num_scan: int = 257, log: bool = True, make=None,
                     approximation: str = DEFAULT_APPROXIMATION) -> Transition:
    """Where the droplet minima of Shat become degenerate with q = 0 on the GFL branch (Claim IV),
    scanning ``along`` (a parameter or ``u``/``r``) over [lo, hi] and bisecting the first crossing.
    ``approximation="exact"``: the saddle (q*, t*) of Shat(q, t) becomes degenerate with the bulk
    saddle (0, sw2) (THEORY.md §3b); "concentrated": the paper's one-variable Shat(q).

    Vectorised over the other parameters (any broadcast shape).  Defaults: [value/100, value*100]
    around the given value, log-spaced scan.  ``make(values) -> TeacherStudentParams`` may replace
    the default way of setting the scanned parameter (``values`` has shape ``params.shape + (m,)``),
    e.g. to keep a rule such as sa2 = 8/N while N is scanned."""
    exact = check_approximation(approximation) == "exact"
    base = params.broadcast()
    shape = base.shape
    if along not in PARAM_NAMES + DERIVED_AXES:
        raise ParameterError(f"unknown parameter {along!r}; choose from {PARAM_NAMES + DERIVED_AXES}")
    if make is None:
        def make(values):
            expanded = jax.tree_util.tree_map(lambda a: np.asarray(a)[..., None], base)
            return expanded.with_axis(along, values)
    current = np.asarray(getattr(base, along), dtype=float)
    lo = np.broadcast_to(np.asarray(current / 100.0 if lo is None else lo, dtype=float), shape)
    hi = np.broadcast_to(np.asarray(current * 100.0 if hi is None else hi, dtype=float), shape)
    if np.any(~(hi > lo)) or (log and np.any(lo <= 0)):
        raise ParameterError(f"transition search range for {along} must satisfy 0 < lo < hi")
    t = np.linspace(0.0, 1.0, num_scan)
    if log:
        grid = np.exp(np.log(lo)[..., None] + (np.log(hi) - np.log(lo))[..., None] * t)
    else:
        grid = lo[..., None] + (hi - lo)[..., None] * t

    def excess(values):
        _, flat = flatten(make(values))
        padded_flat, M = padded(flat)
        return np.asarray(_degeneracy_excess(padded_flat, approximation))[:M].reshape(values.shape)

    found, value = grid_bisect(excess, grid, log)
    at = make(np.where(found, value, current)[..., None]).broadcast()
    u, r = np.asarray(at.u)[..., 0], np.asarray(at.r)[..., 0]
    sw2, eps = np.asarray(at.sw2)[..., 0], np.asarray(at.eps)[..., 0]
    bb = np.asarray(jax.jit(jax.vmap(gfl_b))(u.ravel(), r.ravel(), sw2.ravel())).reshape(u.shape)
    if exact:
        _, xs = jax.jit(jax.vmap(degeneracy_ratio_exact))(bb.ravel(), eps.ravel(), u.ravel(), sw2.ravel())
        qs, ts_, _ = _q_t_from_x_exact(np.asarray(xs).reshape(u.shape), sw2)
    else:
        _, xs = _m_star(bb, eps, sw2)
        qs, _ = _q_from_x(np.asarray(xs), sw2)
        ts_ = sw2
    nan = lambda x: np.where(found, x, np.nan)  # noqa: E731
    return Transition(value=value, u=nan(u), r=nan(r), b=nan(bb), q_star=nan(np.asarray(qs)), found=found,
                      t_star=nan(np.asarray(ts_) * np.ones(u.shape)))
