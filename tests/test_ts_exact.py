"""Physics tests of the exact two-variable teacher-student theory (THEORY.md §3b): t = |w_perp|^2 is
integrated instead of fixed at sw2 (``approximation="exact"``, the package default), next to the
paper's concentrated reduction (``approximation="concentrated"``, tested in
tests/test_teacher_student_theory.py).

Cost: every finite-d solve in this file goes through two compiled executables (one per
approximation, q-grid 513 and, exact, t-grid 113 nodes); the module-scoped fixture solves all
points in one batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokphase.theory import gp
from grokphase.theory import teacher_student as ts

SQRT6 = math.sqrt(6.0)
K = 513           # q-nodes for every finite-d solve here (enough for d = 1200)
J = 113           # t-nodes: t_grid_size at d = 1200 (finer than needed at smaller d)
BETAS = (1.0, 4.0, 16.0, 64.0)
BETA_S2 = (0.14, 0.25)                  # GMFL-I and GFL in the exact scaling limit
WIDE_D = (150.0, 600.0)                 # u -> 0: N = 1e17 with sa2 fixed
GFL_D = (100.0, 400.0, 1600.0)          # small u = 2 in GFL, d quadrupled twice
SA2_FIXED = 8.0 / 700.0


def _stack(points):
    return ts.TeacherStudentParams(**{k: np.array([float(getattr(p, k)) for p in points]) for k in ts.PARAM_NAMES})


def _pick(sol, idx):
    return type(sol)(*[None if a is None else a[idx] for a in sol])


@pytest.fixture(scope="module")
def batch(paper):
    beta_pts = [paper.replace(s2=s2).scaled(beta=beta) for beta in BETAS for s2 in BETA_S2]
    wide = [ts.TeacherStudentParams(N=1e17, n=3000.0, d=d, s2=0.14, sa2=SA2_FIXED, sw2=0.5, eps=-0.3) for d in WIDE_D]
    gfl = [paper.replace(d=d, s2=0.3).with_axis("u", 2.0) for d in GFL_D]
    pts = beta_pts + wide + gfl
    P = _stack(pts)
    exact = ts.solve_finite_d(P, approximation="exact", grid_size=K, t_size=J)
    n_b = len(beta_pts)
    rest = np.arange(n_b, len(pts))
    conc = ts.solve_finite_d(_stack([pts[i] for i in rest]), approximation="concentrated", grid_size=K)
    return {
        "params": P, "exact": exact, "beta": np.arange(n_b).reshape(len(BETAS), len(BETA_S2)),
        "wide": np.arange(n_b, n_b + len(WIDE_D)), "gfl": np.arange(n_b + len(WIDE_D), len(pts)),
        "conc": conc, "conc_wide": np.arange(len(WIDE_D)), "conc_gfl": np.arange(len(WIDE_D), len(rest)),
    }


def test_all_points_converged_and_resolved(batch):
    sol = batch["exact"]
    assert np.all(sol.status == ts.Status.CONVERGED), sol.status
    assert np.all(sol.residual < 1e-10)
    assert np.all(sol.quad_error < ts.RESOLUTION_TOL)
    assert np.all(batch["conc"].status == ts.Status.CONVERGED)


# ----------------------------------------------------------------------------------------------
# 1. u -> 0: the exact theory is the exact NNGP; the concentrated one is O(1/d) off
# ----------------------------------------------------------------------------------------------


def test_exact_prior_kernel_is_exact_nngp():
    """At u = 0 p(q, t) is the prior, so Qt = sa2 E[g g^T] must be the exact NNGP Rayleigh quotients
    lambda1, lambda3, lambda13 (THEORY.md §3, Stein's lemma; gp.rayleigh_quotients by generalised
    Gauss-Laguerre).  Both quadratures are spectrally accurate: agreement to 1e-8 relative (measured
    ~5e-13)."""
    d = np.array([53.0, 150.0, 600.0, 1200.0])
    eig = gp.rayleigh_quotients(d, SA2_FIXED, 0.5)
    Q = ts.prior_kernel(ts.TeacherStudentParams(d=d, sa2=SA2_FIXED), "exact")
    for got, want in ((Q[:, 0, 0], eig.lambda1), (Q[:, 1, 1], eig.lambda3), (Q[:, 0, 1], eig.lambda13)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-8)


def test_concentrated_prior_kernel_is_one_over_d_off():
    """The concentrated u = 0 kernel (|w_perp|^2 = sw2, q ~ N(0, sw2/d)) misses lambda1, lambda3 at
    O(1/d): the relative gaps times d converge (for lambda1 to -1 at sw2 = 1/2, the expansion in
    tests/test_teacher_student_theory.py), and quadrupling d divides the gaps by 4 (to 10 %)."""
    ds = np.array([300.0, 1200.0, 4800.0])
    eig = gp.rayleigh_quotients(ds, SA2_FIXED, 0.5)
    Q = ts.prior_kernel(ts.TeacherStudentParams(d=ds, sa2=SA2_FIXED), "concentrated")
    gaps = np.stack([Q[:, 0, 0] / np.asarray(eig.lambda1) - 1.0, Q[:, 1, 1] / np.asarray(eig.lambda3) - 1.0], -1)
    assert np.all(gaps < 0)
    ratios = gaps[:-1] / gaps[1:]
    assert np.all(np.abs(ratios / 4.0 - 1.0) < 0.1), ratios
    assert abs(gaps[-1, 0] * ds[-1] + 1.0) < 0.01, gaps[-1, 0] * ds[-1]


def test_exact_solver_at_infinite_width_is_exact_gp(batch):
    """The full finite-d solver at N = 1e17 (u ~ 1e-13: the tilt is 1e-11 of the prior) returns the
    exact NNGP kernel to 1e-8 and b, c of exact EK GP regression on span(H1, H3) (gp.subspace_discrepancy);
    the concentrated solver is off in 1 - b by the -b/d of THEORY.md §3 (to 10 %)."""
    sol, conc = batch["exact"], batch["conc"]
    for j, d in enumerate(WIDE_D):
        i = batch["wide"][j]
        eig = gp.rayleigh_quotients(d, SA2_FIXED, 0.5)
        Q = sol.Q[i]
        np.testing.assert_allclose([Q[0, 0], Q[1, 1], Q[0, 1]], [eig.lambda1, eig.lambda3, eig.lambda13], rtol=1e-8)
        b_gp, c_gp = gp.subspace_discrepancy(ts.TeacherStudentParams(N=1.0, n=3000.0, d=d, s2=0.14, sa2=SA2_FIXED,
                                                                     sw2=0.5, eps=-0.3))
        assert abs(sol.b[i] - b_gp) < 1e-9 and abs(sol.c[i] - c_gp) < 1e-9
        k = batch["conc_wide"][j]
        rel = ((1.0 - conc.b[k]) - (1.0 - b_gp)) / (1.0 - b_gp)
        assert abs(rel / (-float(b_gp) / d) - 1.0) < 0.1, (d, rel)


# ----------------------------------------------------------------------------------------------
# 2. GFL at small u: exact and concentrated agree up to O(1/d)
# ----------------------------------------------------------------------------------------------


def test_gfl_exact_vs_concentrated_gap_is_one_over_d(batch):
    """At u = 2 (GFL, no droplets) the two approximations differ only through the O(1/d) spread of
    |w_perp|^2 around sw2 felt by bulk neurons: the gap in b shrinks by 4 when d grows by 4 (fitted
    log-log slope -1 +- 0.1) with d * gap = O(1); the gap in c shrinks at least as fast (measured
    1/d^2: in GFL the cubic learned fraction is itself O(1/d), and its relative gap is O(1/d))."""
    sol, conc = batch["exact"], batch["conc"]
    i, k = batch["gfl"], batch["conc_gfl"]
    assert np.all(sol.droplet_fraction[i] == 0.0)
    db = np.abs(sol.b[i] - conc.b[k])
    dc = np.abs(sol.c[i] - conc.c[k])
    d = np.array(GFL_D)
    slope_b = np.polyfit(np.log(d), np.log(db), 1)[0]
    assert abs(slope_b + 1.0) < 0.1, (slope_b, db)
    assert np.all(db * d < 5.0), db * d
    slope_c = np.polyfit(np.log(d), np.log(dc), 1)[0]
    assert slope_c < -0.9, (slope_c, dc)
    assert np.all(dc * d < 5.0), dc * d
    # and in GFL both have t_bulk = sw2 up to O(1/d) (exact: the prior's mode sw2 (d-1)/d, tilted)
    assert np.all(np.abs(sol.t_bulk[i] - 0.5) < 3.0 / d)


# ----------------------------------------------------------------------------------------------
# 3. finite d -> scaling limit (exact), beta = 1 ... 64
# ----------------------------------------------------------------------------------------------


def test_exact_finite_d_approaches_exact_limit(batch, paper):
    """Along the Table-1 scaling (beta = 1, 4, 16, 64; alpha = beta) the exact finite-d b, c/eps and
    the droplet |w_perp|^2 approach the exact scaling-limit values monotonically, at GMFL-I
    (sigma^2 = 0.14) and GFL (0.25); the gaps fall like 1/d (about 2x per 4x in beta)."""
    sol = batch["exact"]
    lim = ts.solve_limit(paper.replace(s2=np.array(BETA_S2)), approximation="exact")
    assert list(lim.phase) == [ts.Phase.GMFL_I, ts.Phase.GFL]
    idx = batch["beta"]
    for j in range(len(BETA_S2)):
        for name, scale in (("b", 1.0), ("c", 1.0 / -0.3)):
            gap = np.abs(getattr(sol, name)[idx[:, j]] * scale - getattr(lim, name)[j] * scale)
            assert np.all(np.diff(gap) < 0), (name, j, gap)
            # O(1/d): d grows 8x from beta = 1 to 64, the gap must fall at least 5x
            assert gap[-1] < 5e-3, (name, j, gap)
            assert gap[-1] < 0.2 * gap[0], (name, j, gap)
    # droplet neurons: t_droplet -> t* = sw2 (1 - 2 x*) of the limit saddle, well below sw2
    td = sol.t_droplet[idx[:, 0]]
    gap_t = np.abs(td - lim.t_star[0])
    assert np.all(np.diff(gap_t) < 0) and gap_t[-1] < 5e-3, (td, lim.t_star[0])
    assert lim.t_star[0] < 0.6 * 0.5
    # bulk neurons stay at sw2 (to O(1/d))
    assert np.all(np.abs(sol.t_bulk[idx] - 0.5) < 0.02)


# ----------------------------------------------------------------------------------------------
# 4. the t-rule converges spectrally
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _evaluate_at():
    @jax.jit
    def run(v, p, grid):
        _, _, _, Q, logz = ts._evaluate_grid(v, p, grid)
        return Q, logz

    def at(v, p, Kq, Jt):
        pj = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p)
        return run(jnp.asarray(v), pj, ts._grid(pj, Kq, Jt, 0, True))

    return at


def test_t_rule_converges_spectrally(batch, _evaluate_at):
    """log z(v) and Qt(v) at the GMFL-I solution (beta = 1, sigma^2 = 0.14: droplets at t ~ sw2/2) as the
    number of t-nodes grows: the trapezoid rule in log t converges faster than any power (each
    doubling of the node density at least squares the error, error ~ exp(-c/h^2)), and the solver's
    default (t_grid_size) is below 1e-12."""
    P, sol = batch["params"], batch["exact"]
    i = int(batch["beta"][0, 0])
    p = ts.TeacherStudentParams(**{k: float(np.asarray(getattr(P, k))[i]) for k in ts.PARAM_NAMES})
    v = np.array([sol.b[i], SQRT6 * sol.c[i]])
    Q_ref, logz_ref = _evaluate_at(v, p, 257, 321)
    errs = []
    for Jt in (11, 21, 41, 81):
        Q, logz = _evaluate_at(v, p, 257, Jt)
        errs.append(max(abs(float(logz - logz_ref)), float(np.max(np.abs(Q - Q_ref)) / np.max(np.abs(Q_ref)))))
    for e1, e2 in zip(errs, errs[1:]):
        assert e2 <= max(e1**1.8, 1e-13), errs
    assert errs[0] > 1e-4      # the coarsest rule is visibly unresolved: the test has teeth
    J0 = int(ts.t_grid_size(p)[()])
    assert J0 <= 81
    Q, logz = _evaluate_at(v, p, 257, J0)
    assert float(np.max(np.abs(Q - Q_ref)) / np.max(np.abs(Q_ref))) < 1e-12


# ----------------------------------------------------------------------------------------------
# 5. the exact scaling limit
# ----------------------------------------------------------------------------------------------


def _delta(q, t, b, c, u, sw2=0.5):
    """Shat(q, t) - Shat(0, sw2), THEORY.md §3b written out again."""
    D = 1.0 + 2.0 * (q * q + t)
    x = q * q / D
    S = (q * q + t) / (2 * sw2) - 0.5 * np.log(t) - (2 * u / np.pi) * x * (b - 2 * c * x) ** 2
    return S - (0.5 - 0.5 * np.log(sw2))


def test_two_variable_action_reduces_to_one_variable_at_t_sw2():
    q = np.linspace(0.0, 2.0, 11)
    for b, c, u in ((0.3, -0.3, 30.0), (0.1, -0.2, 80.0)):
        diff = np.asarray(ts.reduced_action_qt(q, 0.5, b, c, u, 0.5)) - np.asarray(ts.reduced_action(q, b, c, u, 0.5))
        np.testing.assert_allclose(diff, 0.5 * (1.0 - math.log(0.5)), rtol=0, atol=1e-14)


def _assert_degenerate_saddle(b, c, u, q_star, t_star):
    """(q*, t*) is a stationary point of Shat(q, t) degenerate with the bulk saddle, and a global
    minimum over q > 0 (dense grid)."""
    assert abs(_delta(q_star, t_star, b, c, u)) < 1e-9
    h = 1e-5
    dq = (_delta(q_star + h, t_star, b, c, u) - _delta(q_star - h, t_star, b, c, u)) / (2 * h)
    dt = (_delta(q_star, t_star + h, b, c, u) - _delta(q_star, t_star - h, b, c, u)) / (2 * h)
    assert abs(dq) < 1e-7 and abs(dt) < 1e-7, (dq, dt)
    qq, tt = np.meshgrid(np.linspace(0.02, 2.5, 600), np.geomspace(1e-3, 3.0, 600))
    assert _delta(qq, tt, b, c, u).min() > -1e-6


def test_exact_limit_transition(paper):
    """Exact transition (THEORY.md §3b): on the GFL branch (c = eps, same b as the one-variable theory)
    a saddle (q*, t*) of Shat(q, t) becomes degenerate with (0, sw2).  It lies at t* = sw2 (1 - 2x*),
    well below sw2, and at larger sigma^2 / smaller u than the paper's reduction."""
    ex = ts.solve_transition(paper, along="s2", approximation="exact")
    co = ts.solve_transition(paper, along="s2", approximation="concentrated")
    assert ex.found and co.found
    _assert_degenerate_saddle(float(ex.b), -0.3, float(ex.u), float(ex.q_star), float(ex.t_star))
    x = float(ex.q_star) ** 2 / (1 + 2 * (float(ex.q_star) ** 2 + float(ex.t_star)))
    assert abs(float(ex.t_star) - 0.5 * (1 - 2 * x)) < 1e-12
    assert float(ex.value) > float(co.value) + 0.02 and float(ex.u) < 0.8 * float(co.u)
    assert float(ex.t_star) < 0.35
    # b on the GFL branch is the same function of (u, r) in both approximations
    u, r = float(ex.u), float(ex.r)
    kappa = 1.0 - (2 * u / np.pi) * float(ex.b) ** 2 / 2.0
    assert abs(float(ex.b) - 1.0 / (1.0 + u * r * 2.0 / (np.pi * 2.0 * kappa))) < 1e-12


