"""Quadrature of the finite-d teacher-student theory (THEORY.md §3, §3b): the sinh-mapped trapezoid
rule in q, the trapezoid rule in s = log(t/t0) for t = |w_perp|^2 (exact approximation), the grid
sizes they need, and the prior kernel (the u -> 0 limit) computed on them."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase._params import is_traced
from grokphase.errors import ParameterError
from grokphase.theory.batching import flatten, padded, to_float64
from grokphase.theory.teacher_student.action import overlaps
from grokphase.theory.teacher_student.params import (
    DEFAULT_APPROXIMATION,
    PARAM_NAMES,
    TeacherStudentParams,
    check_approximation,
)

#: log-density contrast that defines the support of p(q): the grid reaches where S exceeds this
#: bound for every admissible (b, c); the truncation check requires at least TRUNCATION_CHECK.
SUPPORT_CONTRAST = 60.0
TRUNCATION_CHECK = 36.0


def q_support(params: TeacherStudentParams, contrast: float = SUPPORT_CONTRAST):
    """A q beyond which p(q) < exp(-contrast) p(0) for *every* admissible discrepancy.

    At any maximiser of F (on any truncated grid), |v| <= |yhat| because (I + (n/s2) Qt)^{-1} is a
    contraction; with |g(q)|^2 < 7/(3 pi) this gives S(q) >= d [q^2/(2 sw2) - (u/2)(1+6 eps^2) 7/(3 pi)].
    """
    bound = 0.5 * params.u * (1.0 + 6.0 * params.eps**2) * 7.0 / (3.0 * jnp.pi)
    return jnp.sqrt(2.0 * params.sw2 * (contrast / params.d + bound))


def _grid_scale(sw2):
    # the sinh map is linear for q << ell and logarithmic beyond; ell = sqrt(1 + 2 sw2) is where
    # q^2 ~ D and g(q) saturates, past which S is dominated by the prior's growth.
    return jnp.sqrt(1.0 + 2.0 * sw2)


def point_grid_sizes(params: TeacherStudentParams) -> np.ndarray:
    """Per-point number of nodes (2^m + 1, at least 129) such that the spacing for q <~ ell is 0.4
    prior standard deviations sqrt(sw2/d) over the support bound of :func:`q_support`."""
    p = params.broadcast()
    ell = np.sqrt(1.0 + 2.0 * p.sw2)
    x_max = ell * np.arcsinh(np.asarray(q_support(p)) / ell)
    need = np.maximum(np.asarray(x_max / (0.4 * np.sqrt(p.sw2 / p.d)), dtype=float), 2.0)
    m = np.maximum(7, np.ceil(np.log2(need))).astype(int)
    return 2**m + 1


def default_grid_size(params: TeacherStudentParams) -> int:
    """One grid size for a whole batch: the largest per-point size."""
    sizes = point_grid_sizes(params)
    return int(sizes.max()) if sizes.size else 129


def _quadrature(params: TeacherStudentParams, K: int):
    """Half-line grid q_k = ell sinh(x_k/ell), x uniform on [0, x_max]; log trapezoid weights."""
    ell = _grid_scale(params.sw2)
    x_max = ell * jnp.arcsinh(q_support(params) / ell)
    x = jnp.linspace(0.0, 1.0, K) * x_max
    h = x_max / (K - 1)
    q = ell * jnp.sinh(x / ell)
    jac = jnp.cosh(x / ell)
    ends = jnp.zeros(K).at[0].set(math.log(0.5)).at[-1].set(math.log(0.5))
    logw = jnp.log(h * jac) + ends
    return q, logw


def _prior_logp(params, q, logw):
    prior = -params.d * q * q / (2.0 * params.sw2) + logw
    return prior - logsumexp(prior)


# --- the t-rule (exact approximation) ---------------------------------------------------------
#
# Under the prior t = |w_perp|^2 ~ (sw2/d) chi^2_{d-1}.  In s = log(t/t0), t0 = sw2 (d-1)/d (the
# prior's mode in s) the prior density is exp(((d-1)/2)(s - e^s)) up to a constant: a smooth,
# nearly Gaussian bump of width sqrt(2/(d-1)), whose tilt by the interaction moves droplet neurons
# to t ~ sw2/2 (s ~ -0.7) without making it any sharper.  A trapezoid rule in s is spectrally
# accurate for such integrands (error ~ exp(-2 pi^2 sigma^2/h^2)); the range covers where the
# prior is within exp(-SUPPORT_CONTRAST) of its mode, extended on the low side by the same margin
# below t0/4 (droplet neurons sit at t* ~ sw2/2 or lower, in a bump at least as wide as the prior's),
# and by T_LEVEL_STEP more per refinement level, with the truncation check guarding both ends.

#: t-node spacing in prior standard deviations sqrt(2/(d-1)); halved per refinement level.  At
#: 0.5 the half-grid check (spacing 1 sd) has error ~ exp(-2 pi^2) ~ 3e-9 << RESOLUTION_TOL.
T_SPACING = 0.5
T_FLOOR = math.log(0.25)
T_LEVEL_STEP = 1.0


def _s_roots(a, xp=jnp, iters: int = 60):
    """The two roots s_lo < 0 < s_hi of e^s - 1 - s = a (a > 0), by Newton from outside (monotone
    convergence for this convex function)."""
    def newton(s):
        for _ in range(iters):
            s = s - (xp.exp(s) - 1.0 - s - a) / (xp.exp(s) - 1.0)
        return s
    return newton(-1.0 - a), newton(xp.sqrt(2.0 * a) + a)


def _t_range(d, level: int, xp=jnp):
    a = SUPPORT_CONTRAST / (0.5 * (d - 1.0))
    lo, hi = _s_roots(a, xp)
    return xp.minimum(lo, T_FLOOR + lo) - level * T_LEVEL_STEP, hi


def t_grid_size(params: TeacherStudentParams, level: int = 0) -> np.ndarray:
    """Per-point number of t-nodes J (16 m + 1) for refinement ``level`` (spacing
    T_SPACING sqrt(2/(d-1)) / 2^level over the range of :func:`_t_range`)."""
    d = np.asarray(params.broadcast().d, dtype=np.float64)
    if np.any(d <= 1.0):
        raise ParameterError("the exact approximation needs d > 1 (t = |w_perp|^2 lives in d - 1 dimensions)")
    lo, hi = _t_range(d, level, np)
    h = T_SPACING * np.sqrt(2.0 / (d - 1.0)) / 2.0**level
    n = np.ceil((hi - lo) / h)
    return (16 * np.ceil(n / 16) + 1).astype(int)


def _t_quadrature(params, J: int, level: int):
    """t-nodes, log trapezoid weights in s, and the prior log density in s (unnormalised)."""
    d = params.d
    lo, hi = _t_range(d, level)
    s = lo + (hi - lo) * jnp.linspace(0.0, 1.0, J)
    h = (hi - lo) / (J - 1)
    ends = jnp.zeros(J).at[0].set(math.log(0.5)).at[-1].set(math.log(0.5))
    t = params.sw2 * (d - 1.0) / d * jnp.exp(s)
    return t, jnp.log(h) + ends, 0.5 * (d - 1.0) * (s - jnp.exp(s))


class _Grid(NamedTuple):
    """Quadrature of one parameter point: the q-rule (K nodes, half line) and, in the exact
    approximation, the t-rule (J nodes); node arrays have shape (K, J) (J = 1: concentrated).
    The grid t-rule shares its nodes across q (t, logw_t of shape (J,)); the saddle t-rule has its
    own nodes per q-node (shape (K, J)): use :func:`_per_node` to broadcast either to (K, J)."""

    q: jax.Array        # (K,)
    logw_q: jax.Array   # (K,)
    t: jax.Array        # (J,) or (K, J)
    logw_t: jax.Array   # (J,) or (K, J)
    prior: jax.Array    # (K, J) log prior density per unit q per unit s (unnormalised)
    g: jax.Array        # (K, J, 2)


def _grid(params, K: int, J: int, level: int, exact: bool, center=None) -> _Grid:
    """The quadrature of one point; with ``center`` (v = [b, sqrt(6) c]; exact approximation only)
    the t-rule is the saddle rule centred there (J nodes per q-node), else the grid rule."""
    q, logw_q = _quadrature(params, K)
    prior_q = -params.d * q * q / (2.0 * params.sw2)
    if exact and center is not None:
        return _saddle_grid(params, K, J, center)[0]
    if exact:
        t, logw_t, prior_t = _t_quadrature(params, J, level)
        g = overlaps(q[:, None], params.sw2, t[None, :])
        prior = prior_q[:, None] + prior_t[None, :]
    else:
        t = jnp.reshape(params.sw2, (1,))
        logw_t = jnp.zeros(1)
        g = overlaps(q, params.sw2)[:, None, :]
        prior = prior_q[:, None]
    return _Grid(q, logw_q, t, logw_t, prior, g)


def _per_node(x):
    """A t-rule array as (K, J) or (1, J): per-q nodes (saddle rule) stay, shared nodes get a q axis."""
    return x if x.ndim == 2 else x[None, :]


def _saddle_grid(params, K: int, J: int, center):
    """The q-rule with the saddle t-rule centred at ``center``, and the rule's validity flag."""
    q, logw_q = _quadrature(params, K)
    prior_q = -params.d * q * q / (2.0 * params.sw2)
    t, logw_t, prior_t, ok = _saddle_t_rule(params, q, center, J)
    g = overlaps(q[:, None], params.sw2, t)
    return _Grid(q, logw_q, t, logw_t, prior_q[:, None] + prior_t, g), ok


