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
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase._params import (
    broadcast_fields,
    check_finite,
    check_positive,
    is_traced,
    register_params,
)
from grokphase.errors import ParameterError, SolverError
from grokphase.theory.roots import bisect

PARAM_NAMES = ("N", "n", "d", "s2", "sa2", "sw2", "eps")
APPROXIMATIONS = ("exact", "concentrated")
DEFAULT_APPROXIMATION = "exact"
DERIVED_AXES = ("u", "r")
SQRT6 = math.sqrt(6.0)


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


def check_approximation(approximation: str) -> str:
    """Validate the ``approximation`` option: "exact" (t = |w_perp|^2 integrated, THEORY.md §3b) or
    "concentrated" (the paper's Claim II, t = sw2)."""
    if approximation not in APPROXIMATIONS:
        raise ParameterError(f"approximation must be one of {APPROXIMATIONS}, got {approximation!r}")
    return approximation


@register_params
@dataclasses.dataclass(frozen=True)
class TeacherStudentParams:
    """Parameters of the teacher-student model (paper's symbols; defaults: App. C at beta = 1).

    Attributes:
      N: hidden width.
      n: number of training points.
      d: input dimension.
      s2: sigma^2, Langevin temperature = Bayesian observation-noise variance.
      sa2: sigma_a^2; readout prior a_i ~ N(0, sa2/N).  ``None`` means the paper's 8/N.
      sw2: sigma_w^2; input prior w_i ~ N(0, sw2/d I).
      eps: cubic strength of the teacher.

    Every field may be a scalar or an array; arrays broadcast against each other, so one parameter
    object can describe a whole sweep or grid.  The theory treats N, n, d as real numbers (the
    Table-1 scaling produces non-integer sizes such as d = 150 sqrt(beta)).
    """

    N: Any = 700.0
    n: Any = 3000.0
    d: Any = 150.0
    s2: Any = 0.14
    sa2: Any = None
    sw2: Any = 0.5
    eps: Any = -0.3

    def __post_init__(self):
        if self.sa2 is None:
            if is_traced(self.N):
                object.__setattr__(self, "sa2", 8.0 / self.N)
            else:
                check_positive("N", self.N)
                object.__setattr__(self, "sa2", 8.0 / np.asarray(self.N, dtype=np.float64))
        for k in ("N", "n", "d", "s2", "sa2", "sw2"):
            check_positive(k, getattr(self, k))
        check_finite("eps", self.eps)
        if not any(is_traced(getattr(self, k)) for k in PARAM_NAMES):
            broadcast_fields(self, PARAM_NAMES)  # raises a clear error if shapes clash

    # -- derived invariants (Table 1) --
    @property
    def u(self):
        """u = n^2 sa2 / (s2^2 d N), invariant under the scaling of eq. 11."""
        return self.n**2 * self.sa2 / (self.s2**2 * self.d * self.N)

    @property
    def r(self):
        """r = s2 N / n, invariant under the scaling of eq. 11."""
        return self.s2 * self.N / self.n

    @property
    def shape(self) -> tuple[int, ...]:
        return broadcast_fields(self, PARAM_NAMES)[0]

    def replace(self, **changes) -> "TeacherStudentParams":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PARAM_NAMES}

    def broadcast(self) -> "TeacherStudentParams":
        """All fields as float64 NumPy arrays of the common broadcast shape."""
        _, arrays = broadcast_fields(self, PARAM_NAMES)
        return TeacherStudentParams(**{k: np.array(v) for k, v in arrays.items()})

    def scaled(self, alpha=None, beta=1.0) -> "TeacherStudentParams":
        """Table 1 / eq. 11: N -> beta N, d -> sqrt(beta) d, sa2 -> sa2/sqrt(beta),
        s2 -> (alpha/beta) s2, n -> alpha n.  ``alpha`` defaults to ``beta``.  u and r are invariant."""
        alpha = beta if alpha is None else alpha
        check_positive("beta", beta)
        check_positive("alpha", alpha)
        sb = np.sqrt(beta)
        return TeacherStudentParams(
            N=self.N * beta, n=self.n * alpha, d=self.d * sb, s2=self.s2 * alpha / beta,
            sa2=self.sa2 / sb, sw2=self.sw2, eps=self.eps,
        )

    def with_axis(self, name: str, value, *, sa2_times_N: float | None = None) -> "TeacherStudentParams":
        """Set one parameter, or one invariant: ``u`` (through sa2, keeping r) or ``r`` (through N,
        with sa2 rescaled to keep u).  With ``sa2_times_N`` (e.g. 8 for the paper's sa2 = 8/N),
        setting N also sets sa2 = sa2_times_N / N.  Used by sweeps and phase diagrams."""
        if name in PARAM_NAMES:
            changes = {name: value}
            if name == "N" and sa2_times_N is not None:
                changes["sa2"] = sa2_times_N / np.asarray(value, dtype=np.float64)
            return self.replace(**changes)
        check_positive(name, value)
        if name == "u":
            return self.replace(sa2=value * self.s2**2 * self.d * self.N / self.n**2)
        if name == "r":
            N_new = value * self.n / self.s2
            return self.replace(N=N_new, sa2=self.sa2 * N_new / self.N)
        raise ParameterError(f"unknown teacher-student parameter {name!r}; choose from {PARAM_NAMES + DERIVED_AXES}")


# ----------------------------------------------------------------------------------------------
# Status codes and phases
# ----------------------------------------------------------------------------------------------


class Status(enum.IntEnum):
    """Solver outcome, returned as an integer array (never raised inside jit)."""

    CONVERGED = 0
    MAX_ITER = 1        # Newton did not reach the tolerance in maxiter steps
    LINE_SEARCH = 2     # backtracking could not increase F (and the residual is not small)
    UNRESOLVED = 3      # the q-grid does not resolve p(q) (half-grid check failed)
    TRUNCATED = 4       # p(q) has mass beyond the grid's end
    NONFINITE = 5       # a non-finite number appeared
    NO_BRANCH = 6       # scaling limit: no GMFL-I solution (e.g. eps >= 0, not covered)

    @property
    def label(self) -> str:
        return self.name.lower()


