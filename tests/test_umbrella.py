"""Umbrella sampling along the order parameter (THEORY.md §7, :mod:`grokphase.sims.umbrella`).

* The biased Gibbs readout: with a window (kappa/2)(m - m0)^2 on m = g.z_a the readout's conditional
  stays Gaussian with precision I_P x Lambda + kappa g g^T; the draw (Matheron's rule on the unbiased
  draw) is affine in its standard normals, so its mean and its exact covariance are compared with
  that Gaussian written out densely in NumPy, in the primal (N <= n), dual (N > n) and whole-table
  closed forms.  kappa = 0 returns the unbiased draw bit for bit.
* The order parameters against NumPy: the modular target component (f, y)/(y, y) from an explicit
  forward pass, the teacher-student learned fractions from THEORY.md §3's closed forms and, for tanh,
  a Gauss-Hermite quadrature of <f, He_k>.
* The bias enters the potential as s2 U: one driver step of a window differs from the plain step by
  exactly -eta s2 kappa (m - m0) grad_z m (m and its gradient from the closed form, written here).
* A stiff window holds m at m0 with the spread the exact conditional predicts (kappa Var(m | w) from
  NumPy at the chains' final weights; tolerance from the chains' standard error).
* A kappa = 0 window runs the plain chain (to rounding: XLA compiles the two programs differently).
* Interrupted and resumed umbrella runs equal the uninterrupted one; the Dataset follows the MBAR
  contract (dims, variables, coordinates, attributes); the window plan overlaps neighbours; bad options
  are one-line errors.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grokphase  # noqa: F401  (float64)
from grokphase.errors import ParameterError
from grokphase.sims import umbrella as umb
from grokphase.sims.driver import _as_tx, _member_step, run_ensemble
from grokphase.sims.modular import MODEL as MOD_MODEL
from grokphase.sims.modular import ModularSim, full_table_gram, gibbs_readout, run_modular
from grokphase.sims.modular import make_task as modular_task
from grokphase.sims.modular import summary_points as modular_points
from grokphase.sims.modular.readout import ReadoutBias, _draw_from_gram
from grokphase.sims.teacher_student import MODEL as TS_MODEL
from grokphase.sims.teacher_student import TeacherStudentSim, run_teacher_student
from grokphase.sims.teacher_student import make_task as ts_task


# ---------------------------------------------------------------------------------------------
# the biased Gibbs readout


def _table(P):
    return np.array([(i, j) for i in range(P) for j in range(P)])


def _features(w, pairs, P):
    return (w[pairs[:, 0]] + w[P + pairs[:, 1]]) ** 2          # (n, N)


def _targets(pairs, P):
    return np.eye(P)[(pairs[:, 0] + pairs[:, 1]) % P] - 1.0 / P


def _biased_gaussian(F, y, c, s2, g, kappa, m0):
    """Mean (N, P) and covariance (NP x NP, output-major: index p N + i) of z_a under
    exp(-|y - c F z|^2/(2 s2) - |z|^2/2 - (kappa/2)(m0 - g.z)^2)."""
    N, P = g.shape
    Lam = np.eye(N) + (c * c / s2) * F.T @ F
    gv = g.T.ravel()
    Q = np.kron(np.eye(P), Lam) + kappa * np.outer(gv, gv)
    h = ((c / s2) * F.T @ y).T.ravel() + kappa * m0 * gv
    cov = np.linalg.inv(Q)
    return (cov @ h).reshape(P, N).T, cov, np.linalg.cond(Q)


@pytest.mark.parametrize("form", ["primal", "dual", "full_table"])
def test_biased_gibbs_readout_is_the_exact_gaussian(form):
    """Mean and covariance of the window's readout draw equal the Gaussian with precision
    I_P x Lambda + kappa g g^T (rtol 1e-9: float64 with cond < 1e3).  kappa is chosen so that
    kappa g.Sigma g = 3: the rank-one term moves the mean by O(1) of its spread and couples the outputs
    (dropping it, or a kappa off by 2, fails by far more)."""
    P, N, n = {"primal": (5, 6, 18), "dual": (5, 12, 7), "full_table": (5, 6, 25)}[form]
    rng = np.random.default_rng({"primal": 1, "dual": 2, "full_table": 3}[form])
    c, s2 = 0.3, 0.5
    w = rng.normal(size=(2 * P, N))
    table = _table(P)
    pairs = table if form == "full_table" else table[rng.choice(P * P, size=n, replace=False)]
    y = _targets(pairs, P)
    F = _features(w, pairs, P)
    # the modular order parameter's direction: m = (f, y)/(y, y) over the whole table = g.z_a
    g = c * _features(w, table, P).T @ _targets(table, P) / (P * (P - 1))
    Sigma0 = np.linalg.inv(np.eye(N) + (c * c / s2) * F.T @ F)
    gSg = float(np.sum(g * (Sigma0 @ g)))
    kappa = 3.0 / gSg
    m0 = float(np.sum(g * (Sigma0 @ ((c / s2) * F.T @ y)))) + 2.0 * math.sqrt(gSg)     # 2 sd above the unbiased mean
    mean_ref, cov_ref, cond = _biased_gaussian(F, y, c, s2, g, kappa, m0)
    assert cond < 1e3

    # batched as in the engine (XLA:CPU's FFT thunk rejects the layout of an unbatched jit of the
    # whole-table Gram matrix: RET_CHECK in fft_thunk.cc, with or without a bias)
    @jax.jit
    @functools.partial(jax.vmap, in_axes=(0, 0, 0, 0, None))
    def draws_w(w, xi, eps, e, k):
        bias = ReadoutBias(g, k, m0, e)
        if form == "full_table":
            G, Fy = full_table_gram(w)
            return _draw_from_gram(G, Fy, c, s2, xi, bias)
        return gibbs_readout(w, jnp.asarray(pairs), jnp.asarray(y), c, s2, xi, eps if form == "dual" else None, bias)

    def draws(w, xi, eps, e, k):                   # w batched too, as in the engine
        return draws_w(jnp.broadcast_to(w, (xi.shape[0],) + w.shape), xi, eps, e, k)

    def draw(xi, eps, e, k=kappa):                 # one draw, as a batch of one
        return draws(jnp.asarray(w), xi[None], eps[None], e[None], k)

    zxi, zeps, ze = jnp.zeros((N, P)), jnp.zeros((n, P)), jnp.zeros(())
    mean = np.asarray(draw(zxi, zeps, ze))[0]
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-9, atol=1e-12 * np.abs(mean_ref).max())
    # the draw is mean + B xi + C eps + d e: its columns, read with unit vectors
    unit = lambda k, shape: jnp.eye(k).reshape((k,) + shape)                         # noqa: E731
    B = draws(jnp.asarray(w), unit(N * P, (N, P)), jnp.zeros((N * P, n, P)), jnp.zeros(N * P), kappa)
    cols = [B]
    if form == "dual":
        cols.append(draws(jnp.asarray(w), jnp.zeros((n * P, N, P)), unit(n * P, (n, P)), jnp.zeros(n * P), kappa))
    cols.append(draw(zxi, zeps, jnp.ones(())))
    M = np.concatenate([np.asarray(cc) - mean for cc in cols])                       # (columns, N, P)
    M = np.transpose(M, (0, 2, 1)).reshape(M.shape[0], -1)                           # output-major vec
    np.testing.assert_allclose(M.T @ M, cov_ref, rtol=1e-9, atol=1e-11 * np.abs(cov_ref).max())
    # kappa = 0 is the unbiased draw, bit for bit
    xi = jnp.asarray(rng.normal(size=(N, P)))
    eps = jnp.asarray(rng.normal(size=(n, P)))

    @jax.jit
    @jax.vmap
    def plain(w, xi, eps):
        if form == "full_table":
            return _draw_from_gram(*full_table_gram(w), c, s2, xi)
        return gibbs_readout(w, jnp.asarray(pairs), jnp.asarray(y), c, s2, xi, eps if form == "dual" else None)

    np.testing.assert_array_equal(np.asarray(draw(xi, eps, jnp.ones(()), 0.0)),
                                  np.asarray(plain(jnp.asarray(w)[None], xi[None], eps[None])))


# ---------------------------------------------------------------------------------------------
# order parameters and the bias in the potential


def _modular_sim(**kw):
    """The modular test configuration (the static sizes are shared, so the tests share compiles)."""
    base = dict(P=11, N=8, s2=(0.1,), sa2=4e-4 * (23 / 11) ** 2, gamma=0.01, seeds=2, steps=30, burn_in=10,
                record_every=10, lr=0.01, dtype="float64", umbrella_m0=(0.0, 0.2), umbrella_kappa=(1e3,))
    base.update(kw)
    return ModularSim(**base)


def _ts_sim(**kw):
    base = dict(N=12, n=20, d=6, s2=(0.15,), datasets=2, inits=1, steps=30, burn_in=10, record_every=10, lr=0.05,
                n_test=50, q_bins=20, qt_q_bins=6, t_bins=5, dtype="float64", umbrella_m0=(0.3,),
                umbrella_kappa=(50.0,))
    base.update(kw)
    return TeacherStudentSim(**base)


def _one(task, members, j=0):
    hyper = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)[j]), members.hyper)
    data = task.make_data(jnp.asarray(members.data_keys[j]), hyper)
    return hyper, data


def test_modular_order_parameter_is_the_target_component():
    """m = (f, y)/(y, y) over the whole table from an explicit NumPy forward pass, also with a training
    split (m is a whole-table quantity)."""
    for alpha in (1.0, 0.6):
        sim = _modular_sim(alpha=alpha, gamma=0.0)
        task = modular_task(sim)
        members, _ = umb.build_umbrella_members(MOD_MODEL, sim, np.zeros(1), np.ones(1), ["prior"])
        hyper, data = _one(task, members)
        rng = np.random.default_rng(4)
        theta = {"w": rng.normal(size=(2 * sim.P, sim.N)), "a": rng.normal(size=(sim.N, sim.P)) * 0.3}
        table = _table(sim.P)
        f = sim.scale * _features(theta["w"], table, sim.P) @ theta["a"]
        y = _targets(table, sim.P)
        expect = np.sum(f * y) / np.sum(y * y)
        assert task.order_parameter_name == "target_component"
        assert float(jax.jit(task.order_parameter)(theta, data, hyper)) == pytest.approx(expect, rel=1e-12)


def _cubic_learned(w, a, w_star, eps):
    """THEORY.md §3: <f, H3/sqrt6>/(sqrt6 eps) = -sum_i a_i 4 q_i^3 / (sqrt(6 pi) D_i^{3/2}) / (sqrt6 eps)."""
    q = w_star @ w
    D = 1.0 + 2.0 * jnp.sum(w * w, axis=0)
    return -jnp.sum(a * 4.0 * q**3 / (jnp.sqrt(6.0 * jnp.pi) * D**1.5)) / (math.sqrt(6.0) * eps)


def test_teacher_student_order_parameters_against_closed_forms_and_quadrature():
    sim = _ts_sim()
    rng = np.random.default_rng(5)
    theta = {"w": rng.normal(size=(sim.d, sim.N)) * 0.5, "a": rng.normal(size=sim.N)}
    task = ts_task(sim)
    members, _ = umb.build_umbrella_members(TS_MODEL, sim, np.zeros(1), np.ones(1), ["prior"])
    hyper, data = _one(task, members)
    assert task.order_parameter_name == "learned_3"
    expect = float(_cubic_learned(theta["w"], theta["a"], np.asarray(data["w_star"]), sim.eps))
    assert float(task.order_parameter(theta, data, hyper)) == pytest.approx(expect, rel=1e-12)
    lin = ts_task(_ts_sim(umbrella_degree=1))
    assert lin.order_parameter_name == "learned_1"
    q = np.asarray(data["w_star"]) @ theta["w"]
    D = 1.0 + 2.0 * np.sum(theta["w"] ** 2, axis=0)
    assert float(lin.order_parameter(theta, data, hyper)) == pytest.approx(
        np.sum(theta["a"] * 2 * q / np.sqrt(np.pi * D)), rel=1e-12)
    # tanh on He1 + 0.5 He2, degree 2: <f, He2>/(2! c_2) by a Gauss-Hermite quadrature over
    # (s = w*.x, u), w_i.x = q_i s + sqrt(|w_i|^2 - q_i^2) u
    fam = _ts_sim(activation="tanh", target="1:1,2:0.5")
    task = ts_task(fam)
    assert task.order_parameter_name == "learned_2"
    x, wt = np.polynomial.hermite_e.hermegauss(80)
    wt = wt / np.sqrt(2 * np.pi)
    t = np.sum(theta["w"] ** 2, axis=0) - q * q
    pre = q[:, None, None] * x[None, :, None] + np.sqrt(t)[:, None, None] * x[None, None, :]
    E = np.einsum("i,j,nij->n", wt * (x * x - 1.0), wt, np.tanh(pre))
    expect = np.sum(theta["a"] * E) / (2.0 * 0.5)
    assert float(task.order_parameter(theta, data, hyper)) == pytest.approx(expect, rel=1e-8)


def test_the_bias_enters_the_potential_as_s2_times_U():
    """One driver step of a teacher-student window minus the plain step with the same key is
    -eta s2 kappa (m - m0) grad_z m, m the closed-form cubic learned fraction (theta = prior std * z)."""
    sim = _ts_sim()
    plain = dataclasses.replace(sim, umbrella_m0=None, umbrella_kappa=None)
    members, _ = umb.build_umbrella_members(TS_MODEL, sim, np.array([0.3]), np.array([50.0]), ["prior"])
    tu, tp = ts_task(sim), ts_task(plain)
    hyper, data = _one(tu, members)
    hp = hyper._replace(umbrella_kappa=None, umbrella_m0=None)
    z = tp.init(jnp.asarray(members.init_keys[0]), data, hp)
    opt = _as_tx(tp.make_tx(hp)).init(z)
    key = jnp.asarray(members.noise_keys[0])
    a = jax.jit(lambda z: _member_step(tp, z, opt, data, hp, key, 3)[0])(z)
    b = jax.jit(lambda z: _member_step(tu, z, opt, data, hyper, key, 3)[0])(z)
    sa, sw = math.sqrt(sim.sa2_value / sim.N), math.sqrt(sim.sw2 / sim.d)

    def m_of(zz):
        return _cubic_learned(sw * zz["w"], sa * zz["a"], data["w_star"], sim.eps)

    m, grad = jax.value_and_grad(m_of)(z)
    assert abs(float(m) - 0.3) > 0.1                           # the bias pulls
    for k in ("w", "a"):
        expect = -sim.lr * sim.s2[0] * 50.0 * (float(m) - 0.3) * np.asarray(grad[k])
        np.testing.assert_allclose(np.asarray(b[k]) - np.asarray(a[k]), expect, rtol=1e-8,
                                   atol=1e-12 * np.abs(expect).max())


# ---------------------------------------------------------------------------------------------
# windows in runs


def test_a_stiff_window_holds_m_at_m0_with_the_conditional_spread():
    """kappa = 1e5 on the modular target component (P = 5, N = 8): given the input weights w the readout
    is drawn from the biased conditional, so over a chain's records sqrt(kappa)(m - m0) has the mean
    sqrt(kappa)(E[m | w] - m0) = sqrt(kappa)(g.mu0 - m0)/(1 + kappa g.Sigma g) and the variance
    kappa g.Sigma g/(1 + kappa g.Sigma g), written out in NumPy at each chain's final w (w moves little:
    the bias stiffness of the w-steps stays < 0.3).  Pooled over the 8 chains (2 windows x 4 seeds),
    within 4 standard errors.  Here kappa g.Sigma g > 9, so the window holds m within about one
    1/sqrt(kappa) of m0, where an unbiased chain sits sqrt(kappa) 0.15 ~ 47 of them below the second
    window; a window twice as stiff (or half) moves the variance by ~0.5, > 10 standard errors."""
    kappa = 1e5
    sim = _modular_sim(P=5, N=8, sa2=0.01, s2=(0.2,), gamma=0.0, seeds=4, steps=250, burn_in=50, record_every=2,
                       lr=1e-3, umbrella_m0=(0.0, 0.15), umbrella_kappa=(kappa,))
    m0 = np.repeat(np.asarray(sim.umbrella_m0), sim.seeds)
    task = modular_task(sim)
    members, _ = umb.build_umbrella_members(MOD_MODEL, sim, np.asarray(sim.umbrella_m0), np.full(2, kappa), ["prior"])
    out = run_ensemble(task, members, sim.schedule)
    after = out.record_steps > sim.burn_in
    stiff = np.asarray(out.records["bias_stiffness"])
    assert stiff.max() < 0.3, stiff.max()
    x = (np.asarray(out.records["order_parameter"])[:, after] - m0[:, None]) * math.sqrt(kappa)
    c, s2 = math.sqrt(sim.sa2_value / sim.N), sim.s2[0]
    table = _table(sim.P)
    y = _targets(table, sim.P)
    mean_ref, var_ref = [], []
    for j in range(x.shape[0]):
        F = _features(out.z["w"][j], table, sim.P)
        g = c * F.T @ y / (sim.P * (sim.P - 1))
        Sigma0 = np.linalg.inv(np.eye(sim.N) + (c * c / s2) * F.T @ F)
        gSg, gmu = np.sum(g * (Sigma0 @ g)), np.sum(g * (Sigma0 @ ((c / s2) * F.T @ y)))
        mean_ref.append(math.sqrt(kappa) * (gmu - m0[j]) / (1 + kappa * gSg))
        var_ref.append(kappa * gSg / (1 + kappa * gSg))
    mean_ref, var_ref = np.asarray(mean_ref), np.asarray(var_ref)
    assert np.all(var_ref > 0.9)
    n = x.shape[1]
    var = x.var(axis=1, ddof=1)
    se_var = var.std(ddof=1) / math.sqrt(var.size)
    assert abs(var.mean() - var_ref.mean()) < 4 * se_var, (var, var_ref)
    dmean = x.mean(axis=1) - mean_ref
    se_mean = math.sqrt(var.mean() / n / var.size)
    assert abs(dmean.mean()) < 4 * se_mean + 4 * dmean.std(ddof=1) / math.sqrt(var.size), (dmean, se_mean)
    assert np.all(np.abs(x.mean(axis=1)) < 1.5)


def test_a_zero_kappa_window_runs_the_plain_chain():
    """kappa = 0: every record and the final parameters of the plain task on the same members (float64;
    equal to rounding: XLA compiles the two programs differently)."""
    sim = _modular_sim(umbrella_m0=(0.0, 0.1, 0.2, 0.3), umbrella_kappa=(0.0,))    # 8 networks, as below
    plain = dataclasses.replace(sim, umbrella_m0=None, umbrella_kappa=None)
    members, _ = umb.build_umbrella_members(MOD_MODEL, sim, np.asarray(sim.umbrella_m0), np.zeros(4), ["prior"])
    a = run_ensemble(modular_task(plain), members._replace(hyper=members.hyper._replace(umbrella_kappa=None,
                                                                                          umbrella_m0=None)),
                     sim.schedule)
    b = run_ensemble(modular_task(sim), members, sim.schedule)
    assert set(b.records) - set(a.records) == {"order_parameter", "potential", "bias_stiffness"}
    for name in list(a.records) + ["z_w", "z_a"]:
        x, y = (a.z[name[2:]], b.z[name[2:]]) if name.startswith("z_") else (a.records[name], b.records[name])
        np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-13 * max(1.0, np.abs(x).max()), err_msg=name)
    assert np.all(b.records["bias_stiffness"] == 0.0)


def test_plain_runs_keep_their_parameters_and_checkpoint_configs():
    """The umbrella options at their defaults are not part of parameters() (result attributes, checkpoint
    hashes), so plain runs keep their identities; an umbrella run's are its own."""
    for sim in (_modular_sim(umbrella_m0=None, umbrella_kappa=None), _ts_sim(umbrella_m0=None, umbrella_kappa=None)):
        assert not any(k.startswith("umbrella") for k in sim.parameters())
    assert _modular_sim().parameters()["umbrella_m0"] == [0.0, 0.2]
    assert _ts_sim(umbrella_degree=1).parameters()["umbrella_degree"] == 1


