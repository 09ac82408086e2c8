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


#: the largest q-grid the finite-d solver refines to (2^16 + 1 nodes)
MAX_GRID_SIZE = 2**16 + 1


def point_grid_sizes(params: TeacherStudentParams) -> np.ndarray:
    """Per-point number of nodes (2^m + 1, at least 129) such that the spacing for q <~ ell is 0.4
    prior standard deviations sqrt(sw2/d) over the support bound of :func:`q_support`.  A point that
    would need more than :data:`MAX_GRID_SIZE` nodes (d beyond ~10^8: the prior is narrower than any
    grid the solver can hold) is a :class:`ParameterError` naming d."""
    p = params.broadcast()
    ell = np.sqrt(1.0 + 2.0 * p.sw2)
    x_max = ell * np.arcsinh(np.asarray(q_support(p)) / ell)
    need = np.maximum(np.asarray(x_max / (0.4 * np.sqrt(p.sw2 / p.d)), dtype=float), 2.0)
    too_fine = ~(need <= MAX_GRID_SIZE - 1)                   # NaN or inf counts as too fine
    if np.any(too_fine):
        i = np.flatnonzero(too_fine.reshape(-1))[0]
        d = float(np.broadcast_to(p.d, need.shape).reshape(-1)[i])
        raise ParameterError(f"d = {d:.6g} is too large for the finite-d solver: its q-grid would need "
                             f"{float(need.reshape(-1)[i]):.3g} nodes, over the maximum {MAX_GRID_SIZE}; "
                             "use the scaling limit (--limit) for such sizes")
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
    The prior is separable: ``prior = prior_q[:, None] + prior_t[None, :]``."""

    q: jax.Array        # (K,)
    logw_q: jax.Array   # (K,)
    t: jax.Array        # (J,)
    logw_t: jax.Array   # (J,)
    prior: jax.Array    # (K, J) log prior density per unit q per unit s (unnormalised)
    g: jax.Array        # (K, J, 2)
    prior_q: jax.Array | None = None    # (K,)
    prior_t: jax.Array | None = None    # (J,)


_G1 = 2.0 / math.sqrt(math.pi)
_G3 = -4.0 / math.sqrt(6.0 * math.pi)


def _overlaps_qt(q, t):
    """:func:`~grokphase.theory.teacher_student.action.overlaps` g(q, t) on the (K, J) product grid of
    ``q[:, None]`` and ``t[None, :]`` with one reciprocal square root per node:
    g1 = (2/sqrt(pi)) q D^-1/2, g3 = -(4/sqrt(6 pi)) q^3 D^-3/2, D = 1 + 2(q^2 + t)."""
    qq = q[:, None]
    rD = jax.lax.rsqrt(1.0 + 2.0 * (qq * qq + t[None, :]))
    g1 = (_G1 * qq) * rD
    return jnp.stack([g1, (_G3 / _G1) * (qq * qq) * g1 * (rD * rD)], axis=-1)


def _grid(params, K: int, J: int, level: int, exact: bool) -> _Grid:
    q, logw_q = _quadrature(params, K)
    prior_q = -params.d * q * q / (2.0 * params.sw2)
    if exact:
        t, logw_t, prior_t = _t_quadrature(params, J, level)
        g = _overlaps_qt(q, t)
    else:
        t = jnp.reshape(params.sw2, (1,))
        logw_t = jnp.zeros(1)
        g = overlaps(q, params.sw2)[:, None, :]
        prior_t = jnp.zeros(1)
    return _Grid(q, logw_q, t, logw_t, prior_q[:, None] + prior_t[None, :], g, prior_q, prior_t)


def _log_p0(grid: _Grid):
    """The normalised log prior quadrature probabilities of the nodes as the two 1-D factors
    ``(lq, lt)``: log p0 = lq[:, None] + lt[None, :] (the prior and the weights are separable)."""
    aq, at = grid.prior_q + grid.logw_q, grid.prior_t + grid.logw_t
    return aq - logsumexp(aq), at - logsumexp(at)


def _subgrid(grid: _Grid, sq: int, st: int = 1) -> _Grid:
    """The nested coarser rule of ``grid``: every ``sq``-th q-node and every ``st``-th t-node (both
    node counts minus one must be multiples of the strides, so that both ends stay nodes).  The
    trapezoid weights scale by the stride (the end nodes keep their half weight), the constant
    log(sq st) cancelling in normalised probabilities; the overlaps are not recomputed."""
    return grid._replace(q=grid.q[::sq], logw_q=grid.logw_q[::sq] + math.log(sq), t=grid.t[::st],
                         logw_t=grid.logw_t[::st] + math.log(st), prior=grid.prior[::sq, ::st],
                         g=grid.g[::sq, ::st], prior_q=grid.prior_q[::sq], prior_t=grid.prior_t[::st])


def _stride(n: int, want: int) -> int:
    """The largest stride <= ``want`` (a power of two) that keeps both ends of an ``n``-node rule and
    leaves at least 17 nodes (1 when none does)."""
    k = want
    while k > 1 and ((n - 1) % k or (n - 1) // k < 16):
        k //= 2
    return k


def _flat(grid: _Grid):
    """Flattened nodes: overlaps (KJ, 2), log weights (KJ,) and normalised prior probabilities."""
    logw = (grid.logw_q[:, None] + grid.logw_t[None, :]).reshape(-1)
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
