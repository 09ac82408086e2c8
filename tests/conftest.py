"""Shared fixtures for the theory tests.

The helpers in :class:`Independent` re-derive the teacher-student formulas of THEORY.md §3 in plain
NumPy, written from the equations and not from ``grokphase``, so that tests compare the package with
an independent implementation (closed forms evaluated by scipy quadrature) rather than with itself.
"""

from __future__ import annotations

import os

# before NumPy/SciPy load their OpenBLAS (pytest imports this file before any test module imports
# grokphase, whose own default comes too late once SciPy is loaded): JAX's CPU LAPACK kernels call
# SciPy's OpenBLAS, and a multithreaded one competing with XLA's threads made a Gibbs-readout test
# 3x slower (159 s vs 49 s, tests/test_modular_hysteresis.py, with another process on the second core)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# under pytest-xdist (``make test`` runs one worker per core) every worker is its own JAX process: on a
# GPU machine each would otherwise preallocate 75% of the GPU's memory and all but the first would fail
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# the CLI's persistent XLA cache (grokphase.enable_compilation_cache) stays off in the tests: once an
# in-process CLI test had enabled it, every later compile of the session wrote to ~/.cache, and a
# fresh-clone run aborted inside JAX's cache write (put_executable_and_time, Fatal Python error:
# Aborted) compiling the single-index transition; the tests also must not depend on a user's cache
os.environ["GROKPHASE_CACHE_DIR"] = "off"

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import integrate  # noqa: E402

import grokphase  # noqa: F401,E402  (enables float64 in JAX before any test builds arrays)
from grokphase.theory import teacher_student as ts  # noqa: E402

SQRT6 = math.sqrt(6.0)


class Independent:
    """THEORY.md §3 written out again, in NumPy, for scalar float parameters."""

    @staticmethod
    def g(q, sw2, t=None):
        """Overlaps (g1, g3) of one neuron with Hhat1 = H1, Hhat3 = H3/sqrt6 (App. A.3-A.4):
        g1 = 2q/sqrt(pi D), g3 = -4 q^3/(sqrt(6 pi) D^{3/2}), D = 1 + 2(q^2 + t); t = |w_perp|^2,
        concentrated at sw2 unless given."""
        q = np.asarray(q, dtype=float)
        t = sw2 if t is None else t
        D = 1.0 + 2.0 * (q * q + t)
        return 2.0 * q / np.sqrt(np.pi * D), -4.0 * q**3 / (np.sqrt(6.0 * np.pi) * D**1.5)

    @staticmethod
    def shat(q, b, c, u, sw2):
        """Shat(q) = S(q)/d = q^2/(2 sw2) - (2u/pi)(q^2/D)(b - 2c q^2/D)^2, D = 1 + 2(sw2 + q^2)."""
        q = np.asarray(q, dtype=float)
        D = 1.0 + 2.0 * (sw2 + q * q)
        x = q * q / D
        return q * q / (2.0 * sw2) - (2.0 * u / np.pi) * x * (b - 2.0 * c * x) ** 2

    @staticmethod
    def scalar(params: ts.TeacherStudentParams, i=None) -> dict:
        """Plain floats (N, n, d, s2, sa2, sw2, eps, u, r) of a scalar point or of point i of a batch."""
        p = params.broadcast()
        out = {k: float(np.asarray(getattr(p, k)).reshape(-1)[0 if i is None else i]) for k in ts.PARAM_NAMES}
        out["u"] = out["n"] ** 2 * out["sa2"] / (out["s2"] ** 2 * out["d"] * out["N"])
        out["r"] = out["s2"] * out["N"] / out["n"]
        return out

    @classmethod
    def kernel_by_quad(cls, b, c, p: dict, epsrel=1e-13):
        """Qt = sa2 <g g^T> over p(q) ∝ exp(-S(q; b, c)), by adaptive quadrature (scipy.quad).

        p(q) is even, so the integrals run over q >= 0.  The extrema of S (found on a dense grid) are
        passed to quad as break points, and the range stops where S exceeds its minimum by 60
        (e^-60 ~ 1e-26 relative, far below the accuracy asked for)."""
        d, u, sw2, sa2 = p["d"], p["u"], p["sw2"], p["sa2"]
        S = lambda q: d * cls.shat(q, b, c, u, sw2)  # noqa: E731
        grid = np.linspace(0.0, 4.0, 40001)
        Sg = S(grid)
        Smin = Sg.min()
        q_hi = grid[np.nonzero(Sg - Smin < 60.0)[0][-1] + 1]
        dS = np.diff(Sg)
        turning = grid[1:-1][np.sign(dS[:-1]) != np.sign(dS[1:])]
        points = [x for x in turning if 0.0 < x < q_hi]

        def moment(f):
            val, _ = integrate.quad(lambda q: np.exp(Smin - S(q)) * f(q), 0.0, q_hi, points=points or None,
                                    epsabs=0.0, epsrel=epsrel, limit=500)
            return val

        g1 = lambda q: cls.g(q, sw2)[0]  # noqa: E731
        g3 = lambda q: cls.g(q, sw2)[1]  # noqa: E731
        z = moment(lambda q: 1.0)
        Q11 = moment(lambda q: g1(q) ** 2) / z
        Q13 = moment(lambda q: g1(q) * g3(q)) / z
        Q33 = moment(lambda q: g3(q) ** 2) / z
        return sa2 * np.array([[Q11, Q13], [Q13, Q33]])

    @staticmethod
    def ek_discrepancy(Q, p: dict):
        """EK self-consistency (App. A.3 with the factor s2/n): [b, sqrt6 c] = lam (Q + lam I)^{-1} yhat,
        lam = s2/n, yhat = [1, sqrt6 eps].  Returns (b, c)."""
        lam = p["s2"] / p["n"]
        v = lam * np.linalg.solve(Q + lam * np.eye(2), np.array([1.0, SQRT6 * p["eps"]]))
        return v[0], v[1] / SQRT6


@pytest.fixture(scope="session")
def indep():
    return Independent


@pytest.fixture(scope="session")
def paper():
    """The paper's configuration at beta = 1 (App. C): N=700, n=3000, d=150, sa2=8/N, sw2=0.5, eps=-0.3."""
    return ts.TeacherStudentParams(N=700.0, n=3000.0, d=150.0, s2=0.14, sa2=None, sw2=0.5, eps=-0.3)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module.  The whole suite runs in one process and
    compiles well over a thousand XLA programs; kept alive to the end, their code mappings approach the
    kernel's limit (vm.max_map_count = 65530 here) and the fresh-clone run crashed inside XLA's CPU
    compiler at the same test twice (a segmentation fault, and an abort in the cache write before it)."""
    yield
    import gc

    import jax
    jax.clear_caches()
    gc.collect()
