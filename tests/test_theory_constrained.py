"""The mean-field free energy along an order parameter, F(m) = -log p(m) + const (THEORY.md §7):
the Legendre-constrained saddle of the modular model (target component) and of the teacher-student
model (learned fraction of degree 1 or 3).

What is checked (physics, not self-consistency of one formula with itself):

* the stationary point of F is the unconstrained solution of the existing solvers (their own root
  finding / Newton, on their own quadratures), with F there equal to their free energy;
* the multiplier lambda(m) returned with F is dF/dm (central differences);
* closed forms: without kernel adaptation (u -> 0) F is the parabola of exact Bayesian linear regression,
  built here independently (modular: the P^2 x P^2 NNGP kernel matrix of eq. 21; teacher-student: the
  prior kernel of the two Hermite functions by scipy quadrature);
* convexity, with the theorem's bound F'' >= (data term), also between the modular transition and the
  supercooled spinodal where the P -> infinity theory has both a disordered and an ordered branch: the
  mean-field F(m) has one well (module docstrings: its first-order character is a coexistence of
  single neurons, not of two network states in m);
* frozen droplet counts (modular): F <= F_j for every count j, and the free energy of one droplet per
  mode against none changes sign at the theory's GFL -> GMFL-I transition.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.optimize import brentq

from grokphase.errors import ParameterError
from grokphase.theory import modular as md
from grokphase.theory import modular_gp as mgp
from grokphase.theory import teacher_student as ts
from grokphase.theory.modular import constrained as mc
from grokphase.theory.status import Status
from grokphase.theory.teacher_student import constrained as tc

# the modular hysteresis regime (sims/modular_hysteresis.toml): P = 23, N = 256, gamma = 0.3, network
# convention, GFL -> GMFL-I at s1 = 0.004, supercooled spinodal 1.0746 s1
MOD = md.ModularParams(N=256.0, P=23.0, sa2=2.448523496417709e-06, gamma=0.3, s2=0.004)
S1 = float(md.transitions(MOD, "network").gmfl1_s2)
# teacher-student at beta = 1/8 (the CPU simulations' size: N = 87.5, d = 53, n = 375), s2 = 0.1: GMFL-I
# with about 7 droplet neurons in both approximations
TS = ts.TeacherStudentParams().scaled(beta=1 / 8).replace(s2=0.1)


def _fd(profile_fn, m0, h):
    """Central differences of F at m0 with step h, and the multiplier at m0."""
    m = np.concatenate([m0 - h, m0, m0 + h])
    pr = profile_fn(m)
    assert np.all(pr.status == Status.CONVERGED)
    F = pr.F.reshape(3, -1)
    return (F[2] - F[0]) / (2 * h), pr.multiplier.reshape(3, -1)[1], pr


def _assert_one_convex_well(pr, curvature_floor):
    """Multiplier strictly increasing, F'' >= curvature_floor (second differences on a uniform grid),
    and exactly one interior minimum."""
    assert np.all(pr.status == Status.CONVERGED)
    assert np.all(np.diff(pr.multiplier) > 0)
    h = pr.m[1] - pr.m[0]
    second = (pr.F[2:] - 2 * pr.F[1:-1] + pr.F[:-2]) / h**2
    assert np.all(second >= curvature_floor * (1 - 1e-6))
    interior_minima = np.flatnonzero((pr.F[1:-1] < pr.F[:-2]) & (pr.F[1:-1] < pr.F[2:]))
    assert interior_minima.size == 1


# ------------------------------------------------------------------------------------------------
# modular addition


@pytest.fixture(scope="module")
def mod_profiles():
    """Equilibrium profiles (exact method, network convention) at s2 in GMFL-I and between s1 and the
    supercooled spinodal, on a uniform grid around their minima."""
    out = {}
    for s2 in (0.8 * S1, 1.05 * S1):
        p = MOD.replace(s2=s2)
        star = mc.free_energy_profile(p, [0.0])
        m = star.m_star + np.linspace(-0.02, 0.06, 33)
        out[s2] = mc.free_energy_profile(p, m)
    return out


def test_modular_stationary_point_is_the_finite_P_solution(mod_profiles):
    for s2, pr in mod_profiles.items():
        sol = md.solve(MOD.replace(s2=s2), "exact", convention="network")
        # the profile's own root finding (quadrature in s = Phi + Psi with closed-form transverse integrals)
        # against the finite-P solver's (2-D Gauss-Legendre grid)
        assert pr.m_star == pytest.approx(float(sol.target_component), rel=1e-9, abs=1e-12)
        assert pr.m_solver == pytest.approx(float(sol.target_component), rel=1e-15)
        at = mc.free_energy_profile(MOD.replace(s2=s2), [float(sol.target_component)])
        # lambda = (Y/s2)(m - 1 - a) vanishes there; its scale Y/s2 times the m-tolerance
        assert abs(at.multiplier[0]) <= 1e-8 * pr.Y / s2
        assert at.a[0] == pytest.approx(float(sol.a), rel=1e-9)
        assert at.F[0] == pytest.approx(pr.F_star, rel=1e-13)
        assert np.all(pr.F >= pr.F_star - 1e-9 * abs(pr.F_star))
        assert pr.status_star == Status.CONVERGED


def test_modular_multiplier_is_dF_dm(mod_profiles):
    for s2, pr in mod_profiles.items():
        m0 = pr.m[[2, 12, 20, 30]]
        # F''' h^2/6 against F' ~ Y/s2 * 0.01: relative truncation error ~1e-10 at h = 1e-5
        fd, mult, _ = _fd(lambda m: mc.free_energy_profile(MOD.replace(s2=s2), m), m0, 1e-5)
        np.testing.assert_allclose(fd, mult, rtol=1e-6, atol=1e-6 * pr.Y / s2 * 1e-3)


def test_modular_profile_is_one_convex_well(mod_profiles):
    # both temperatures have two states in the P -> infinity theory: below s1 the ordered equilibrium and
    # the supercooled disordered network behind a finite barrier; above s1 (below the supercooled
    # spinodal 1.0746 s1) the disordered equilibrium and a heated ordered state whose droplets survive
    # under the marginal bound (THEORY.md §4; the simulations' hysteresis loop) ...
    cold, hot = MOD.replace(s2=0.8 * S1), MOD.replace(s2=1.05 * S1)
    assert int(md.solve_limit(cold, "network").phase) == md.Phase.GMFL_I
    assert np.isfinite(md.solve_limit(cold, "network").barrier_supercooled)
    assert int(md.solve_limit(hot, "network").phase) == md.Phase.GFL
    assert float(md.marginal_target_component(hot)) > 0.0
    for s2, pr in mod_profiles.items():
        # ... yet F(m) is one convex well, F'' >= Y/s2 (the readout's Gaussian term)
        _assert_one_convex_well(pr, pr.Y / s2)


def test_modular_gp_limit_is_bayesian_linear_regression():
    """At u -> 0 (N sa2 >> P^2, gamma negligible against the prior scale 1/P) F is the parabola of GP
    regression with the NNGP kernel of eq. 21 on the whole table, P outputs: the mean and variance of
    m = (f, y)/(y, y) computed here from the P^2 x P^2 kernel matrix, not from its eigenvalues."""
    P, sa2, N = 7, 1.0, 1e10
    lam_nngp = mgp.nngp_eigenvalues(P, sa2).values[2]            # 4 sa2 on the target modes
    s2 = float(lam_nngp)                                        # the GP learns half of the target
    p = md.ModularParams(N=N, P=float(P), sa2=sa2, gamma=1e-10, s2=s2)
    assert float(p.u) < 1e-8
    K = mgp.nngp_kernel_matrix(P, sa2)                           # (P^2, P^2), one output
    Y_mat = mgp.target_matrix(P)                                 # (P^2, P)
    A = np.linalg.solve(K + s2 * np.eye(P * P), K)
    mean_f = A.T @ Y_mat                                         # K (K + s2)^-1 y, per output column
    cov = K - K @ A                                              # posterior covariance, same for each output
    Y = float(np.sum(Y_mat**2))
    m_gp = float(np.sum(mean_f * Y_mat)) / Y
    var_gp = float(np.einsum("ip,ij,jp->", Y_mat, cov, Y_mat)) / Y**2
    m = m_gp + np.sqrt(var_gp) * np.linspace(-5.0, 5.0, 11)
    pr = mc.free_energy_profile(p, m)
    assert np.all(pr.status == Status.CONVERGED)
    assert pr.Y == pytest.approx(Y, rel=1e-15)
    assert pr.m_star == pytest.approx(m_gp, rel=1e-6)
    parabola = (m - m_gp) ** 2 / (2.0 * var_gp)
    np.testing.assert_allclose(pr.F - pr.F_star, parabola, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pr.multiplier, (m - m_gp) / var_gp, rtol=1e-5, atol=1e-6 / np.sqrt(var_gp))


@pytest.fixture(scope="module")
def frozen():
    s2 = 0.8 * S1
    p = MOD.replace(s2=s2)
    m = np.linspace(0.0, 0.3, 31)
    return p, m, mc.free_energy_profile(p, m), {j: mc.free_energy_profile(p, m, droplets=j) for j in (0, 2, 5, 8)}


def test_modular_frozen_counts_bound_the_equilibrium(frozen):
    p, m, eq, prof = frozen
    for j, pj in prof.items():
        assert np.all(pj.status == Status.CONVERGED), j
        # C(N, j) zeta_0^(N-j) zeta_d^j is one term of (zeta_0 + zeta_d)^N at every discrepancy
        assert np.all(eq.F <= pj.F + 1e-9 * np.abs(eq.F)), j
        assert np.all(np.diff(pj.multiplier) > 0), j
        assert pj.droplet_fraction[0] == pytest.approx(j / float(p.N), rel=1e-15)
    # more droplets per mode: more of the target learned at the frozen count's own minimum
    m_stars = [prof[j].m_star for j in sorted(prof)]
    assert np.all(np.diff(m_stars) > 0)
    # the count closest to the equilibrium's N p droplets per mode has the lowest free energy
    sol = md.solve(p, "exact", convention="network")
    best = min(prof, key=lambda j: prof[j].F_star)
    assert abs(best - float(p.N) * float(sol.droplet_fraction)) < 1.0


def test_modular_one_droplet_free_energy_changes_sign_at_the_transition():
    """min F_1 - min F_0 (one droplet per mode against none): negative below s1, positive above; its
    zero is the finite network's GFL -> GMFL-I point.  Measured 0.9976 s1 at P = 23 (1.0032 s1 at
    P = 184 along the network scaling family): within the O(log N/P) of the limit's s1; the finite-P
    solver's label N p/(1 - p) = 1 lies at 0.975 s1 here."""
    cut = 2.0 * float(md.saddles(-1.0, float(MOD.replace(s2=1.02 * S1).u), 0.3)[0])

    def gap(x):
        p = MOD.replace(s2=x * S1)
        one = mc.free_energy_profile(p, [0.0], droplets=1, cut=cut)
        none = mc.free_energy_profile(p, [0.0], droplets=0, cut=cut)
        assert one.status_star == Status.CONVERGED and none.status_star == Status.CONVERGED
        return one.F_star - none.F_star

    assert gap(0.98) < 0 < gap(1.02)
    zero = brentq(gap, 0.98, 1.02, xtol=1e-6)
    assert abs(zero - 1.0) < 0.01


