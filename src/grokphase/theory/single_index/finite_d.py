r"""The exact (q, t) finite-d theory of the single-index family (THEORY.md §3b, §6): any activation,
any Hermite target, any discrepancy basis (degree set) K.

The neuron law is p(q, t) ∝ t^{(d-3)/2} exp(-d (q^2 + t)/(2 sw2) + (u d/2)(v·g(q, t))^2) with v = s2 tau
the discrepancy in the orthonormal basis Hhat_k (k in K), g the overlaps of :mod:`.overlaps`; the free
energy (THEORY.md §2, the paper's model's, with a vector over K)

    F(v) = v·yhat - |v|^2/2 - r log( z(v) / z(0) ),   yhat_k = c_k sqrt(k!),

is a log-sum-exp of convex quadratics on the quadrature nodes, hence concave; it is maximised by the
same damped Newton as the paper's model, on the same grids: the sinh-mapped q-rule (the half line when
every degree of K has one parity, so that p(q) is even; the whole line otherwise) and the log-t rule of
:mod:`grokphase.theory.teacher_student.quadrature`.  Learned fraction of degree k: 1 - v_k/yhat_k.
For erf, target He1 + eps He3 and K = {1, 3} this is the paper's model's ``solve_finite_d(...,
approximation="exact")`` (tests/test_single_index.py checks every number)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase.theory.batching import (
    batch_length,
    bucket_size,
    default_block,
    default_chunk,
    flatten,
    pad_to,
    take,
    to_float64,
    unpad,
)
from grokphase.theory.single_index.activations import get_activation
from grokphase.theory.single_index.overlaps import MAX_DEGREE, check_degrees, overlap_bound, overlaps
from grokphase.theory.single_index.params import SingleIndexParams
from grokphase.theory.single_index.target import get_target
from grokphase.theory.status import Phase, Status, raise_on_failure
from grokphase.theory.teacher_student.params import DEFAULT_APPROXIMATION, check_approximation
from grokphase.theory.teacher_student.finite_d import (
    FAILURE_HINTS,
    MAX_GRID_SIZE,
    MAX_T_LEVEL,
    NEWTON_RTOL,
    RESIDUAL_ACCEPT,
    RESOLUTION_TOL,
)
from grokphase.theory.teacher_student.quadrature import (
    SUPPORT_CONTRAST,
    TRUNCATION_CHECK,
    _grid_scale,
    _t_quadrature,
    _t_range,
    t_grid_size,
)


#: most quadrature nodes per point the refinement may grow to (about 2 million nodes: ~0.1 GB per
#: point and basis degree); beyond it a point keeps its UNRESOLVED / TRUNCATED status
MAX_FAMILY_NODES = 2**21


class SingleIndexSolution(NamedTuple):
    """Result of :func:`solve_finite_d` (leading axes: the batch shape; last axis of the vector
    fields: the degrees of the basis, in ``degrees`` order).

    v: discrepancy in the orthonormal basis (the paper's model: [b, sqrt(6) c]).
    coefficients: discrepancy coefficients of He_k, v_k/sqrt(k!) (the paper's model: [b, c]).
    learned: 1 - v_k/yhat_k per degree (NaN where the target has no such degree).
    Q: the reduced kernel sa2 <g g^T>, shape ``(..., |K|, |K|)``.
    free_energy: max F / r, per hidden neuron relative to the prior.  log_norm: log of the normaliser
      of p(q) on the whole line.  residual: |grad F|.  quad_error: half-grid differences (q and t rules).
    droplet_fraction, q_barrier, q_droplet: mass beyond the free-energy barriers of the marginal
      action S(q) around the bulk basin (q = 0 for a symmetric p(q); otherwise the local minimum of
      S nearest q = 0), the (right-hand) barrier and droplet minimum; phase as the paper's model's.
    """

    v: jax.Array
    coefficients: jax.Array
    learned: jax.Array
    free_energy: jax.Array
    log_norm: jax.Array
    Q: jax.Array
    residual: jax.Array
    quad_error: jax.Array
    iterations: jax.Array
    status: jax.Array
    phase: jax.Array
    droplet_fraction: jax.Array
    q_barrier: jax.Array
    q_droplet: jax.Array


def is_symmetric(degrees) -> bool:
    """p(q) is even in q when every degree of K has the same parity ((v·g(-q))^2 = (v·g(q))^2)."""
    return len({k % 2 for k in check_degrees(degrees)}) == 1


# --- the q-rule, generalised -------------------------------------------------------------------

def q_support(params, A, B, yy, contrast: float = SUPPORT_CONTRAST):
    """A q beyond which p(q, t) < exp(-contrast) of its prior mode for every admissible discrepancy.

    At a maximiser |v| <= |yhat| (yy = |yhat|^2), and |g|^2 <= A + B V (:func:`overlap_bound`,
    V = q^2 + t <= q^2 + t_max with t_max the end of the t-rule), so
    S >= d [q^2 (1/(2 sw2) - u yy B/2) - (u yy/2)(A + B t_max)].  With B = 0 this is the paper's
    model's bound (A = 7/(3 pi) for erf on {1, 3}).  When u yy B is not below 1/(2 sw2) the bound
    says nothing; the prior's curvature halved is used and the truncation check guards the end."""
    d, sw2, u = params.d, params.sw2, params.u
    _, hi = _t_range(d, 0)
    t_max = sw2 * (d - 1.0) / d * jnp.exp(hi)
    a = 1.0 / (2.0 * sw2) - 0.5 * u * yy * B
    a = jnp.where(a > 1.0 / (4.0 * sw2), a, 1.0 / (4.0 * sw2))
    return jnp.sqrt((contrast / d + 0.5 * u * yy * (A + B * t_max)) / a)


def q_grid_sizes(params: SingleIndexParams, A, B, yy) -> np.ndarray:
    """Per-point half-line node count 2^m + 1 (at least 129): spacing 0.4 prior standard deviations
    sqrt(sw2/d) for q <~ ell over [0, q_support] (the paper's model's rule)."""
    p = params.broadcast()
    ell = np.sqrt(1.0 + 2.0 * p.sw2)
    x_max = ell * np.arcsinh(np.asarray(q_support(p, A, B, yy)) / ell)
    need = np.maximum(np.asarray(x_max / (0.4 * np.sqrt(p.sw2 / p.d)), dtype=float), 2.0)
    m = np.maximum(7, np.ceil(np.log2(need))).astype(int)
    return 2**m + 1


def _q_rule(params, Kq: int, A, B, yy, symmetric: bool):
    """q-nodes and log trapezoid weights: q = ell sinh(x/ell), x uniform on [0, x_max] (Kq nodes) or
    on [-x_max, x_max] (2 Kq - 1 nodes, the same spacing)."""
    ell = _grid_scale(params.sw2)
    x_max = ell * jnp.arcsinh(q_support(params, A, B, yy) / ell)
    if symmetric:
        x = jnp.linspace(0.0, 1.0, Kq) * x_max
        n = Kq
    else:
        n = 2 * Kq - 1
        x = jnp.linspace(-1.0, 1.0, n) * x_max
    h = x_max / (Kq - 1)
    q = ell * jnp.sinh(x / ell)
    ends = jnp.zeros(n).at[0].set(math.log(0.5)).at[-1].set(math.log(0.5))
    return q, jnp.log(h * jnp.cosh(x / ell)) + ends


class _Grid(NamedTuple):
    q: jax.Array        # (Kq,)
    logw_q: jax.Array   # (Kq,)
    t: jax.Array        # (J,)
    logw_t: jax.Array   # (J,)
    prior: jax.Array    # (Kq, J)
    g: jax.Array        # (Kq, J, |K|)


def _grid(params, activation, degrees, Kq, J, level, A, B, yy, symmetric, exact: bool = True) -> _Grid:
    """The (q, t) rule of one point; ``exact=False``: the paper's concentrated reduction (Claim II),
    one t-node at t = sw2 with unit weight (the paper's model's ``approximation="concentrated"``)."""
    q, logw_q = _q_rule(params, Kq, A, B, yy, symmetric)
    if exact:
        t, logw_t, prior_t = _t_quadrature(params, J, level)
        g = overlaps(activation, degrees, q[:, None], t[None, :])
        prior = (-params.d * q * q / (2.0 * params.sw2))[:, None] + prior_t[None, :]
    else:
        t = jnp.reshape(params.sw2, (1,))
        logw_t = jnp.zeros(1)
        g = overlaps(activation, degrees, q, params.sw2 + 0.0 * q)[:, None, :]
        prior = (-params.d * q * q / (2.0 * params.sw2))[:, None]
    return _Grid(q, logw_q, t, logw_t, prior, g)


def _flat(grid: _Grid):
    logw = (grid.logw_q[:, None] + grid.logw_t[None, :]).reshape(-1)
    prior = grid.prior.reshape(-1) + logw
    return grid.g.reshape(-1, grid.g.shape[-1]), prior - logsumexp(prior)


# --- the free energy ---------------------------------------------------------------------------

def _evaluate(v, yhat, params, g, logp0, p0=None):
    """F(v), its gradient and Hessian, Q and log(z/z0) from one pass over the nodes (the paper's
    model's ``free_energy._evaluate`` with a basis of any size)."""
    ud = params.u * params.d
    s = g @ v
    x = 0.5 * ud * s * s
    a = x + logp0
    amax = jnp.max(a)
    e = jnp.exp(a - amax)
    Z = jnp.sum(e)
    lse = amax + jnp.log(Z)
    weak = jnp.max(x) < 1.0
    p0 = jnp.exp(logp0) if p0 is None else p0
    logz = jnp.where(weak, jnp.log1p(jnp.sum(p0 * jnp.expm1(jnp.where(weak, x, 0.0)))), lse)
    p = e / Z
    gp = g * p[:, None]
    gg = gp.T @ g
    m1 = gg @ v
    m2 = (gp * (s * s)[:, None]).T @ g
    r = params.r
    F = v @ yhat - 0.5 * v @ v - r * logz
    grad = yhat - v - r * ud * m1
    hess = -jnp.eye(v.shape[0]) - r * (ud * gg + ud * ud * (m2 - jnp.outer(m1, m1)))
    return F, grad, hess, params.sa2 * gg, logz


def free_energy(v, params: SingleIndexParams, target, activation="erf", degrees=None, grid_size: int = 257,
                t_size: int | None = None, approximation: str = DEFAULT_APPROXIMATION):
    """F(v) at scalar parameters (tests and exploration; differentiable with jax.grad)."""
    exact = check_approximation(approximation) == "exact"
    target = get_target(target)
    degrees = target.degrees if degrees is None else check_degrees(degrees)
    yhat = jnp.asarray(target.yhat(degrees))
    A, B = overlap_bound(activation, degrees)
    J = int(t_size or int(t_grid_size(params).max())) if exact else 1
    p = to_float64(params)
    grid = _grid(p, get_activation(activation), degrees, grid_size, J, 0, A, B, float(yhat @ yhat),
                 is_symmetric(degrees), exact)
    g, logp0 = _flat(grid)
    return _evaluate(jnp.asarray(v), yhat, p, g, logp0)[0]


class _NewtonState(NamedTuple):
    v: jax.Array
    F: jax.Array
    grad: jax.Array
    hess: jax.Array
    it: jax.Array
    status: jax.Array
    done: jax.Array


def _newton(evaluate, v0, yhat, r, maxiter):
    """Damped Newton with Armijo backtracking on the concave F (the paper's model's solver)."""
    def tolerance(v):
        return NEWTON_RTOL * (1.0 + jnp.linalg.norm(yhat) + jnp.linalg.norm(v))

    F0, g0, H0, _, _ = evaluate(v0)
    state = _NewtonState(v0, F0, g0, H0, jnp.int32(0), jnp.int32(Status.MAX_ITER), jnp.bool_(False))

    def body(st):
        step = -jnp.linalg.solve(st.hess, st.grad)
        res = jnp.linalg.norm(st.grad)
        stalled = jnp.linalg.norm(step) <= 4e-16 * (1.0 + jnp.linalg.norm(st.v))
        converged = (res <= tolerance(st.v)) | (stalled & (res <= RESIDUAL_ACCEPT))
        slope = st.grad @ step
        slack = 1e-13 * (1.0 + jnp.abs(st.F) + r * jnp.abs(st.F - st.v @ yhat + 0.5 * st.v @ st.v))

        def ls_cond(carry):
            return (~carry[-1]) & (carry[0] > 1e-12)

        def ls_body(carry):
            t = carry[0] * 0.5
            vn = st.v + t * step
            Fn, gn, Hn, _, _ = evaluate(vn)
            return (t, Fn, gn, Hn, vn, jnp.isfinite(Fn) & (Fn >= st.F + 1e-4 * t * slope - slack))

        vn = st.v + step
        Fn, gn, Hn, _, _ = evaluate(vn)
        ok = jnp.isfinite(Fn) & (Fn >= st.F + 1e-4 * slope - slack)
        _, Fn, gn, Hn, vn, ok = jax.lax.while_loop(ls_cond, ls_body, (jnp.float64(1.0), Fn, gn, Hn, vn, ok))
        nonfinite = ~(jnp.all(jnp.isfinite(step)) & jnp.isfinite(st.F))
        status = jnp.where(converged, Status.CONVERGED, jnp.where(nonfinite, Status.NONFINITE,
                                                                  jnp.where(ok, Status.MAX_ITER, Status.LINE_SEARCH)))
        done = converged | nonfinite | ~ok
        accept = ~done
        return _NewtonState(v=jnp.where(accept, vn, st.v), F=jnp.where(accept, Fn, st.F),
                            grad=jnp.where(accept, gn, st.grad), hess=jnp.where(accept, Hn, st.hess),
                            it=st.it + jnp.where(converged, 0, 1), status=status.astype(jnp.int32), done=done)

    return jax.lax.while_loop(lambda st: (~st.done) & (st.it < maxiter), body, state)


def _basin_side(S, x, logw, lse, valid, centre_weight):
    """Droplet analysis of one side of the bulk basin (the paper's model's, on the half line): S, x
    (distance from the basin's centre, increasing), logw on nodes starting at the centre; nodes with
    ``~valid`` lie beyond the grid.  ``centre_weight``: the share of the centre node's mass that
    belongs to this side (1 on the symmetric half line, whose rule is the whole density; 1/2 for each
    side of a basin inside the whole line).  Returns (mass beyond the first barrier as a fraction of
    the whole line's, barrier distance, droplet-minimum distance, has_barrier); where the centre is
    not a local minimum (first barrier at the centre) every neuron of this side is a droplet one."""
    K = S.shape[0]
    S = jnp.where(valid, S, jnp.inf)
    dS = jnp.diff(S)
    is_max = jnp.concatenate([jnp.array([dS[0] <= 0.0]), (dS[:-1] > 0.0) & (dS[1:] <= 0.0), jnp.array([False])])
    has_barrier = jnp.any(is_max)
    k_bar = jnp.argmax(is_max)
    k0 = jnp.clip(k_bar, 1, K - 2)
    x0, x1, x2 = x[k0 - 1], x[k0], x[k0 + 1]
    y0, y1, y2 = S[k0 - 1], S[k0], S[k0 + 1]
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    vertex = jnp.clip(x1 - 0.5 * num / jnp.where(den == 0.0, 1.0, den), x0, x2)
    x_barrier = jnp.where(has_barrier & (k_bar > 0), jnp.where(den == 0.0, x1, vertex), 0.0)
    idx = jnp.arange(K)
    weight = jnp.where(idx == k_bar, 0.5, 1.0) * jnp.where(idx >= k_bar, 1.0, 0.0) * valid
    p_nodes = jnp.exp(-S + logw - lse)
    beyond = jnp.sum(weight * p_nodes) + (x[k_bar] - x_barrier) * jnp.exp(-S[k_bar] - lse)
    side_mass = jnp.sum(jnp.where(idx == 0, centre_weight, 1.0) * valid * p_nodes)
    droplet = jnp.where(has_barrier, jnp.where(k_bar == 0, side_mass, jnp.clip(beyond, 0.0, side_mass)), 0.0)
    k_drop = jnp.argmin(jnp.where(idx >= k_bar, S, jnp.inf))
    return droplet, x_barrier, jnp.where(has_barrier, x[k_drop], 0.0), has_barrier


def _solve_point(params, yhat, A, B, activation, degrees, Kq, J, level, maxiter,
                 exact: bool = True) -> SingleIndexSolution:
    params = to_float64(params)
    symmetric = is_symmetric(degrees)
    yy = yhat @ yhat
    grid = _grid(params, activation, degrees, Kq, J, level, A, B, yy, symmetric, exact)
    g_flat, logp0 = _flat(grid)
    p0 = jnp.exp(logp0)
    evaluate = lambda v: _evaluate(v, yhat, params, g_flat, logp0, p0)  # noqa: E731
    st = _newton(evaluate, jnp.zeros(len(degrees)), yhat, params.r, maxiter)
    v = st.v
    F, grad, _, Q, logz = evaluate(v)
    residual = jnp.linalg.norm(grad)
    status = jnp.where((st.status == Status.LINE_SEARCH) & (residual <= RESIDUAL_ACCEPT), Status.CONVERGED, st.status)

    # --- a posteriori quadrature checks (half q-grid, half t-grid, truncation at every end) ---
    def logz_Q(gr):
        g2, lp = _flat(gr)
        out = _evaluate(v, yhat, params, g2, lp)
        return out[4], out[3]

    s = grid.g @ v
    S2 = -(grid.prior + 0.5 * params.u * params.d * s * s)
    S = -logsumexp(-S2 + grid.logw_t[None, :], axis=1)
    qnorm = jnp.maximum(jnp.max(jnp.abs(Q)), 1e-300)
    half_q = grid._replace(q=grid.q[::2], logw_q=grid.logw_q[::2] + math.log(2.0), prior=grid.prior[::2],
                           g=grid.g[::2])
    half_t = grid._replace(t=grid.t[::2], logw_t=grid.logw_t[::2] + math.log(2.0), prior=grid.prior[:, ::2],
                           g=grid.g[:, ::2])
    quad_error = jnp.float64(0.0)
    for half in ((half_q, half_t) if exact else (half_q,)):
        logzc, Qc = logz_Q(half)
        quad_error = jnp.maximum(quad_error, jnp.maximum(jnp.abs(logz - logzc), jnp.max(jnp.abs(Q - Qc)) / qnorm))
    truncated = (S[-1] - jnp.min(S)) < TRUNCATION_CHECK
    if not symmetric:
        truncated = truncated | ((S[0] - jnp.min(S)) < TRUNCATION_CHECK)
    if exact:
        L = -S2
        truncated = truncated | ((jnp.max(L) - jnp.maximum(jnp.max(L[:, 0]), jnp.max(L[:, -1]))) < TRUNCATION_CHECK)
    status = jnp.where(status == Status.CONVERGED,
                       jnp.where(truncated, Status.TRUNCATED,
                                 jnp.where(quad_error > RESOLUTION_TOL, Status.UNRESOLVED, status)), status)
    finite = jnp.all(jnp.isfinite(v)) & jnp.isfinite(F) & jnp.all(jnp.isfinite(Q))
    status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)

    # --- droplet basins ---
    q, logw = grid.q, grid.logw_q
    lse = logsumexp(-S + logw)
    n = q.shape[0]
    if symmetric:
        droplet, q_barrier, q_droplet, _ = _basin_side(S, q, logw, lse, jnp.ones(n, bool), 1.0)
        log_norm = lse + math.log(2.0)
    else:
        idx = jnp.arange(n)
        inner = (idx > 0) & (idx < n - 1)
        is_min = inner & (S <= jnp.roll(S, 1)) & (S <= jnp.roll(S, -1))
        c = jnp.where(jnp.any(is_min), jnp.argmin(jnp.where(is_min, jnp.abs(q), jnp.inf)), jnp.argmin(S))
        x = jnp.abs(q - q[c])
        right = _basin_side(jnp.roll(S, -c), jnp.roll(x, -c), jnp.roll(logw, -c), lse, idx < n - c, 0.5)
        rS, rx, rw = S[::-1], x[::-1], logw[::-1]
        cr = n - 1 - c
        left = _basin_side(jnp.roll(rS, -cr), jnp.roll(rx, -cr), jnp.roll(rw, -cr), lse, idx <= c, 0.5)
        droplet = jnp.clip(right[0] + left[0], 0.0, 1.0)
        q_barrier = q[c] + right[1]
        q_droplet = jnp.where(right[3], q[c] + right[2], 0.0)
        log_norm = lse
    N = params.N
    phase = jnp.where(N * (1.0 - droplet) < 1.0, Phase.GMFL_II,
                      jnp.where(N * droplet >= 1.0, Phase.GMFL_I, Phase.GFL)).astype(jnp.int32)
    fact = jnp.sqrt(jnp.asarray([float(math.factorial(k)) for k in degrees]))
    learned = jnp.where(yhat == 0.0, jnp.nan, 1.0 - v / jnp.where(yhat == 0.0, 1.0, yhat))
    return SingleIndexSolution(v=v, coefficients=v / fact, learned=learned, free_energy=F / params.r,
                               log_norm=log_norm, Q=Q, residual=residual, quad_error=quad_error,
                               iterations=st.it, status=status, phase=phase, droplet_fraction=droplet,
                               q_barrier=q_barrier, q_droplet=q_droplet)


@jax.jit(static_argnames=("activation", "degrees", "grid_size", "t_size", "t_level", "maxiter", "chunk",
                          "approximation"))
def solve_finite_d_batch(params: SingleIndexParams, yhat, A, B, *, activation, degrees, grid_size: int,
                         t_size: int, t_level: int = 0, maxiter: int = 100, chunk: int | None = None,
                         approximation: str = DEFAULT_APPROXIMATION):
    """Finite-d solutions over 1-D parameter arrays, jitted (never raises: check ``status``).
    ``yhat``: the target over ``degrees`` (:meth:`HermiteTarget.yhat`); (A, B): :func:`overlap_bound`;
    ``approximation="concentrated"``: t = sw2 (``t_size``, ``t_level`` are then ignored)."""
    exact = check_approximation(approximation) == "exact"

    def one(p):
        return _solve_point(p, yhat, A, B, activation, degrees, grid_size, t_size if exact else 1,
                            t_level if exact else 0, maxiter, exact)
    if chunk is None:
        return jax.vmap(one)(params)
    return jax.lax.map(one, params, batch_size=chunk)


def solve_finite_d(params: SingleIndexParams, target="1:1,3:-0.3", activation="erf", degrees=None, *,
                   maxiter: int = 100, refine: bool = True, check: bool = True,
                   approximation: str = DEFAULT_APPROXIMATION) -> SingleIndexSolution:
    """Solve the finite-d theory at every point of ``params`` (any broadcast shape) for
    ``activation`` (name, :class:`Activation` or callable), ``target`` (:class:`HermiteTarget` or a
    spec such as ``"1:1,3:-0.3"``) and the discrepancy basis ``degrees`` (default: the target's).

    ``approximation``: "exact" (default; t = |w_perp|^2 integrated, THEORY.md §3b) or "concentrated"
    (the paper's Claim II, t fixed at sw2; for erf on He1 + eps He3 this is the paper's model's
    ``approximation="concentrated"``).  Grids follow the paper's model's rules per point; points whose
    quadrature check fails are re-solved with the q-grid doubled (and, exact, the t-rule one level
    finer); with ``check`` a point that still fails raises SolverError naming it."""
    exact = check_approximation(approximation) == "exact"
    target = get_target(target)
    activation = get_activation(activation)
    degrees = target.degrees if degrees is None else check_degrees(degrees)
    yhat_np = target.yhat(degrees)
    yhat = jnp.asarray(yhat_np)
    A, B = overlap_bound(activation, degrees)
    yy = float(yhat_np @ yhat_np)
    shape, flat = flatten(params)
    M = batch_length(flat)
    block, chunk = default_block(), default_chunk()
    sizes = np.broadcast_to(q_grid_sizes(flat, A, B, yy), (M,)).copy()
    levels = np.zeros(M, dtype=int)
    fields: dict[str, np.ndarray] = {}
    todo = np.arange(M)
    while todo.size:
        Js = (np.array([int(np.broadcast_to(t_grid_size(take(flat, [i]), int(levels[i])), (1,))[0]) for i in todo])
              if exact else np.ones(todo.size, dtype=int))
        keys = np.stack([sizes[todo], levels[todo], Js], axis=1)
        next_todo = []
        for Kq, level, J in np.unique(keys, axis=0):
            idx = todo[np.all(keys == (Kq, level, J), axis=1)]
            parts = []
            size = min(block, bucket_size(idx.size))     # small groups are not padded to a whole block
            for start in range(0, idx.size, size):
                sub = take(flat, idx[start:start + size])
                m = batch_length(sub)
                out = solve_finite_d_batch(pad_to(sub, size), yhat, A, B, activation=activation, degrees=degrees,
                                           grid_size=int(Kq), t_size=int(J), t_level=int(level), maxiter=maxiter,
                                           chunk=chunk, approximation=approximation)
                parts.append(unpad(SingleIndexSolution(*jax.device_get(out)), m))
            part = SingleIndexSolution(*[np.concatenate([pt[i] for pt in parts]) for i in range(len(parts[0]))])
            for name, value in part._asdict().items():
                fields.setdefault(name, np.zeros((M,) + value.shape[1:], dtype=value.dtype))[idx] = value
            bad = np.isin(part.status, [Status.UNRESOLVED, Status.TRUNCATED])
            # the family's refinement stops at MAX_FAMILY_NODES nodes per point: an unbounded activation
            # (relu, gelu, silu) whose neuron law is (nearly) not normalisable keeps failing the truncation
            # check however far the grid grows, and would otherwise end in an allocation of tens of GB
            next_nodes = (2 * int(Kq) - 1) * int(J) * (2 if exact and level < MAX_T_LEVEL else 1)
            grow_q = Kq < MAX_GRID_SIZE and next_nodes <= MAX_FAMILY_NODES
            grow_t = exact and level < MAX_T_LEVEL and next_nodes <= MAX_FAMILY_NODES
            if refine and bad.any() and (grow_q or grow_t):
                if grow_q:
                    sizes[idx[bad]] = 2 * Kq - 1
                if grow_t:
                    levels[idx[bad]] = level + 1
                next_todo.append(idx[bad])
        todo = np.concatenate(next_todo) if next_todo else np.arange(0)
    sol = SingleIndexSolution(**fields)
    if check:
        raise_on_failure(sol.status, flat, f"single-index finite-d ({approximation}; {activation.name}, target {target.spec}, "
                         f"degrees {','.join(map(str, degrees))})", FAILURE_HINTS)
    return unpad(sol, M, shape)


def coupled_degrees(activation, k_max: int = MAX_DEGREE, tol: float = 1e-12) -> tuple[int, ...]:
    """Degrees k <= k_max whose overlap g_k the activation does not make identically zero (the
    largest |m_k(V)| over V in [1e-2, 1e2] above ``tol``)."""
    V = np.logspace(-2.0, 2.0, 41)
    q = np.sqrt(V)                       # t = 0: rho = 1, g_k = m_k(V)
    g = np.asarray(overlaps(activation, tuple(range(k_max + 1)), q, 0.0 * q))
    return tuple(int(k) for k in range(k_max + 1) if np.max(np.abs(g[:, k])) > tol)


class BasisConvergence(NamedTuple):
    """The learned fractions with the target's degrees as basis and with every coupled degree <= k_max.

    degrees_target, degrees_enlarged: the two bases.  learned_target, learned_enlarged: dicts degree
    -> learned fraction (arrays of the batch shape) over the target's degrees.  shift: enlarged minus
    target-basis learned fraction per target degree.  free_energy_target, free_energy_enlarged."""

    degrees_target: tuple[int, ...]
    degrees_enlarged: tuple[int, ...]
    learned_target: dict
    learned_enlarged: dict
    shift: dict
    free_energy_target: np.ndarray
    free_energy_enlarged: np.ndarray


def basis_convergence(params: SingleIndexParams, target, activation="erf", k_max: int = MAX_DEGREE,
                      **kwargs) -> BasisConvergence:
    """Solve with K = the target's degrees (the paper's choice) and with K = the target's degrees plus
    every degree <= k_max the activation couples (THEORY.md §6), and report how the learned fractions
    of the target's degrees move."""
    target = get_target(target)
    activation = get_activation(activation)
    small = target.degrees
    big = tuple(sorted(set(small) | set(coupled_degrees(activation, k_max))))
    a = solve_finite_d(params, target, activation, small, **kwargs)
    b = solve_finite_d(params, target, activation, big, **kwargs)
    la = {k: a.learned[..., small.index(k)] for k in small}
    lb = {k: b.learned[..., big.index(k)] for k in small}
    return BasisConvergence(small, big, la, lb, {k: lb[k] - la[k] for k in small}, a.free_energy, b.free_energy)
