"""The finite-d teacher-student solver (THEORY.md §3; §3b for the exact approximation): damped Newton
on the concave free energy with a-posteriori quadrature checks, per point (:func:`solve_finite_d_point`),
jitted over a batch (:func:`solve_finite_d_batch`) and at the Python boundary with adaptive grids and
clear errors (:func:`solve_finite_d`); and the density p(q) of a solution."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase.theory.batching import (
    batch_length,
    default_block,
    default_chunk,
    flatten,
    pad_to,
    take,
    to_float64,
    unpad,
)
from grokphase.theory.status import Phase, Status, raise_on_failure
from grokphase.theory.teacher_student.action import SQRT6, _yhat, action, overlaps
from grokphase.theory.teacher_student.free_energy import _evaluate_split, _moment_basis
from grokphase.theory.teacher_student.params import (
    DEFAULT_APPROXIMATION,
    TeacherStudentParams,
    check_approximation,
)
from grokphase.theory.teacher_student.quadrature import (
    DEFAULT_T_SIZE,
    MAX_GRID_SIZE,
    TRUNCATION_CHECK,
    _grid,
    _log_p0,
    _static_sizes,
    _stride,
    _subgrid,
    _t_quadrature,
    default_grid_size,
    point_grid_sizes,
    t_grid_size,
)

#: half-grid agreement required of log z and Qt.  The trapezoid rule on this analytic, rapidly
#: decaying integrand converges like exp(-const/h^2): halving h raises the error to the 4th power,
#: so a 1e-5 half-grid difference means a full-grid error far below float64 rounding.
RESOLUTION_TOL = 1e-5
NEWTON_RTOL = 1e-13
#: residual accepted when Newton stalls at the float64 rounding floor (|S| ~ 1e5 at large d
#: limits the residual to ~1e-12 there)
RESIDUAL_ACCEPT = 1e-10


#: what to try when a point fails, by status (appended to the SolverError's message)
FAILURE_HINTS = {
    Status.UNRESOLVED: "the q-grid could not resolve p(q); pass a larger grid_size",
    Status.TRUNCATED: "p(q) reaches the end of the q-grid",
    Status.MAX_ITER: "Newton did not converge; raise maxiter",
    Status.LINE_SEARCH: "the line search stalled",
    Status.NONFINITE: "a non-finite number appeared (parameters too extreme for float64?)",
    Status.NO_BRANCH: "no GMFL-I branch: no droplet degeneracy with kappa > 0 and pi1 >= 0 continues the "
                      "GFL branch here",
}


class FiniteDSolution(NamedTuple):
    """Result of :func:`solve_finite_d` (every field has the batch shape of the parameters).

    b, c: discrepancy coefficients (eq. 12); linear_learned = 1 - b, cubic_learned = 1 - c/eps.
    Q: the reduced kernel Qt = sa2 <g g^T> (shape ``(..., 2, 2)``).
    droplet_fraction: mass of |q| beyond the first free-energy barrier of S(q) (0 if S has no
      barrier, 1 if q = 0 is not a local minimum).  q_barrier, q_droplet: barrier position and the
      minimum of S beyond it (both 0 when there is no droplet basin).
    free_energy: max_v F(v)/r = G/N, the free energy per hidden neuron relative to the prior.
    log_norm: log of the normaliser of p(q) on the whole line: log p(q) = -S(q) - log_norm.
    residual: |yhat - (I + (n/s2) Qt) v|, the self-consistency residual (= s2 |grad G|/n).
    quad_error: half-grid difference of log z and Qt (a posteriori quadrature error bound).
    iterations, status (:class:`Status`), phase (:class:`Phase`): phase is GMFL-I when the expected
      number of droplet neurons N * droplet_fraction is at least 1, GMFL-II when fewer than one
      neuron is expected in the q = 0 basin, GFL otherwise (the finite-d crossover; it tends to the
      scaling-limit phase as beta grows).
    t_droplet, t_bulk: mean t = |w_perp|^2 of the droplet neurons (|q| beyond ``q_barrier``) and of the
      bulk (|q| below it); NaN where there is no such neuron (no barrier / no bulk basin).  In the
      concentrated approximation both are sw2 by assumption.
    q, log_p: the (symmetric) quadrature grid and log p(q) on it (the marginal over t in the exact
      approximation), when ``density=True``.
    t, log_p_qt: exact approximation with ``density=True``: the t-nodes and the joint log density
      log p(q, t) per unit q per unit t on the grid ``q x t`` (shape ``(2K-1, J)``); None otherwise.
    """

    b: jax.Array
    c: jax.Array
    linear_learned: jax.Array
    cubic_learned: jax.Array
    droplet_fraction: jax.Array
    q_barrier: jax.Array
    q_droplet: jax.Array
    free_energy: jax.Array
    log_norm: jax.Array
    Q: jax.Array
    residual: jax.Array
    quad_error: jax.Array
    iterations: jax.Array
    status: jax.Array
    phase: jax.Array
    t_droplet: jax.Array
    t_bulk: jax.Array
    q: jax.Array | None = None
    log_p: jax.Array | None = None
    t: jax.Array | None = None
    log_p_qt: jax.Array | None = None


def _cubic_learned(c, eps):
    """1 - c/eps, the learned fraction of the cubic part; NaN for eps = 0 (no cubic part to learn,
    although c, the network's own H3 component, need not vanish)."""
    return jnp.where(eps == 0.0, jnp.nan, 1.0 - c / jnp.where(eps == 0.0, 1.0, eps))


class _NewtonState(NamedTuple):
    v: jax.Array
    F: jax.Array
    grad: jax.Array
    hess: jax.Array
    Q: jax.Array
    logz: jax.Array
    it: jax.Array
    status: jax.Array
    done: jax.Array


#: the Newton solve first runs on the nested rule with every COARSE_STRIDE-th q- and t-node (1/16 of
#: the nodes in the exact approximation), whose solution (quadrature error ~1e-3 at these spacings)
#: starts the damped Newton on the full rule: a handful of full-rule evaluations instead of the
#: 7-18 Newton steps (plus line searches) from v = 0.  The full rule alone decides the answer,
#: its convergence test and its status; the coarse stage only moves the starting point.
COARSE_STRIDE = 4


def _solve2(H, g):
    """H^-1 g for a symmetric 2 x 2 H (Cramer's rule: inside the Newton loop a LAPACK call costs more
    than the 2 x 2 algebra; H is negative definite here, so det > 0)."""
    det = H[0, 0] * H[1, 1] - H[0, 1] * H[1, 0]
    return jnp.stack([H[1, 1] * g[0] - H[0, 1] * g[1], H[0, 0] * g[1] - H[1, 0] * g[0]]) / det


def _newton(evaluate, v0, yhat, r, maxiter: int, min_steps: int = 0) -> _NewtonState:
    """Damped Newton with Armijo backtracking on a concave F from ``v0`` (THEORY.md §2).

    ``evaluate(v) -> (F, grad, hess, Q, logz)``: any quadrature of the free energy (the solver's
    rule, a coarser one, or another model's overlaps and basis size; nothing here is specific to the
    teacher: a v of any length works, 2 x 2 systems by Cramer's rule, larger ones by LU).
    The returned state holds the evaluation at its ``v`` (no re-evaluation needed).  ``min_steps``:
    Newton steps taken before convergence may be declared (a start from another rule that already
    meets the tolerance still gets one step on this rule, whose quadratic convergence then puts the
    residual at the rounding floor, as a solve from far away does)."""
    def tolerance(v):
        return NEWTON_RTOL * (1.0 + jnp.linalg.norm(yhat) + jnp.linalg.norm(v))

    def newton_step(grad, hess):
        return -(_solve2(hess, grad) if grad.shape == (2,) else jnp.linalg.solve(hess, grad))

    def converged(v, grad, hess, it):
        # at the target tolerance, or at the rounding floor (the Newton step no longer moves v in
        # float64) with a residual small enough to trust (RESIDUAL_ACCEPT)
        res = jnp.linalg.norm(grad)
        stalled = jnp.linalg.norm(newton_step(grad, hess)) <= 4e-16 * (1.0 + jnp.linalg.norm(v))
        return ((res <= tolerance(v)) | (stalled & (res <= RESIDUAL_ACCEPT))) & (it >= min_steps)

    F0, g0, H0, Q0, lz0 = evaluate(v0)
    done0 = converged(v0, g0, H0, jnp.int32(0))
    state = _NewtonState(v0, F0, g0, H0, Q0, lz0, jnp.int32(0),
                         jnp.where(done0, Status.CONVERGED, Status.MAX_ITER).astype(jnp.int32), done0)

    def cond(carry):
        st = carry[0]
        return (~st.done) & (st.it < maxiter)

    def body(carry):
        # one evaluation of F per pass: the Newton step's trial point, or (after a failed Armijo
        # test) the next halving of the line search, so that the grid's arrays live in one loop
        # (a nested line-search loop took them in and out on every Newton step); the sequence of
        # trial points and accepted states is that of Newton + backtracking written as two loops.
        # Convergence is tested where a state is made (here for an accepted one, above for the start),
        # so a converged state costs no further evaluation of the free energy
        st, t = carry
        step = newton_step(st.grad, st.hess)
        slope = st.grad @ step  # > 0 for the ascent direction of a concave F
        # rounding allowance for comparing F values: F's terms are O(|F| + r|log z|)
        slack = 1e-13 * (1.0 + jnp.abs(st.F) + r * jnp.abs(st.F - st.v @ yhat + 0.5 * st.v @ st.v))
        vn = st.v + t * step
        Fn, gn, Hn, Qn, lzn = evaluate(vn)
        ok = jnp.isfinite(Fn) & (Fn >= st.F + 1e-4 * t * slope - slack)
        nonfinite = ~(jnp.all(jnp.isfinite(step)) & jnp.isfinite(st.F))
        accept = ok & ~nonfinite
        # the line search ends at an accepted point, at a non-finite start or after ~40 halvings
        finished = accept | nonfinite | (t <= 1e-12)
        it = st.it + jnp.where(accept, 1, 0)
        conv = accept & converged(vn, gn, Hn, it)
        status = jnp.where(conv, Status.CONVERGED,
                           jnp.where(nonfinite, Status.NONFINITE,
                                     jnp.where(ok, Status.MAX_ITER, Status.LINE_SEARCH)))
        pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        new = _NewtonState(
            v=pick(vn, st.v), F=pick(Fn, st.F), grad=pick(gn, st.grad), hess=pick(Hn, st.hess),
            Q=pick(Qn, st.Q), logz=pick(lzn, st.logz), it=it,
            status=jnp.where(finished, status, st.status).astype(jnp.int32), done=finished & (conv | ~accept),
        )
        return new, jnp.where(finished, 1.0, 0.5 * t)

    return jax.lax.while_loop(cond, body, (state, jnp.float64(1.0)))[0]


def _vg(g, v):
    """v·g on the nodes of a (K, J, 2) overlap array."""
    return g[..., 0] * v[0] + g[..., 1] * v[1]


def _grid_nodes(grid, product: bool = True):
    """The loop invariants of an evaluation on ``grid``: overlaps split and flattened, the prior's
    normalised log probabilities and probabilities (from their separable factors) and, with
    ``product``, the moment basis; materialised once (``optimization_barrier``: otherwise XLA fuses
    their producers into every consumer and recomputes the t-nodes' exponentials per node)."""
    lq, lt = _log_p0(grid)
    logp0 = (lq[:, None] + lt[None, :]).reshape(-1)
    p0 = (jnp.exp(lq)[:, None] * jnp.exp(lt)[None, :]).reshape(-1)
    g1, g3 = grid.g[..., 0].reshape(-1), grid.g[..., 1].reshape(-1)
    basis = _moment_basis(g1, g3) if product else None
    return jax.lax.optimization_barrier((g1, g3, logp0, p0, basis))


def _grid_evaluator(params, grid, product: bool = True, nodes=None):
    """``evaluate(v)`` on ``grid`` for :func:`_newton` (on :func:`_grid_nodes`, which may be passed
    precomputed as ``nodes``).  ``product``: the grid sums as one matrix product with the hoisted
    moment basis (see :func:`_evaluate_split`)."""
    g1, g3, logp0, p0, basis = _grid_nodes(grid, product) if nodes is None else nodes
    return lambda v: _evaluate_split(v, params, g1, g3, logp0, p0, basis)


def _solve_point(params: TeacherStudentParams, K: int, maxiter: int, density: bool, exact: bool = False,
                 J: int = 1, level: int = 0) -> FiniteDSolution:
    """Finite-d solution for scalar parameters (jit/vmap-compatible; K, J, level, exact static)."""
    params = to_float64(params)
    grid = _grid(params, K, J, level, exact)
    grid = jax.lax.optimization_barrier(grid)
    q, logw = grid.q, grid.logw_q
    yhat = _yhat(params.eps)

    # coarse stage: the nested rule with 1/COARSE_STRIDE of the nodes along each axis gives the start
    v0 = jnp.zeros(2)
    sq, st_ = _stride(K, COARSE_STRIDE), (_stride(J, COARSE_STRIDE) if exact else 1)
    if sq * st_ > 1:
        coarse = _newton(_grid_evaluator(params, _subgrid(grid, sq, st_)), v0, yhat, params.r, maxiter)
        v0 = jnp.where(jnp.all(jnp.isfinite(coarse.v)), coarse.v, v0)
    nodes = _grid_nodes(grid)
    st = _newton(_grid_evaluator(params, grid, nodes=nodes), v0, yhat, params.r, maxiter,
                 min_steps=int(sq * st_ > 1))
    v, F, grad, Q, logz = st.v, st.F, st.grad, st.Q, st.logz
    residual = jnp.linalg.norm(grad)
    status = st.status
    # a stalled line search at a point that already satisfies the equations is converged:
    status = jnp.where((status == Status.LINE_SEARCH) & (residual <= RESIDUAL_ACCEPT), Status.CONVERGED, status)

    # --- a posteriori quadrature checks: one pass over the grid at the solution ---
    x = 0.5 * params.u * params.d * _vg(grid.g, v) ** 2
    S2 = -(grid.prior + x)                                       # S(q, s; v) on the grid (per unit q, s)
    # the marginal action in q, -log sum_t (the t-rule; S2 itself in the concentrated case, J = 1),
    # as a log-sum-exp per q-node whose exponentials E also give the t-moments and the half rules
    A = -S2 + grid.logw_t[None, :]
    rmax = jnp.max(A, axis=1)
    rmax = jnp.where(jnp.isfinite(rmax), rmax, 0.0)
    E = jnp.exp(A - rmax[:, None])
    S = -(jnp.log(jnp.sum(E, axis=1)) + rmax)
    logT = jnp.log(jnp.sum(E * grid.t[None, :], axis=1)) + rmax if exact else None
    # log z and Qt on the rules of twice the spacing (every other q-node; every other t-node), each
    # relative to its own normalised prior, as _evaluate_grid on those rules computes them
    lq, lt = _log_p0(grid)
    norm = logsumexp(grid.prior_q + logw) + logsumexp(grid.prior_t + grid.logw_t)   # lq + lt + norm = prior + log w
    lr = rmax + logw                                            # row weights: sum_t e^{-S2 + log w} = e^lr R
    even_q = jnp.arange(K) % 2 == 0
    even_t = jnp.arange(J) % 2 == 0
    halves = [(even_q, jnp.ones(J, bool))] + ([(jnp.ones(K, bool), even_t)] if exact else [])
    weak_any = jnp.max(x) < 1.0
    p0 = nodes[3].reshape(K, J)
    qnorm = jnp.maximum(jnp.max(jnp.abs(Q)), 1e-300)
    quad_error = jnp.float64(0.0)
    # the half rules' weights e^{-S2 + log w} (relative to each half's largest row weight), masked:
    # their sums with the moment basis [1, g1^2, g1 g3, g3^2] give Z and Z <g g^T> of both halves in
    # one matrix product (as in the evaluation of F)
    shifts, weights = [], []
    for rows, cols in halves:
        c = jnp.max(jnp.where(rows, lr, -jnp.inf))
        w = jnp.where(rows, jnp.exp(lr - c), 0.0)
        shifts.append(c)
        weights.append(jnp.where(cols[None, :], w[:, None] * E, 0.0).reshape(-1))
    moments = jnp.stack(weights) @ nodes[4]                                     # (halves, 4): Zh, Zh <g g^T>
    for (rows, cols), c, mh in zip(halves, shifts, moments):
        Zh = mh[0]
        gg = jnp.stack([mh[1], mh[2], mh[3]]) / Zh
        Qh = params.sa2 * jnp.stack([jnp.stack([gg[0], gg[1]]), jnp.stack([gg[1], gg[2]])])
        # log of the prior mass of the half rule: normalised (p0) and as summed in Zh (e^{prior + log w})
        lp0 = logsumexp(jnp.where(rows, lq, -jnp.inf)) + logsumexp(jnp.where(cols, lt, -jnp.inf))
        lprior = lp0 + norm
        mask = rows[:, None] & cols[None, :]
        weak = jnp.max(jnp.where(mask, x, -jnp.inf)) < 1.0
        lin = jax.lax.cond(weak | weak_any,
                           lambda: jnp.sum(jnp.where(mask, p0 * jnp.expm1(jnp.where(weak, x, 0.0)), 0.0)),
                           lambda: jnp.float64(0.0))
        logzh = jnp.where(weak, jnp.log1p(lin / jnp.exp(lp0)), c + jnp.log(Zh) - lprior)
        quad_error = jnp.maximum(quad_error, jnp.maximum(jnp.abs(logz - logzh), jnp.max(jnp.abs(Q - Qh)) / qnorm))
    truncated = (S[-1] - jnp.min(S)) < TRUNCATION_CHECK
    if exact:
        L = -S2
        ends_t = jnp.maximum(jnp.max(L[:, 0]), jnp.max(L[:, -1]))
        truncated = truncated | ((jnp.max(L) - ends_t) < TRUNCATION_CHECK)
    status = jnp.where(status == Status.CONVERGED,
                       jnp.where(truncated, Status.TRUNCATED,
                                 jnp.where(quad_error > RESOLUTION_TOL, Status.UNRESOLVED, status)),
                       status)
    finite = jnp.all(jnp.isfinite(v)) & jnp.isfinite(F) & jnp.all(jnp.isfinite(Q))
    status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)

    # --- droplet basin: first local maximum of S(q) on q > 0 ---
    dS = jnp.diff(S)
    is_max = jnp.concatenate([jnp.array([dS[0] <= 0.0]), (dS[:-1] > 0.0) & (dS[1:] <= 0.0), jnp.array([False])])
    has_barrier = jnp.any(is_max)
    k_bar = jnp.argmax(is_max)
    logp_half = -S + logw
    lse_half = logsumexp(logp_half)
    # barrier position refined by the parabola through the three nodes around k_bar (error O(h^3)
    # instead of O(h)); the mass between the refined barrier and node k_bar is added to (or taken
    # from) the trapezoid sum that starts at node k_bar with half weight.
    k0 = jnp.clip(k_bar, 1, K - 2)
    x0, x1, x2 = q[k0 - 1], q[k0], q[k0 + 1]
    y0, y1, y2 = S[k0 - 1], S[k0], S[k0 + 1]
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    vertex = jnp.clip(x1 - 0.5 * num / jnp.where(den == 0.0, 1.0, den), x0, x2)
    q_barrier = jnp.where(has_barrier & (k_bar > 0), jnp.where(den == 0.0, x1, vertex), 0.0)
    idx = jnp.arange(K)
    weight = jnp.where(idx == k_bar, 0.5, 1.0) * jnp.where(idx >= k_bar, 1.0, 0.0)
    p_nodes = jnp.exp(logp_half - lse_half)                     # quadrature probabilities (half line)
    density_k = jnp.exp(-S[k_bar] - lse_half)                   # p(q) at the barrier node (half line)
    beyond = jnp.sum(weight * p_nodes) + (q[k_bar] - q_barrier) * density_k
    # k_bar = 0: q = 0 is not a local minimum of S, every neuron is in a droplet basin
    droplet = jnp.where(has_barrier, jnp.where(k_bar == 0, 1.0, jnp.clip(beyond, 0.0, 1.0)), 0.0)
    k_drop = jnp.argmin(jnp.where(idx >= k_bar, S, jnp.inf))
    q_droplet = jnp.where(has_barrier, q[k_drop], 0.0)

    # --- mean t of droplet and bulk neurons (split at the barrier node, half weight there) ---
    if exact:
        # <t> over the nodes weighted by wk(q): the sums over t per q-node are exp(logT) and exp(-S)
        def mean_t(wk):
            return jnp.exp(logsumexp(logT + logw, b=wk) - logsumexp(-S + logw, b=wk))

        t_drop, t_bulk, t_all = mean_t(weight), mean_t(1.0 - weight), mean_t(jnp.ones(K))
    else:
        t_drop = t_bulk = t_all = params.sw2
    t_drop = jnp.where(has_barrier, t_drop, jnp.nan)
    t_bulk = jnp.where(has_barrier, jnp.where(k_bar == 0, jnp.nan, t_bulk), t_all)

    b, c = v[0], v[1] / SQRT6
    log_norm = lse_half + math.log(2.0)  # normaliser of the symmetric density on the whole line
    N = params.N
    phase = jnp.where(N * (1.0 - droplet) < 1.0, Phase.GMFL_II,
                      jnp.where(N * droplet >= 1.0, Phase.GMFL_I, Phase.GFL)).astype(jnp.int32)
    t_nodes = logp_qt = None
    if density:
        # the half line's log density as one array, mirrored: bitwise symmetric (computed inside
        # each half of the concatenation, XLA may round the two halves differently)
        q_full = jnp.concatenate([-q[:0:-1], q])
        half = jax.lax.optimization_barrier(-S - log_norm)
        logp = jnp.concatenate([half[:0:-1], half])
        if exact:
            t_nodes = grid.t
            half_qt = jax.lax.optimization_barrier(-S2 - jnp.log(grid.t)[None, :] - log_norm)
            logp_qt = jnp.concatenate([half_qt[:0:-1], half_qt])
    else:
        q_full = logp = None
    return FiniteDSolution(
        b=b, c=c, linear_learned=1.0 - b, cubic_learned=_cubic_learned(c, params.eps),
        droplet_fraction=droplet, q_barrier=q_barrier, q_droplet=q_droplet,
        free_energy=F / params.r, log_norm=log_norm, Q=Q, residual=residual, quad_error=quad_error,
        iterations=st.it, status=status, phase=phase, t_droplet=t_drop, t_bulk=t_bulk,
        q=q_full, log_p=logp, t=t_nodes, log_p_qt=logp_qt,
    )