def test_umbrella_dataset_contract_and_resume(tmp_path):
    sim = _modular_sim(umbrella_start="both")
    full = run_modular(sim)
    with pytest.raises(Exception, match="stopped after"):
        run_modular(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0, _stop_after_records=2)
    resumed = run_modular(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0)
    assert resumed.attrs["resumed"] == 1
    assert set(resumed.data_vars) == set(full.data_vars)
    for name in full.data_vars:
        np.testing.assert_array_equal(resumed[name].values, full[name].values, err_msg=name)

    ds = full
    S, J, K = len(sim.s2), 2, sim.seeds
    for name in ("order_parameter_trajectory", "potential_trajectory"):
        assert ds[name].dims == ("s2", "start", "window", "seed", "time") and ds[name].dtype == np.float64
        assert ds[name].shape == (S, 2, J, K, 3)
    np.testing.assert_array_equal(ds["time"].values, [10, 20, 30])
    assert list(ds["start"].values) == ["prior", "ordered"]
    np.testing.assert_array_equal(ds["window_m0"].values, [0.0, 0.2])
    np.testing.assert_array_equal(ds["window_kappa"].values, [1e3, 1e3])
    assert ds["window_m0"].dims == ("window",) and ds["window_kappa"].dims == ("window",)
    a = ds.attrs
    assert a["umbrella"] == 1 and a["umbrella_order_parameter"] == "target_component"
    assert a["umbrella_system_dims"] == "" and a["umbrella_start"] == "both" and a["protocol"] == "umbrella"
    assert a["param_burn_in"] == 10 and "parameters_json" in a and "seeds" in a and "grokphase_version" in a
    # m is the recorded target component; L = 1/2 sum over the training pairs and outputs of (f - y)^2
    np.testing.assert_allclose(ds["order_parameter_trajectory"], ds["target_component_trajectory"], rtol=1e-10)
    np.testing.assert_allclose(ds["potential_trajectory"], 0.5 * ds["train_mse_trajectory"] * sim.n_train * sim.P,
                               rtol=1e-10)
    # the ordered start begins near the droplet saddle's target component, the prior near 0
    first = ds["order_parameter_trajectory"].isel(time=0, window=0)
    assert float(first.sel(start="ordered").mean()) > float(first.sel(start="prior").mean())
    # the per-point summaries per start and window
    assert ds["target_component"].dims == ("s2", "start", "window")
    pts = modular_points(ds)
    assert len(pts) == 2 * J * S and {p["start"] for p in pts} == {"prior", "ordered"}
    assert [p["window_m0"] for p in pts[:J]] == [0.0, 0.2]
    # every seed its own training split: each seed is a system of its own
    assert MOD_MODEL.system_dims(_modular_sim(alpha=0.5)) == "seed"