def _flat(grid: _Grid):
    """Flattened nodes: overlaps (KJ, 2), log weights (KJ,) and normalised prior probabilities."""
    logw = (grid.logw_q[:, None] + _per_node(grid.logw_t)).reshape(-1)
    prior = grid.prior.reshape(-1) + logw
    return grid.g.reshape(-1, 2), logw, prior - logsumexp(prior)


def _static_sizes(params, grid_size, t_size, t_level, approximation):
    exact = check_approximation(approximation) == "exact"
    if exact and t_size is None:
        if any(is_traced(getattr(params, k)) for k in PARAM_NAMES):
            t_size = DEFAULT_T_SIZE
        else:
            t_size = int(t_grid_size(params, t_level).max())
    return exact, int(t_size or 1)


#: t-nodes used by the pure point solvers when the parameters are traced (enough for d <~ 1500 at
#: level 0; the status flags a point that needs more).
DEFAULT_T_SIZE = 129


@jax.jit(static_argnames=("K", "J", "exact"))
def _prior_kernel_batch(params, K: int, J: int, exact: bool):
    def one(p):
        p = to_float64(p)
        g, _, logp0 = _flat(_grid(p, K, J, 0, exact))
        return p.sa2 * jnp.einsum("k,ki,kj->ij", jnp.exp(logp0), g, g)
    return jax.vmap(one)(params)