def test_modular_dataset_and_bad_inputs(mod_profiles):
    pr = next(iter(mod_profiles.values()))
    ds = pr.to_dataset()
    assert ds.attrs["grokphase_kind"] == "theory.modular.free_energy_profile"
    np.testing.assert_array_equal(ds["F"].values, pr.F)
    assert ds.attrs["m_star"] == pr.m_star
    with pytest.raises(ParameterError, match="one parameter point"):
        mc.free_energy_profile(MOD.replace(s2=np.array([0.003, 0.004])), [0.1])
    with pytest.raises(ParameterError, match="method='exact'"):
        mc.free_energy_profile(MOD, [0.1], method="saddle", droplets=1)
    with pytest.raises(ParameterError, match="droplets"):
        mc.free_energy_profile(MOD, [0.1], droplets=2.5)
    # out of range: no discrepancy |a| <= 2^10 produces m = 1e200; said by the status
    far = mc.free_energy_profile(MOD, [0.1, 1e200])
    np.testing.assert_array_equal(far.status, [Status.CONVERGED, Status.NO_BRANCH])


@pytest.mark.slow
def test_modular_saddle_method():
    """The saddle method's F (L from the closed-form droplet term plus the origin integral) is stationary
    at the saddle solver's solution and its multiplier is dF/dm (network convention, the one with the
    origin integral; the paper convention's L is the droplet term alone)."""
    p = MOD.replace(s2=0.85 * S1)
    for convention in ("network",):
        sol = md.solve(p, "saddle", convention=convention)
        m0 = float(sol.target_component) + np.array([-0.01, 0.0, 0.02])
        fd, mult, pr = _fd(lambda m: mc.free_energy_profile(p, m, method="saddle", convention=convention), m0,
                           1e-6)
        assert pr.m_star == pytest.approx(float(sol.target_component), rel=1e-10)
        np.testing.assert_allclose(fd, mult, rtol=1e-5, atol=1e-9 * pr.Y / float(p.s2))
        assert abs(mult[1]) <= 1e-8 * pr.Y / float(p.s2)


