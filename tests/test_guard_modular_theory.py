"""Guard for the modular theory's finite-P solution (issue 16, mutation check): the package's exact
method against a NumPy/SciPy re-implementation of THEORY.md §4 written from the equations.

Per mode (paper convention), with Phi = |w_k|^2, Psi = |v_k|^2 uniform on [0, inf)^2:

    S_k(Phi, Psi; a) = P [ (Phi + Psi)/2 - u a^2 Phi Psi + (gamma/6)(Phi^3 + Psi^3) ],  u = 2 sa2 P^2/(N s2^2),

lambda(a) = sa2 <Phi Psi>_{e^{-S_k}}, and a solves a = -s2/(lambda(a) + s2); the target component is 1 + a.
Here <Phi Psi> is a tensor Gauss-Legendre quadrature on geometric panels (log-sum-exp weights) and a is
found by Brent's method.  The parameters put the solution in the droplet regime (u a^2 > sqrt(gamma):
the sextic penalty and u both matter; doubling gamma or halving u moves 1 + a by 0.05-0.08).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import logsumexp

import grokphase  # noqa: F401  (float64)
from grokphase.theory import modular as mt


def _moment(a, u, gamma, P, nodes_per_panel):
    """<Phi Psi> under e^{-S_k}: 40 panels from 0, geometric to Phi_max beyond both the droplet saddle
    (<= 2 u a^2/gamma) and the cubic wall, where S exceeds its minimum by far more than 60.  Far from
    the root (|a| near 1, a sharp droplet peak) this is only good to a few per cent, enough for the
    sign of f(a) there; at the root its convergence is asserted by the test."""
    phi_max = 2.0 * u * a * a / gamma + (360.0 / (P * gamma)) ** (1.0 / 3.0) + 5.0
    edges = np.concatenate([[0.0], np.geomspace(1e-3, phi_max, 40)])
    x, w = np.polynomial.legendre.leggauss(nodes_per_panel)
    lo, hi = edges[:-1, None], edges[1:, None]
    phi = ((hi + lo) / 2 + (hi - lo) / 2 * x).ravel()
    logw = np.log(((hi - lo) / 2 * w).ravel())
    F, G = phi[:, None], phi[None, :]
    S = P * (0.5 * (F + G) - u * a * a * F * G + gamma / 6.0 * (F**3 + G**3))
    L = -S + logw[:, None] + logw[None, :]
    return float(np.sum(np.exp(L - logsumexp(L)) * F * G))


def _target_component(N, P, s2, sa2, gamma, nodes_per_panel=12):
    """(1 + a, u, <Phi Psi> at the root with nodes_per_panel and with 16 nodes per panel)."""
    u = 2.0 * sa2 * P * P / (N * s2 * s2)
    f = lambda a: a + s2 / (sa2 * _moment(a, u, gamma, P, nodes_per_panel) + s2)  # noqa: E731
    assert f(-1.0) < 0.0 < f(-1e-12)
    a = brentq(f, -1.0, -1e-12, xtol=1e-14, rtol=1e-14)
    return 1.0 + a, u, _moment(a, u, gamma, P, nodes_per_panel), _moment(a, u, gamma, P, 16)


@pytest.mark.parametrize("N,P,s2,sa2,gamma", [(50, 7, 0.3, 1.0, 1.0), (30, 7, 0.15, 1.0, 0.3)])
def test_exact_solution_equals_independent_quadrature(N, P, s2, sa2, gamma):
    """1 + a of ``solve(..., "exact", convention="paper")`` equals the independent solution to rtol 1e-7:
    the package's quadrature is checked to 1e-6 relative on <Phi Psi> (its 8- vs 4-node rule), which
    moves 1 + a by less than that times |d(1+a)/d log lambda| < 1; the reference's own quadrature
    error at the root is asserted below 1e-10 (12 vs 16 nodes per panel)."""
    ref, u, m12, m16 = _target_component(N, P, s2, sa2, gamma)
    assert m12 == pytest.approx(m16, rel=1e-10)
    assert 0.5 < ref < 1.0                                      # learned, not the GP level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                        # P = 7 is prime; no composite warning expected
        sol = mt.solve(mt.ModularParams(N=N, P=P, s2=s2, sa2=sa2, gamma=gamma), "exact", convention="paper")
    assert float(np.asarray(sol.u)) == pytest.approx(u, rel=1e-12)
    assert float(np.asarray(sol.target_component)) == pytest.approx(ref, rel=1e-7)
    # droplet regime: the non-trivial saddle exists at the solution, so gamma and u both shape it
    a = ref - 1.0
    assert u * a * a > math.sqrt(gamma)
