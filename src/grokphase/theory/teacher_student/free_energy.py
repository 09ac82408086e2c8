r"""The free energy of the finite-d teacher-student theory, the source of truth of its solvers
(THEORY.md §2, written in v = [b, sqrt(6) c]):

    F(v) = v·yhat - |v|^2/2 - r log( z(v) / z(0) ),   yhat = [1, sqrt(6) eps],
    z(v) = \int dq exp(-S(q; v)),

a log-sum-exp of convex quadratics on the quadrature nodes, hence concave; its stationarity
v = (I + (n/s2) Qt)^{-1} yhat is the self-consistency of App. A.3."""

from __future__ import annotations

import jax.numpy as jnp

from grokphase.theory.batching import to_float64
from grokphase.theory.teacher_student.action import _yhat
from grokphase.theory.teacher_student.params import TeacherStudentParams
from grokphase.theory.teacher_student.quadrature import _flat, _grid, _Grid, _static_sizes


def _evaluate(v, params, q, g, logw, logp0, p0=None):
    """F(v), its gradient, its Hessian, Qt and log(z/z0) from one pass over the grid.

    ``logp0`` are the log quadrature probabilities of the prior (normalised), so that
    log(z/z0) = log sum_k p0_k exp(x_k) with x = (u d/2)(v·g)^2 is computed relative to the prior:
    with log1p/expm1 when the interaction is weak (wide networks, where r log(z/z0) would otherwise
    lose all its digits to cancellation) and by log-sum-exp otherwise.  ``p0 = exp(logp0)`` may be
    passed precomputed (the solver does: it is loop-invariant); two exponentials per node remain."""
    ud = params.u * params.d
    s = g @ v                                                    # (K,)  v·g(q)
    x = 0.5 * ud * s * s                                         # interaction, -S = prior + x
    a = x + logp0
    amax = jnp.max(a)
    e = jnp.exp(a - amax)
    Z = jnp.sum(e)
    lse = amax + jnp.log(Z)
    weak = jnp.max(x) < 1.0
    p0 = jnp.exp(logp0) if p0 is None else p0
    logz = jnp.where(weak, jnp.log1p(jnp.sum(p0 * jnp.expm1(jnp.where(weak, x, 0.0)))), lse)
    p = e / Z                                                    # quadrature probabilities
    gp = g * p[:, None]
    gg = gp.T @ g
    m1 = gg @ v                                                  # <s g> = <g g^T> v
    m2 = (gp * (s * s)[:, None]).T @ g
    yhat = _yhat(params.eps)
    r = params.r
    F = v @ yhat - 0.5 * v @ v - r * logz
    grad = yhat - v - r * ud * m1
    hess = -jnp.eye(2) - r * (ud * gg + ud * ud * (m2 - jnp.outer(m1, m1)))
    Q = params.sa2 * gg
    return F, grad, hess, Q, logz


def _evaluate_grid(v, params, grid: _Grid):
    g, logw, logp0 = _flat(grid)
    return _evaluate(v, params, None, g, logw, logp0)


def free_energy_objective(v, params: TeacherStudentParams, grid_size: int, approximation: str = "exact",
                          t_size: int | None = None, t_level: int = 0):
    """F(v) for scalar parameters (for tests and exploration; differentiable with jax.grad)."""
    exact, J = _static_sizes(params, grid_size, t_size, t_level, approximation)
    params = to_float64(params)
    return _evaluate_grid(v, params, _grid(params, grid_size, J, t_level, exact))[0]