# ------------------------------------------------------------------------------------------------
# teacher-student


@pytest.fixture(scope="module")
def ts_profiles():
    """Concentrated approximation at s2 = 0.1 (GMFL-I at beta = 1/8), both degrees."""
    out = {}
    for degree in (3, 1):
        star = tc.free_energy_profile(TS, [0.5], degree=degree, approximation="concentrated")
        m = star.m_star + np.linspace(-0.1, 0.2, 31)
        out[degree] = tc.free_energy_profile(TS, m, degree=degree, approximation="concentrated")
    return out


def test_ts_stationary_point_is_the_finite_d_solution(ts_profiles):
    sol = ts.solve_finite_d(TS, approximation="concentrated")
    learned = {3: float(sol.cubic_learned), 1: float(sol.linear_learned)}
    for degree, pr in ts_profiles.items():
        assert pr.m_star == pytest.approx(learned[degree], rel=1e-15)
        assert pr.F_star == pytest.approx(float(TS.N) * float(sol.free_energy), rel=1e-15)
        at = tc.free_energy_profile(TS, [pr.m_star], degree=degree, approximation="concentrated")
        assert at.status[0] == Status.CONVERGED
        # the constrained saddle at m* is the unconstrained one: same discrepancy, zero multiplier, same F
        assert at.b[0] == pytest.approx(float(sol.b), rel=1e-9)
        assert at.c[0] == pytest.approx(float(sol.c), rel=1e-9)
        assert abs(at.multiplier[0]) <= 1e-9 * float(TS.n / TS.s2)
        assert at.F[0] == pytest.approx(pr.F_star, rel=1e-13)
        assert np.all(pr.F >= pr.F_star - 1e-12 * abs(pr.F_star))
        # the other degree's output at the constrained saddle is the kernel's response, (n/s2) Qt v, to
        # the saddle's discrepancy; its target is untilted, so its learned fraction is 1 - v_j/yhat_j
        other = pr.linear_learned if degree == 3 else pr.cubic_learned
        yhat = np.array([1.0, np.sqrt(6.0) * float(TS.eps)])
        j = 0 if degree == 3 else 1
        at_all = tc.free_energy_profile(TS, pr.m[::10], degree=degree, approximation="concentrated")
        v = np.stack([at_all.b, np.sqrt(6.0) * at_all.c], -1)
        np.testing.assert_allclose(other[::10], 1.0 - v[:, j] / yhat[j], rtol=1e-12)


