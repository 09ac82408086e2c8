r"""The teacher-student model's mean-field free energy along a learned fraction m (THEORY.md §2, §3,
§3b, §7): F(m) = -log p(m) of the whole network, the Legendre-constrained saddle of the free energy
that :func:`~grokphase.theory.teacher_student.solve_finite_d` maximises.

**The order parameter.**  m = <f, Hhat_k>/yhat_k, the learned fraction of the target degree k (1 or
3) of the network output (its population projection, exact from the weights: THEORY.md §3), with
yhat = [1, sqrt(6) eps] the target in the orthonormal basis Hhat1 = H1, Hhat3 = H3/sqrt(6).  At the
unconstrained solution m = 1 - v_k/yhat_k (``linear_learned`` = 1 - b, ``cubic_learned`` = 1 - c/eps).

**Derivation** (EK limit, as the theory).  With v = s2 tau = [b, sqrt(6) c] the discrepancy, the
network's free energy is G = (n/s2) F(v), F(v) = v·yhat - |v|^2/2 - r log(z(v)/z(0))
(:mod:`~grokphase.theory.teacher_student.free_energy`), and -log p(data) = max_v G + const.  Tilting the
posterior by exp(-h m(theta)) adds -h <f, Hhat_k>/yhat_k to the log posterior; as m is linear in the
readout this only moves the target component yhat_k -> yhat_k' = yhat_k - h s2/(n yhat_k) in the cross
term, plus the constant (n/(2 s2))(yhat_k'^2 - yhat_k^2).  The mean output is f = yhat' - v, so m fixes
yhat_k' = m yhat_k + v_k; eliminating h (= -dF/dm) gives

    F(m) = (n/s2) max_v Phi_m(v),   Phi_m(v) = F(v) + (1/2)(v_k - (1 - m) yhat_k)^2,

stationary where yhat_j - v_j = (n/s2)(Qt v)_j for j != k (the unconstrained degrees keep their
self-consistency) and m yhat_k = (n/s2)(Qt v)_k (the kernel's response to the discrepancy is the
constrained output); the multiplier is dF/dm = (n/s2) yhat_k (v_k - (1 - m) yhat_k) = -h.  At
m = 1 - v*_k/yhat_k the added square vanishes, v = v* and F = (n/s2) F(v*) = N ``free_energy``.

**Fixed m, not fixed multiplier.**  The added square cancels the -v_k^2/2 of F, leaving
Phi_m = [sum_{j != k} (yhat_j v_j - v_j^2/2)] + m yhat_k v_k + (1/2) yhat_k^2 (1 - m)^2 - r log z(v):
strictly concave in v (r log z is convex, strictly along any direction in which the neurons' overlaps
vary).  So at fixed m the constrained saddle is a maximum of a concave function, found by the package's
own damped Newton (:func:`~grokphase.theory.teacher_student.finite_d._newton`, exact Hessian) from
any start, and unique.  The same form proves that **F(m) is strictly convex**: (1/2) yhat_k^2 (1 - m)^2
plus a maximum of functions affine in m.  The mean-field F(m) has one well; no S-shaped branch exists
to follow.  A first-order GFL -> GMFL-I transition of this theory is a coexistence of single neurons at
q = 0 and at the droplet q* (THEORY.md §3), not two wells in m; where droplets form or melt easily
the well is wide (its curvature falls towards the readout's (n/s2) yhat_k^2).

**Closed form (GP).**  At u -> 0, r log z -> (n/(2 s2)) v^T Qt v with Qt the prior kernel (the NNGP
Rayleigh quotients), Phi_m is quadratic and F(m) is the parabola of EK Bayesian linear regression on
the two basis functions: m is Gaussian with the posterior mean and variance of <f, Hhat_k>/yhat_k,
Sigma = Qt - Qt (Qt + (s2/n) I)^{-1} Qt, variance Sigma_kk/yhat_k^2.

**Units.**  F is -log p(m) of the N-neuron network in units of its log posterior, up to an
m-independent constant (-log p(data) at z(0) and the Gaussian fluctuation determinants of the saddle,
O(log) in the sizes, are dropped).  It is the EK theory: the simulation's potential L/s2 sums over n
training points, the theory's data term is n times the population average (THEORY.md §3 on finite-n
errors).  F = (n/s2) Phi_m = (N/r) Phi_m: at fixed invariants u, r (the scaling of eq. 11) Phi_m is
fixed, so F - F(m*) at fixed m is extensive in N (linear in beta) and the well's width shrinks like
beta^{-1/2}.  ``approximation`` is the solver's: "exact" (t = |w_perp|^2 integrated, §3b) or
"concentrated".
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase.errors import ParameterError
from grokphase.theory.batching import bucket_size, to_float64
from grokphase.theory.status import Status
from grokphase.theory.teacher_student.action import SQRT6, _yhat
from grokphase.theory.teacher_student.finite_d import (
    MAX_GRID_SIZE,
    MAX_T_LEVEL,
    RESIDUAL_ACCEPT,
    RESOLUTION_TOL,
    _grid_evaluator,
    _newton,
    solve_finite_d,
)
from grokphase.theory.teacher_student.params import (
    DEFAULT_APPROXIMATION,
    TeacherStudentParams,
    check_approximation,
)
from grokphase.theory.teacher_student.quadrature import (
    TRUNCATION_CHECK,
    _grid,
    _subgrid,
    point_grid_sizes,
    t_grid_size,
)

DEGREES = (1, 3)
#: smallest padded grid length (one executable for every grid up to this many points)
MIN_BUCKET = 32
#: enlargements of the q-support when the constrained discrepancy pushes p(q) to the grid's end
MAX_SUPPORT_STEPS = 4


class TeacherStudentProfile(NamedTuple):
    """F(m) of :func:`free_energy_profile` on the grid ``m`` (fields have the shape of ``m`` unless said).

    m: learned fraction of degree ``degree``; F: -log p(m) in units of the network's log posterior, up
    to a constant (F(m_star) = F_star = N * ``free_energy`` of the unconstrained solution);
    multiplier: lambda(m) = dF/dm; b, c: the saddle's discrepancy v = [b, sqrt(6) c] (relative to the
    tilted target: the constrained degree's output is m yhat_k, not yhat_k - v_k); linear_learned,
    cubic_learned: the mean output's learned fractions in the constrained ensemble (the constrained
    degree's is m; the other is 1 - b or 1 - c/eps, its target being untilted); residual: |grad Phi_m|;
    quad_error: half-grid difference of log z and Qt; iterations; status (:class:`Status`).
    Scalars: m_star, F_star, status_star (the unconstrained finite-d solution of
    :func:`~grokphase.theory.teacher_student.solve_finite_d`, ``check=False``: see its status); grid_size,
    t_size (the last grid used: points re-solved on finer grids keep their own), support_eps (the |eps|
    that sized the q-support, covering |v| <= sqrt(1 + 6 support_eps^2))."""

    m: np.ndarray
    F: np.ndarray
    multiplier: np.ndarray
    b: np.ndarray
    c: np.ndarray
    linear_learned: np.ndarray
    cubic_learned: np.ndarray
    residual: np.ndarray
    quad_error: np.ndarray
    iterations: np.ndarray
    status: np.ndarray
    m_star: float
    F_star: float
    status_star: int
    params: TeacherStudentParams
    degree: int
    approximation: str
    grid_size: int
    t_size: int
    support_eps: float

    def to_dataset(self):
        """An annotated xarray Dataset (kind ``theory.teacher_student.free_energy_profile``)."""
        import xarray as xr

        from grokphase.io import annotate

        status_attrs = {"flag_values": np.array([int(s) for s in Status], dtype=np.int32),
                        "flag_meanings": " ".join(s.label for s in Status)}
        dims = ("m",)
        names = {"F": "-log p(m) of the network (log-posterior units, up to a constant)",
                 "multiplier": "lambda(m) = dF/dm", "b": "discrepancy on H1 at the constrained saddle",
                 "c": "discrepancy on H3 at the constrained saddle", "linear_learned": "1 - b",
                 "cubic_learned": "1 - c/eps", "residual": "|grad Phi_m|", "quad_error": "half-grid difference",
                 "iterations": "Newton steps"}
        data = {k: xr.Variable(dims, getattr(self, k), {"long_name": v}) for k, v in names.items()}
        data["status"] = xr.Variable(dims, self.status, status_attrs)
        ds = xr.Dataset(data, coords={"m": ("m", self.m, {"long_name": f"learned fraction of degree {self.degree}"})})
        p = self.params
        params = {k: float(np.asarray(getattr(p, k))) for k in ("N", "n", "d", "s2", "sa2", "sw2", "eps")}
        return annotate(ds, kind="theory.teacher_student.free_energy_profile", parameters={
            **params, "degree": self.degree, "approximation": self.approximation},
            extra={"m_star": self.m_star, "F_star": self.F_star, "status_star": int(self.status_star),
                   "grid_size": self.grid_size, "t_size": self.t_size, "support_eps": self.support_eps,
                   "units": "F = -log p(m) + const of the whole network, in units of its log posterior"})


def _constrained_evaluator(base, k: int, m, yk):
    """``evaluate(v)`` of Phi_m = F + (1/2)(v_k - (1 - m) yhat_k)^2 from the grid's F, gradient, Hessian."""
    def evaluate(v):
        F, grad, hess, Q, logz = base(v)
        dk = v[k] - (1.0 - m) * yk
        return F + 0.5 * dk * dk, grad.at[k].add(dk), hess.at[k, k].add(1.0), Q, logz
    return evaluate


