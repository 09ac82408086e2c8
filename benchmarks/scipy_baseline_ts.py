"""Hand-written SciPy baseline for the finite-d teacher-student theory (THEORY.md §3).

"What a researcher would write by hand": a damped fixed-point iteration on the discrepancy
coefficients (b, c) of the self-consistency

    [b, sqrt6 c] = (s2/n) (Qt + (s2/n) I)^{-1} [1, sqrt6 eps],    Qt = sa2 <g g^T>_{p(q)},

where p(q) ∝ exp(-S(q)), S(q) = d [q^2/(2 sw2) - (2u/pi)(q^2/D)(b - 2c q^2/D)^2],
D = 1 + 2(sw2 + q^2), u = n^2 sa2/(s2^2 d N), g1 = 2q/sqrt(pi D), g3 = -4q^3/(sqrt(6 pi) D^1.5).

Every average is an adaptive ``scipy.integrate.quad`` over q in [0, inf) (the integrand is even in
q, so the factor 2 cancels in <.> = int/Z).  The density is sharp for large d (width ~ sqrt(sw2/d)
at q = 0 and a droplet peak near q ~ 0.8 in the mixed phase), so each integral is split at the
local extrema of -S found on a coarse grid and at a few peak widths around each maximum, and the
max of -S on that grid is subtracted before exponentiating (no overflow).  The part of [0, inf)
beyond a bound q_hi (where -S is at least 60 below its max for any admissible (b, c)) is a separate
``quad`` on [q_hi, inf).

The iteration starts from b = 1, c = eps (the prior, u -> 0), damps the update by alpha = 0.5,
halves alpha whenever the self-consistency residual grows (and lets it recover by 5 % per
decrease, up to 0.5), and stops when |yhat - (I + (n/s2) Qt) v| < tol = 1e-10 with
v = [b, sqrt6 c], yhat = [1, sqrt6 eps].  Since (I + (n/s2) Qt) >= I, this residual bounds the
error in v up to the quadrature error.  Each quad runs at epsabs = 0, epsrel = 1e-13: at 1e-11 the
residual's quadrature noise (amplified by n/s2 ~ 5e4 times sa2) sits at the 1e-10 tolerance and
the iteration can stall at some low-s2 points.

The damped iteration is slow where the fixed-point map is stiff: its Jacobian at the solution has
an eigenvalue of -45 at the paper's point (beta = 1, s2 = 0.14), about -480 at beta = 64 and -670
at s2 = 0.056, N = 238, so the stable damping is ~2/(1 - lambda_min) and convergence takes
300 to 3400 iterations (of ~1.5 ms each).  :func:`solve_point_root` is a secondary baseline on the
same residual and quadrature using ``scipy.optimize.root`` (hybr), typically 20-100 residual
evaluations, with the damped iteration as fallback (needed at beta = 64).

Independent of the ``grokphase`` package (only NumPy/SciPy), so it can check it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import integrate

SQRT6 = math.sqrt(6.0)
SQRT_PI = math.sqrt(math.pi)
SQRT_6PI = math.sqrt(6.0 * math.pi)

QUAD_EPSREL = 1e-13   # 1e-11 leaves a quadrature noise floor near the 1e-10 residual tolerance
QUAD_LIMIT = 400
COARSE_POINTS = 4001
CONTRAST = 60.0


def _moments(v, d, u, sw2, coarse=COARSE_POINTS):
    """Z-normalised <g1^2>, <g1 g3>, <g3^2> under p(q) ∝ exp(-S(q; v)) by adaptive quadrature.

    Returns (m11, m13, m33, n_warnings)."""
    b, c6 = float(v[0]), float(v[1])
    c = c6 / SQRT6
    two_sw2 = 2.0 * sw2
    pre = 2.0 * u / math.pi

    def minus_S(q):
        q2 = q * q
        D = 1.0 + two_sw2 + 2.0 * q2
        x = q2 / D
        t = b - 2.0 * c * x
        return d * (pre * x * t * t - q2 / two_sw2)

    # bound on the support: -S(q) <= -d q^2/(2 sw2) + (d u/2)|v|^2 |g|^2 with |g|^2 < 7/(3 pi),
    # and max(-S) >= -S(0) = 0, so beyond q_hi the integrand is < exp(-CONTRAST) of its max
    vv = b * b + c6 * c6
    q_hi = math.sqrt(two_sw2 * (CONTRAST / d + 0.5 * u * vv * 7.0 / (3.0 * math.pi)))

    # coarse grid: max of -S (overflow guard), local extrema (quad breakpoints), peak widths
    qg = np.linspace(0.0, q_hi, coarse)
    q2 = qg * qg
    Dg = 1.0 + two_sw2 + 2.0 * q2
    xg = q2 / Dg
    Eg = d * (pre * xg * (b - 2.0 * c * xg) ** 2 - q2 / two_sw2)
    k_max = int(np.argmax(Eg))
    E0 = float(Eg[k_max])
    dE = np.diff(Eg)
    ext = np.flatnonzero(np.sign(dE[:-1]) != np.sign(dE[1:])) + 1   # interior local extrema
    maxima = [0] + [int(k) for k in ext if dE[k - 1] > 0]              # q = 0 is always a maximum by symmetry
    h = qg[1] - qg[0]
    pts = set(float(qg[k]) for k in ext)
    for k in maxima:
        # width of the peak from the local curvature (one-sided at q = 0 by evenness)
        if k == 0:
            curv = -(Eg[1] - Eg[0]) * 2.0 / h**2
        else:
            curv = -(Eg[k + 1] - 2.0 * Eg[k] + Eg[k - 1]) / h**2
        w = 1.0 / math.sqrt(max(curv, 1.0 / q_hi**2))
        for m in (1.0, 3.0, 6.0, 12.0):
            for s in (-1.0, 1.0):
                p = qg[k] + s * m * w
                if 0.0 < p < q_hi:
                    pts.add(float(p))
    pts = sorted(pts)

    def weight(q):
        return math.exp(minus_S(q) - E0)

    def f0(q):
        return weight(q)

    def f11(q):
        D = 1.0 + two_sw2 + 2.0 * q * q
        g1 = 2.0 * q / (SQRT_PI * math.sqrt(D))
        return g1 * g1 * weight(q)

    def f13(q):
        D = 1.0 + two_sw2 + 2.0 * q * q
        g1 = 2.0 * q / (SQRT_PI * math.sqrt(D))
        g3 = -4.0 * q**3 / (SQRT_6PI * D**1.5)
        return g1 * g3 * weight(q)

    def f33(q):
        D = 1.0 + two_sw2 + 2.0 * q * q
        g3 = -4.0 * q**3 / (SQRT_6PI * D**1.5)
        return g3 * g3 * weight(q)

    nwarn = 0
    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", integrate.IntegrationWarning)
        for f in (f0, f11, f13, f33):
            main, _ = integrate.quad(f, 0.0, q_hi, points=pts, epsabs=0.0, epsrel=QUAD_EPSREL,
                                     limit=QUAD_LIMIT)
            tail, _ = integrate.quad(f, q_hi, np.inf, epsabs=0.0, epsrel=QUAD_EPSREL, limit=QUAD_LIMIT)
            out.append(main + tail)
        nwarn = sum(issubclass(w.category, integrate.IntegrationWarning) for w in caught)
    Z = out[0]
    return out[1] / Z, out[2] / Z, out[3] / Z, nwarn


def _setup(N, n, d, s2, sa2, sw2, eps):
    N, n, d, s2, sa2, sw2, eps = map(float, (N, n, d, s2, sa2, sw2, eps))
    u = n * n * sa2 / (s2 * s2 * d * N)
    lam = s2 / n
    yhat = np.array([1.0, SQRT6 * eps])

    def kernel(v):
        m11, m13, m33, w = _moments(v, d, u, sw2)
        return sa2 * np.array([[m11, m13], [m13, m33]]), w

    return lam, yhat, kernel


def solve_point(N, n, d, s2, sa2, sw2, eps, *, tol=1e-10, alpha=0.5, maxiter=20000, v0=None):
    """Finite-d self-consistent (b, c) for one parameter point by damped fixed-point iteration.

    v <- v + alpha (T(v) - v),  T(v) = (s2/n) (Qt(v) + (s2/n) I)^{-1} yhat,  from v0 = yhat
    (b = 1, c = eps) unless given.  Stops when |yhat - (I + (n/s2) Qt(v)) v| < tol.

    Returns dict(b, c, iterations, residual, converged, quad_warnings)."""
    lam, yhat, kernel = _setup(N, n, d, s2, sa2, sw2, eps)
    v = yhat.copy() if v0 is None else np.asarray(v0, dtype=float).copy()
    a = alpha
    res_prev = np.inf
    nwarn = 0
    it = 0
    converged = False
    res = np.inf
    while it < maxiter:
        Qt, w = kernel(v)
        nwarn += w
        res = float(np.linalg.norm(yhat - v - Qt @ v / lam))
        if res < tol:
            converged = True
            break
        if res > res_prev:
            a = max(0.5 * a, 1e-6)
        else:
            a = min(alpha, 1.05 * a)
        res_prev = res
        v_new = lam * np.linalg.solve(Qt + lam * np.eye(2), yhat)
        v = v + a * (v_new - v)
        it += 1
    return dict(b=float(v[0]), c=float(v[1] / SQRT6), iterations=it, residual=res, converged=converged,
                quad_warnings=nwarn)


def solve_point_root(N, n, d, s2, sa2, sw2, eps, *, tol=1e-10):
    """Secondary baseline: ``scipy.optimize.root(method="hybr")`` (MINPACK Powell hybrid, finite-
    difference Jacobian) on the same residual yhat - (I + (n/s2) Qt(v)) v with the same quadrature,
    from v = yhat.  If it does not reach ``tol`` (it can stall in the mixed phase at large d), the
    damped iteration of :func:`solve_point` takes over from where it stopped.

    Returns the same dict, iterations counting residual evaluations, plus ``fallback``."""
    from scipy import optimize

    lam, yhat, kernel = _setup(N, n, d, s2, sa2, sw2, eps)
    count = [0, 0]

    def F(v):
        Qt, w = kernel(v)
        count[0] += 1
        count[1] += w
        return yhat - v - Qt @ v / lam

    sol = optimize.root(F, yhat.copy(), method="hybr", options=dict(xtol=1e-13))
    v = sol.x
    res = float(np.linalg.norm(F(v)))
    if np.all(np.isfinite(v)) and res < tol:
        return dict(b=float(v[0]), c=float(v[1] / SQRT6), iterations=count[0], residual=res,
                    converged=True, quad_warnings=count[1], fallback=False)
    out = solve_point(N, n, d, s2, sa2, sw2, eps, tol=tol, v0=v if np.all(np.isfinite(v)) else None)
    out["iterations"] += count[0]
    out["quad_warnings"] += count[1]
    out["fallback"] = True
    return out


if __name__ == "__main__":  # quick look at the paper's configuration (beta = 1 and beta = 64)
    import time

    for beta in (1.0, 64.0):
        sb = math.sqrt(beta)
        for solver in (solve_point, solve_point_root):
            t = time.perf_counter()
            r = solver(700 * beta, 3000 * beta, 150 * sb, 0.14, 8 / 700 / sb, 0.5, -0.3)
            print(f"{solver.__name__} beta={beta:g}: b={r['b']:.10f} c/eps={r['c'] / -0.3:.10f} "
                  f"it={r['iterations']} res={r['residual']:.2e} warn={r['quad_warnings']} "
                  f"({time.perf_counter() - t:.2f} s)")