def test_ts_multiplier_is_dF_dm(ts_profiles):
    for degree, pr in ts_profiles.items():
        m0 = pr.m[[3, 15, 27]]
        fd, mult, _ = _fd(lambda m: tc.free_energy_profile(TS, m, degree=degree, approximation="concentrated"),
                          m0, 1e-5)
        np.testing.assert_allclose(fd, mult, rtol=1e-6, atol=1e-6)


def test_ts_profile_is_one_convex_well(ts_profiles):
    sol = ts.solve_finite_d(TS, approximation="concentrated")
    assert int(sol.phase) == ts.Phase.GMFL_I         # droplets present, and still one well in m
    for degree, pr in ts_profiles.items():
        yk = 1.0 if degree == 1 else np.sqrt(6.0) * float(TS.eps)
        _assert_one_convex_well(pr, float(TS.n / TS.s2) * yk * yk)


def test_ts_gp_limit_is_ek_bayesian_linear_regression(indep):
    """u -> 0 (N -> infinity at fixed sa2): F is the parabola of EK regression on Hhat1, Hhat3 with the
    prior kernel Qt = sa2 E[g g^T], q ~ N(0, sw2/d) (scipy quadrature of the closed-form overlaps)."""
    p = TS.replace(N=1e14, sa2=float(TS.sa2))
    assert float(p.u) < 1e-10
    sw2, d, sa2, n, s2 = float(p.sw2), float(p.d), float(p.sa2), float(p.n), float(p.s2)
    sd = np.sqrt(sw2 / d)

    def prior_mean(f):
        val, _ = integrate.quad(lambda q: f(q) * np.exp(-0.5 * (q / sd) ** 2) / (np.sqrt(2 * np.pi) * sd),
                                -12 * sd, 12 * sd, epsabs=0.0, epsrel=1e-13, limit=200)
        return val

    g = lambda q: indep.g(q, sw2)  # noqa: E731
    Q = sa2 * np.array([[prior_mean(lambda q: g(q)[i] * g(q)[j]) for j in range(2)] for i in range(2)])
    yhat = np.array([1.0, np.sqrt(6.0) * float(p.eps)])
    lam = s2 / n
    mean = Q @ np.linalg.solve(Q + lam * np.eye(2), yhat)
    Sigma = Q - Q @ np.linalg.solve(Q + lam * np.eye(2), Q)
    for degree, k in ((3, 1), (1, 0)):
        m_gp = mean[k] / yhat[k]
        var = Sigma[k, k] / yhat[k] ** 2
        m = m_gp + np.sqrt(var) * np.linspace(-4.0, 4.0, 9)
        pr = tc.free_energy_profile(p, m, degree=degree, approximation="concentrated")
        assert np.all(pr.status == Status.CONVERGED)
        assert pr.m_star == pytest.approx(m_gp, rel=1e-6)
        np.testing.assert_allclose(pr.F - pr.F_star, (m - m_gp) ** 2 / (2 * var), rtol=1e-5, atol=1e-7)


