"""The fast exact (q, t) solver (issue 18) against its plain definition: the Newton solve that starts
on the nested coarse rule and the one-pass a-posteriori checks must give what the plain solver gives
on the same (q, log t) trapezoid rule (THEORY.md §3b) -- Newton from v = 0 on the full rule, the
half-rule checks evaluated on the half rules themselves, S(q) and the mean t by explicit sums.

Every comparison here is against a computation that does not share the code path it checks (the
half rules are built by slicing and evaluated with ``_evaluate_grid``; S(q), the density and the
mean t are recomputed in NumPy from the grid).  Cost: four compiled point solvers (K = 129, J = 81,
two chunkings, density; 17 x 9).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp as np_lse

from grokphase.theory import teacher_student as ts
from grokphase.theory.batching import flatten, to_float64
from grokphase.theory.teacher_student import finite_d as fd
from grokphase.theory.teacher_student import quadrature as qd

SQRT6 = math.sqrt(6.0)
K, J = 129, 81      # the solver's own sizes at these points (point_grid_sizes, t_grid_size)


def _points(paper):
    """GMFL-I with droplets (beta = 1, s2 = 0.14), GFL (0.3), a wide network (weak interaction: the
    log1p branch) and a small d (20)."""
    return [paper, paper.replace(s2=0.3), paper.replace(N=1e9), paper.replace(d=20.0, s2=0.2)]


@pytest.fixture(scope="module")
def solved(paper):
    pts = _points(paper)
    P = flatten(ts.TeacherStudentParams(**{k: np.array([float(getattr(p, k)) for p in pts]) for k in ts.PARAM_NAMES}))[1]
    out = {}
    for chunk in (1, None):
        out[chunk] = ts.solve_finite_d_batch(P, K, chunk=chunk, approximation="exact", t_size=J)
    return pts, P, out


def _plain(p):
    """The plain solver on the same rule: Newton from v = 0 on the full grid (no coarse stage)."""
    pj = to_float64(p)
    grid = qd._grid(pj, K, J, 0, True)
    st = fd._newton(fd._grid_evaluator(pj, grid), jnp.zeros(2), ts._yhat(pj.eps), pj.r, 100)
    return np.asarray(st.v), int(st.status)


def test_staged_newton_equals_newton_from_zero(solved):
    """The coarse stage only moves the starting point: v = [b, sqrt6 c] is the full rule's maximiser
    to Newton's tolerance (1e-13 relative), whatever the start."""
    pts, _, out = solved
    sol = out[1]
    for i, p in enumerate(pts):
        v, status = _plain(p)
        assert status == ts.Status.CONVERGED and sol.status[i] == ts.Status.CONVERGED, (i, status, sol.status[i])
        np.testing.assert_allclose([sol.b[i], SQRT6 * sol.c[i]], v, rtol=0, atol=1e-12)


def test_chunkings_agree(solved):
    """One point at a time (the CPU default: true branches) and the whole batch vmapped (both branches
    of the weak-interaction cond evaluated, the accelerator default) give the same solution to rounding."""
    _, _, out = solved
    for chunk in (None,):
        for name in ("b", "c", "free_energy", "droplet_fraction", "quad_error", "t_droplet", "t_bulk"):
            a, b = np.asarray(getattr(out[1], name)), np.asarray(getattr(out[chunk], name))
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, equal_nan=True, err_msg=f"{name} chunk {chunk}")
        np.testing.assert_array_equal(out[1].status, out[chunk].status)