def test_teacher_student_umbrella_dataset(monkeypatch):
    from grokphase.sims.teacher_student import dataset as tsd

    # the droplet threshold's theory is not under test here (and costs ~40 s to compile)
    monkeypatch.setattr(tsd, "droplet_thresholds", lambda sim: (np.full(len(sim.s2), 0.4), np.full(len(sim.s2), 0.1)))
    tsd._umbrella_thresholds.cache_clear()
    sim = _ts_sim(datasets=2, inits=2, umbrella_m0=(0.0, 0.3))
    ds = run_teacher_student(sim)
    tsd._umbrella_thresholds.cache_clear()
    assert ds["order_parameter_trajectory"].dims == ("s2", "window", "dataset", "init", "time")
    assert "start" not in ds.dims
    assert ds.attrs["umbrella_order_parameter"] == "learned_3" and ds.attrs["umbrella_system_dims"] == "dataset"
    np.testing.assert_allclose(ds["order_parameter_trajectory"], ds["cubic_learned_trajectory"], rtol=1e-12)
    np.testing.assert_allclose(ds["potential_trajectory"], 0.5 * ds["train_mse_trajectory"] * sim.n, rtol=1e-10)
    assert ds["cubic_learned"].dims == ("s2", "window")


def test_plan_gives_overlapping_neighbours():
    """From the pilots' variances: kappa = 4/Var_prior and the fewest windows at most 2 window standard
    deviations apart (a count too small for that is an error naming the count needed).  Planned from
    real pilots and run, neighbouring windows overlap: their means are closer than 2 (sd_j + sd_j+1)
    (a plan spacing its windows 8 window standard deviations apart fails)."""
    plan = umb.plan_windows(None, None, None, m_range=(0.0, 0.5), variances=(1e-3, 2e-4))
    assert plan.kappa[0] == pytest.approx(4e3)
    std = 1 / math.sqrt(4e3 + 1 / 2e-4)
    assert plan.window_std == pytest.approx(std) and plan.spacing <= 2 * std + 1e-12
    assert 0.5 / (len(plan.m0) - 2) > 2 * std                                       # the fewest such windows
    with pytest.raises(ParameterError, match="use umbrella_windows >= "):
        umb.plan_windows(None, None, None, m_range=(0.0, 0.5), windows=3, kappa=1e4, variances=(1e-3, 2e-4))

    # real pilots (8 networks, as every modular ensemble of this file: one compile): the fewest windows
    # over three planned spacings are 4; run at the planned kappa they overlap
    sim = _modular_sim(umbrella_m0=None, umbrella_kappa=None, umbrella_range=(0.0, 1.0), seeds=4, steps=160,
                       burn_in=60, record_every=4, lr=2e-3)
    task = modular_task(sim)
    variances = umb.pilot_variances(MOD_MODEL, sim, task)[:2]
    width = 2 * umb.plan_windows(MOD_MODEL, sim, task, variances=variances).window_std
    plan = umb.plan_windows(MOD_MODEL, sim, task, m_range=(0.0, 2.97 * width), variances=variances)
    assert len(plan.m0) == 4 and plan.kappa[0] == pytest.approx(4.0 / variances[0])
    windows = _modular_sim(umbrella_m0=tuple(plan.m0), umbrella_kappa=(plan.kappa[0],), seeds=2, steps=160,
                           burn_in=60, record_every=4, lr=2e-3)
    ds = run_modular(windows)
    m = ds["order_parameter_trajectory"].sel(time=slice(61, None)).isel(s2=0)       # (window, seed, time)
    mean = m.mean(dim=("seed", "time")).values
    sd = m.std(dim=("seed", "time")).values
    assert np.all(np.abs(np.diff(mean)) < 2 * (sd[1:] + sd[:-1])), (mean, sd)
    # the same plan inside a run (umbrella_range, two windows within one planned spacing): recorded
    auto = run_modular(dataclasses.replace(sim, umbrella_range=(0.0, 0.9 * width), umbrella_windows=2))
    assert auto.attrs["umbrella_plan"] == "auto" and auto.attrs["umbrella_plan_kappa"] == "planned"
    assert auto.attrs["umbrella_plan_var_prior"] == variances[0] and auto.attrs["umbrella_plan_pilot_steps"] == 200
    np.testing.assert_allclose(auto["window_m0"].values, [0.0, 0.9 * width])
    np.testing.assert_allclose(auto["window_kappa"].values, plan.kappa[:2])
    assert auto.attrs["param_umbrella_range"].tolist() == [0.0, 0.9 * width]


