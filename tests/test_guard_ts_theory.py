"""Guards for the teacher-student theory and its GP baseline (issue 16, mutation check).

The references are computed here from the definitions, not from the package's formulas:

* the overlaps g_k(q, t) = E[erf(h) Hhat_k(s)], h = q s + sqrt(t) z (THEORY.md §6), by 2-D Gauss-Hermite
  quadrature of the expectation itself (no closed form used);
* the prior moments E[g g^T] over one neuron drawn from the prior, q ~ N(0, s), t = |w_perp|^2 ~ s chi^2_{d-1},
  s = sw2/d (the exact |w_perp|^2 law, THEORY.md §3b), by scipy quadrature over t (chi^2 density)
  and Gauss-Hermite over q, with the overlaps written out from THEORY.md §3.  They are the u -> 0 limit
  of the exact (q, t) theory's kernel Qt = sa2 <g g^T> and, times sa2, the exact NNGP Rayleigh
  quotients lambda1, lambda3, lambda13 of the erf kernel: <Hhat_j, K Hhat_k> with
  K(x, x') = sa2 E_w[erf(w.x) erf(w.x')] is sa2 E_w[g_j(w) g_k(w)], the kernel's Hermite coefficients;
* the Table-1 scaling: u = n^2 sa2/(s2^2 d N) and r = s2 N/n computed here from the scaled fields.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import erf

import grokphase  # noqa: F401  (float64)
from grokphase.theory import gp
from grokphase.theory import teacher_student as ts

SQRT6 = math.sqrt(6.0)


@pytest.mark.parametrize("alpha,beta", [(0.5, 2.0), (4.0, 0.25), (2.0, 2.0)])
def test_table1_scaling_keeps_u_and_r(alpha, beta):
    """params.scaled(alpha, beta) (Table 1, eq. 11) leaves u = n^2 sa2/(s2^2 d N) and r = s2 N/n, computed
    here from the scaled fields, invariant to rounding; and the theory's own u agrees with that formula."""
    p = ts.TeacherStudentParams(N=700.0, n=3000.0, d=150.0, s2=0.14, sa2=8.0 / 700.0, sw2=0.5, eps=-0.3)
    q = p.scaled(alpha, beta)

    def u_r(x):
        N, n, d, s2, sa2 = (float(np.asarray(getattr(x, k))) for k in ("N", "n", "d", "s2", "sa2"))
        return n * n * sa2 / (s2 * s2 * d * N), s2 * N / n

    (u0, r0), (u1, r1) = u_r(p), u_r(q)
    assert (float(q.N), float(q.n)) == pytest.approx((700.0 * beta, 3000.0 * alpha), rel=1e-15)
    assert u1 == pytest.approx(u0, rel=1e-12)
    assert r1 == pytest.approx(r0, rel=1e-12)
    assert float(np.asarray(q.u)) == pytest.approx(u1, rel=1e-12)


def _overlaps_by_quadrature(q, t, order=200):
    """(g1, g3) = E[erf(q s + sqrt(t) z) (He1(s), He3(s)/sqrt6)] by Gauss-Hermite in (s, z)."""
    u, wt = np.polynomial.hermite_e.hermegauss(order)
    wt = wt / math.sqrt(2.0 * math.pi)
    s, z = u[:, None], u[None, :]
    W = wt[:, None] * wt[None, :]
    phi = erf(q * s + math.sqrt(t) * z)
    return np.sum(W * phi * s), np.sum(W * phi * (s**3 - 3.0 * s) / SQRT6)


