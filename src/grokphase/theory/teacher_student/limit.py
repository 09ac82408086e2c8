"""The scaling limit of the teacher-student theory (eq. 11, Table 1, App. A.1; THEORY.md §3, §3b):
alpha, beta -> infinity at fixed u, r.  The GFL branch, the degeneracy of the droplet minima with
q = 0 (Claim IV) and the GMFL-I mixed branch with the degeneracy pinned, in both approximations."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.theory.batching import flatten, padded, take, to_float64, unpad
from grokphase.theory.roots import bisect, scan_roots
from grokphase.theory.status import Phase, Status, raise_on_failure
from grokphase.theory.teacher_student.finite_d import FAILURE_HINTS
from grokphase.theory.teacher_student.params import (
    DEFAULT_APPROXIMATION,
    TeacherStudentParams,
    check_approximation,
)


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


def _mixed_branch(u, r, sw2, eps, mirror: bool = False):
    """GMFL-I: unknowns (b, c, pi1, q*) with Shat(q*) = Shat'(q*) = 0 and
    [b, sqrt6 c] = (I + M)^{-1} [1, sqrt6 eps], M = u r [c0/kappa(b) e1 e1^T + pi1 g(q*) g(q*)^T].

    The degeneracy gives b in closed form from c: |b - c|^3/|c| = K_u = 27 pi (1+2sw2)/(16 u sw2),
    and x* = q*^2/D = (b + 2c)/(6c); using g3/g1 = -2x*/sqrt6 the second row reduces to the scalar
    equation R(c) = c - eps - (x*/3)(1 - b(1 + u r c0/kappa(b))) = 0 on c in [eps, -sqrt(K_u/27)),
    where R(eps) < 0 above the transition and R > 0 as x* -> 0.  b may turn slightly negative at
    very large u (the droplets' g1 g3 coupling makes the linear part overshoot).  This is the
    paper's case eps < 0; ok = False for eps >= 0.

    ``mirror=True`` (static) solves eps > 0 instead, the mirror image: g3/g1 < 0 for every neuron,
    so a droplet neuron can help the cubic part only with a readout of the opposite sign to the
    linear discrepancy (b - 2cx* < 0), trading linear for cubic: b - c = -cbrt(Ku c), c in
    (sqrt(Ku/27), eps]; ok = False for eps <= 0.  (eps = 0 has no droplet branch: m is maximal at
    x = 0.)  The two are separate programs so that eps < 0 keeps its exact bits."""
    c0 = 2.0 / (jnp.pi * (1.0 + 2.0 * sw2))
    Ku = 27.0 * jnp.pi * (1.0 + 2.0 * sw2) / (16.0 * u * sw2)

    def parts(c):
        if mirror:
            b = c - jnp.cbrt(Ku * c)
        else:
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
    if mirror:
        c_end = jnp.sqrt(Ku / 27.0) * (1.0 + 1e-5)
        ok = (eps > 0.0) & (c_end < eps)
        lo = jnp.where(ok, eps, 1.0)
        hi = jnp.where(ok, c_end, 0.5)
    else:
        c_end = -jnp.sqrt(Ku / 27.0) * (1.0 + 1e-5)
        ok = (eps < 0.0) & (c_end > eps)
        lo = jnp.where(ok, eps, -1.0)
        hi = jnp.where(ok, c_end, -0.5)
    # Only kappa(b) > 0 is physical (then x* is the global maximum of m and the bulk is stable);
    # at large u, R also vanishes where kappa < 0.  Bisect every sign change of kappa*R on a scan,
    # keep the roots with kappa > 0 and pi1 >= 0, and take the one nearest c = eps (continuation
    # from the transition).
    cs = lo + (hi - lo) * jnp.linspace(0.0, 1.0, _MIXED_SCAN)
    roots, found = scan_roots(R_kappa, cs, _MIXED_CANDIDATES)
    bs, xss, kaps = parts(roots)
    q_s, D_s = _q_from_x(xss, sw2)
    pis = (1.0 - bs * (1.0 + u * r * c0 / kaps)) / (u * r * 4.0 * q_s**2 / (jnp.pi * D_s) * 2.0 / 3.0 * (bs - roots))
    valid = found & (kaps > 0.0) & (pis >= 0.0) & jnp.isfinite(pis) & (xss > 0.0) & (xss < 0.5)
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


def _mixed_branch_exact(u, r, sw2, eps, mirror: bool = False):
    """GMFL-I of the exact scaling limit: unknowns (b, c, pi1, x*) with Delta(x*) = Delta'(x*) = 0 and
    [b, sqrt6 c] = (I + M)^{-1}[1, sqrt6 eps], M = u r [c0/kappa(b) e1 e1^T + pi1 g g^T], g = g(q*, t*).

    The degeneracy is solved in closed form along x: y = b - 2cx = sqrt(pi R(x)/(2u)) (Delta = 0),
    y - 4cx = pi P'(x)/(2u y) (Delta' = 0).  As in the concentrated branch g3/g1 = -2x/sqrt6 and
    g1^2 = 4x/pi, so the second row is the scalar equation c - eps - (x/3)(1 - b(1 + u r c0/kappa)) = 0,
    solved for x on a scan with bisection; roots must have kappa > 0, pi1 >= 0 and x* a global
    minimum of Delta (Lambda <= 1); the one with c nearest eps (continuation from the transition)
    is taken.  y > 0 here (eps < 0); ``mirror=True`` (static) takes y < 0, the droplets of eps > 0
    (see :func:`_mixed_branch`)."""
    c0 = 2.0 / (jnp.pi * (1.0 + 2.0 * sw2))

    def parts(x):
        y = jnp.sqrt(jnp.pi * _prior_cost_ratio(x, sw2) / (2.0 * u))
        if mirror:
            y = -y
        c = (y - jnp.pi * _prior_cost_slope(x, sw2) / (2.0 * u * y)) / (4.0 * x)
        b = y + 2.0 * c * x
        return b, c, _kappa(b, u, sw2), y

    def R_kappa(x):
        b, c, kap, _ = parts(x)
        return kap * (c - eps) - x / 3.0 * (kap - b * (kap + u * r * c0))

    xs = 1e-3 + (0.5 - 2e-3) * jnp.linspace(0.0, 1.0, _MIXED_SCAN)
    roots, found = scan_roots(R_kappa, xs, _MIXED_CANDIDATES)
    bs, cs, kaps, ys = parts(roots)
    pis = (1.0 - bs * (1.0 + u * r * c0 / kaps)) / (u * r * (4.0 * roots / jnp.pi) * ys)
    lam, _ = jax.vmap(lambda b_, c_: degeneracy_ratio_exact(b_, c_, u, sw2))(bs, cs)
    valid = (found & (kaps > 0.0) & (pis >= 0.0) & jnp.isfinite(pis) & (lam <= 1.0 + 1e-8)
             & ((ys < 0.0) if mirror else (ys > 0.0)))
    ok = jnp.any(valid) & ((eps > 0.0) if mirror else (eps < 0.0))
    j = jnp.argmin(jnp.where(valid, jnp.abs(cs - eps), jnp.inf))
    x = roots[j]
    q_star, t_star, _ = _q_t_from_x_exact(x, sw2)
    return bs[j], cs[j], pis[j], q_star, t_star, kaps[j], ok


def _limit_point(u, r, sw2, eps, d, exact: bool = False, mirror: bool = False):
    """One point of the scaling limit; ``mirror`` (static) selects the GMFL-I branch of eps > 0."""
    b_g = gfl_b(u, r, sw2)
    if exact:
        lam, x_g = degeneracy_ratio_exact(b_g, eps, u, sw2)
        bm, cm, pi1, qm, tm, kapm, ok = _mixed_branch_exact(u, r, sw2, eps, mirror)
        q_g, t_g, _ = _q_t_from_x_exact(x_g, sw2)
    else:
        lam = degeneracy_ratio(b_g, eps, u, sw2)
        bm, cm, pi1, qm, kapm, ok = _mixed_branch(u, r, sw2, eps, mirror)
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
    """Scaling-limit solution at one parameter point (pure, jit/vmap-compatible, never raises).

    Either sign of eps: both GMFL-I branches (eps < 0 and its mirror image eps > 0) are evaluated
    and the one of eps's sign is selected."""
    exact = check_approximation(approximation) == "exact"
    p = to_float64(params)
    neg = _limit_point(p.u, p.r, p.sw2, p.eps, p.d, exact)
    pos = _limit_point(p.u, p.r, p.sw2, p.eps, p.d, exact, mirror=True)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(p.eps > 0.0, b, a), neg, pos)