# ---------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize("kwargs, needle", [
    (dict(umbrella_kappa=(1.0,), umbrella_m0=None), "umbrella_kappa applies only to umbrella windows"),
    (dict(umbrella_kappa=None), "umbrella_m0 needs umbrella_kappa"),
    (dict(umbrella_kappa=(1.0, 2.0, 3.0)), "one value or one per window"),
    (dict(umbrella_kappa=(-1.0,)), "umbrella_kappa must be >= 0"),
    (dict(umbrella_m0=(0.0, float("nan"))), "finite numbers"),
    (dict(umbrella_range=(0.0, 1.0)), "not both"),
    (dict(umbrella_m0=None, umbrella_kappa=None, umbrella_range=(1.0, 0.0)), "lo < hi"),
    (dict(umbrella_windows=4), "umbrella_windows .* needs umbrella_range"),
    (dict(umbrella_start="sideways"), "unknown umbrella_start"),
    (dict(umbrella_m0=None, umbrella_kappa=None, umbrella_start="both"), "umbrella_start applies only"),
    (dict(anneal="down", s2=(0.1, 0.2)), "umbrella windows and anneal are separate protocols"),
    (dict(replica_exchange=True, s2=(0.1, 0.2)), "umbrella windows and replica exchange"),
    (dict(optimizer="adamw", parametrisation="gromov"), "need optimizer langevin"),
    (dict(start="ordered"), "not start"),
    (dict(umbrella_start="both", gamma=0.0), "umbrella_start both: the ordered start"),
])
def test_bad_modular_umbrella_options(kwargs, needle):
    with pytest.raises(ParameterError, match=needle) as err:
        _modular_sim(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(umbrella_degree=2), "one of the target's degrees"),
    (dict(umbrella_degree=3, umbrella_m0=None, umbrella_kappa=None), "umbrella_degree applies only"),
    (dict(umbrella_start="ordered", activation="tanh"), "needs the paper's model"),
    (dict(anneal="up", s2=(0.1, 0.2)), "separate protocols"),
])
def test_bad_teacher_student_umbrella_options(kwargs, needle):
    with pytest.raises(ParameterError, match=needle) as err:
        _ts_sim(**kwargs)
    assert "\n" not in str(err.value)