def test_ts_dataset_and_bad_inputs(ts_profiles):
    pr = ts_profiles[3]
    ds = pr.to_dataset()
    assert ds.attrs["grokphase_kind"] == "theory.teacher_student.free_energy_profile"
    np.testing.assert_array_equal(ds["multiplier"].values, pr.multiplier)
    with pytest.raises(ParameterError, match="degree"):
        tc.free_energy_profile(TS, [0.1], degree=2)
    with pytest.raises(ParameterError, match="eps != 0"):
        tc.free_energy_profile(TS.replace(eps=0.0), [0.1], degree=3)
    with pytest.raises(ParameterError, match="one parameter point"):
        tc.free_energy_profile(TS.replace(s2=np.array([0.1, 0.2])), [0.1])


@pytest.mark.slow
def test_ts_exact_approximation_stationary_and_derivative():
    """The exact (q, t) theory: stationary at solve_finite_d's cubic fraction with F = N free_energy, the
    multiplier equals dF/dm, one convex well."""
    sol = ts.solve_finite_d(TS)
    m_star = float(sol.cubic_learned)
    m0 = m_star + np.array([-0.05, 0.0, 0.1])
    fd, mult, pr = _fd(lambda m: tc.free_energy_profile(TS, m), m0, 1e-5)
    assert pr.m_star == pytest.approx(m_star, rel=1e-15)
    assert abs(mult[1]) <= 1e-9 * float(TS.n / TS.s2)
    assert pr.F.reshape(3, -1)[1, 1] == pytest.approx(float(TS.N) * float(sol.free_energy), rel=1e-13)
    np.testing.assert_allclose(fd, mult, rtol=1e-6, atol=1e-6)
    assert mult[0] < 0 < mult[2]