def prior_kernel(params: TeacherStudentParams, approximation: str = DEFAULT_APPROXIMATION,
                 grid_size: int | None = None, t_size: int | None = None):
    """The reduced kernel Qt = sa2 E_prior[g g^T] at u -> 0 (the theory's GP limit), shape ``(..., 2, 2)``.

    Exact approximation: the prior law of (q, |w_perp|^2), so Qt = [[lambda1, lambda13], [lambda13,
    lambda3]] are the exact NNGP Rayleigh quotients of THEORY.md §3; concentrated: q ~ N(0, sw2/d)
    with |w_perp|^2 = sw2, off by O(1/d)."""
    exact = check_approximation(approximation) == "exact"
    shape, flat = flatten(params)
    padded_flat, M = padded(flat)
    K = grid_size or default_grid_size(flat)
    J = (t_size or int(t_grid_size(flat).max())) if exact else 1
    Q = np.asarray(_prior_kernel_batch(padded_flat, K, J, exact))[:M]
    return Q.reshape(shape + (2, 2))


# --- the saddle t-rule (exact approximation, ``t_rule="saddle"``) -----------------------------
#
# For fixed q and discrepancy v the t-integrand in s = log(t/t0) is exp(phi(s)),
#     phi(s) = ((d-1)/2)(s - e^s) + (u d/2)(v·g(q, t0 e^s))^2,
# one bump of width ~ sqrt(2/(d-1)) around its saddle s*(q).  The saddle rule maps it exactly to a
# Gaussian (the steepest-descent variable w, w^2/2 = phi(s*) - phi(s), on the side sign(s - s*)) and
# integrates in w by Gauss-Hermite:  \int e^phi ds = e^phi(s*) \int e^{-w^2/2} (ds/dw) dw with
# ds/dw = w / (-phi'(s)), smooth and slowly varying (analytic in a strip whose width grows like
# sqrt(d)), so a handful of nodes suffice at d ~ 150 (8 give ~1e-13 relative) and ~64 at d = 3.
# The nodes are placed for one centre v; the solver re-centres them at its solution until v stops
# moving, and checks the rule against the 2J-node rule at the solution (SADDLE_TOL); points that
# fail get twice the nodes (refinement level), and after MAX_SADDLE_LEVEL the grid rule.

T_RULES = ("grid", "saddle")
DEFAULT_T_RULE = "grid"
#: Gauss-Hermite nodes of the saddle rule at refinement level 0 (doubled per level)
SADDLE_T_NODES = 8
MAX_SADDLE_LEVEL = 3
#: required agreement of log z and Qt (relative) between the J- and 2J-node saddle rules
SADDLE_TOL = 1e-12
_SADDLE_SCAN = 33       # coarse scan over the grid rule's s-range for the starting point
_SADDLE_NEWTON = 40     # Newton steps for s*(q) (quadratic convergence; fixed count for vmap)
_NODE_NEWTON = 60       # Newton steps for each node s(w_j)


def check_t_rule(t_rule: str) -> str:
    """Validate the ``t_rule`` option of the exact approximation: "grid" (trapezoid in log t over the
    prior's range, the reference) or "saddle" (Gauss-Hermite in the steepest-descent variable around
    the t-saddle of every q-node)."""
    if t_rule not in T_RULES:
        raise ParameterError(f"t_rule must be one of {T_RULES}, got {t_rule!r}")
    return t_rule