@pytest.mark.parametrize("q,t", [(0.3, 0.5), (0.9, 0.2), (1.4, 0.45)])
def test_overlaps_equal_the_gaussian_expectation(q, t):
    """g1, g3 of one neuron equal E[erf(w.x) Hhat_k(w*.x)] (rtol 1e-9: the quadrature at orders 160 and
    200 agrees to 1e-12, asserted)."""
    ref = _overlaps_by_quadrature(q, t, 200)
    assert np.allclose(_overlaps_by_quadrature(q, t, 160), ref, rtol=1e-12, atol=0.0)
    g = np.asarray(ts.overlaps(np.float64(q), 0.5, np.float64(t)))
    np.testing.assert_allclose(g, ref, rtol=1e-9)


def _prior_moments(d, sw2):
    """E[g1^2], E[g3^2], E[g1 g3] for q ~ N(0, s), t ~ s chi^2_{d-1}, s = sw2/d, with
    g1 = 2q/sqrt(pi D), g3 = -4q^3/(sqrt(6 pi) D^{3/2}), D = 1 + 2(q^2 + t) (THEORY.md §3)."""
    s = sw2 / d
    u, wt = np.polynomial.hermite_e.hermegauss(120)
    wt = wt / math.sqrt(2.0 * math.pi)
    q = math.sqrt(s) * u

    def inner(t, which):
        D = 1.0 + 2.0 * (q * q + t)
        g1 = 2.0 * q / np.sqrt(np.pi * D)
        g3 = -4.0 * q**3 / (np.sqrt(6.0 * np.pi) * D**1.5)
        val = {"11": g1 * g1, "33": g3 * g3, "13": g1 * g3}[which]
        return np.sum(wt * val) * stats.chi2.pdf(t / s, d - 1) / s

    out = {}
    for k in ("11", "33", "13"):
        out[k], _ = integrate.quad(inner, 0.0, np.inf, args=(k,), epsabs=0.0, epsrel=1e-12, limit=400)
    return out


@pytest.mark.parametrize("d", [10, 40])
def test_gp_rayleigh_quotients_equal_the_prior_moments_of_the_overlaps(d):
    """lambda_jk = sa2 E_w[g_j g_k] (the NNGP kernel's Hermite coefficients on Hhat1, Hhat3).  rtol 1e-9:
    adaptive quadrature at epsrel 1e-12 against a 96-node Gauss-Laguerre rule; an O(1/d) error in an
    exponent (-(d+6)/2) or a wrong prefactor moves lambda3 by >= 20 % at d = 10."""
    sa2, sw2 = 0.7, 0.5
    ref = _prior_moments(d, sw2)
    lam = gp.rayleigh_quotients(float(d), sa2, sw2)
    assert float(lam.lambda1) == pytest.approx(sa2 * ref["11"], rel=1e-9)
    assert float(lam.lambda3) == pytest.approx(sa2 * ref["33"], rel=1e-9)
    assert float(lam.lambda13) == pytest.approx(sa2 * ref["13"], rel=1e-9)


def test_exact_theory_kernel_at_vanishing_u_is_the_prior_moment():
    """At u -> 0 the exact (q, t) theory's p(q, t) is the prior (t^{(d-3)/2} e^{-d t/(2 sw2)} for t), so its
    kernel Qt/sa2 (``prior_kernel``, on the solver's own q- and t-rules) equals the prior moments
    E[g g^T] above.  At d = 8 a wrong power of t moves <t> by 2/(d-1) ~ 30 % and Qt by several per
    cent; the solver's trapezoid rules are spectrally accurate (half-grid check 1e-5 on log z, errors
    ~exp(-2 pi^2 sigma^2/h^2) far below it), so rtol 1e-7 leaves room only for quadrature error."""
    d, sw2, sa2 = 8, 0.5, 0.4                 # one size: one compile of the solver's grids
    Q = np.asarray(ts.prior_kernel(ts.TeacherStudentParams(d=float(d), sa2=sa2, sw2=sw2), "exact")) / sa2
    ref = _prior_moments(d, sw2)
    np.testing.assert_allclose([Q[0, 0], Q[1, 1], Q[0, 1]], [ref["11"], ref["33"], ref["13"]], rtol=1e-7)
