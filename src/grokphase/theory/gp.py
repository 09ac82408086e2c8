r"""Gaussian-process (NNGP, infinite-width) baseline of the teacher-student model (THEORY.md §3).

The erf network's NNGP kernel is the arcsine kernel

    K(x, z) = sa2 (2/pi) arcsin( 2 s x·z / sqrt((1 + 2 s |x|^2)(1 + 2 s |z|^2)) ),   s = sw2/d.

For Gaussian data its exact Rayleigh quotients on the teacher directions Hhat1 = H1 and
Hhat3 = H3/sqrt6 follow from Stein's lemma and 1/X^k = \int t^{k-1} e^{-tX} dt/(k-1)! (no
|w|^2 -> sw2 concentration, no Monte Carlo):

    lambda1  = sa2 (4 s/pi)        \int_0^inf     e^{-t} (1 + 4 s t)^{-(d+2)/2} dt,
    lambda3  = sa2 (20 s^3/pi)     \int_0^inf t^2 e^{-t} (1 + 4 s t)^{-(d+6)/2} dt,
    lambda13 = -sa2 (24 s^2/(sqrt6 pi)) \int_0^inf t e^{-t} (1 + 4 s t)^{-(d+4)/2} dt,

lambda13 = <Hhat1, K Hhat3> being the off-diagonal element (Hhat3 is not an exact eigenfunction).
The integrals are done by Gauss-Laguerre quadrature (the integrands are analytic with their only
singularity at t = -d/(4 sw2), so the rule converges geometrically).

The learned fractions use the equivalent-kernel (EK) approximation of App. A.2: a component with
eigenvalue lambda is learned to lambda/(lambda + s2/n).  This is an approximation twice over: EK
replaces the finite training set by the population (it overestimates learning by a few per cent at
n of a few hundred, THEORY.md §3), and treating Hhat3 as an eigenfunction ignores its small overlap
with the linear eigenfunction (:func:`subspace_discrepancy` keeps it).
:func:`gp_regression_learned_fractions` does exact finite-n GP regression, without either
approximation, to measure the EK error.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from grokphase._params import plain
from grokphase.errors import ParameterError, SolverError
from grokphase.theory.batching import flatten
from grokphase.theory.teacher_student.params import TeacherStudentParams

_LAGUERRE_ORDER = 96
_LAG_T, _LAG_W = np.polynomial.laguerre.laggauss(_LAGUERRE_ORDER)


def arcsine_kernel(x, z, sa2, sw2):
    """NNGP kernel of sum_i a_i erf(w_i·x) with a_i ~ N(0, sa2/N), w_i ~ N(0, sw2/d I).

    ``x`` and ``z`` have shape (..., d) and broadcast; returns shape (...)."""
    x = jnp.asarray(x)
    z = jnp.asarray(z)
    d = x.shape[-1]
    s = sw2 / d
    xz = jnp.sum(x * z, axis=-1)
    xx = jnp.sum(x * x, axis=-1)
    zz = jnp.sum(z * z, axis=-1)
    return sa2 * (2.0 / jnp.pi) * jnp.arcsin(2.0 * s * xz / jnp.sqrt((1.0 + 2.0 * s * xx) * (1.0 + 2.0 * s * zz)))


class GPEigen(NamedTuple):
    """Exact Rayleigh quotients of the arcsine kernel on Hhat1, Hhat3 and their cross term."""

    lambda1: jax.Array
    lambda3: jax.Array
    lambda13: jax.Array


def _laguerre(power, expo):
    # the nodes become JAX arrays at call time, not at import: creating one here would initialise the
    # JAX backend on import, before the CLI can set the host device count (--devices K)
    def integral(s, d):
        t = jnp.asarray(_LAG_T)
        w = jnp.asarray(_LAG_W)
        return jnp.sum(w * t**power * (1.0 + 4.0 * s * t) ** (-(d + expo) / 2.0))

    return integral


_I1 = _laguerre(0, 2.0)
_I3 = _laguerre(2, 6.0)
_I13 = _laguerre(1, 4.0)


def rayleigh_quotients(d, sa2, sw2) -> GPEigen:
    """Exact lambda1, lambda3, lambda13 (THEORY.md §3) for scalar or array (d, sa2, sw2)."""
    d, sa2, sw2 = (jnp.asarray(a, jnp.float64) for a in (d, sa2, sw2))
    shape = jnp.broadcast_shapes(d.shape, sa2.shape, sw2.shape)
    d, sa2, sw2 = (jnp.broadcast_to(a, shape).reshape(-1) for a in (d, sa2, sw2))
    s = sw2 / d
    i1 = jax.vmap(_I1)(s, d)
    i3 = jax.vmap(_I3)(s, d)
    i13 = jax.vmap(_I13)(s, d)
    lam1 = sa2 * 4.0 * s / jnp.pi * i1
    lam3 = sa2 * 20.0 * s**3 / jnp.pi * i3
    lam13 = -sa2 * 24.0 * s**2 / (math.sqrt(6.0) * jnp.pi) * i13
    return GPEigen(*(a.reshape(shape) for a in (lam1, lam3, lam13)))


def plugin_quotients(d, sa2, sw2) -> tuple:
    """The plug-in forms with |w|^2 -> sw2 (off by about 0.5/d and 6/d relatively; for comparison)."""
    s = sw2 / d
    return sa2 * 4.0 * s / (jnp.pi * (1.0 + 2.0 * sw2)), sa2 * 40.0 * s**3 / (jnp.pi * (1.0 + 2.0 * sw2) ** 3)


def ek_learned_fraction(lam, s2, n):
    """EK learned fraction lambda/(lambda + s2/n) of a component with kernel eigenvalue lambda."""
    return lam / (lam + s2 / n)


class GPSolution(NamedTuple):
    """GP baseline at given parameters (N is irrelevant: infinite width).

    linear_learned, cubic_learned: EK fractions lambda/(lambda + s2/n) on Hhat1, Hhat3.
    n_half_linear, n_half_cubic: n at which each component is half learned (s2/lambda).
    """

    lambda1: np.ndarray
    lambda3: np.ndarray
    lambda13: np.ndarray
    linear_learned: np.ndarray
    cubic_learned: np.ndarray
    n_half_linear: np.ndarray
    n_half_cubic: np.ndarray


def solve_gp(params: TeacherStudentParams) -> GPSolution:
    """GP/EK learned fractions for every point of ``params`` (any broadcast shape)."""
    shape, flat = flatten(params)
    eig = rayleigh_quotients(flat.d, flat.sa2, flat.sw2)
    l1, l3, l13 = (np.asarray(a) for a in eig)
    out = GPSolution(
        lambda1=l1, lambda3=l3, lambda13=l13,
        linear_learned=np.asarray(ek_learned_fraction(l1, flat.s2, flat.n)),
        cubic_learned=np.asarray(ek_learned_fraction(l3, flat.s2, flat.n)),
        n_half_linear=np.asarray(flat.s2 / l1), n_half_cubic=np.asarray(flat.s2 / l3),
    )
    if not all(np.all(np.isfinite(a)) for a in out):
        raise ParameterError("GP baseline is not finite for these parameters (d, sa2, sw2 out of float64 range)")
    return GPSolution(*(a.reshape(shape) for a in out))


def nngp_trace(d, sa2, sw2, nodes: int = 200) -> np.ndarray:
    """The NNGP kernel's trace sa2 E_x[phi(w.x)^2] averaged over the prior, sa2 E[(2/pi)
    arcsin(2|w|^2/(1 + 2|w|^2))] with |w|^2 = (sw2/d) X, X ~ chi^2_d: Gauss-Legendre over the chi^2
    quantile range [1e-14, 1 - 1e-14] weighted by its density (the integrand is smooth and bounded, so
    the rule is exact to ~1e-12).  Broadcasts over (d, sa2, sw2)."""
    from scipy import stats
    d, sa2, sw2 = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (d, sa2, sw2)))
    out = np.empty(d.shape)
    x, w = np.polynomial.legendre.leggauss(nodes)
    for idx in np.ndindex(d.shape):
        lo, hi = stats.chi2.ppf([1e-14, 1.0 - 1e-14], d[idx])
        X = lo + 0.5 * (hi - lo) * (x + 1.0)
        dens = stats.chi2.pdf(X, d[idx]) * 0.5 * (hi - lo) * w
        W2 = sw2[idx] / d[idx] * X
        out[idx] = sa2[idx] * np.sum(dens * (2.0 / np.pi) * np.arcsin(2.0 * W2 / (1.0 + 2.0 * W2))) / np.sum(dens)
    return out


class GPRidge(NamedTuple):
    """The GP learning curve with the renormalised ridge (:mod:`grokphase.theory.teacher_student.ridge`):
    a component of eigenvalue lambda is learned to lambda/(lambda + kappa), kappa the root of
    n = s2/kappa + sum_k lambda_k/(lambda_k + kappa) over the NNGP spectrum (the two target modes, the
    d - 1 perpendicular linear modes of eigenvalue lambda1, every other mode through the trace).

    kappa: the renormalised ridge (EK: s2/n); linear_learned, cubic_learned: lambda1/(lambda1 + kappa),
    lambda3/(lambda3 + kappa) (the pure-H1 and pure-Hhat3 responses, as :func:`solve_gp`'s EK values)."""

    kappa: np.ndarray
    linear_learned: np.ndarray
    cubic_learned: np.ndarray


def solve_gp_ridge(params: TeacherStudentParams, eigen=None) -> GPRidge:
    """The renormalised-ridge GP learned fractions at every point of ``params`` (any broadcast shape).
    ``eigen``: (lambda1, lambda3, lambda13) to use instead of the exact Rayleigh quotients (e.g. the
    concentrated approximation's u -> 0 kernel); the trace is always the exact NNGP trace."""
    from grokphase.theory.teacher_student.ridge import RidgeSpectrum, renormalised_ridge
    p = params.broadcast()
    if eigen is None:
        eigen = tuple(np.asarray(a) for a in rayleigh_quotients(p.d, p.sa2, p.sw2))
    l1, l3, l13 = np.broadcast_arrays(*(np.broadcast_to(np.asarray(a, np.float64), p.shape) for a in eigen))
    K2 = np.stack([np.stack([l1, l13], -1), np.stack([l13, l3], -1)], -2)
    target = np.linalg.eigvalsh(K2)
    trace = nngp_trace(p.d, p.sa2, p.sw2)
    rest = np.maximum(trace - l1 - l3 - (np.asarray(p.d) - 1.0) * l1, 0.0)
    kappa = renormalised_ridge(RidgeSpectrum(target, l1, trace, rest), p.n, p.s2, p.d)
    return GPRidge(kappa, l1 / (l1 + kappa), l3 / (l3 + kappa))


def subspace_discrepancy(params: TeacherStudentParams):
    """EK discrepancy (b, c) with the exact 2x2 kernel restricted to span(Hhat1, Hhat3):
    [b, sqrt6 c] = (s2/n)(K2 + s2/n)^{-1} [1, sqrt6 eps], K2 = [[l1, l13], [l13, l3]].
    The off-diagonal term is the 'leak' of THEORY.md §3 (negative cubic projection in the GP phase)."""
    shape, flat = flatten(params)
    l1, l3, l13 = (np.asarray(a) for a in rayleigh_quotients(flat.d, flat.sa2, flat.sw2))
    K2 = np.stack([np.stack([l1, l13], -1), np.stack([l13, l3], -1)], -2)
    noise = (flat.s2 / flat.n)[:, None, None] * np.eye(2)
    y = np.stack([np.ones_like(flat.eps), math.sqrt(6.0) * flat.eps], -1)
    v = noise @ np.linalg.solve(K2 + noise, y[..., None])
    b, c = v[:, 0, 0], v[:, 1, 0] / math.sqrt(6.0)
    return b.reshape(shape), c.reshape(shape)


# ----------------------------------------------------------------------------------------------
# Exact finite-n GP regression (beyond the EK limit)
# ----------------------------------------------------------------------------------------------
#
# Population projections of one kernel column, with teacher direction u (|u| = 1).  Writing
# K(x, z) = sa2 E_w[erf(w·x) erf(w·z)], w ~ N(0, s I), and using Stein's lemma over x,
#
#     E_x[erf(w·x) H1(u·x)] =  (2/sqrt(pi)) (w·u) (1 + 2|w|^2)^{-1/2},
#     E_x[erf(w·x) H3(u·x)] = -(4/sqrt(pi)) (w·u)^3 (1 + 2|w|^2)^{-3/2};
#
# then 1/X^k = \int t^{k-1} e^{-tX} dt / Gamma(k) turns the |w|^2 factor into a Gaussian tilt
# w ~ N(0, s/(1 + 4st) I) with weight (1 + 4st)^{-d/2}, and Stein's lemma over w leaves one
# integral over t (c = 1 + 4st, D = c + 2s|z|^2, v = u·z):
#
#     <K(., z), H1> =  sa2 (4s/pi^{3/2})  v \int t^{-1/2} e^{-t} c^{-(d+1)/2} D^{-1/2} dt,
#     <K(., z), H3> =  sa2 (8/pi^{3/2})     \int t^{+1/2} e^{-t} c^{-(d+3)/2}
#                                              [4 s^3 v^3 D^{-3/2} - 6 s^2 v D^{-1/2}] dt.
#
# Generalised Gauss-Laguerre quadrature (alpha = -1/2, +1/2) does the t integral; the integrands
# are analytic with singularities only at t <= -d/(4 sw2), so the rule converges geometrically.

_GENLAG_ORDER = 96
_GLM_T, _GLM_W = special.roots_genlaguerre(_GENLAG_ORDER, -0.5)   # weight t^{-1/2} e^{-t}
_GLP_T, _GLP_W = special.roots_genlaguerre(_GENLAG_ORDER, 0.5)    # weight t^{+1/2} e^{-t}


def kernel_projections(z, u, sa2, sw2):
    """Exact population projections (<K(., z), H1(u·.)>, <K(., z), H3(u·.)>) over x ~ N(0, I_d)
    of the arcsine kernel column at z, for a unit teacher direction u (formulas above).

    ``z`` has shape (..., d), ``u`` shape (d,); returns two arrays of shape (...).  Contracting with
    the GP weights alpha gives <fbar, H1> = alpha·p1 and <fbar, H3> = alpha·p3 with no test-set noise.
    """
    z = jnp.asarray(z, jnp.float64)
    u = jnp.asarray(u, jnp.float64)
    d = z.shape[-1]
    s = sw2 / d
    v = (z @ u)[..., None]
    zz = jnp.sum(z * z, axis=-1)[..., None]
    tm, wm = jnp.asarray(_GLM_T), jnp.asarray(_GLM_W)
    tp, wp = jnp.asarray(_GLP_T), jnp.asarray(_GLP_W)
    cm = 1.0 + 4.0 * s * tm
    i1 = jnp.sum(wm * cm ** (-(d + 1) / 2.0) * (cm + 2.0 * s * zz) ** -0.5, axis=-1)
    p1 = sa2 * 4.0 * s / jnp.pi**1.5 * v[..., 0] * i1
    cp = 1.0 + 4.0 * s * tp
    Dp = cp + 2.0 * s * zz
    i3 = jnp.sum(wp * cp ** (-(d + 3) / 2.0) * (4.0 * s**3 * v**3 * Dp**-1.5 - 6.0 * s**2 * v * Dp**-0.5), axis=-1)
    p3 = sa2 * 8.0 / jnp.pi**1.5 * i3
    return p1, p3


def kernel_matrix(x, sa2, sw2):
    """Gram matrix K(x_i, x_j) of the arcsine kernel for x of shape (n, d), built from x x^T
    (memory O(n^2), unlike broadcasting :func:`arcsine_kernel` over pairs, O(n^2 d))."""
    x = jnp.asarray(x, jnp.float64)
    s = sw2 / x.shape[-1]
    g = x @ x.T
    nrm = 1.0 + 2.0 * s * jnp.diagonal(g)
    arg = 2.0 * s * g / jnp.sqrt(nrm[:, None] * nrm[None, :])
    return sa2 * (2.0 / jnp.pi) * jnp.arcsin(jnp.clip(arg, -1.0, 1.0))


CG_TOL = 1e-12
CG_MAXITER = 5000


def solve_spd_cg(A, b, tol=CG_TOL, maxiter=CG_MAXITER):
    """Solve A x = b for symmetric positive definite A (n, n) and b (n,) or (n, m) by conjugate
    gradients, each column independently, until |r| <= tol |b| column-wise (or ``maxiter``).
    Returns (x, relres) with relres = max over columns of the TRUE residual |A x - b|/|b|.

    Used instead of a Cholesky factorisation: for the GP system A = K + s2 I the condition number
    is at most 1 + lambda_max(K)/s2 (about 2 at the paper's parameters), so CG converges in a few
    tens of matrix-vector products, and it stays inside XLA (jaxlib's LAPACK Cholesky runs through
    the process's multithreaded OpenBLAS, which is 10-40x slower on a loaded 2-core machine, and
    batched LAPACK calls in flight at once can deadlock XLA's intra-op pool)."""
    A = jnp.asarray(A, jnp.float64)
    b = jnp.asarray(b, jnp.float64)
    vec = b.ndim == 1
    B = b[:, None] if vec else b
    bnorm = jnp.sqrt(jnp.sum(B * B, axis=0))
    thresh = (tol * bnorm) ** 2

    def cond(state):
        k, _, r, _, rs = state
        return (k < maxiter) & jnp.any(rs > thresh)

    def body(state):
        k, x, r, p, rs = state
        Ap = A @ p
        pAp = jnp.sum(p * Ap, axis=0)
        active = rs > thresh
        alpha = jnp.where(active & (pAp > 0), rs / jnp.where(pAp > 0, pAp, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = jnp.sum(r * r, axis=0)
        beta = jnp.where(active, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        p = jnp.where(active, r + beta * p, p)
        return k + 1, x, r, p, jnp.where(active, rs_new, rs)

    x0 = jnp.zeros_like(B)
    state = (jnp.int32(0), x0, B, B, jnp.sum(B * B, axis=0))
    _, x, _, _, _ = jax.lax.while_loop(cond, body, state)
    res = jnp.sqrt(jnp.sum((A @ x - B) ** 2, axis=0)) / jnp.where(bnorm > 0, bnorm, 1.0)
    return (x[:, 0] if vec else x), jnp.max(res)


def gp_posterior_projections(x, y, u, sa2, sw2, s2):
    """Population projections (<fbar, H1(u·.)>, <fbar, H3(u·.)>) of the exact GP posterior mean

        fbar(x') = K(x', X) (K(X, X) + s2 I)^{-1} y

    trained on one data set (x: (n, d); y: (n,) or (n, m) for m targets at once), via
    :func:`kernel_projections` (exact over x' ~ N(0, I_d), no test set).  The linear system is
    solved in float64 by :func:`solve_spd_cg`.  Returns (P1, P3, relres): two arrays of shape
    y.shape[1:] and the solve's relative residual (check it: about 1e-12 when converged)."""
    K = kernel_matrix(x, sa2, sw2)
    n = K.shape[0]
    alpha, relres = solve_spd_cg(K + s2 * jnp.eye(n, dtype=K.dtype), y)
    p1, p3 = kernel_projections(x, u, sa2, sw2)
    return p1 @ alpha, p3 @ alpha, relres


# Control variates of one draw: empirical moments of h = w*·x_i with exactly known means,
# mean(h^2) - 1, mean(h^4) - 3, mean(h^6) - 15.  The GP's response is driven by the empirical
# correlations of the targets with h (e.g. mean(h y) = m2 + eps (m4 - 3 m2)), so regressing the
# per-draw fractions on these moments removes most of the data-draw variance (5-10x smaller
# standard errors at d = 53, n = 375) without bias beyond O(1/n_draws).
N_CONTROL_VARIATES = 3


def gp_regression_draws(n: int, d: int, sa2, sw2, s2, n_draws: int, seed: int = 0):
    """Exact GP regression on ``n_draws`` independent data sets; returns (R, cv):

    R[k, a, b] = <fbar_k[H_a], H_b> / <H_b, H_b>   (a, b in {H1, H3}; <H1,H1> = 1, <H3,H3> = 6),

    the population projection on H_b of the posterior mean fitted to the pure target H_a(w*·x) on
    draw k (fbar is linear in y, so the teacher H1 + eps H3 gives <fbar, H1> = R[k,0,0] + eps R[k,1,0]
    and <fbar, H3>/6 = R[k,0,1] + eps R[k,1,1]), and cv[k] the control variates above (mean 0).
    Draw k uses x ~ N(0, I_d)^n from jax.random.fold_in(PRNGKey(seed), k) and w* = e_1 (no loss of
    generality: x is isotropic).  Integer n, d, n_draws; no validation (see
    :func:`gp_regression_learned_fractions`).  Raises SolverError if a linear solve did not converge."""
    n, d, n_draws = int(n), int(d), int(n_draws)
    R, cv, relres = _gp_draws(n, d, n_draws, jnp.float64(sa2), jnp.float64(sw2), jnp.float64(s2), jnp.int64(seed))
    worst = float(np.max(np.asarray(relres)))
    if not worst <= 1e-9:
        raise SolverError(f"GP regression solve did not converge at n={n}, d={d}, s2={s2}, sa2={sa2}, sw2={sw2} "
                          f"(relative residual {worst:.2e} after {CG_MAXITER} CG steps; s2 too small?)")
    return np.asarray(R), np.asarray(cv)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _gp_draws(n, d, n_draws, sa2, sw2, s2, seed):
    # Draws run one after another (lax.map without batch_size): memory O(n^2), and the per-draw
    # work (an n x n product for the Gram matrix, CG matrix-vector products) is multithreaded.
    base = jax.random.PRNGKey(seed)
    u = jnp.zeros(d, jnp.float64).at[0].set(1.0)

    def one(k):
        x = jax.random.normal(jax.random.fold_in(base, k), (n, d), jnp.float64)
        h = x[:, 0]
        targets = jnp.stack([h, h**3 - 3.0 * h], axis=1)
        p1, p3, relres = gp_posterior_projections(x, targets, u, sa2, sw2, s2)
        R = jnp.stack([p1, p3 / 6.0], axis=1)
        h2 = h * h
        cv = jnp.stack([jnp.mean(h2) - 1.0, jnp.mean(h2**2) - 3.0, jnp.mean(h2**3) - 15.0])
        return R, cv, relres

    return jax.lax.map(one, jnp.arange(n_draws))


def draw_average(samples, controls=None):
    """Mean of per-draw ``samples`` and its standard error across draws.  With ``controls``
    (shape (n_draws, p), known means 0) the control-variate estimate: the intercept of the least-
    squares fit samples ~ 1 + controls, standard error = residual std (ddof = 1 + p)/sqrt(n_draws)."""
    y = np.asarray(samples, dtype=np.float64)
    m = y.size
    if controls is None or m <= np.shape(controls)[1] + 2:
        return float(y.mean()), (float(y.std(ddof=1) / math.sqrt(m)) if m > 1 else float("nan"))
    A = np.column_stack([np.ones(m), np.asarray(controls, dtype=np.float64)])
    beta = np.linalg.lstsq(A, y, rcond=None)[0]
    resid = y - A @ beta
    return float(beta[0]), float(math.sqrt(resid @ resid / (m - A.shape[1]) / m))


class GPRegression(NamedTuple):
    """Exact finite-n GP regression at one parameter point, against the EK approximation.

    All exact values are averages over data draws with standard errors across draws (*_sem).
    linear_learned: <fbar, H1> for the teacher H1 + eps H3 (what a simulation's test projection
      measures; the teacher's H1 coefficient is 1).
    linear_learned_h1: <fbar, H1> for the pure target H1 (the response that lambda1/(lambda1 + s2/n)
      approximates; the cubic part of the teacher adds a finite-n cross term eps <fbar[H3], H1>).
    cubic_learned: <fbar, H3>/(6 eps) = <fbar, Hhat3>/(sqrt6 eps) for the teacher (NaN if eps = 0).
    linear_learned_ek, cubic_learned_ek: EK fractions lambda/(lambda + s2/n) (:func:`solve_gp`).
    linear_learned_ek_subspace, cubic_learned_ek_subspace: 1 - b and 1 - c/eps of
      :func:`subspace_discrepancy` (EK with the Hhat1-Hhat3 leak kept: the EK counterpart of
      linear_learned and cubic_learned).
    ek_relative_gap: linear_learned_ek/linear_learned - 1 (EK's pure-H1 response against the exact
      full-teacher value); the like-with-like gaps are ek_relative_gap_h1 = linear_learned_ek/
      linear_learned_h1 - 1 and ek_subspace_relative_gap = linear_learned_ek_subspace/linear_learned
      - 1.  Standard errors by the delta method (EK values are exact).
    """

    linear_learned: float
    linear_learned_sem: float
    linear_learned_h1: float
    linear_learned_h1_sem: float
    cubic_learned: float
    cubic_learned_sem: float
    linear_learned_ek: float
    cubic_learned_ek: float
    linear_learned_ek_subspace: float
    cubic_learned_ek_subspace: float
    ek_relative_gap: float
    ek_relative_gap_sem: float
    ek_relative_gap_h1: float
    ek_relative_gap_h1_sem: float
    ek_subspace_relative_gap: float
    ek_subspace_relative_gap_sem: float
    n_draws: int


def _as_count(name: str, value, minimum: int = 1) -> int:
    try:
        v = float(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be an integer >= {minimum} (got {plain(value)})") from None
    k = int(round(v)) if np.isfinite(v) else 0
    if not np.isfinite(v) or abs(v - k) > 1e-9 * max(1.0, abs(v)) or k < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum} for exact GP regression (got {plain(value)})")
    return k


def gp_regression_learned_fractions(params: TeacherStudentParams, n_draws: int = 400, seed: int = 0,
                                    control_variates: bool = True) -> GPRegression:
    r"""Learned fractions of exact GP (NNGP) regression on n training points, averaged over data sets.

    For each of ``n_draws`` data sets X = (x_1..x_n), x_i ~ N(0, I_d), y_i = H1(w*·x_i) + eps
    H3(w*·x_i) (no label noise; s2 enters only as the GP's observation noise), the posterior mean is

        fbar(x) = K(x, X) (K(X, X) + s2 I)^{-1} y,    K = :func:`arcsine_kernel` (sa2, sw2),

    and its population projections on the teacher directions, over x ~ N(0, I_d), are computed
    exactly (:func:`kernel_projections`: one integral over t per training point, no test set).
    The reported fractions are averages over draws of

        linear = <fbar, H1>,    cubic = <fbar, H3>/(6 eps) = <fbar, Hhat3>/(sqrt6 eps),

    and of linear_h1 = <fbar[H1], H1>, the response to the H1 part of the teacher alone (see
    :class:`GPRegression`).  The data draws are the only randomness; with ``control_variates`` the
    averages are control-variate estimates on the empirical moments of w*·x_i (exactly known means;
    see :func:`draw_average`), otherwise plain means, both with standard errors across draws.

    Why: the EK approximation lambda/(lambda + s2/n) (:func:`solve_gp`) replaces the training set by
    the population and errs at finite n.  It overestimates the linear fraction by 3-4 % at d = 53,
    n = 375 (s2 = 0.1-0.18; THEORY.md §3) and by 0.8-1.3 % at d = 150, n = 3000 (s2 = 0.3-0.1).
    Simulations at small n should be compared with these exact values, or with EK only up to this
    gap.  The quoted THEORY.md values are the pure-H1 response (linear_learned_h1); with eps = -0.3
    the teacher's cubic part adds about +1 % to <fbar, H1> at d = 53, n = 375.

    ``params`` must be one point (scalar fields); N matters only through sa2.  n and d must be
    integers (to 1e-9 relative; otherwise ParameterError).  Draw k uses the key
    jax.random.fold_in(PRNGKey(seed), k) and, since the data are isotropic, w* = e_1.  Cost per
    draw: O(n^2 d) for the Gram matrix and O(n^2) per CG step (a few tens of steps), in float64;
    draws run one after another in ``lax.map`` (memory O(n^2)), and the compiled function depends
    only on (n, d, n_draws), so sweeps over s2, sa2, sw2, eps reuse it.  About 5 s for 400 draws at
    d = 53, n = 375 and 7 s for 20 draws at d = 150, n = 3000 on a loaded 2-core CPU.
    """
    shape, flat = flatten(params)
    if int(np.prod(shape)) != 1:
        raise ParameterError(f"gp_regression_learned_fractions needs one parameter point (got shape {shape})")
    n = _as_count("n", flat.n[0])
    d = _as_count("d", flat.d[0])
    n_draws = _as_count("n_draws", n_draws)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterError(f"seed must be an integer (got {plain(seed)})")
    for k in ("s2", "sa2", "sw2"):
        v = float(getattr(flat, k)[0])
        if not (np.isfinite(v) and v > 0):
            raise ParameterError(f"{k} must be > 0 (got {plain(v)})")
    eps = float(flat.eps[0])
    if not np.isfinite(eps):
        raise ParameterError(f"eps must be finite (got {plain(eps)})")
    sa2, sw2, s2 = float(flat.sa2[0]), float(flat.sw2[0]), float(flat.s2[0])

    R, cv = gp_regression_draws(n, d, sa2, sw2, s2, n_draws, seed)
    if not np.all(np.isfinite(R)):
        raise ParameterError(f"exact GP regression is not finite at n={n}, d={d}, s2={s2}, sa2={sa2}, sw2={sw2}")
    controls = cv if control_variates else None
    lin, lin_sem = draw_average(R[:, 0, 0] + eps * R[:, 1, 0], controls)
    lin_h1, lin_h1_sem = draw_average(R[:, 0, 0], controls)
    if eps != 0.0:
        cub, cub_sem = draw_average(R[:, 0, 1] / eps + R[:, 1, 1], controls)
    else:
        cub, cub_sem = float("nan"), float("nan")

    point = TeacherStudentParams(N=float(flat.N[0]), n=float(n), d=float(d), s2=s2, sa2=sa2, sw2=sw2, eps=eps)
    ek = solve_gp(point)
    b, c = subspace_discrepancy(point)
    lin_ek = float(ek.linear_learned)
    return GPRegression(
        linear_learned=lin, linear_learned_sem=lin_sem,
        linear_learned_h1=lin_h1, linear_learned_h1_sem=lin_h1_sem,
        cubic_learned=cub, cubic_learned_sem=cub_sem,
        linear_learned_ek=lin_ek, cubic_learned_ek=float(ek.cubic_learned),
        linear_learned_ek_subspace=float(1.0 - b),
        cubic_learned_ek_subspace=float(1.0 - c / eps) if eps != 0.0 else float("nan"),
        ek_relative_gap=lin_ek / lin - 1.0, ek_relative_gap_sem=lin_ek * lin_sem / lin**2,
        ek_relative_gap_h1=lin_ek / lin_h1 - 1.0, ek_relative_gap_h1_sem=lin_ek * lin_h1_sem / lin_h1**2,
        ek_subspace_relative_gap=float(1.0 - b) / lin - 1.0,
        ek_subspace_relative_gap_sem=float(1.0 - b) * lin_sem / lin**2,
        n_draws=n_draws,
    )