class Phase(enum.IntEnum):
    GFL = 0
    GMFL_I = 1
    GMFL_II = 2

    @property
    def label(self) -> str:
        return {0: "GFL", 1: "GMFL-I", 2: "GMFL-II"}[int(self)]


PHASE_LABELS = {int(p): p.label for p in Phase}


# ----------------------------------------------------------------------------------------------
# Action and overlaps
# ----------------------------------------------------------------------------------------------


def overlaps(q, sw2, t=None):
    """Neuron overlaps with the orthonormal basis (App. A.3-A.4):
    g1(q) = <Hhat1, erf(w·x)> = 2q/sqrt(pi D), g3(q) = <Hhat3, erf(w·x)> = -4q^3/(sqrt(6 pi) D^{3/2}),
    D = 1 + 2(t + q^2) with t = |w_perp|^2 (concentrated at sw2 unless ``t`` is given).
    Returns an array of shape ``broadcast(q, t).shape + (2,)``."""
    q = jnp.asarray(q)
    D = 1.0 + 2.0 * ((sw2 if t is None else t) + q * q)
    g1 = 2.0 * q / jnp.sqrt(jnp.pi * D)
    g3 = -4.0 * q**3 / (jnp.sqrt(6.0 * jnp.pi) * D**1.5)
    return jnp.stack([g1, g3], axis=-1)


def reduced_action(q, b, c, u, sw2):
    """Shat(q) = S(q)/d = q^2/(2 sw2) - (2u/pi)(q^2/D)(b - 2c q^2/D)^2 (eq. 13, App. A.2)."""
    q2 = q * q
    D = 1.0 + 2.0 * (sw2 + q2)
    x = q2 / D
    return q2 / (2.0 * sw2) - (2.0 * u / jnp.pi) * x * (b - 2.0 * c * x) ** 2


def reduced_action_qt(q, t, b, c, u, sw2):
    """Two-variable scaling-limit action (THEORY.md §3b):
    Shat(q, t) = (q^2 + t)/(2 sw2) - log(t)/2 - (2u/pi)(q^2/D)(b - 2c q^2/D)^2, D = 1 + 2(q^2 + t).
    At t = sw2 it is :func:`reduced_action` plus the constant (1 - log sw2)/2."""
    q2 = q * q
    D = 1.0 + 2.0 * (t + q2)
    x = q2 / D
    return (q2 + t) / (2.0 * sw2) - 0.5 * jnp.log(t) - (2.0 * u / jnp.pi) * x * (b - 2.0 * c * x) ** 2


def action(q, b, c, params: TeacherStudentParams, t=None):
    """Single-neuron action S(q; b, c) = d * Shat (eq. 13); with ``t`` the finite-d two-variable action
    S(q, t) = d (q^2 + t)/(2 sw2) - ((d-3)/2) log t - d (2u/pi) x (b - 2cx)^2 of THEORY.md §3b, whose
    exp(-S) is the joint density of (q, |w_perp|^2) per unit q per unit t, up to normalisation."""
    if t is None:
        return params.d * reduced_action(q, b, c, params.u, params.sw2)
    d = params.d
    q2 = q * q
    x = q2 / (1.0 + 2.0 * (t + q2))
    return (d * (q2 + t) / (2.0 * params.sw2) - 0.5 * (d - 3.0) * jnp.log(t)
            - d * (2.0 * params.u / jnp.pi) * x * (b - 2.0 * c * x) ** 2)


# ----------------------------------------------------------------------------------------------
# Finite-d solver
# ----------------------------------------------------------------------------------------------

#: log-density contrast that defines the support of p(q): the grid reaches where S exceeds this
#: bound for every admissible (b, c); the truncation check requires at least TRUNCATION_CHECK.
SUPPORT_CONTRAST = 60.0
TRUNCATION_CHECK = 36.0
#: half-grid agreement required of log z and Qt.  The trapezoid rule on this analytic, rapidly
#: decaying integrand converges like exp(-const/h^2): halving h raises the error to the 4th power,
#: so a 1e-5 half-grid difference means a full-grid error far below float64 rounding.
RESOLUTION_TOL = 1e-5
NEWTON_RTOL = 1e-13
#: residual accepted when Newton stalls at the float64 rounding floor (|S| ~ 1e5 at large d
#: limits the residual to ~1e-12 there)
RESIDUAL_ACCEPT = 1e-10


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