def test_cli_umbrella_errors_are_one_line(capsys):
    from grokphase.cli import main

    for argv in (["modular", "--umbrella-kappa", "1e5"], ["modular", "--umbrella-m0", "0,0.1", "--umbrella-kappa", "1,2,3"],
                 ["modular", "--umbrella-m0=-0.1,0.1", "--umbrella-kappa", "1", "--plot", "x.png"],
                 ["teacher-student", "--umbrella-m0", "0,0.5", "--umbrella-kappa", "1e3", "--optimizer", "adam"],
                 ["teacher-student", "--umbrella-range", "0,0.5", "--umbrella-windows", "1"]):
        try:
            rc = main(["sim", *argv, "--steps", "5"])
        except SystemExit as exc:
            rc = exc.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (argv, err)


def test_experiment_tables_carry_the_umbrella_options():
    """The [[sim]] tables of the umbrella example files build umbrella sims (the TOML schema, cheap:
    nothing is run); an umbrella option without windows in a table is an error naming it."""
    import tomllib
    from pathlib import Path

    from grokphase.experiments.models import modular as modular_model
    from grokphase.experiments.models import teacher_student as ts_model

    root = Path(__file__).resolve().parents[1] / "sims"
    spec = tomllib.loads((root / "free_energy_modular.toml").read_text())["sim"][0]
    (sim,) = modular_model.sims_from_options({k: v for k, v in spec.items() if k != "name"}, "P23", strict=True,
                                             given=set(spec) - {"name"})
    assert sim.umbrella_m0 == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7) and sim.umbrella_kappa == (1e5,)
    assert sim.umbrella_start == "both" and sim.readout == "gibbs"
    spec = tomllib.loads((root / "free_energy_ts.toml").read_text())["sim"][0]
    sim = ts_model.sim_from_options({k: v for k, v in spec.items() if k != "name"}, "beta8", strict=True,
                                    given=set(spec) - {"name"})
    assert sim.umbrella_range == (0.0, 0.3) and sim.umbrella and sim.order_degree == 3 and (sim.N, sim.d) == (88, 53)
    with pytest.raises(ParameterError, match="beta8: umbrella_start .* has no effect here"):
        ts_model.sim_from_options({"umbrella_start": "both"}, "beta8", strict=True, given={"umbrella_start"})


