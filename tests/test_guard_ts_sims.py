"""Guards for the teacher-student simulation's observables (issue 16, mutation check).

Each test compares an observable of :mod:`grokphase.sims.teacher_student` with an independent
computation from THEORY.md §3, at small sizes, with a tolerance justified by its numerics:

* the population projections <f, Hhat1>, <f, Hhat3> of a random network against a 2-D Gauss-Hermite
  quadrature of E_x[f(x) Hhat_k(w*.x)] (for one neuron w.x = q s + r z with s = w*.x, z independent
  standard normals, r = |w_perp|): the integrand is entire, so the quadrature error is at rounding
  level, checked by comparing two quadrature orders;
* the recorded train and test MSE against a NumPy recomputation of the network's outputs and the
  teacher's targets y = H1(w*.x) + eps H3(w*.x) from the data (exact up to rounding);
* the Table-1 scaling of a simulation (``TeacherStudentSim.from_scaling``): u = n^2 sa2/(s2^2 d N) and
  r = s2 N/n, computed here from the simulated sizes and s2 values, stay invariant for alpha != beta
  (up to the rounding of N, n, d to integers, which the test accounts for exactly).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy.special import erf

import grokphase  # noqa: F401  (float64)
from grokphase.sims.teacher_student import TeacherStudentSim, TSHyper, make_task, population_projections
from grokphase.theory.teacher_student import TeacherStudentParams

SQRT6 = math.sqrt(6.0)


def _hermite_projection(w, a, w_star, order):
    """<f, Hhat1>, <f, Hhat3> of f = sum_i a_i erf(w_i.x) by Gauss-Hermite quadrature (probabilists'
    weights) over (s, z), w_i.x = q_i s + r_i z."""
    u, wt = np.polynomial.hermite_e.hermegauss(order)
    wt = wt / math.sqrt(2.0 * math.pi)                   # E over N(0, 1)
    s, z = u[:, None], u[None, :]
    W = wt[:, None] * wt[None, :]
    h1, h3 = s, (s**3 - 3.0 * s) / SQRT6                  # Hhat1 = He1, Hhat3 = He3/sqrt(3!)
    p1 = p3 = 0.0
    for i in range(w.shape[1]):
        q = float(w_star @ w[:, i])
        r = math.sqrt(max(float(w[:, i] @ w[:, i]) - q * q, 0.0))
        phi = erf(q * s + r * z)
        p1 += a[i] * np.sum(W * phi * h1)
        p3 += a[i] * np.sum(W * phi * h3)
    return p1, p3


def test_population_projections_equal_gauss_hermite_quadrature():
    """For a random erf network with sizeable overlaps the exact population projections equal the
    Gaussian expectation of f(x) Hhat_k(w*.x).  Tolerance: the two quadrature orders (160, 240) agree
    to 1e-12 relative (asserted), so 1e-10 bounds quadrature and rounding error; a wrong coefficient
    or D misses by O(1)."""
    rng = np.random.default_rng(3)
    d, N = 6, 9
    w_star = rng.normal(size=d)
    w_star /= np.linalg.norm(w_star)
    w = rng.normal(size=(d, N)) * 0.6 + 0.8 * w_star[:, None] * rng.normal(size=N)   # |q| up to ~2
    a = rng.normal(size=N)
    ref_lo = _hermite_projection(w, a, w_star, 160)
    ref = _hermite_projection(w, a, w_star, 240)
    assert np.allclose(ref_lo, ref, rtol=1e-12, atol=0.0)            # the reference is converged
    p1, p3 = (float(v) for v in population_projections(jax.numpy.asarray(w), jax.numpy.asarray(a),
                                                          jax.numpy.asarray(w_star)))
    assert abs(ref[1]) > 0.05 and abs(ref[0]) > 0.05                  # both projections are not tiny
    assert p1 == pytest.approx(ref[0], rel=1e-10)
    assert p3 == pytest.approx(ref[1], rel=1e-10)


def _observe_one(sim: TeacherStudentSim, seed: int = 0):
    """One network's record from the simulation task (float64, jitted: eager dispatch of the many
    small ops costs more than one compile), with its data and weights."""
    task = make_task(sim)
    f64 = lambda v: np.float64(v)  # noqa: E731
    hyper = TSHyper(s2=f64(0.2), sa2=f64(sim.sa2_value), sw2=f64(sim.sw2), eps=f64(sim.eps), lr=f64(sim.lr),
                    weight_decay=f64(0.0))
    data = jax.jit(task.make_data)(jax.random.PRNGKey(seed), hyper)
    # a network with O(1) outputs (any weights will do: the MSE is a function of f and y only)
    rng = np.random.default_rng(seed)
    theta = {"w": rng.normal(size=(sim.d, sim.N)) * 0.5, "a": rng.normal(size=sim.N) * 0.7}
    accum = jax.jit(task.init_accum)(theta, data, hyper)
    record, _ = jax.jit(task.observe)(theta, data, hyper, accum, np.float64(1.0))
    return record, {k: np.asarray(v) for k, v in data.items()}, theta


def test_recorded_mse_equals_numpy_recomputation():
    """train_mse and test_mse are the mean over examples of (f(x) - y)^2, with f = sum_i a_i erf(w_i.x)
    and y = H1(w*.x) + eps H3(w*.x) recomputed here from x and w*.  Exact up to rounding (1e-10)."""
    sim = TeacherStudentSim(N=12, n=40, d=5, n_test=60, s2=(0.2,), eps=-0.7, dtype="float64")
    record, data, theta = _observe_one(sim)

    def mse(x):
        s = x @ data["w_star"]
        y = s + sim.eps * (s**3 - 3.0 * s)
        f = erf(x @ theta["w"]) @ theta["a"]
        return float(np.mean((f - y) ** 2))

    assert float(record["train_mse"]) == pytest.approx(mse(data["x"]), rel=1e-10)
    assert float(record["test_mse"]) == pytest.approx(mse(data["x_test"]), rel=1e-10)


@pytest.mark.parametrize("alpha,beta", [(0.5, 2.0), (3.0, 0.25), (2.0, 2.0)])
def test_table1_scaling_of_a_simulation_keeps_u_and_r(alpha, beta):
    """Table 1: N -> beta N, d -> sqrt(beta) d, n -> alpha n, sa2 -> sa2/sqrt(beta), s2 -> (alpha/beta) s2
    leaves u = n^2 sa2/(s2^2 d N) and r = s2 N/n invariant (THEORY.md §3).  Computed here from the
    simulation's own integer sizes: with the rounding of N, n, d divided out, u and r must be invariant
    to rounding (1e-12); any other power of alpha or beta in s2 moves them by a factor >= 2^(1/2)."""
    base = TeacherStudentSim(N=700, n=3000, d=150, s2=(0.1, 0.2), sa2=8.0 / 700, sw2=0.5, eps=-0.3)
    params = TeacherStudentParams(N=700.0, n=3000.0, d=150.0, s2=0.1, sa2=8.0 / 700, sw2=0.5, eps=-0.3)
    sim = TeacherStudentSim.from_scaling(params, beta=beta, alpha=alpha, s2=base.s2)
    s2_0 = np.asarray(base.s2)
    s2 = np.asarray(sim.s2)
    # the exact (unrounded) sizes and the integer ones actually simulated
    N_x, n_x, d_x = 700 * beta, 3000 * alpha, 150 * math.sqrt(beta)
    assert (sim.N, sim.n, sim.d) == (round(N_x), round(n_x), round(d_x))
    u0 = base.n**2 * base.sa2_value / (s2_0**2 * base.d * base.N)
    r0 = s2_0 * base.N / base.n
    u = sim.n**2 * sim.sa2_value / (s2**2 * sim.d * sim.N)
    r = s2 * sim.N / sim.n
    rounding_u = (sim.n / n_x) ** 2 / ((sim.d / d_x) * (sim.N / N_x))
    rounding_r = (sim.N / N_x) / (sim.n / n_x)
    np.testing.assert_allclose(u / rounding_u, u0, rtol=1e-12)
    np.testing.assert_allclose(r / rounding_r, r0, rtol=1e-12)