def solve_finite_d_point(params: TeacherStudentParams, grid_size: int, maxiter: int = 100,
                         density: bool = False, approximation: str = DEFAULT_APPROXIMATION,
                         t_size: int | None = None, t_level: int = 0) -> FiniteDSolution:
    """Finite-d solution at one parameter point: pure, jit-compatible and vmappable over any field
    of ``params`` (``grid_size``, ``maxiter``, ``density``, ``approximation``, ``t_size``, ``t_level``
    are static).  ``t_size`` (exact approximation): number of t-nodes, by default
    :func:`t_grid_size` for concrete parameters and DEFAULT_T_SIZE for traced ones.  Never raises:
    check ``status``.  Example:
    ``jax.jit(jax.vmap(lambda e: solve_finite_d_point(p.replace(eps=e), 513)))``."""
    exact, J = _static_sizes(params, grid_size, t_size, t_level, approximation)
    return _solve_point(params, grid_size, maxiter, density, exact, J, t_level)


@jax.jit(static_argnames=("grid_size", "maxiter", "density", "chunk", "approximation", "t_size", "t_level"))
def solve_finite_d_batch(params: TeacherStudentParams, grid_size: int, maxiter: int = 100,
                         density: bool = False, chunk: int | None = None,
                         approximation: str = DEFAULT_APPROXIMATION, t_size: int | None = None,
                         t_level: int = 0, active: jax.Array | None = None) -> FiniteDSolution:
    """Finite-d solutions over 1-D parameter arrays (all fields of equal length), jitted.

    ``chunk=None`` vmaps the whole batch; ``chunk=B`` maps sequentially over chunks of B vmapped
    points (``jax.lax.map(..., batch_size=B)``), which avoids lockstep waste on CPUs.  In the exact
    approximation ``t_size`` t-nodes are used (default DEFAULT_T_SIZE; :func:`solve_finite_d`
    chooses it per point with :func:`t_grid_size`).  ``active``: an optional boolean mask of the
    points to solve; with ``chunk=1`` the others (padding) are skipped and return zeros (with other
    chunkings they are solved all the same)."""
    exact = check_approximation(approximation) == "exact"
    J = int(t_size or DEFAULT_T_SIZE) if exact else 1
    solve_one = lambda p: _solve_point(p, grid_size, maxiter, density, exact, J, t_level)  # noqa: E731
    if chunk is None:
        return jax.vmap(solve_one)(params)
    if chunk == 1:  # one point at a time, unbatched: the weak-interaction branch runs only where taken
        if active is None:
            return jax.lax.map(solve_one, params)

        def skip(p):
            return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(solve_one, p))

        return jax.lax.map(lambda pa: jax.lax.cond(pa[1], solve_one, skip, pa[0]), (params, active))
    return jax.lax.map(solve_one, params, batch_size=chunk)