def _point(m, params, grid_params, v0, k, K: int, J: int, level: int, exact: bool, maxiter: int):
    """The constrained saddle at one m (jit/vmap-compatible in m, the parameters and v0)."""
    params = to_float64(params)
    grid = _grid(to_float64(grid_params), K, J, level, exact)
    # the grid's nodes and prior come from ``grid_params`` (wider q-support); the interaction from params
    yhat = _yhat(params.eps)
    yk = yhat[k]
    full = _constrained_evaluator(_grid_evaluator(params, grid), k, m, yk)
    # damped Newton on the concave Phi_m from the unconstrained solution v0 (one Newton step at least,
    # so that a start already within tolerance still ends at the rounding floor)
    st = _newton(full, v0, yhat, params.r, maxiter, min_steps=1)
    v = st.v
    residual = jnp.linalg.norm(st.grad)
    status = jnp.where((st.status == Status.LINE_SEARCH) & (residual <= RESIDUAL_ACCEPT), Status.CONVERGED,
                       st.status)
    # a posteriori checks: the rule of twice the spacing along each axis, and the ends of the grid
    qnorm = jnp.maximum(jnp.max(jnp.abs(st.Q)), 1e-300)
    err = jnp.float64(0.0)
    halves = [(2, 1)] + ([(1, 2)] if exact else [])
    for hq, ht in halves:
        _, _, _, Qh, lzh = _grid_evaluator(params, _subgrid(grid, hq, ht))(v)
        err = jnp.maximum(err, jnp.maximum(jnp.abs(st.logz - lzh), jnp.max(jnp.abs(st.Q - Qh)) / qnorm))
    s = grid.g[..., 0] * v[0] + grid.g[..., 1] * v[1]
    Lqt = grid.prior + 0.5 * params.u * params.d * s * s
    S = -logsumexp(Lqt + grid.logw_t[None, :], axis=1)
    truncated = (S[-1] - jnp.min(S)) < TRUNCATION_CHECK
    if exact:
        ends_t = jnp.maximum(jnp.max(Lqt[:, 0]), jnp.max(Lqt[:, -1]))
        truncated = truncated | ((jnp.max(Lqt) - ends_t) < TRUNCATION_CHECK)
    status = jnp.where(status == Status.CONVERGED,
                       jnp.where(truncated, Status.TRUNCATED,
                                 jnp.where(err > RESOLUTION_TOL, Status.UNRESOLVED, status)), status)
    finite = jnp.all(jnp.isfinite(v)) & jnp.isfinite(st.F)
    status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)
    scale = params.n / params.s2
    F = scale * st.F
    mult = scale * yk * (v[k] - (1.0 - m) * yk)
    return F, mult, v, residual, err, st.it, status