# ---------------------------------------------------------------------------------------------
# several coordinates: the first-layer IPR beside the target component


def _ipr_numpy(w, P):
    """The mean over neurons of (IPR(u_i) + IPR(v_i))/2 written out with numpy.fft: per half the powers
    |x_k|^2 + |x_{-k}|^2 of the pairs k = 1 .. P//2 (odd P), normalised, squared and summed."""
    out = []
    for half in (w[:P].T, w[P:].T):
        X = np.abs(np.fft.fft(half, axis=1)) ** 2
        pw = X[:, 1:P // 2 + 1] + X[:, P - 1:P - P // 2 - 1:-1]
        tot = pw.sum(axis=1, keepdims=True)
        out.append(np.where(tot[:, 0] > 0, np.sum((pw / np.where(tot > 0, tot, 1)) ** 2, axis=1), 0.0))
    return float(np.mean(0.5 * (out[0] + out[1])))


def _two_coordinate_sim(**kw):
    base = dict(umbrella_coordinates="target_component,ipr", umbrella_m0=(0.0, 0.2, 0.3), umbrella_windows=(2, 1),
                umbrella_kappa=(1e3, 5e4))
    base.update(kw)
    return _modular_sim(**base)


def test_ipr_coordinate_against_numpy_finite_differences_and_the_record():
    """The "ipr" coordinate equals the NumPy IPR and the task's own ``ipr`` record (float64, the same
    formula), and its autodiff gradient matches central differences along random directions (h = 1e-5:
    the truncation error h^2 |f'''| ~ 1e-10 against derivatives ~1e-2, so rtol 1e-6; a wrong gradient,
    e.g. without the normalisation's derivative, is off by O(1)).  An all-zero neuron (no power at all:
    the guarded case) gives IPR 0 and a zero, finite gradient there."""
    from grokphase.sims.modular.task import ipr_coordinate

    sim = _modular_sim(umbrella_coordinates="ipr", umbrella_m0=(0.2,), umbrella_kappa=(1e3,))
    P = sim.P
    task = modular_task(sim)
    assert task.order_parameter_name == "ipr" and task.coordinate_names is None
    members, _ = umb.build_umbrella_members(MOD_MODEL, sim, np.zeros(1), np.ones(1), ["prior"])
    hyper, data = _one(task, members)
    rng = np.random.default_rng(7)
    w = rng.normal(size=(2 * P, sim.N))
    w[:, 0] += 2.0 * np.cos(2 * np.pi * 3 * np.arange(2 * P) / P)           # one neuron partly localised
    theta = {"w": jnp.asarray(w), "a": jnp.asarray(rng.normal(size=(sim.N, P)) * 0.1)}
    value = float(task.order_parameter(theta, data, hyper))
    assert value == pytest.approx(_ipr_numpy(w, P), rel=1e-12)
    record, _ = task.observe(theta, data, hyper, task.init_accum(theta, data, hyper), jnp.ones(()))
    assert value == pytest.approx(float(record["ipr"]), rel=1e-12)
    f = jax.jit(lambda ww: ipr_coordinate(ww, P))
    grad = np.asarray(jax.grad(lambda ww: ipr_coordinate(ww, P))(jnp.asarray(w)))
    h = 1e-5
    for _ in range(3):
        d = rng.normal(size=w.shape)
        fd = (float(f(jnp.asarray(w + h * d))) - float(f(jnp.asarray(w - h * d)))) / (2 * h)
        assert float(np.sum(grad * d)) == pytest.approx(fd, rel=1e-6)
    w0 = w.copy()
    w0[:, 2] = 0.0                                 # neuron 2: zero
    g0 = np.asarray(jax.grad(lambda ww: ipr_coordinate(ww, P))(jnp.asarray(w0)))
    assert np.all(np.isfinite(g0)) and np.all(g0[:, 2] == 0.0)
    assert float(f(jnp.asarray(w0))) == pytest.approx(_ipr_numpy(w0, P), rel=1e-12)


def test_a_first_layer_bias_leaves_the_gibbs_readout_alone_and_moves_w_by_its_gradient():
    """A window on the IPR (a function of w alone) does not enter the readout's conditional: with windows
    on (target component, IPR) the Gibbs draw equals the target-component-only task's with the same window
    bit for bit, and with the IPR alone it equals the plain task's.  One driver step with the IPR window
    minus the plain step with the same key is exactly -eta s2 kappa (ipr - ipr0) grad_w ipr on w (autodiff
    of the summed bias) and 0 on the readout."""
    both = _two_coordinate_sim()
    tc_only = _modular_sim(umbrella_m0=(0.0, 0.2), umbrella_kappa=(1e3,))
    ipr_only = _modular_sim(umbrella_coordinates="ipr", umbrella_m0=(0.2,), umbrella_kappa=(5e4,))
    plain = dataclasses.replace(tc_only, umbrella_m0=None, umbrella_kappa=None)
    t2, t1, ti, tp = (modular_task(s) for s in (both, tc_only, ipr_only, plain))
    assert t2.coordinate_names == ("target_component", "ipr")
    m0, kappa = umb.explicit_windows(both)
    members, _ = umb.build_umbrella_members(MOD_MODEL, both, m0, kappa, ["prior"])
    h2, data = _one(t2, members, j=2)                       # window (0.2, 0.3)
    assert np.asarray(h2.umbrella_m0).tolist() == [0.2, 0.3] and np.asarray(h2.umbrella_kappa).tolist() == [1e3, 5e4]
    h1 = h2._replace(umbrella_m0=h2.umbrella_m0[0], umbrella_kappa=h2.umbrella_kappa[0])
    hi = h2._replace(umbrella_m0=jnp.asarray(0.2), umbrella_kappa=h2.umbrella_kappa[1])    # IPR0 = 0.2
    hp = h2._replace(umbrella_m0=None, umbrella_kappa=None)
    z = tp.init(jnp.asarray(members.init_keys[2]), data, hp)
    key = jax.random.PRNGKey(11)
    # the draws eagerly and the steps vmapped over one network: XLA:CPU (jaxlib 0.10) fails a layout
    # RET_CHECK in its FFT thunk when a modular gibbs or step is jitted unbatched (the driver always maps)
    draw = lambda t, h: np.asarray(t.gibbs(z, data, h, key)["a"])  # noqa: E731
    assert np.array_equal(draw(t2, h2), draw(t1, h1))
    assert not np.array_equal(draw(t1, h1), draw(tp, hp))           # the target-component window does act
    assert np.array_equal(draw(ti, hi), draw(tp, hp))
    opt = _as_tx(tp.make_tx(hp)).init(z)
    noise = jnp.asarray(members.noise_keys[2])
    one = jax.tree_util.tree_map(lambda x: x[None], z)

    def step(t, h):
        out = jax.jit(jax.vmap(lambda zz: _member_step(t, zz, opt, data, h, noise, 3)[0]))(one)
        return jax.tree_util.tree_map(lambda x: np.asarray(x)[0], out)

    a, b = step(tp, hp), step(ti, hi)
    from grokphase.sims.modular.task import ipr_coordinate
    m, grad = jax.value_and_grad(lambda ww: ipr_coordinate(ww, both.P))(z["w"])   # paper: theta_w = z_w
    assert abs(float(m) - 0.2) > 0.1                  # the bias pulls (a prior draw's IPR: 4/(P + 1) = 0.33)
    expect = -both.lr * both.s2[0] * 5e4 * (float(m) - 0.2) * np.asarray(grad)
    np.testing.assert_allclose(np.asarray(b["w"]) - np.asarray(a["w"]), expect, rtol=1e-8,
                               atol=1e-12 * np.abs(expect).max())
    assert np.array_equal(np.asarray(b["a"]), np.asarray(a["a"]))


def test_two_coordinate_windows_are_the_product_grid():
    """Explicit centres per coordinate (split by umbrella_windows), the first coordinate slowest; members
    carry (C,) windows in the s2 x start x window x unit order; the plan is per coordinate from its own
    pilot variances and refuses a grid of more than MAX_WINDOWS."""
    sim = _two_coordinate_sim(umbrella_m0=(0.0, 0.1, 0.2, 0.15, 0.25), umbrella_windows=(3, 2),
                              umbrella_kappa=(1.0, 2.0, 3.0, 10.0, 20.0))
    m0, kappa = umb.explicit_windows(sim)
    assert m0.tolist() == [[0.0, 0.15], [0.0, 0.25], [0.1, 0.15], [0.1, 0.25], [0.2, 0.15], [0.2, 0.25]]
    assert kappa.tolist() == [[1, 10], [1, 20], [2, 10], [2, 20], [3, 10], [3, 20]]
    members, labels = umb.build_umbrella_members(MOD_MODEL, sim, m0, kappa, ["prior", "ordered"])
    K = sim.seeds
    assert np.asarray(members.hyper.umbrella_m0).shape == (2 * 6 * K, 2)
    j, t, k = 4, 1, 1                                               # window 4 of the ordered start, seed 1
    idx = umb._member_index(1, 2, 6, K, t, j)[k]
    assert np.asarray(members.hyper.umbrella_m0)[idx].tolist() == [0.2, 0.15]
    assert "ordered start, window 4 m0=0.2,0.15 kappa=3,10" in labels[idx]
    assert sim.parameters()["umbrella_windows"] == [3, 2]
    assert sim.parameters()["umbrella_coordinates"] == ["target_component", "ipr"]
    planned = _two_coordinate_sim(umbrella_m0=None, umbrella_kappa=None, umbrella_windows=None,
                                  umbrella_range=(0.0, 0.1, 0.2, 0.3))
    plan = umb.plan_windows(None, planned, None, variances=(np.array([1e-4, 1e-3]), np.array([5e-5, np.nan])))
    k0, k1 = 4 / 1e-4, 4 / 1e-3
    s0, s1 = 1 / math.sqrt(k0 + 1 / 5e-5), 1 / math.sqrt(k1 + 1 / 1e-3)
    J0, J1 = math.ceil(0.1 / (2 * s0)) + 1, math.ceil(0.1 / (2 * s1)) + 1
    assert plan.m0.shape == (J0 * J1, 2) and plan.kappa[0].tolist() == pytest.approx([k0, k1])
    assert plan.m0[:J1, 0].tolist() == [0.0] * J1
    assert plan.m0[:J1, 1].tolist() == pytest.approx(np.linspace(0.2, 0.3, J1))
    assert plan.attrs()["umbrella_plan_window_std"].tolist() == pytest.approx([s0, s1])
    with pytest.raises(ParameterError, match="product grid has"):
        umb.plan_windows(None, planned, None, variances=(np.array([1e-6, 1e-6]), np.array([np.nan, np.nan])))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(umbrella_coordinates="target_component,droplets"), "unknown umbrella coordinate 'droplets'"),
    (dict(umbrella_coordinates="ipr,ipr"), "names a coordinate twice"),
    (dict(umbrella_windows=(2, 2)), r"add up to 4 centres but umbrella_m0 has 3"),
    (dict(umbrella_windows=(3,)), "must be 2 integer counts"),
    (dict(umbrella_windows=None), "needs umbrella_windows"),
    (dict(umbrella_kappa=(1.0, 2.0, 3.0, 4.0)), "one value per coordinate"),
    (dict(umbrella_m0=None, umbrella_kappa=None, umbrella_windows=None, umbrella_range=(0.0, 0.1)),
     "must be 2 pairs lo, hi"),
    (dict(umbrella_m0=None, umbrella_kappa=None, umbrella_windows=None, umbrella_range=(0.0, 0.1, 0.3, 0.2)),
     "coordinate 2 must be lo < hi"),
    (dict(umbrella_m0=None, umbrella_kappa=(1.0,), umbrella_windows=None, umbrella_range=(0, 0.1, 0.2, 0.3)),
     "one value per coordinate"),
    (dict(umbrella_m0=None, umbrella_kappa=None, umbrella_windows=(200, 2), umbrella_range=(0, 0.1, 0.2, 0.3)),
     "product grid"),
    (dict(umbrella_m0=None, umbrella_kappa=None, umbrella_windows=None), "umbrella_coordinates applies only"),
])
def test_bad_two_coordinate_options(kwargs, needle):
    with pytest.raises(ParameterError, match=needle) as err:
        _two_coordinate_sim(**kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="unknown umbrella coordinate 'ipr'; choose from learned_3"):
        _ts_sim(umbrella_coordinates="ipr")


