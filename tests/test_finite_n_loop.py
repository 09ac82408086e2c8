"""The one-loop (1/N) correction of the finite-n mean-field theory (grokphase.theory.finite_n, issue 22).

The mean-field theory is the saddle point of the exact integral over the training discrepancy
tau (THEORY.md §2): for N neurons, P(W | y) ∝ prior(W) N(y; 0, s2 I + K_hat(W)) is
int dtau exp(-G(tau)) with G(tau) = tau·y - s2|tau|^2/2 - N log z(tau) along tau* + i eta, and every
observable linear in the mean predictor is the same integral of L(tau) = sa2 <g m>_tau.  With n = 2
training points and a one-dimensional input (w a scalar, z(tau) a Gauss-Hermite quadrature) that
integral is a two-dimensional quadrature on the contour: the *exact* finite-N answer, at any N.  The
one-loop correction must reproduce exact - mean field up to a remainder falling like 1/N^2."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from grokphase.theory import finite_n as fn

S2, SA2, SW2 = 0.3, 2.0, 1.0
X = np.array([0.9, -1.7])          # two training inputs (d = 1)
Y = np.array([0.8, -1.2])
X0 = 0.4                           # a test input
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(160)
WEIGHTS = WEIGHTS / WEIGHTS.sum()
W = NODES * math.sqrt(SW2)         # prior nodes of the scalar first-layer weight
PHI = erf(W[:, None] * X[None, :])  # (S, n)
# observables: the linear learned fraction's overlap g1(w) = <erf(w x), x> (x ~ N(0, 1)) and the
# predictor at the test input and at the two training inputs (g = erf(w x0), erf(w x_mu))
G = np.stack([2 * W / np.sqrt(np.pi * (1 + 2 * W**2)), erf(W * X0), PHI[:, 0], PHI[:, 1]])


def _tilted(tau, A):
    m = PHI @ tau
    lw = np.log(WEIGHTS) + 0.5 * A * m * m
    w = np.exp(lw - lw.max())
    return w / w.sum(), m


def _saddle(N):
    """The mean-field tau*: Newton on grad G = y - s2 tau - sa2 E[m phi] = 0 (quadrature averages)."""
    A = SA2 / N
    tau = np.linalg.solve(S2 * np.eye(2) + SA2 * (PHI.T * WEIGHTS) @ PHI, Y)
    for _ in range(60):
        w, m = _tilted(tau, A)
        Z = PHI * m[:, None]
        dZ = Z - w @ Z
        H = S2 * np.eye(2) + SA2 * (PHI.T * w) @ PHI + SA2 * A * (dZ.T * w) @ dZ
        tau = tau + np.linalg.solve(H, Y - S2 * tau - SA2 * (w @ Z))
    return tau, H


def _exact(tau, H, N, half_width=9.0, K=201):
    """<L_k> and <tau> of the exact N-neuron posterior: the contour integral over tau* + i eta, eta on a
    K x K grid in the whitened coordinates of H (the integrand is analytic: the trapezoid rule converges
    geometrically)."""
    A = SA2 / N
    L = np.linalg.cholesky(np.linalg.inv(H))
    e = np.linspace(-half_width, half_width, K)
    xi = np.stack(np.meshgrid(e, e, indexing="ij"), -1).reshape(-1, 2)
    T = tau[None, :] + 1j * (xi @ L.T)
    M = T @ PHI.T                                           # (grid, S), complex
    tilt = WEIGHTS * np.exp(0.5 * A * M * M)
    z = tilt.sum(1)
    z0 = (WEIGHTS * np.exp(0.5 * A * (PHI @ tau) ** 2)).sum()
    G_ = T @ Y - 0.5 * S2 * np.sum(T * T, 1) - N * np.log(z / z0)
    G0 = tau @ Y - 0.5 * S2 * tau @ tau
    wt = np.exp(-(G_ - G0))
    Lv = SA2 * ((tilt * M) @ G.T) / z[:, None]              # (grid, K): sa2 <g m>_tau
    return (wt @ Lv / wt.sum()).real, (wt @ T / wt.sum()).real


def _one_loop(tau, N):
    w, _ = _tilted(tau, SA2 / N)
    L, dL, dtau = fn.one_loop(jnp.asarray(PHI), jnp.asarray(G), jnp.asarray(w), jnp.asarray(tau), S2, SA2, SA2 / N)
    return np.asarray(L), np.asarray(dL), np.asarray(dtau)


@pytest.fixture(scope="module")
def ladder():
    jax.config.update("jax_enable_x64", True)
    out = {}
    for N in (50, 100, 200, 400):
        tau, H = _saddle(N)
        L, dL, dtau = _one_loop(tau, N)
        Le, te = _exact(tau, H, N)
        out[N] = dict(L=L, dL=dL, dtau=dtau, Le=Le, dte=te - tau, tau=tau)
    return out


def test_one_loop_matches_the_exact_finite_N_integral(ladder):
    """exact - mean field = one-loop + O(1/N^2): the remainder is < 3 % of the correction at N = 100 and
    falls like 1/N^2 (by 0.2-0.3 each time N doubles), for every observable and for <tau>."""
    for N, r in ladder.items():
        gap = r["Le"] - r["L"]
        assert np.all(np.abs(r["dL"]) > 1e-6), "a correction that vanishes tests nothing"
        rel = np.abs(gap - r["dL"]) / np.abs(r["dL"])
        assert np.all(rel < 3.0 / N), (N, gap, r["dL"], rel)
        np.testing.assert_allclose(r["dte"], r["dtau"], rtol=3.0 / N)
    for lo, hi in ((50, 100), (100, 200), (200, 400)):
        rem = lambda r: np.abs(r["Le"] - r["L"] - r["dL"])  # noqa: E731
        ratio = rem(ladder[hi]) / rem(ladder[lo])
        assert np.all((0.2 < ratio) & (ratio < 0.3)), (lo, hi, ratio)
    # the correction itself is O(1/N): N dL is constant to O(1/N)
    np.testing.assert_allclose(400 * ladder[400]["dL"], 200 * ladder[200]["dL"], rtol=0.02)


def test_one_loop_keeps_the_training_identity(ladder):
    """fbar(x_mu) = y_mu - s2 <tau_mu> holds exactly (<grad G> = 0), so also order by order: the one-loop
    shift of the predictor at a training input is -s2 times the shift of tau there."""
    for r in ladder.values():
        np.testing.assert_allclose(r["dL"][2:], -S2 * r["dtau"], rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(r["L"][2:], Y - S2 * r["tau"], rtol=1e-9)   # the saddle itself


def test_the_solver_streams_the_same_sums():
    """run_loop_chains accumulates exactly loop_sums over the walkers it visits (one step, stride 1)."""
    jax.config.update("jax_enable_x64", True)
    x, y, w_star = fn.draw_dataset(fn.dataset_key(0, 0), 9, 6, -0.3)
    s, xp = fn.split_teacher(x, w_star)
    f = lambda v: jnp.asarray(v, jnp.float64)  # noqa: E731
    prob = fn.Problem(s, xp, y, f(0.3), f(math.sqrt(0.5 / 6)), f(6.0), f(0.5))
    Q, M = 3, 4
    q = jnp.linspace(0.0, 1.0, Q)
    tau = jnp.linspace(-1.0, 1.5, 9)
    walkers = fn.Walkers(jax.random.normal(jax.random.PRNGKey(3), (Q, M, 5)), jnp.full((Q,), 0.4))
    omega = jnp.array([0.5, 0.3, 0.2])
    C = jnp.linalg.inv(jnp.eye(9) * 1.3 + 0.1 * jnp.ones((9, 9)))
    mu, gm = jnp.linspace(0.1, 0.2, 9), jnp.array([0.05, -0.01])
    key = jax.random.PRNGKey(4)
    new, sums = fn.run_loop_chains(key, walkers, q, tau, prob, 1, omega, C, mu, gm, stride=1)
    z, _ = fn.mala_step(jax.random.fold_in(key, 0), walkers.z, walkers.h, q, tau, prob)
    np.testing.assert_allclose(np.asarray(new.z), np.asarray(z), rtol=1e-12, atol=1e-14)   # scan vs eager
    qb = jnp.broadcast_to(q[:, None], (Q, M))
    phi = fn.neuron_terms(z, qb, tau, prob)[4].reshape(Q * M, 9)
    wp = prob.c**2 * jnp.sum(z * z, -1)
    D = 1.0 + 2.0 * (qb**2 + wp)
    g = jnp.stack([2 * qb / jnp.sqrt(jnp.pi * D), -4 * qb**3 / (math.sqrt(6 * math.pi) * D**1.5)]).reshape(2, -1)
    ref = fn.loop_sums(phi, g, jnp.repeat(omega / M, M), tau, C, mu, gm)
    for a, b in zip(sums, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------ `theory finite-n --one-loop`
TINY = ["theory", "finite-n", "--N", "40", "--n", "50", "--d", "8", "--sa2", "0.2", "--s2", "0.2,0.3", "--q-size", "8",
        "--walkers", "8", "--iterations", "6", "--steps", "4", "--blocks", "2", "--block-steps", "4", "--no-progress",
        "--datasets", "0", "1"]


def test_cli_one_loop_adds_the_correction_and_keeps_the_mean_field(tmp_path, capsys):
    """--one-loop leaves every mean-field number of the file unchanged (bit for bit), adds per cell the
    solver's one-loop correction and over sigma^2 the means of the correction and of finite n + one loop;
    a file written without it is not resumed with it (the parameter named)."""
    from grokphase.cli import main
    from grokphase.experiments import finite_n as efn
    from grokphase.io import load_dataset
    from grokphase.theory.teacher_student import TeacherStudentParams

    plain, loop = tmp_path / "plain.nc", tmp_path / "loop.nc"
    assert main([*TINY, "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--out", str(loop), "--one-loop", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    a, b = load_dataset(plain, efn.KIND), load_dataset(loop, efn.KIND)
    assert "linear_corrected" not in a and "linear_one_loop_dataset" not in a
    for name in a.data_vars:
        if name != "seconds":
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    # one cell from the solver (s2 = 0.3 is solved first: no continuation start)
    x, y, w = fn.draw_dataset(fn.dataset_key(0, 1), 50, 8, -0.3)
    p = TeacherStudentParams(N=40.0, n=50.0, d=8.0, sa2=0.2, s2=0.3)
    cfg = fn.FiniteNConfig(q_size=8, walkers=8, iterations=6, steps=4, blocks=2, block_steps=4)
    sol, _, _ = efn.solve_with_retry(p, x, y, w, jax.random.fold_in(jax.random.PRNGKey(1), 1), cfg, one_loop=True)
    cell = b.sel(s2=0.3, dataset=1)
    assert float(cell["linear_one_loop_dataset"]) == sol.linear_one_loop
    assert float(cell["cubic_one_loop_mc_error"]) == sol.cubic_one_loop_sem
    assert math.isfinite(sol.linear_one_loop) and sol.linear_one_loop != 0.0
    for j in range(2):
        ok = b["converged"].values[j]
        for short in ("linear", "cubic"):
            corr = (b[f"{short}_learned_dataset"].values[j] + b[f"{short}_one_loop_dataset"].values[j])[ok]
            if ok.any():
                assert float(b[f"{short}_corrected"].values[j]) == pytest.approx(corr.mean(), rel=1e-12)
                assert summary["points"][j][f"{short}_corrected"] == pytest.approx(corr.mean(), rel=1e-12)
    rc = main([*TINY, "--out", str(plain), "--one-loop"])
    assert rc == 2 and "one_loop" in capsys.readouterr().err
    # `grokphase plot` draws both files (the corrected curve only where it exists)
    for f in (plain, loop):
        png = tmp_path / f"{f.stem}.png"
        assert main(["plot", str(f), "--out", str(png)]) == 0 and png.stat().st_size > 10_000


def test_compare_adds_the_corrected_curve_and_the_paired_differences():
    """compare's finite-n columns with a --one-loop file: the corrected means and their z-scores are those of
    the file; on the simulation's own data sets (same seed) the paired differences sim - theory per data set
    (sim: mean over inits) with their SE, recomputed here; a file of another seed gets no paired columns."""
    from grokphase.analysis import compare as cmp
    from grokphase.experiments import finite_n as efn
    from grokphase.sims.teacher_student import run_teacher_student
    from grokphase.sims.teacher_student.config import TeacherStudentSim
    from grokphase.theory.teacher_student import TeacherStudentParams

    jax.config.update("jax_enable_x64", True)
    s2 = (0.2, 0.3)
    cfg = fn.FiniteNConfig(q_size=8, walkers=8, iterations=6, steps=4, blocks=2, block_steps=4)
    fin = efn.run_finite_n(TeacherStudentParams(N=40.0, n=50.0, d=8.0, sa2=0.2, s2=np.asarray(s2)), [0, 1, 2],
                           config=cfg, one_loop=True)
    fin["converged"].values[:] = True            # the arithmetic is tested, not the tiny solves' convergence
    fin["converged"].values[0, 1] = False        # one cell left out of the means and of the pairing
    for short in ("linear", "cubic"):            # the means over converged cells, as run_finite_n forms them
        for field in ("learned", "corrected"):
            cell = fin[f"{short}_learned_dataset"] + (fin[f"{short}_one_loop_dataset"] if field == "corrected" else 0)
            for j in range(2):
                v = cell.values[j][fin["converged"].values[j]]
                fin[f"{short}_{field}"].values[j] = v.mean()
                fin[f"{short}_{field}_sem"].values[j] = v.std(ddof=1) / math.sqrt(v.size)
    sim = run_teacher_student(TeacherStudentSim(N=40, n=50, d=8, s2=s2, sa2=0.2, datasets=2, inits=2, steps=40,
                                                burn_in=10, record_every=10, n_test=200))
    out = cmp.finite_n_for_sim(sim, fin)
    for j in range(2):
        ok = [k for k in (0, 1) if fin["converged"].values[j, k]]
        for short in ("linear", "cubic"):
            v, e = float(sim[f"{short}_learned"].values[j]), float(sim[f"{short}_learned_sem"].values[j])
            m, se = float(fin[f"{short}_corrected"].values[j]), float(fin[f"{short}_corrected_sem"].values[j])
            assert out[f"finite_n_{short}_corrected"][j] == m
            assert out[f"z_finite_n_{short}_corrected"][j] == pytest.approx((v - m) / math.hypot(e, se), rel=1e-12)
            per_sim = sim[f"{short}_learned_network"].values[j].mean(axis=1)        # (dataset,) over inits
            for what, cell in (("", fin[f"{short}_learned_dataset"].values[j]),
                               ("_corrected", (fin[f"{short}_learned_dataset"] + fin[f"{short}_one_loop_dataset"]).values[j])):
                d = per_sim[ok] - cell[ok]
                assert out[f"paired_finite_n_{short}{what}_diff"][j] == pytest.approx(d.mean(), rel=1e-12)
                if d.size == 1:              # s2 = 0.2: data set 1 left out, one pair: no error, no z
                    assert np.isnan(out[f"paired_finite_n_{short}{what}_diff_sem"][j])
                    assert np.isnan(out[f"z_paired_finite_n_{short}{what}"][j])
                    continue
                assert out[f"paired_finite_n_{short}{what}_diff_sem"][j] == pytest.approx(
                    d.std(ddof=1) / math.sqrt(d.size), rel=1e-12)
                assert out[f"z_paired_finite_n_{short}{what}"][j] == pytest.approx(
                    d.mean() / (d.std(ddof=1) / math.sqrt(d.size)), rel=1e-12)
    other = fin.copy()
    other.attrs = {**fin.attrs, "param_seed": "7"}
    assert not any(k.startswith("paired_") for k in cmp.finite_n_for_sim(sim, other))