@jax.jit(static_argnames=("K", "J", "level", "exact", "maxiter"))
def _profile_batch(m, params, grid_params, v0, k, K: int, J: int, level: int, exact: bool, maxiter: int):
    # k (the constrained component, 0 or 1) is traced: both degrees share one executable
    return jax.vmap(lambda mi: _point(mi, params, grid_params, v0, k, K, J, level, exact, maxiter))(m)


def _scalar(params: TeacherStudentParams) -> TeacherStudentParams:
    p = params.broadcast()
    if p.shape != ():
        raise ParameterError(f"free_energy_profile takes one parameter point (got fields of shape {p.shape}); "
                             "loop or vmap over points")
    return p


def free_energy_profile(params: TeacherStudentParams, m, *, degree: int = 3,
                        approximation: str = DEFAULT_APPROXIMATION, grid_size: int | None = None,
                        maxiter: int = 100) -> TeacherStudentProfile:
    """F(m) = -log p(m) + const of the network on the grid ``m`` of learned fractions of ``degree``
    (1 or 3), from the finite-d theory in ``approximation`` ("exact" or "concentrated"); module docstring.

    ``params``: one point.  The q-grid is the solver's (0.4 prior standard deviations per node over the
    support), its support widened until the constrained discrepancy |v| (which grows like
    1/(the kernel eigenvalue) far from the unconstrained m) leaves p(q) inside it; points still
    unresolved or truncated are re-solved on grids of twice the size (q-nodes doubled; exact: the t-rule
    one level finer), as the solver does.  Never raises on values: check ``status``."""
    if degree not in DEGREES:
        raise ParameterError(f"degree must be one of {DEGREES} (got {degree!r})")
    exact = check_approximation(approximation) == "exact"
    p = _scalar(params)
    eps = float(np.asarray(p.eps))
    if degree == 3 and eps == 0.0:
        raise ParameterError("degree 3 needs eps != 0 (the learned fraction 1 - c/eps is undefined)")
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    if m.ndim != 1 or not np.all(np.isfinite(m)):
        raise ParameterError("m must be a finite 1-D grid of learned fractions")
    k = 0 if degree == 1 else 1
    sol = solve_finite_d(p, approximation=approximation, grid_size=grid_size, check=False)
    v_star = np.array([float(sol.b), SQRT6 * float(sol.c)])
    yhat = np.array([1.0, SQRT6 * eps])
    m_star = float(1.0 - v_star[k] / yhat[k])
    F_star = float(np.asarray(p.N) * sol.free_energy)
    # the Newton start (any start converges on the concave Phi_m; the solution is merely the nearest)
    v0 = v_star if np.all(np.isfinite(v_star)) else np.zeros(2)

    support_eps = abs(eps)
    level = 0
    K = None
    todo = np.arange(m.size)
    fields = None
    for _ in range(MAX_SUPPORT_STEPS + MAX_T_LEVEL + 4):
        gp = p.replace(eps=support_eps)
        K_now = int(grid_size or point_grid_sizes(gp)) if K is None else K
        J = int(t_grid_size(p, level)) if exact else 1
        # padded to a bucket size (repeating the last point): one executable for grids of any length
        mt = m[todo]
        mt = np.concatenate([mt, np.repeat(mt[-1:], max(MIN_BUCKET, bucket_size(mt.size)) - mt.size)])
        out = _profile_batch(jnp.asarray(mt), p, gp, jnp.asarray(v0), jnp.int32(k), K_now, J, level, exact,
                             maxiter)
        out = [np.asarray(x)[:todo.size] for x in out]
        if fields is None:
            fields = [np.zeros((m.size,) + x.shape[1:], dtype=x.dtype) for x in out]
        for f, x in zip(fields, out):
            f[todo] = x
        status = fields[-1]
        trunc = todo[status[todo] == Status.TRUNCATED]
        unres = todo[status[todo] == Status.UNRESOLVED]
        if trunc.size:
            # widen the support to cover the largest constrained discrepancy (with margin)
            vmax = float(np.max(np.linalg.norm(fields[2][trunc], axis=-1)))
            new = float(np.sqrt(max((4.0 * max(vmax, 1.0) ** 2 - 1.0) / 6.0, 4.0 * support_eps**2)))
            support_eps, K = new, None
            todo = np.union1d(trunc, unres)
            continue
        if unres.size:
            grow_q = grid_size is None and (K_now < MAX_GRID_SIZE)
            grow_t = exact and level < MAX_T_LEVEL
            if not (grow_q or grow_t):
                break
            K = 2 * K_now - 1 if grow_q else K_now
            level += int(grow_t)
            todo = unres
            continue
        K = K_now
        break
    F, mult, v, res, err, it, status = fields
    b, c = v[:, 0], v[:, 1] / SQRT6
    with np.errstate(divide="ignore", invalid="ignore"):
        cubic = m.copy() if k == 1 else np.where(eps == 0.0, np.nan, 1.0 - c / (eps if eps != 0.0 else 1.0))
    linear = m.copy() if k == 0 else 1.0 - b
    return TeacherStudentProfile(
        m=m, F=F, multiplier=mult, b=b, c=c, linear_learned=linear, cubic_learned=cubic, residual=res,
        quad_error=err, iterations=it, status=status, m_star=m_star, F_star=F_star,
        status_star=int(np.asarray(sol.status)), params=p, degree=degree, approximation=approximation,
        grid_size=int(K if K is not None else 0), t_size=int(t_grid_size(p, level)) if exact else 1,
        support_eps=support_eps)
