r"""The free energy of the finite-d teacher-student theory, the source of truth of its solvers
(THEORY.md §2, written in v = [b, sqrt(6) c]):

    F(v) = v·yhat - |v|^2/2 - r log( z(v) / z(0) ),   yhat = [1, sqrt(6) eps],
    z(v) = \int dq exp(-S(q; v)),

a log-sum-exp of convex quadratics on the quadrature nodes, hence concave; its stationarity
v = (I + (n/s2) Qt)^{-1} yhat is the self-consistency of App. A.3."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grokphase.theory.batching import to_float64
from grokphase.theory.teacher_student.action import _yhat
from grokphase.theory.teacher_student.params import TeacherStudentParams
from grokphase.theory.teacher_student.quadrature import _flat, _grid, _Grid, _static_sizes


def _evaluate(v, params, q, g, logw, logp0, p0=None):
    """F(v), its gradient, its Hessian, Qt and log(z/z0) from one pass over the grid.

    ``g``: the overlaps on the nodes, shape ``(M, 2)``; ``logp0`` the log quadrature probabilities of
    the prior (normalised), so that log(z/z0) = log sum_k p0_k exp(x_k) with x = (u d/2)(v·g)^2 is
    computed relative to the prior: with log1p/expm1 when the interaction is weak (wide networks,
    where r log(z/z0) would otherwise lose all its digits to cancellation) and by log-sum-exp
    otherwise.  ``p0 = exp(logp0)`` may be passed precomputed (the solver does: it is
    loop-invariant).  ``q`` and ``logw`` are not used (kept for the callers' signature)."""
    return _evaluate_split(v, params, g[..., 0], g[..., 1], logp0, p0)


def _moment_basis(g1, g3):
    """The loop-invariant products [1, g1^2, g1 g3, g3^2] on the nodes, shape ``(M, 4)`` (flattened):
    every grid sum of :func:`_evaluate_split` is a weighted sum of these columns."""
    g1, g3 = g1.reshape(-1), g3.reshape(-1)
    return jnp.stack([jnp.ones_like(g1), g1 * g1, g1 * g3, g3 * g3], axis=1)


def _evaluate_split(v, params, g1, g3, logp0, p0=None, basis=None):
    """:func:`_evaluate` with the two overlaps as separate arrays (any equal shapes, flattened here).

    One elementwise pass gives the weights e = exp(x + logp0 - max) (one exponential per node);
    every grid quantity is then one of nine sums of e and e s^2 times [1, g1^2, g1 g3, g3^2]:
    written out elementwise (``basis=None``; the Hessian's moments <g g^T> and <s^2 g g^T> as six
    sums instead of 2 x 2 products of (M, 2) arrays, which measured 2x slower), or as one
    (2, M) x (M, 4) product with ``basis`` = :func:`_moment_basis` (loop-invariant; pass it
    precomputed; the solver does: on a CPU the product launches far fewer kernels, which made the
    exact 64 x 64 diagram ~1.2x faster).  ``p0 = exp(logp0)`` may be
    passed precomputed.  The expm1 sum of the weak branch runs only where the branch is taken
    (``lax.cond``; under ``vmap`` both branches run)."""
    ud = params.u * params.d
    g1, g3, logp0 = g1.reshape(-1), g3.reshape(-1), logp0.reshape(-1)
    s = g1 * v[0] + g3 * v[1]                                    # v·g(q) on the nodes
    ss = s * s
    x = 0.5 * ud * ss                                            # interaction, -S = prior + x
    a = x + logp0
    amax = jnp.max(a)
    e = jnp.exp(a - amax)
    if basis is None:
        e1, e3 = e * g1, e * g3
        m = jnp.stack([jnp.stack([jnp.sum(e), jnp.sum(e1 * g1), jnp.sum(e1 * g3), jnp.sum(e3 * g3)]),
                       jnp.stack([jnp.float64(0.0), jnp.sum(ss * e1 * g1), jnp.sum(ss * e1 * g3),
                                  jnp.sum(ss * e3 * g3)])])
    else:
        m = jnp.stack([e, e * ss]) @ basis                       # [[Z, S11, S13, S33], [., T11, T13, T33]]
    Z = m[0, 0]
    lse = amax + jnp.log(Z)
    weak = jnp.max(x) < 1.0
    p0 = jnp.exp(logp0) if p0 is None else p0.reshape(-1)
    logz = jax.lax.cond(weak, lambda: jnp.log1p(jnp.sum(p0 * jnp.expm1(jnp.where(weak, x, 0.0)))), lambda: lse)
    gg = jnp.stack([m[0, 1:3], m[0, 2:4]]) / Z                   # <g g^T>
    m2 = jnp.stack([m[1, 1:3], m[1, 2:4]]) / Z                   # <s^2 g g^T>
    m1 = gg @ v                                                  # <s g> = <g g^T> v
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