def saddle_t_size(level: int = 0) -> int:
    """Number of t-nodes of the saddle rule at refinement ``level``: SADDLE_T_NODES 2^level."""
    return SADDLE_T_NODES * 2**int(level)


def _saddle_t_rule(params, q, v, J: int):
    """Saddle t-rule for every q-node at centre ``v`` = [b, sqrt(6) c]: nodes t (K, J), log weights
    in s (K, J), the prior log density in s at the nodes (K, J), and a flag that the rule is valid
    (finite, a strict maximum, nodes solved)."""
    d, sw2 = params.d, params.sw2
    A = 0.5 * (d - 1.0)
    t0 = sw2 * (d - 1.0) / d
    ud = params.u * d
    qk = q[:, None]

    c1 = 2.0 * qk / math.sqrt(math.pi)
    c3 = -4.0 * qk**3 / math.sqrt(6.0 * math.pi)
    v1, v3 = v[0], v[1]

    def parts(s):
        """phi, phi' and phi'' in s (analytic: g1 = c1 D^-1/2, g3 = c3 D^-3/2, D = 1 + 2(q^2 + t))."""
        e = jnp.exp(s)
        t = t0 * e
        r = 1.0 / jnp.sqrt(1.0 + 2.0 * (qk * qk + t))
        r2 = r * r
        m = r * (v1 * c1 + v3 * c3 * r2)                          # v·g
        m_t = -r * r2 * (v1 * c1 + 3.0 * v3 * c3 * r2)             # d(v·g)/dt
        m_tt = 3.0 * r * r2 * r2 * (v1 * c1 + 5.0 * v3 * c3 * r2)  # d2(v·g)/dt2
        f = A * (s - e) + 0.5 * ud * m * m
        f1 = A * (1.0 - e) + ud * m * m_t * t
        f2 = -A * e + ud * ((m_t * t) ** 2 + m * (m_tt * t * t + m_t * t))
        return f, f1, f2

    lo, hi = _t_range(d, 0)
    scan = lo + (hi - lo) * jnp.linspace(0.0, 1.0, _SADDLE_SCAN)[None, :]
    s_scan = jnp.broadcast_to(scan, (q.shape[0], _SADDLE_SCAN))
    start = jnp.take_along_axis(s_scan, jnp.argmax(parts(s_scan)[0], axis=1)[:, None], axis=1)   # (K, 1)

    def newton_loop(step, s0, iters):
        def cond(c):
            return (c[1] < iters) & c[2]

        def body(c):
            s_new = step(c[0])
            return s_new, c[1] + 1, jnp.any(jnp.abs(s_new - c[0]) > 1e-14 * (1.0 + jnp.abs(s_new)))
        return jax.lax.while_loop(cond, body, (s0, 0, jnp.bool_(True)))[0]

    def saddle_step(s):
        _, f1, f2 = parts(s)
        return s + jnp.clip(f1 / jnp.maximum(-f2, 1e-300), -1.0, 1.0)

    s_star = newton_loop(saddle_step, start, _SADDLE_NEWTON)
    phi_star, _, f2_star = parts(s_star)
    curv = -f2_star                                              # (K, 1), > 0 at a maximum
    y_np, w_np = np.polynomial.hermite.hermgauss(J)
    y = jnp.asarray(y_np)[None, :]
    side = jnp.sign(y)
    target = phi_star - y * y

    def node_step(s):
        f, f1, _ = parts(s)
        s_new = s - (f - target) / f1
        # stay on the node's side of the saddle (no more than halfway back towards it)
        return jnp.where(side * (s_new - s_star) > 0.5 * side * (s - s_star), s_new, 0.5 * (s + s_star))

    s = newton_loop(node_step, s_star + jnp.sqrt(2.0 / curv) * y, _NODE_NEWTON)
    phi_s, slope, _ = parts(s)
    # weight of node j for \int e^phi ds: sqrt(2) w_j (ds/dw)(w_j) e^{phi* - phi(s_j)}, w_j = sqrt(2) y_j
    logw = (math.log(2.0) + jnp.log(jnp.asarray(w_np))[None, :] + jnp.log(jnp.abs(y) / jnp.abs(slope))
            + (phi_star - phi_s))
    resid = jnp.abs(phi_s - target) / (1.0 + jnp.abs(phi_star))
    ok = (jnp.all(curv > 0.0) & jnp.all(jnp.isfinite(logw)) & jnp.all(side * slope < 0.0)
          & jnp.all(resid < 1e-12))
    return t0 * jnp.exp(s), logw, A * (s - jnp.exp(s)), ok