def test_one_coordinate_named_explicitly_is_the_default_run():
    """umbrella_coordinates naming the primary alone is the default (the same parameters and hash)."""
    named = _modular_sim(umbrella_coordinates="target_component")
    assert named.umbrella_coordinates is None and named.parameters() == _modular_sim().parameters()
    assert _ts_sim(umbrella_coordinates="learned_3").parameters() == _ts_sim().parameters()


def test_two_coordinate_umbrella_dataset():
    """A run with windows on (target component, IPR) (one seed, from the prior: the start dimension is
    the one-coordinate contract's): the coordinate dimension on the MBAR inputs and window arrays, the IPR
    column equal to the model's own ``ipr`` record at every record (float64 run: the same formula), the
    per-coordinate bias stiffness, the attributes and the CLI's points."""
    sim = _two_coordinate_sim(seeds=1, gamma=0.0)              # gamma = 0: no theory solve for the droplet rule
    ds = run_modular(sim)
    opt = ds["order_parameter_trajectory"]
    assert opt.dims == ("s2", "window", "seed", "coordinate", "time")
    assert ds["coordinate"].values.tolist() == ["target_component", "ipr"]
    assert ds["window_m0"].dims == ("window", "coordinate") and ds["window_m0"].values.tolist() == [[0.0, 0.3],
                                                                                                       [0.2, 0.3]]
    assert ds["potential_trajectory"].dims == ("s2", "window", "seed", "time")
    assert ds["bias_stiffness_trajectory"].dims == opt.dims
    np.testing.assert_allclose(opt.sel(coordinate="ipr").values, ds["ipr_trajectory"].values, rtol=1e-12)
    np.testing.assert_allclose(opt.sel(coordinate="target_component").values,
                               ds["target_component_trajectory"].values, rtol=1e-9, atol=1e-12)
    assert ds.attrs["umbrella_coordinates"] == "target_component ipr"
    assert ds.attrs["umbrella_order_parameter"] == "target_component"
    assert np.isfinite(ds.attrs["umbrella_max_bias_stiffness"])
    from grokphase.experiments.models.modular import points
    pts = points(ds)
    assert pts[0]["window_m0"] == [0.0, 0.3] and pts[1]["window_kappa"] == [1e3, 5e4] and len(pts) == 2


def test_two_coordinate_experiment_tables():
    """The two-coordinate example files build their product grids (the TOML schema; nothing is run), and
    umbrella_windows with explicit centres is an error without several coordinates."""
    import tomllib
    from pathlib import Path

    from grokphase.experiments.models import modular as modular_model

    root = Path(__file__).resolve().parents[1] / "sims"
    for rel, shape in (("free_energy_modular_2d.toml", (24, 2)), ("tiny/free_energy_modular_2d.toml", (4, 2))):
        spec = tomllib.loads((root / rel).read_text())["sim"][0]
        (sim,) = modular_model.sims_from_options({k: v for k, v in spec.items() if k != "name"}, rel, strict=True,
                                                 given=set(spec) - {"name"})
        assert sim.umbrella_coordinates == ("target_component", "ipr") and sim.umbrella_start == "both"
        assert umb.explicit_windows(sim)[0].shape == shape
    with pytest.raises(ParameterError, match="umbrella_windows .* has no effect here"):
        modular_model.sims_from_options({"umbrella_m0": [0.0, 0.1], "umbrella_kappa": 1.0, "umbrella_windows": 2},
                                        "t", strict=True, given={"umbrella_m0", "umbrella_kappa", "umbrella_windows"})
