"""Hand-written SciPy baselines for the finite-P modular-addition theory (THEORY.md §4).

Written from the equations, not from ``grokphase``: the per-mode action (eq. 16)

    S_k(Phi, Psi; a) = P [ (Phi + Psi)/2 - u a^2 Phi Psi + (gamma/6)(Phi^3 + Psi^3) ],  u = 2 sa2 P^2/(N s2^2),

on the uniform measure of [0, inf)^2, lambda(a) = sa2 <Phi Psi>, and the self-consistency
a = -s2/(lambda(a) + s2) (eq. 38), solved as the root of the increasing f(a) = a + s2/(lambda(a) + s2)
on [-1, 0] with ``scipy.optimize.brentq``.  f(-1) <= 0 < f(0); f(-1) == 0 (lambda(-1) invisible next
to s2) gives a = -1.

<Phi Psi> three ways:

* :func:`moment_quad` — what a careful researcher would write with SciPy: nested
  ``scipy.integrate.quad`` (inner over Psi with a break point at its minimiser, outer over Phi with
  break points at the stationary points w-^2, w+^2 of the diagonal action), the action's minimum
  subtracted before ``exp``, the range cut where S exceeds its minimum by 80 (e^-80 ~ 1e-35).
* :func:`moment_grid` — a NumPy tensor-product rule: composite Gauss-Legendre panels (geometric from
  1/(4P), plus a patch of panels one saddle-width wide around w+^2) and a log-sum-exp in log space.
  This is the vectorised alternative a researcher would switch to when nested quad is too slow.
* :func:`moment_saddle` — the saddle mixture of eq. 41-42, <Phi Psi> = 4 w+^4 e^{-S+}/(1 + 4 e^{-S+}),
  S+ = P Shat(w+^2), Shat(Phi) = Phi - u a^2 Phi^2 + (gamma/3) Phi^3, w+^2 = (ua^2 + sqrt((ua^2)^2 - gamma))/gamma.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, optimize
from scipy.special import logsumexp

BRENTQ_XTOL = 1e-14
QUAD_EPSREL = 1e-10     # per level of the nested quad; 1e-11 triggers roundoff warnings at P = 401


def u_of(N, P, s2, sa2):
    return 2.0 * sa2 * P * P / (N * s2 * s2)


def diagonal_saddles(x, gamma):
    """(w-^2, w+^2) of Shat with x = u a^2, or None when (u a^2)^2 < gamma."""
    disc = x * x - gamma
    if disc < 0.0:
        return None
    r = math.sqrt(disc)
    # w-^2 = (x - r)/gamma loses digits when x^2 >> gamma: use the product of the roots, 1/gamma
    wp = (x + r) / gamma
    return 1.0 / (gamma * wp), wp


# ------------------------------------------------------------------------------------------------
# <Phi Psi>: nested adaptive quadrature
# ------------------------------------------------------------------------------------------------


def moment_quad(a, u, gamma, P, epsrel=QUAD_EPSREL):
    x = u * a * a

    def S(F, Q):
        return P * (0.5 * (F + Q) - x * F * Q + gamma / 6.0 * (F**3 + Q**3))

    st = diagonal_saddles(x, gamma)
    Smin = 0.0 if st is None else min(0.0, S(st[1], st[1]))

    # min over Psi of S(Phi, Psi) (vectorised) decides where the integrand is negligible
    def inner_argmin(F):
        return np.sqrt(np.maximum(2.0 * (x * F - 0.5) / gamma, 0.0))

    top = 4.0 * (st[1] if st else x / gamma) + (480.0 / (P * gamma)) ** (1.0 / 3.0) + 400.0 / P
    grid = np.linspace(0.0, top, 4001)
    keep = np.nonzero(S(grid, inner_argmin(grid)) - Smin < 80.0)[0]
    Fmax = float(grid[min(keep[-1] + 1, grid.size - 1)])

    def inner(F, k):
        Qs = float(inner_argmin(F))
        pts = [Qs] if 0.0 < Qs < Fmax else None
        v, _ = integrate.quad(lambda Q: Q**k * math.exp(Smin - S(F, Q)), 0.0, Fmax, points=pts, epsabs=0.0,
                              epsrel=epsrel, limit=200)
        return v

    pts = [s for s in (st or ()) if s < Fmax] or None
    opts = dict(points=pts, epsabs=0.0, epsrel=epsrel, limit=200)
    Z, _ = integrate.quad(lambda F: inner(F, 0), 0.0, Fmax, **opts)
    M, _ = integrate.quad(lambda F: F * inner(F, 1), 0.0, Fmax, **opts)
    return M / Z


# ------------------------------------------------------------------------------------------------
# <Phi Psi>: NumPy log-space tensor grid
# ------------------------------------------------------------------------------------------------

_X8, _W8 = np.polynomial.legendre.leggauss(8)


def _grid(a, u, gamma, P, n_geom=40, n_patch=24):
    x = u * a * a
    st = diagonal_saddles(x, gamma)
    centre = st[1] if st else x / gamma
    phi_max = 3.0 * centre + (360.0 / (P * gamma)) ** (1.0 / 3.0) + 200.0 / P
    lo = 1.0 / (4.0 * P)
    bp = [0.0] + list(lo * (phi_max / lo) ** np.linspace(0.0, 1.0, n_geom))
    curv = gamma * st[1] - x if st else 0.0            # Shat''/2 at w+^2
    width = min(1.0 / math.sqrt(P * curv) if curv > 0 else phi_max / n_patch, phi_max / n_patch)
    bp += list(np.clip(centre + width * (np.arange(n_patch + 1) - n_patch / 2), 0.0, phi_max))
    bp = np.unique(np.asarray(bp))
    lo_, hi_ = bp[:-1], bp[1:]
    half = 0.5 * (hi_ - lo_)
    nodes = (0.5 * (hi_ + lo_))[:, None] + half[:, None] * _X8[None, :]
    weights = half[:, None] * _W8[None, :]
    return nodes.ravel(), weights.ravel()


def moment_grid(a, u, gamma, P):
    x = u * a * a
    phi, w = _grid(a, u, gamma, P)
    logw = np.log(w)
    S = P * (0.5 * (phi[:, None] + phi[None, :]) - x * np.outer(phi, phi)
             + gamma / 6.0 * (phi[:, None] ** 3 + phi[None, :] ** 3))
    L = logw[:, None] + logw[None, :] - S
    lz = logsumexp(L)
    return float(np.sum(np.exp(L - lz) * np.outer(phi, phi)))


# ------------------------------------------------------------------------------------------------
# <Phi Psi>: saddle mixture (eq. 41-42)
# ------------------------------------------------------------------------------------------------


def moment_saddle(a, u, gamma, P):
    x = u * a * a
    st = diagonal_saddles(x, gamma)
    if st is None:
        return 0.0
    wp = st[1]
    S_plus = P * (wp - x * wp * wp + gamma / 3.0 * wp**3)
    t = math.log(4.0) - S_plus
    p = 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))
    return p * wp * wp


# ------------------------------------------------------------------------------------------------
# Self-consistency
# ------------------------------------------------------------------------------------------------

MOMENTS = {"quad": moment_quad, "grid": moment_grid, "saddle": moment_saddle}


def solve_point(N, P, s2, sa2, gamma, moment="quad"):
    """a(s2) at one point: brentq on f(a) = a + s2/(sa2 <Phi Psi>(a) + s2) over [-1, 0].

    Returns dict(a, lam, evaluations)."""
    mom = MOMENTS[moment]
    u = u_of(N, P, s2, sa2)
    calls = [0]

    def f(a):
        calls[0] += 1
        return a + s2 / (sa2 * mom(a, u, gamma, P) + s2)

    f_lo = f(-1.0)
    if f_lo >= 0.0:
        a = -1.0
    else:
        a = optimize.brentq(f, -1.0, 0.0, xtol=BRENTQ_XTOL, rtol=4 * np.finfo(float).eps, maxiter=200)
    return dict(a=float(a), lam=float(sa2 * mom(a, u, gamma, P)), evaluations=calls[0] + 1)


def solve_saddle_vectorized(N, P, s2, sa2, gamma, iters=64):
    """The saddle-mixture self-consistency at every point at once, in NumPy: bisection on [-1, 0] with a
    fixed iteration count (the vectorised alternative to a per-point brentq loop).  Arrays broadcast."""
    N, P, s2, sa2, gamma = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (N, P, s2, sa2, gamma)))
    u = u_of(N, P, s2, sa2)
    log4 = math.log(4.0)

    def f(a):
        x = u * a * a
        disc = x * x - gamma
        exists = disc >= 0.0
        wp = (x + np.sqrt(np.where(exists, disc, 0.0))) / gamma
        S_plus = P * (wp - x * wp * wp + gamma / 3.0 * wp**3)
        with np.errstate(over="ignore"):
            p = np.where(exists, 1.0 / (1.0 + np.exp(np.clip(S_plus - log4, -745.0, 745.0))), 0.0)
        return a + s2 / (sa2 * p * wp * wp + s2)

    lo = np.full(u.shape, -1.0)
    hi = np.zeros(u.shape)
    f_lo = f(lo)
    at_minus_one = f_lo >= 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        same = np.sign(f_mid) == np.sign(f_lo)
        lo = np.where(same, mid, lo)
        hi = np.where(same, hi, mid)
        f_lo = np.where(same, f_mid, f_lo)
    return np.where(at_minus_one, -1.0, 0.5 * (lo + hi))