def _more(progress, n: int) -> None:
    """Tell a progress bar that ``n`` more point solves are coming (refinement)."""
    if progress is not None and getattr(progress, "total", None) is not None:
        progress.total += n
        if hasattr(progress, "refresh"):
            progress.refresh()


MAX_T_LEVEL = 3


def solve_finite_d(params: TeacherStudentParams, *, approximation: str = DEFAULT_APPROXIMATION,
                   grid_size: int | None = None, t_size: int | None = None, maxiter: int = 100,
                   density: bool = False, refine: bool = True, check: bool = True,
                   progress=None) -> FiniteDSolution:
    """Solve the finite-d theory (THEORY.md §3; §3b for ``approximation="exact"``, the default) at
    every point of ``params`` (any broadcast shape).

    The whole batch is one compiled ``vmap``; a second call with the same shapes does not recompile.
    With ``refine`` (default) points whose quadrature check fails are re-solved on grids of twice
    the size (q-grid doubled; in the exact approximation also the t-rule refined one level: spacing
    halved, range extended to lower t) until resolved; with ``check`` (default) a point that still
    fails raises :class:`SolverError` naming it.  ``grid_size`` / ``t_size`` fix the q / t node
    counts.  Use :func:`solve_finite_d_batch` directly inside your own jitted code (it returns
    status codes and never raises).  ``progress``: an object with ``update(n)`` (e.g. a tqdm bar),
    told of every point solved, block by block; a point re-solved on a finer grid counts again and
    raises its ``total`` (when it has one) by one.  It does not change the numbers.
    """
    exact = check_approximation(approximation) == "exact"
    shape, flat = flatten(params)
    M = batch_length(flat)
    # on a CPU, one point at a time: with the Newton start from the coarse rule the lanes of a chunk
    # no longer wait long for each other, and unbatched the weak branch is skipped where not taken
    # (measured 0.73 ms against 1.0 ms per point of the 64 x 64 diagram at K = 129, chunk 4)
    chunk = None if default_chunk() is None else 1

    block = default_block()

    def run(idx, K, J, level):
        # fixed-size blocks: one compiled executable per grid size, whatever the number of points;
        # the last, partial block is padded to a power of two, not to a whole block (under vmap every
        # padded point costs a full solve); one point after another (chunk 1), padded points are
        # skipped (they were 3 % of the 64 x 64 exact diagram)
        parts = []
        for start in range(0, idx.size, block):
            sub = take(flat, idx[start:start + block])
            m = batch_length(sub)
            size = min(block, 1 << (m - 1).bit_length())
            sub = pad_to(sub, size)
            # one point after another (chunk 1), the padding is skipped: no padded point costs a solve
            active = None if chunk != 1 else np.arange(size) < m
            parts.append(unpad(FiniteDSolution(*jax.device_get(
                solve_finite_d_batch(sub, K, maxiter, density, chunk, approximation, J, level, active))), m))
            if progress is not None:
                progress.update(m)
        return FiniteDSolution(*[None if parts[0][i] is None else np.concatenate([pt[i] for pt in parts])
                                 for i in range(len(FiniteDSolution._fields))])

    def t_sizes(level):
        if not exact:
            return np.ones(M, dtype=int)
        if t_size is not None:
            return np.full(M, int(t_size))
        return np.broadcast_to(t_grid_size(flat, level), (M,)).astype(int)

    can_refine_t = exact and t_size is None
    if grid_size is not None or density:
        # one grid for the whole batch (density grids then share one length); refine all together
        K = grid_size or default_grid_size(flat)
        level = 0
        everything = np.arange(M)
        while True:
            sol = run(everything, K, int(t_sizes(level).max()), level)
            unresolved = np.isin(sol.status, [Status.UNRESOLVED, Status.TRUNCATED])
            if not (refine and unresolved.any()):
                break
            grow_q = grid_size is None and K < MAX_GRID_SIZE
            grow_t = can_refine_t and level < MAX_T_LEVEL
            if not (grow_q or grow_t):
                break
            K = 2 * K - 1 if grow_q else K
            level += int(grow_t)
            _more(progress, M)
    else:
        # each point on its own grid size; points are grouped by size, and only the points whose
        # quadrature check fails move on to a doubled grid
        sizes = point_grid_sizes(flat).reshape(-1)
        levels = np.zeros(M, dtype=int)
        Js = {0: t_sizes(0)}
        fields: dict[str, np.ndarray] = {}
        todo = np.arange(M)
        while todo.size:
            next_todo = []
            keys = np.stack([sizes[todo], levels[todo], np.array([Js[lv][i] for lv, i in zip(levels[todo], todo)])],
                            axis=1)
            for K, level, J in np.unique(keys, axis=0):
                sel = np.all(keys == (K, level, J), axis=1)
                idx = todo[sel]
                part = run(idx, int(K), int(J), int(level))
                for name, value in part._asdict().items():
                    if value is None:
                        continue
                    if name not in fields:
                        fields[name] = np.zeros((M,) + value.shape[1:], dtype=value.dtype)
                    fields[name][idx] = value
                bad = np.isin(part.status, [Status.UNRESOLVED, Status.TRUNCATED])
                grow_q = K < MAX_GRID_SIZE
                grow_t = can_refine_t and level < MAX_T_LEVEL
                again = refine and bad.any() and (grow_q or grow_t)
                if again:
                    if grow_q:
                        sizes[idx[bad]] = 2 * K - 1
                    if grow_t:
                        levels[idx[bad]] = level + 1
                        Js.setdefault(int(level) + 1, t_sizes(int(level) + 1))
                    next_todo.append(idx[bad])
                if again:
                    _more(progress, int(bad.sum()))
            todo = np.concatenate(next_todo) if next_todo else np.arange(0)
        sol = FiniteDSolution(**fields)
    if check:
        raise_on_failure(sol.status, flat, f"finite-d ({approximation})", FAILURE_HINTS)
    return unpad(sol, M, shape)