def test_one_pass_checks_equal_half_rule_evaluations(solved):
    """quad_error from the partial sums of one pass equals max |log z - log z_half|, |Qt - Qt_half|/|Qt|
    over the two half rules (every other q-node; every other t-node) evaluated as rules of their own."""
    pts, _, out = solved
    sol = out[1]
    ev = jax.jit(lambda v, p, grid: ts._evaluate_grid(v, p, grid)[3:])
    for i, p in enumerate(pts):
        pj = to_float64(p)
        grid = qd._grid(pj, K, J, 0, True)
        v = jnp.array([sol.b[i], SQRT6 * sol.c[i]])
        Q, logz = ev(v, pj, grid)
        errs = []
        for half in (qd._subgrid(grid, 2, 1), qd._subgrid(grid, 1, 2)):
            Qh, lzh = ev(v, pj, half)
            errs += [abs(float(logz - lzh)), float(jnp.max(jnp.abs(Q - Qh)) / jnp.max(jnp.abs(Q)))]
        assert abs(max(errs) - sol.quad_error[i]) <= 1e-12 + 1e-9 * max(errs), (i, max(errs), sol.quad_error[i])


def test_too_coarse_rule_is_flagged_unresolved(paper):
    """The one-pass checks keep their teeth: a 17 x 9 rule at the droplet point fails them (UNRESOLVED,
    half-rule difference far above RESOLUTION_TOL) while 129 x 81 passes (the tests above)."""
    P = flatten(paper)[1]
    coarse = ts.solve_finite_d_batch(P, 17, chunk=1, approximation="exact", t_size=9)
    assert int(coarse.status[0]) == ts.Status.UNRESOLVED and float(coarse.quad_error[0]) > 1e3 * ts.RESOLUTION_TOL


def test_density_and_mean_t_from_explicit_sums(paper):
    """log p(q) (the t-marginal), the normaliser and the mean t of droplet and bulk neurons equal an
    independent NumPy evaluation on the same rule at the solver's own (b, c)."""
    sol = jax.jit(lambda p: ts.solve_finite_d_point(p, K, density=True, approximation="exact", t_size=J))(paper)
    pj = to_float64(paper)
    grid = qd._grid(pj, K, J, 0, True)
    q, t = np.asarray(grid.q), np.asarray(grid.t)
    logw_q, logw_t = np.asarray(grid.logw_q), np.asarray(grid.logw_t)
    d, sw2, ud = float(paper.d), float(paper.sw2), float(paper.u) * float(paper.d)
    s_ = np.log(t / (sw2 * (d - 1.0) / d))
    D = 1.0 + 2.0 * (q[:, None] ** 2 + t[None, :])
    g1 = 2.0 * q[:, None] / np.sqrt(np.pi * D)
    g3 = -4.0 * q[:, None] ** 3 / (np.sqrt(6.0 * np.pi) * D**1.5)
    vg = float(sol.b) * g1 + SQRT6 * float(sol.c) * g3
    L = -d * q[:, None] ** 2 / (2.0 * sw2) + 0.5 * (d - 1.0) * (s_ - np.exp(s_))[None, :] + 0.5 * ud * vg**2
    S = -np_lse(L + logw_t[None, :], axis=1)
    log_norm = np_lse(-S + logw_q) + math.log(2.0)
    assert abs(float(sol.log_norm) - log_norm) < 1e-10 * max(1.0, abs(log_norm))
    np.testing.assert_allclose(np.asarray(sol.log_p)[K - 1:], -S - log_norm, rtol=0, atol=1e-9)
    # mean t split at the droplet barrier node (half weight there), as FiniteDSolution documents
    assert float(sol.droplet_fraction) > 0
    # the barrier node: the first local maximum of S on q > 0
    dS = np.diff(S)
    k_bar = int(np.flatnonzero((dS[:-1] > 0) & (dS[1:] <= 0))[0]) + 1
    wk = np.where(np.arange(K) == k_bar, 0.5, 1.0) * (np.arange(K) >= k_bar)
    lw = L + logw_t[None, :] + logw_q[:, None]
    for w, got in ((wk, sol.t_droplet), (1.0 - wk, sol.t_bulk)):
        W = np.broadcast_to(w[:, None], lw.shape)
        want = math.exp(np_lse(lw + np.log(t)[None, :], b=W) - np_lse(lw, b=W))
        assert abs(float(got) - want) < 1e-11, (float(got), want)
    assert float(sol.t_droplet) < 0.45 < float(sol.t_bulk)   # droplets sit at lower |w_perp|^2