@pytest.mark.parametrize("s2", [0.12, 0.14, 0.20])
def test_exact_limit_mixed_branch_equations(paper, indep, s2):
    """GMFL-I of the exact limit: the droplet saddle (q*, t*) is degenerate with the bulk, and
    [b, sqrt6 c] = (I + M)^{-1}[1, sqrt6 eps], M = u r [(2/(pi(1+2sw2) kappa(b))) e1 e1^T + pi1 g g^T]
    with the droplet overlaps g = g(q*, t*) at D = 1 + 2(q*^2 + t*)."""
    p = paper.replace(s2=s2)
    lim = ts.solve_limit(p, approximation="exact")
    u, r, sw2, eps = float(p.u), float(p.r), 0.5, -0.3
    b, c, pi1, q_star, t_star = (float(a) for a in (lim.b, lim.c, lim.pi1, lim.q_star, lim.t_star))
    assert lim.phase == ts.Phase.GMFL_I and pi1 > 0
    _assert_degenerate_saddle(b, c, u, q_star, t_star)
    kappa = 1 / (2 * sw2) - (2 * u / np.pi) * b * b / (1 + 2 * sw2)
    assert kappa > 0
    g = np.array(indep.g(q_star, sw2, t=t_star))
    M = u * r * (2.0 / (np.pi * (1 + 2 * sw2) * kappa) * np.outer([1, 0], [1, 0]) + pi1 * np.outer(g, g))
    v = np.linalg.solve(np.eye(2) + M, [1.0, SQRT6 * eps])
    np.testing.assert_allclose([b, SQRT6 * c], v, rtol=0, atol=1e-10)
    # more cubic learned than in the paper's reduction at the same point
    conc = ts.solve_limit(p, approximation="concentrated")
    assert lim.cubic_learned > conc.cubic_learned


def test_bad_approximation_rejected(paper):
    from grokphase.errors import ParameterError

    for call in (lambda: ts.solve_finite_d(paper, approximation="exakt"),
                 lambda: ts.solve_limit(paper, approximation="paper"),
                 lambda: ts.solve_transition(paper, approximation="")):
        with pytest.raises(ParameterError, match="approximation"):
            call()