def log_density(solution: FiniteDSolution, params: TeacherStudentParams, q,
                approximation: str = DEFAULT_APPROXIMATION) -> jax.Array:
    """log p(q) of a (scalar) finite-d solution at arbitrary overlaps q (not interpolated).

    ``approximation`` must be the one the solution was computed with; in the exact approximation
    p(q) is the marginal over t, integrated here with the t-rule one refinement level finer than the
    solver's default (the solver's own normaliser ``log_norm`` is used)."""
    q = jnp.asarray(q)
    if check_approximation(approximation) == "concentrated":
        return -action(q, solution.b, solution.c, params) - solution.log_norm
    level = 1
    J = int(t_grid_size(params, level).max())
    pj = to_float64(params)
    t, logw_t, prior_t = _t_quadrature(pj, J, level)
    v = jnp.stack([jnp.asarray(solution.b), SQRT6 * jnp.asarray(solution.c)])
    s = overlaps(q[..., None], pj.sw2, t) @ v
    L = -pj.d * q[..., None] ** 2 / (2.0 * pj.sw2) + prior_t + 0.5 * pj.u * pj.d * s * s
    return logsumexp(L + logw_t, axis=-1) - solution.log_norm


def log_density_qt(solution: FiniteDSolution, params: TeacherStudentParams, q, t) -> jax.Array:
    """Joint log p(q, t) per unit q per unit t of a (scalar) exact finite-d solution (THEORY.md §3b)."""
    pj = to_float64(params)
    q, t = jnp.asarray(q), jnp.asarray(t)
    d = pj.d
    t0 = pj.sw2 * (d - 1.0) / d
    v = jnp.stack([jnp.asarray(solution.b), SQRT6 * jnp.asarray(solution.c)])
    s = overlaps(q, pj.sw2, t) @ v
    ls = jnp.log(t / t0)
    L = -d * q * q / (2.0 * pj.sw2) + 0.5 * (d - 1.0) * (ls - jnp.exp(ls)) + 0.5 * pj.u * d * s * s
    return L - jnp.log(t) - solution.log_norm