@jax.jit(static_argnames=("approximation", "mirror"))
def solve_limit_batch(params: TeacherStudentParams, approximation: str = DEFAULT_APPROXIMATION,
                      mirror: bool = False) -> LimitSolution:
    """jit(vmap) of the scaling-limit solver over 1-D parameter arrays (never raises).  The GMFL-I
    branch is that of eps < 0, or with ``mirror=True`` that of eps > 0 (:func:`solve_limit` picks
    per point); on the other sign a GMFL-I point gets status NO_BRANCH."""
    exact = check_approximation(approximation) == "exact"
    p = to_float64(params)
    return jax.vmap(lambda *a: _limit_point(*a, exact, mirror))(p.u, p.r, p.sw2, p.eps, p.d)


def solve_limit(params: TeacherStudentParams, *, approximation: str = DEFAULT_APPROXIMATION,
                check: bool = True) -> LimitSolution:
    """Scaling-limit solution at every point of ``params`` (any broadcast shape).

    Depends on the parameters only through (u, r, sw2, eps), so it is exactly invariant under the
    Table-1 scaling; ``droplet_fraction = pi1/d`` uses the given d.  Any sign of eps: the points
    with eps > 0 are solved with the mirrored GMFL-I branch (droplets that trade linear for cubic),
    in a separate batch; eps = 0 is always GFL (c = 0, cubic_learned NaN)."""
    check_approximation(approximation)
    shape, flat = flatten(params)
    positive = np.asarray(flat.eps) > 0.0
    parts = []
    for mirror, idx in ((False, np.flatnonzero(~positive)), (True, np.flatnonzero(positive))):
        if idx.size:
            sub = take(flat, idx)
            padded_sub, m = padded(sub)
            parts.append((idx, unpad(LimitSolution(*jax.device_get(solve_limit_batch(padded_sub, approximation,
                                                                                     mirror))), m)))
    M = positive.size
    if len(parts) == 1:
        sol = parts[0][1]
    else:
        fields = []
        for i in range(len(LimitSolution._fields)):
            out = np.empty((M,) + parts[0][1][i].shape[1:], dtype=parts[0][1][i].dtype)
            for idx, part in parts:
                out[idx] = part[i]
            fields.append(out)
        sol = LimitSolution(*fields)
    sol = unpad(sol, M, shape)
    if check:
        raise_on_failure(sol.status, flat, f"scaling-limit ({approximation})", FAILURE_HINTS)
    return sol