def _yhat(eps):
    return jnp.stack([jnp.ones_like(eps), SQRT6 * eps])


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
    approximation, the t-rule (J nodes); node arrays have shape (K, J) (J = 1: concentrated)."""

    q: jax.Array        # (K,)
    logw_q: jax.Array   # (K,)
    t: jax.Array        # (J,)
    logw_t: jax.Array   # (J,)
    prior: jax.Array    # (K, J) log prior density per unit q per unit s (unnormalised)
    g: jax.Array        # (K, J, 2)


def _grid(params, K: int, J: int, level: int, exact: bool) -> _Grid:
    q, logw_q = _quadrature(params, K)
    prior_q = -params.d * q * q / (2.0 * params.sw2)
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


def _flat(grid: _Grid):
    """Flattened nodes: overlaps (KJ, 2), log weights (KJ,) and normalised prior probabilities."""
    logw = (grid.logw_q[:, None] + grid.logw_t[None, :]).reshape(-1)
    prior = grid.prior.reshape(-1) + logw
    return grid.g.reshape(-1, 2), logw, prior - logsumexp(prior)


def _evaluate_grid(v, params, grid: _Grid):
    g, logw, logp0 = _flat(grid)
    return _evaluate(v, params, None, g, logw, logp0)


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


def free_energy_objective(v, params: TeacherStudentParams, grid_size: int, approximation: str = "exact",
                          t_size: int | None = None, t_level: int = 0):
    """F(v) for scalar parameters (for tests and exploration; differentiable with jax.grad)."""
    exact, J = _static_sizes(params, grid_size, t_size, t_level, approximation)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    return _evaluate_grid(v, params, _grid(params, grid_size, J, t_level, exact))[0]


class _NewtonState(NamedTuple):
    v: jax.Array
    F: jax.Array
    grad: jax.Array
    hess: jax.Array
    it: jax.Array
    status: jax.Array
    done: jax.Array


def _solve_point(params: TeacherStudentParams, K: int, maxiter: int, density: bool, exact: bool = False,
                 J: int = 1, level: int = 0) -> FiniteDSolution:
    """Finite-d solution for scalar parameters (jit/vmap-compatible; K, J, level, exact static)."""
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    grid = _grid(params, K, J, level, exact)
    q, logw = grid.q, grid.logw_q
    g_flat, logw_flat, logp0 = _flat(grid)
    p0 = jnp.exp(logp0)
    evaluate = lambda v: _evaluate(v, params, None, g_flat, logw_flat, logp0, p0)  # noqa: E731
    yhat = _yhat(params.eps)

    def tolerance(v):
        return NEWTON_RTOL * (1.0 + jnp.linalg.norm(yhat) + jnp.linalg.norm(v))

    v0 = jnp.zeros(2)
    F0, g0, H0, _, _ = evaluate(v0)
    state = _NewtonState(v0, F0, g0, H0, jnp.int32(0), jnp.int32(Status.MAX_ITER), jnp.bool_(False))

    def cond(st):
        return (~st.done) & (st.it < maxiter)

    def body(st):
        step = -jnp.linalg.solve(st.hess, st.grad)
        res = jnp.linalg.norm(st.grad)
        # converged: at the target tolerance, or at the rounding floor (the Newton step no longer
        # moves v in float64) with a residual small enough to trust (RESIDUAL_ACCEPT)
        stalled = jnp.linalg.norm(step) <= 4e-16 * (1.0 + jnp.linalg.norm(st.v))
        converged = (res <= tolerance(st.v)) | (stalled & (res <= RESIDUAL_ACCEPT))
        slope = st.grad @ step  # > 0 for the ascent direction of a concave F
        # rounding allowance for comparing F values: F's terms are O(|F| + r|log z|)
        slack = 1e-13 * (1.0 + jnp.abs(st.F) + params.r * jnp.abs(st.F - st.v @ yhat + 0.5 * st.v @ st.v))

        def ls_cond(carry):  # backtrack until the Armijo condition holds (at most ~40 halvings)
            t, ok = carry[0], carry[-1]
            return (~ok) & (t > 1e-12)

        def ls_body(carry):
            t = carry[0] * 0.5
            vn = st.v + t * step
            Fn, gn, Hn, _, _ = evaluate(vn)
            ok = jnp.isfinite(Fn) & (Fn >= st.F + 1e-4 * t * slope - slack)
            return (t, Fn, gn, Hn, vn, ok)

        vn = st.v + step
        Fn, gn, Hn, _, _ = evaluate(vn)
        ok = jnp.isfinite(Fn) & (Fn >= st.F + 1e-4 * slope - slack)
        t, Fn, gn, Hn, vn, ok = jax.lax.while_loop(ls_cond, ls_body, (jnp.float64(1.0), Fn, gn, Hn, vn, ok))
        nonfinite = ~(jnp.all(jnp.isfinite(step)) & jnp.isfinite(st.F))
        status = jnp.where(converged, Status.CONVERGED,
                           jnp.where(nonfinite, Status.NONFINITE,
                                     jnp.where(ok, Status.MAX_ITER, Status.LINE_SEARCH)))
        done = converged | nonfinite | ~ok
        accept = ~done
        return _NewtonState(
            v=jnp.where(accept, vn, st.v), F=jnp.where(accept, Fn, st.F),
            grad=jnp.where(accept, gn, st.grad), hess=jnp.where(accept, Hn, st.hess),
            it=st.it + jnp.where(converged, 0, 1), status=status.astype(jnp.int32), done=done,
        )

    st = jax.lax.while_loop(cond, body, state)
    v = st.v
    F, grad, _, Q, logz = evaluate(v)
    residual = jnp.linalg.norm(grad)
    status = st.status
    # a stalled line search at a point that already satisfies the equations is converged:
    status = jnp.where((status == Status.LINE_SEARCH) & (residual <= RESIDUAL_ACCEPT), Status.CONVERGED, status)

    # --- a posteriori quadrature checks ---
    s = grid.g @ v                                               # (K, J)
    S2 = -(grid.prior + 0.5 * params.u * params.d * s * s)       # S(q, s; v) on the grid (per unit q, s)
    # marginal action in q (the t-integral by the t-rule; S2 itself in the concentrated case)
    S = -logsumexp(-S2 + grid.logw_t[None, :], axis=1) if exact else S2[:, 0]
    half_q = grid._replace(q=q[::2], logw_q=logw[::2] + math.log(2.0), prior=grid.prior[::2], g=grid.g[::2])
    _, _, _, Qc, logzc = _evaluate_grid(v, params, half_q)  # spacing 2h; the endpoints keep their half weight
    qnorm = jnp.maximum(jnp.max(jnp.abs(Q)), 1e-300)
    quad_error = jnp.maximum(jnp.abs(logz - logzc), jnp.max(jnp.abs(Q - Qc)) / qnorm)
    truncated = (S[-1] - jnp.min(S)) < TRUNCATION_CHECK
    if exact:
        half_t = grid._replace(t=grid.t[::2], logw_t=grid.logw_t[::2] + math.log(2.0), prior=grid.prior[:, ::2],
                               g=grid.g[:, ::2])
        _, _, _, Qt_, logzt = _evaluate_grid(v, params, half_t)
        quad_error = jnp.maximum(quad_error, jnp.maximum(jnp.abs(logz - logzt), jnp.max(jnp.abs(Q - Qt_)) / qnorm))
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
    lw2 = -S2 + grid.logw_q[:, None] + grid.logw_t[None, :]
    if exact:
        logt = jnp.log(grid.t)[None, :]

        def mean_t(wk):
            wk2 = jnp.broadcast_to(wk[:, None], lw2.shape)
            return jnp.exp(logsumexp(lw2 + logt, b=wk2) - logsumexp(lw2, b=wk2))

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
        q_full = jnp.concatenate([-q[:0:-1], q])
        logp = -jnp.concatenate([S[:0:-1], S]) - log_norm
        if exact:
            t_nodes = grid.t
            logp_qt = -jnp.concatenate([S2[:0:-1], S2]) - jnp.log(grid.t)[None, :] - log_norm
    else:
        q_full = logp = None
    return FiniteDSolution(
        b=b, c=c, linear_learned=1.0 - b, cubic_learned=1.0 - c / params.eps,
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


def default_block() -> int:
    """Points per compiled call of :func:`solve_finite_d` (batches are split and padded to it)."""
    return 64 if jax.default_backend() == "cpu" else 8192


def default_chunk() -> int | None:
    """Points solved in lockstep.  Under vmap every lane runs as many Newton and line-search steps
    as the slowest one; on a CPU, mapping over small chunks is several times faster (measured 6.7x
    on the 64 x 64 diagram), while accelerators want the whole batch in one vmap (None)."""
    return 4 if jax.default_backend() == "cpu" else None


@jax.jit(static_argnames=("grid_size", "maxiter", "density", "chunk", "approximation", "t_size", "t_level"))
def solve_finite_d_batch(params: TeacherStudentParams, grid_size: int, maxiter: int = 100,
                         density: bool = False, chunk: int | None = None,
                         approximation: str = DEFAULT_APPROXIMATION, t_size: int | None = None,
                         t_level: int = 0) -> FiniteDSolution:
    """Finite-d solutions over 1-D parameter arrays (all fields of equal length), jitted.

    ``chunk=None`` vmaps the whole batch; ``chunk=B`` maps sequentially over chunks of B vmapped
    points (``jax.lax.map(..., batch_size=B)``), which avoids lockstep waste on CPUs.  In the exact
    approximation ``t_size`` t-nodes are used (default DEFAULT_T_SIZE; :func:`solve_finite_d`
    chooses it per point with :func:`t_grid_size`)."""
    exact = check_approximation(approximation) == "exact"
    J = int(t_size or DEFAULT_T_SIZE) if exact else 1
    solve_one = lambda p: _solve_point(p, grid_size, maxiter, density, exact, J, t_level)  # noqa: E731
    if chunk is None:
        return jax.vmap(solve_one)(params)
    return jax.lax.map(solve_one, params, batch_size=chunk)


def _flat_params(params: TeacherStudentParams):
    shape, arrays = broadcast_fields(params, PARAM_NAMES)
    flat = TeacherStudentParams(**{k: np.ascontiguousarray(a).reshape(-1) for k, a in arrays.items()})
    return shape, flat


def bucket_size(M: int) -> int:
    """Batch sizes are padded to powers of two (multiples of 1024 beyond) so that sweeps of different
    lengths share one compiled executable."""
    if M <= 1024:
        return max(8, 1 << (max(M, 1) - 1).bit_length())
    return -(-M // 1024) * 1024


def _padded(flat: TeacherStudentParams) -> tuple[TeacherStudentParams, int]:
    M = int(np.asarray(flat.N).size)
    pad = bucket_size(M) - M
    if pad == 0:
        return flat, M
    return jax.tree_util.tree_map(lambda a: np.concatenate([a, np.repeat(a[-1:], pad)]), flat), M


def _take(params: TeacherStudentParams, idx) -> TeacherStudentParams:
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[idx], params)


def _unpad(tree, M: int):
    return type(tree)(*[None if a is None else np.asarray(a)[:M] for a in tree])


MAX_GRID_SIZE = 2**16 + 1


MAX_T_LEVEL = 3


def solve_finite_d(params: TeacherStudentParams, *, approximation: str = DEFAULT_APPROXIMATION,
                   grid_size: int | None = None, t_size: int | None = None, maxiter: int = 100,
                   density: bool = False, refine: bool = True, check: bool = True) -> FiniteDSolution:
    """Solve the finite-d theory (THEORY.md §3; §3b for ``approximation="exact"``, the default) at
    every point of ``params`` (any broadcast shape).

    The whole batch is one compiled ``vmap``; a second call with the same shapes does not recompile.
    With ``refine`` (default) points whose quadrature check fails are re-solved on grids of twice
    the size (q-grid doubled; in the exact approximation also the t-rule refined one level: spacing
    halved, range extended to lower t) until resolved; with ``check`` (default) a point that still
    fails raises :class:`SolverError` naming it.  ``grid_size`` / ``t_size`` fix the q / t node
    counts.  Use :func:`solve_finite_d_batch` directly inside your own jitted code (it returns
    status codes and never raises).
    """
    exact = check_approximation(approximation) == "exact"
    shape, flat = _flat_params(params)
    M = int(np.asarray(flat.N).size)
    chunk = default_chunk()

    block = default_block()

    def run(idx, K, J, level):
        # fixed-size blocks: one compiled executable per grid size, whatever the number of points
        parts = []
        for start in range(0, idx.size, block):
            sub = _take(flat, idx[start:start + block])
            m = int(np.asarray(sub.N).size)
            if m < block:
                sub = jax.tree_util.tree_map(lambda a: np.concatenate([a, np.repeat(a[-1:], block - m)]), sub)
            parts.append(_unpad(FiniteDSolution(*jax.device_get(
                solve_finite_d_batch(sub, K, maxiter, density, chunk, approximation, J, level))), m))
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
                if refine and bad.any() and (grow_q or grow_t):
                    if grow_q:
                        sizes[idx[bad]] = 2 * K - 1
                    if grow_t:
                        levels[idx[bad]] = level + 1
                        Js.setdefault(int(level) + 1, t_sizes(int(level) + 1))
                    next_todo.append(idx[bad])
            todo = np.concatenate(next_todo) if next_todo else np.arange(0)
        sol = FiniteDSolution(**fields)
    if check:
        _raise_on_failure(sol.status, flat, f"finite-d ({approximation})")
    return FiniteDSolution(*[None if a is None else a.reshape(shape + a.shape[1:]) for a in sol])


@jax.jit(static_argnames=("K", "J", "exact"))
def _prior_kernel_batch(params, K: int, J: int, exact: bool):
    def one(p):
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p)
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
    shape, flat = _flat_params(params)
    padded, M = _padded(flat)
    K = grid_size or default_grid_size(flat)
    J = (t_size or int(t_grid_size(flat).max())) if exact else 1
    Q = np.asarray(_prior_kernel_batch(padded, K, J, exact))[:M]
    return Q.reshape(shape + (2, 2))


def _raise_on_failure(status: np.ndarray, flat: TeacherStudentParams, what: str) -> None:
    bad = np.flatnonzero(status != Status.CONVERGED)
    if bad.size == 0:
        return
    i = int(bad[0])
    point = ", ".join(f"{k}={float(np.asarray(getattr(flat, k))[i]):.6g}" for k in PARAM_NAMES)
    reason = Status(int(status[i])).label
    hint = {
        Status.UNRESOLVED: "the q-grid could not resolve p(q); pass a larger grid_size",
        Status.TRUNCATED: "p(q) reaches the end of the q-grid",
        Status.MAX_ITER: "Newton did not converge; raise maxiter",
        Status.LINE_SEARCH: "the line search stalled",
        Status.NONFINITE: "a non-finite number appeared (parameters too extreme for float64?)",
        Status.NO_BRANCH: "no GMFL-I branch: the scaling-limit mixed phase is implemented for eps < 0",
    }[Status(int(status[i]))]
    raise SolverError(f"{what} solver failed at {bad.size} of {status.size} points, first at ({point}): "
                      f"{reason} ({hint})")


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
    pj = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    t, logw_t, prior_t = _t_quadrature(pj, J, level)
    v = jnp.stack([jnp.asarray(solution.b), SQRT6 * jnp.asarray(solution.c)])
    s = overlaps(q[..., None], pj.sw2, t) @ v
    L = -pj.d * q[..., None] ** 2 / (2.0 * pj.sw2) + prior_t + 0.5 * pj.u * pj.d * s * s
    return logsumexp(L + logw_t, axis=-1) - solution.log_norm


def log_density_qt(solution: FiniteDSolution, params: TeacherStudentParams, q, t) -> jax.Array:
    """Joint log p(q, t) per unit q per unit t of a (scalar) exact finite-d solution (THEORY.md §3b)."""
    pj = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    q, t = jnp.asarray(q), jnp.asarray(t)
    d = pj.d
    t0 = pj.sw2 * (d - 1.0) / d
    v = jnp.stack([jnp.asarray(solution.b), SQRT6 * jnp.asarray(solution.c)])
    s = overlaps(q, pj.sw2, t) @ v
    ls = jnp.log(t / t0)
    L = -d * q * q / (2.0 * pj.sw2) + 0.5 * (d - 1.0) * (ls - jnp.exp(ls)) + 0.5 * pj.u * d * s * s
    return L - jnp.log(t) - solution.log_norm


# ----------------------------------------------------------------------------------------------
# Scaling limit (eq. 11, Table 1, App. A.1)
# ----------------------------------------------------------------------------------------------


class LimitSolution(NamedTuple):
    """Scaling-limit (alpha, beta -> infinity at fixed u, r) solution (THEORY.md §3).

    b, c, linear_learned, cubic_learned: as for the finite-d solution.
    pi1: O(1) droplet weight of GMFL-I (fraction p1 = pi1/d of neurons at ±q*; 0 in GFL).
    droplet_fraction: pi1/d with the parameters' d (the leading-order finite-d estimate).
    q_star: location of the droplet minimum of Shat (0 if Shat has none).
    kappa: curvature of Shat at q = 0 (GFL bulk: p(q) ~ exp(-d kappa q^2)).
    degeneracy: Lambda = max_{q>0} (1 - Shat(q)/(q^2 kappa0))... precisely (4 u sw2/pi) max_x m(x)
      evaluated on the GFL branch; the GFL branch is the equilibrium iff Lambda <= 1.
    free_energy: G/N = (b + 6 eps c - (b^2 + 6 c^2)/2)/r + log(2 sw2 kappa)/2.
    t_star: t = |w_perp|^2 at the droplet saddle (q*, t*): sw2 (1 - 2 x*), x* = q*^2/D, in the exact
      approximation; sw2 in the concentrated one (and where there is no droplet minimum).

    In the exact approximation ``degeneracy`` is Lambda = max_x (2u/pi)(b - 2cx)^2 / R(x),
    R(x) = 1/(2 sw2 (1-2x)) - log(1-2x)/(2x): the droplet saddle is below the bulk iff Lambda > 1.
    """

    b: jax.Array
    c: jax.Array
    linear_learned: jax.Array
    cubic_learned: jax.Array
    pi1: jax.Array
    droplet_fraction: jax.Array
    q_star: jax.Array
    kappa: jax.Array
    degeneracy: jax.Array
    free_energy: jax.Array
    u: jax.Array
    r: jax.Array
    status: jax.Array
    phase: jax.Array
    t_star: jax.Array


def _kappa(b, u, sw2):
    return 1.0 / (2.0 * sw2) - (2.0 * u / jnp.pi) * b * b / (1.0 + 2.0 * sw2)


def gfl_b(u, r, sw2):
    """GFL branch: b = 1/(1 + u r 2/(pi (1+2 sw2) kappa(b))), solved as the cubic
    (b - 1) kappa(b) + c0 u r b = 0 on (0, min(1, b_max)) where kappa > 0 (unique root)."""
    k0 = 1.0 / (2.0 * sw2)
    k2 = 2.0 * u / (jnp.pi * (1.0 + 2.0 * sw2))
    c0 = 2.0 / (jnp.pi * (1.0 + 2.0 * sw2))
    hi = jnp.minimum(1.0, jnp.sqrt(k0 / k2))
    f = lambda b: (b - 1.0) * (k0 - k2 * b * b) + c0 * u * r * b  # noqa: E731
    return bisect(f, jnp.zeros_like(hi), hi)


def _m_star(b, c, sw2):
    """max over x = q^2/D in [0, 1/2) of m(x) = (1-2x)(b - 2cx)^2/(1+2 sw2), and its argmax.

    dm/dx vanishes at x* = (b + 2c)/(6c); m(x*) = 4|b - c|^3/(27 |c| (1 + 2 sw2))."""
    safe_c = jnp.where(c == 0.0, 1.0, c)
    xs = (b + 2.0 * c) / (6.0 * safe_c)
    interior = (c != 0.0) & (xs > 0.0) & (xs < 0.5)
    m_int = (1.0 - 2.0 * xs) * (b - 2.0 * c * xs) ** 2 / (1.0 + 2.0 * sw2)
    m0 = b * b / (1.0 + 2.0 * sw2)
    use = interior & (m_int > m0)
    return jnp.where(use, m_int, m0), jnp.where(use, xs, 0.0)


def degeneracy_ratio(b, c, u, sw2):
    """Lambda(b, c) = (4 u sw2/pi) max_x m(x): Shat(q) < 0 for some q > 0 iff Lambda > 1."""
    m, _ = _m_star(b, c, sw2)
    return 4.0 * u * sw2 / jnp.pi * m


def _q_from_x(x, sw2):
    D = (1.0 + 2.0 * sw2) / (1.0 - 2.0 * x)
    return jnp.sqrt(x * D), D


_MIXED_SCAN = 2048
_MIXED_CANDIDATES = 8


def _mixed_branch(u, r, sw2, eps):
    """GMFL-I: unknowns (b, c, pi1, q*) with Shat(q*) = Shat'(q*) = 0 and
    [b, sqrt6 c] = (I + M)^{-1} [1, sqrt6 eps], M = u r [c0/kappa(b) e1 e1^T + pi1 g(q*) g(q*)^T].

    The degeneracy gives b in closed form from c: |b - c|^3/|c| = K_u = 27 pi (1+2sw2)/(16 u sw2),
    and x* = q*^2/D = (b + 2c)/(6c); using g3/g1 = -2x*/sqrt6 the second row reduces to the scalar
    equation R(c) = c - eps - (x*/3)(1 - b(1 + u r c0/kappa(b))) = 0 on c in [eps, -sqrt(K_u/27)),
    where R(eps) < 0 above the transition and R > 0 as x* -> 0.  b may turn slightly negative at
    very large u (the droplets' g1 g3 coupling makes the linear part overshoot).  Implemented for
    eps < 0 (the paper's case); returns ok = False otherwise."""
    c0 = 2.0 / (jnp.pi * (1.0 + 2.0 * sw2))
    Ku = 27.0 * jnp.pi * (1.0 + 2.0 * sw2) / (16.0 * u * sw2)

    def parts(c):
        s = -c
        b = jnp.cbrt(Ku * s) - s
        xs = (b + 2.0 * c) / (6.0 * c)
        kap = _kappa(b, u, sw2)
        return b, xs, kap

    def R_kappa(c):
        # kappa * R: the same roots where kappa != 0, but no poles where kappa(b) crosses zero
        b, xs, kap = parts(c)
        return kap * (c - eps) - xs / 3.0 * (kap - b * (kap + u * r * c0))

    # kappa vanishes quadratically at x* -> 0; stay 1e-5 inside so it is far above rounding.
    c_end = -jnp.sqrt(Ku / 27.0) * (1.0 + 1e-5)
    ok = (eps < 0.0) & (c_end > eps)
    lo = jnp.where(ok, eps, -1.0)
    hi = jnp.where(ok, c_end, -0.5)
    # Only kappa(b) > 0 is physical (then x* is the global maximum of m and the bulk is stable);
    # at large u, R also vanishes where kappa < 0.  Bisect every sign change of kappa*R on a scan,
    # keep the roots with kappa > 0 and pi1 >= 0, and take the one nearest c = eps (continuation
    # from the transition).
    cs = lo + (hi - lo) * jnp.linspace(0.0, 1.0, _MIXED_SCAN)
    Rs = R_kappa(cs)
    change = jnp.signbit(Rs[:-1]) != jnp.signbit(Rs[1:])
    (idx,) = jnp.nonzero(change, size=_MIXED_CANDIDATES, fill_value=0)
    roots = jax.vmap(lambda i: bisect(R_kappa, cs[i], cs[i + 1]))(idx)
    bs, xss, kaps = parts(roots)
    q_s, D_s = _q_from_x(xss, sw2)
    pis = (1.0 - bs * (1.0 + u * r * c0 / kaps)) / (u * r * 4.0 * q_s**2 / (jnp.pi * D_s) * 2.0 / 3.0 * (bs - roots))
    valid = change[idx] & (kaps > 0.0) & (pis >= 0.0) & jnp.isfinite(pis) & (xss > 0.0) & (xss < 0.5)
    ok = ok & jnp.any(valid)
    c = roots[jnp.argmax(valid)]
    b, xs, kap = parts(c)
    q_star, D = _q_from_x(xs, sw2)
    g1sq = 4.0 * q_star**2 / (jnp.pi * D)
    pi1 = (1.0 - b * (1.0 + u * r * c0 / kap)) / (u * r * g1sq * 2.0 / 3.0 * (b - c))
    ok = ok & (pi1 >= 0.0) & (kap > 0.0) & jnp.isfinite(pi1)
    return b, c, pi1, q_star, kap, ok


# --- exact (two-variable) scaling limit, THEORY.md §3b ------------------------------------------
#
# With x = q^2/D, q^2 = x (1 + 2t)/(1 - 2x), and at fixed x the t-minimum of Shat(q, t) is at
# t*(x) = sw2 (1 - 2x) (d/dt: x/((1-2x) sw2) + 1/(2 sw2) - 1/(2t) = 0).  Relative to the bulk
# saddle (0, sw2) the droplet profile is then
#     Delta(x) = P(x) - (2u/pi) x (b - 2cx)^2,   P(x) = x/(2 sw2 (1-2x)) - log(1-2x)/2,
# against x (1 + 2 sw2)/(2 sw2 (1 - 2x)) in the concentrated reduction (larger: droplets cost more).


def _prior_cost_ratio(x, sw2):
    """R(x) = P(x)/x = 1/(2 sw2 (1-2x)) - log(1-2x)/(2x)."""
    return 1.0 / (2.0 * sw2 * (1.0 - 2.0 * x)) - jnp.log1p(-2.0 * x) / (2.0 * x)


def _prior_cost_slope(x, sw2):
    """P'(x) = 1/(2 sw2 (1-2x)^2) + 1/(1-2x)."""
    return 1.0 / (2.0 * sw2 * (1.0 - 2.0 * x) ** 2) + 1.0 / (1.0 - 2.0 * x)


_EXACT_SCAN = 1024
_GOLDEN = 0.5 * (math.sqrt(5.0) - 1.0)


def _exact_ratio(x, b, c, u, sw2):
    return (2.0 * u / jnp.pi) * (b - 2.0 * c * x) ** 2 / _prior_cost_ratio(x, sw2)


def degeneracy_ratio_exact(b, c, u, sw2):
    """Lambda = max_{0<x<1/2} (2u/pi)(b - 2cx)^2 / R(x) and its argmax x* (scan of _EXACT_SCAN points
    and golden-section refinement; x* = 0 when the maximum is the x -> 0 limit)."""
    xs = 0.5 * jnp.arange(1, _EXACT_SCAN + 1) / (_EXACT_SCAN + 1)
    f = _exact_ratio(xs, b, c, u, sw2)
    k = jnp.argmax(f)
    lo = xs[jnp.maximum(k - 1, 0)] * jnp.where(k == 0, 0.0, 1.0) + jnp.where(k == 0, 1e-12, 0.0)
    hi = xs[jnp.minimum(k + 1, _EXACT_SCAN - 1)]

    def body(_, ab):
        a_, b_ = ab
        x1 = b_ - _GOLDEN * (b_ - a_)
        x2 = a_ + _GOLDEN * (b_ - a_)
        left = _exact_ratio(x1, b, c, u, sw2) >= _exact_ratio(x2, b, c, u, sw2)
        return jnp.where(left, a_, x1), jnp.where(left, x2, b_)

    a_, b_ = jax.lax.fori_loop(0, 80, body, (lo, hi))
    x_star = 0.5 * (a_ + b_)
    lam = _exact_ratio(x_star, b, c, u, sw2)
    lam0 = (2.0 * u / jnp.pi) * b * b / (1.0 / (2.0 * sw2) + 1.0)   # the x -> 0 limit (bulk curvature)
    interior = lam > lam0
    return jnp.where(interior, lam, lam0), jnp.where(interior, x_star, 0.0)


def _q_t_from_x_exact(x, sw2):
    """(q*, t*, D*) of the droplet saddle with x = q^2/D: t* = sw2 (1 - 2x), q^2 = x (1 + 2t*)/(1 - 2x)."""
    t = sw2 * (1.0 - 2.0 * x)
    q2 = x * (1.0 + 2.0 * t) / (1.0 - 2.0 * x)
    return jnp.sqrt(q2), t, 1.0 + 2.0 * (q2 + t)


def _mixed_branch_exact(u, r, sw2, eps):
    """GMFL-I of the exact scaling limit: unknowns (b, c, pi1, x*) with Delta(x*) = Delta'(x*) = 0 and
    [b, sqrt6 c] = (I + M)^{-1}[1, sqrt6 eps], M = u r [c0/kappa(b) e1 e1^T + pi1 g g^T], g = g(q*, t*).

    The degeneracy is solved in closed form along x: y = b - 2cx = sqrt(pi R(x)/(2u)) (Delta = 0),
    y - 4cx = pi P'(x)/(2u y) (Delta' = 0).  As in the concentrated branch g3/g1 = -2x/sqrt6 and
    g1^2 = 4x/pi, so the second row is the scalar equation c - eps - (x/3)(1 - b(1 + u r c0/kappa)) = 0,
    solved for x on a scan with bisection; roots must have kappa > 0, pi1 >= 0 and x* a global
    minimum of Delta (Lambda <= 1); the one with c nearest eps (continuation from the transition)
    is taken."""
    c0 = 2.0 / (jnp.pi * (1.0 + 2.0 * sw2))

    def parts(x):
        y = jnp.sqrt(jnp.pi * _prior_cost_ratio(x, sw2) / (2.0 * u))
        c = (y - jnp.pi * _prior_cost_slope(x, sw2) / (2.0 * u * y)) / (4.0 * x)
        b = y + 2.0 * c * x
        return b, c, _kappa(b, u, sw2), y

    def R_kappa(x):
        b, c, kap, _ = parts(x)
        return kap * (c - eps) - x / 3.0 * (kap - b * (kap + u * r * c0))

    xs = 1e-3 + (0.5 - 2e-3) * jnp.linspace(0.0, 1.0, _MIXED_SCAN)
    Rs = R_kappa(xs)
    change = jnp.signbit(Rs[:-1]) != jnp.signbit(Rs[1:])
    (idx,) = jnp.nonzero(change, size=_MIXED_CANDIDATES, fill_value=0)
    roots = jax.vmap(lambda i: bisect(R_kappa, xs[i], xs[i + 1]))(idx)
    bs, cs, kaps, ys = parts(roots)
    pis = (1.0 - bs * (1.0 + u * r * c0 / kaps)) / (u * r * (4.0 * roots / jnp.pi) * ys)
    lam, _ = jax.vmap(lambda b_, c_: degeneracy_ratio_exact(b_, c_, u, sw2))(bs, cs)
    valid = (change[idx] & (kaps > 0.0) & (pis >= 0.0) & jnp.isfinite(pis) & (lam <= 1.0 + 1e-8)
             & (ys > 0.0))
    ok = jnp.any(valid)
    j = jnp.argmin(jnp.where(valid, jnp.abs(cs - eps), jnp.inf))
    x = roots[j]
    q_star, t_star, _ = _q_t_from_x_exact(x, sw2)
    return bs[j], cs[j], pis[j], q_star, t_star, kaps[j], ok


def _limit_point(u, r, sw2, eps, d, exact: bool = False):
    b_g = gfl_b(u, r, sw2)
    if exact:
        lam, x_g = degeneracy_ratio_exact(b_g, eps, u, sw2)
        bm, cm, pi1, qm, tm, kapm, ok = _mixed_branch_exact(u, r, sw2, eps)
        q_g, t_g, _ = _q_t_from_x_exact(x_g, sw2)
    else:
        lam = degeneracy_ratio(b_g, eps, u, sw2)
        bm, cm, pi1, qm, kapm, ok = _mixed_branch(u, r, sw2, eps)
        _, x_g = _m_star(b_g, eps, sw2)
        q_g, _ = _q_from_x(x_g, sw2)
        tm = t_g = sw2
    gfl = lam <= 1.0
    b = jnp.where(gfl, b_g, bm)
    c = jnp.where(gfl, eps, cm)
    kap = jnp.where(gfl, _kappa(b_g, u, sw2), kapm)
    pi1 = jnp.where(gfl, 0.0, pi1)
    q_star = jnp.where(gfl, jnp.where(x_g > 0.0, q_g, 0.0), qm)
    t_star = jnp.where(gfl, jnp.where(x_g > 0.0, t_g, sw2), tm) * jnp.ones_like(u)
    F = (b + 6.0 * eps * c - 0.5 * (b * b + 6.0 * c * c)) / r + 0.5 * jnp.log(2.0 * sw2 * kap)
    status = jnp.where(gfl | ok, Status.CONVERGED, Status.NO_BRANCH).astype(jnp.int32)
    phase = jnp.where(gfl, Phase.GFL, Phase.GMFL_I).astype(jnp.int32)
    return LimitSolution(
        b=b, c=c, linear_learned=1.0 - b, cubic_learned=1.0 - c / eps, pi1=pi1,
        droplet_fraction=pi1 / d, q_star=q_star, kappa=kap, degeneracy=lam, free_energy=F,
        u=u, r=r, status=status, phase=phase, t_star=t_star,
    )


def solve_limit_point(params: TeacherStudentParams, approximation: str = DEFAULT_APPROXIMATION) -> LimitSolution:
    """Scaling-limit solution at one parameter point (pure, jit/vmap-compatible, never raises)."""
    exact = check_approximation(approximation) == "exact"
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    return _limit_point(p.u, p.r, p.sw2, p.eps, p.d, exact)


@jax.jit(static_argnames=("approximation",))
def solve_limit_batch(params: TeacherStudentParams, approximation: str = DEFAULT_APPROXIMATION) -> LimitSolution:
    """jit(vmap) of the scaling-limit solver over 1-D parameter arrays (never raises)."""
    exact = check_approximation(approximation) == "exact"
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    return jax.vmap(lambda *a: _limit_point(*a, exact))(p.u, p.r, p.sw2, p.eps, p.d)


def solve_limit(params: TeacherStudentParams, *, approximation: str = DEFAULT_APPROXIMATION,
                check: bool = True) -> LimitSolution:
    """Scaling-limit solution at every point of ``params`` (any broadcast shape).

    Depends on the parameters only through (u, r, sw2, eps), so it is exactly invariant under the
    Table-1 scaling; ``droplet_fraction = pi1/d`` uses the given d."""
    check_approximation(approximation)
    shape, flat = _flat_params(params)
    padded, M = _padded(flat)
    sol = _unpad(LimitSolution(*jax.device_get(solve_limit_batch(padded, approximation))), M)
    if check:
        _raise_on_failure(sol.status, flat, f"scaling-limit ({approximation})")
    return LimitSolution(*[a.reshape(shape) for a in sol])


# ----------------------------------------------------------------------------------------------
# Transition (Claim IV)
# ----------------------------------------------------------------------------------------------


@jax.jit(static_argnames=("approximation",))
def _degeneracy_excess(params: TeacherStudentParams, approximation: str = DEFAULT_APPROXIMATION):
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)

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
        _, flat = _flat_params(make(values))
        padded, M = _padded(flat)
        return np.asarray(_degeneracy_excess(padded, approximation))[:M].reshape(values.shape)

    e = excess(grid)
    sign_change = np.signbit(e[..., :-1]) != np.signbit(e[..., 1:])
    found = sign_change.any(axis=-1)
    k = np.argmax(sign_change, axis=-1)
    a = np.take_along_axis(grid, k[..., None], -1)[..., 0]
    b = np.take_along_axis(grid, (k + 1)[..., None], -1)[..., 0]
    ea = np.take_along_axis(e, k[..., None], -1)[..., 0]
    for _ in range(64):
        mid = np.sqrt(a * b) if log else 0.5 * (a + b)
        em = excess(mid[..., None])[..., 0]
        same = np.signbit(em) == np.signbit(ea)
        a, ea = np.where(same, mid, a), np.where(same, em, ea)
        b = np.where(same, b, mid)
    value = np.where(found, np.sqrt(a * b) if log else 0.5 * (a + b), np.nan)
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
