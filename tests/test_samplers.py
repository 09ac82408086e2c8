"""Exact samplers of issue 20: the Gaussian readout draw (teacher-student Gibbs readout) and the
Metropolis-adjusted Langevin chain (MALA).

Closed forms (THEORY.md §1; the notation of tests/test_langevin.py):

* readout conditional: f = c F z with unit variables z ~ N(0, I) and features F (n, N) gives
  p(z | F) = N(Lambda^-1 (c/s2) F^T y, Lambda^-1), Lambda = I + (c^2/s2) F^T F.  Both the primal draw
  (N <= n) and the dual draw (N > n, Matheron's rule) are affine in their standard normals, so their
  means and covariances are computed exactly from the Jacobians, not estimated.  An umbrella window
  (kappa/2)(m0 - g.z)^2 adds kappa g g^T to the precision and kappa m0 g to the linear term.
* MALA on Bayesian linear regression (a frozen random first layer): its stationary law is the exact
  posterior N(m, A^-1) at every step size, whereas the unadjusted chain's covariance is
  s2 H^-1 (I - eta H/2)^-1 (2.5x the posterior's along the top eigenvector at eta h_max = 1.2).

Statistical tolerances are Z_TOL standard errors from independent chains; every comparison also asserts
that the alternative it must reject is many standard errors away.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import grokphase  # noqa: F401  (float64 enabled)
from grokphase.errors import ParameterError
from grokphase.sims.driver import Members, Schedule, Task, run_ensemble
from grokphase.sims.langevin import MetropolisState, langevin, metropolis_adjusted
from grokphase.sims.models import TwoLayerNet, erf_prior_std
from grokphase.sims.readout import ReadoutBias, readout_draw
from grokphase.sims.teacher_student.config import TeacherStudentSim
from grokphase.sims.teacher_student.run import run_teacher_student
from grokphase.sims.teacher_student.task import make_task

from test_langevin import (BLR_SCHEDULE, DATA_KEY, INIT_KEY, N_FEAT, NOISE_SEED, S2, _blr_closed_form, _blr_hyper,
                           _blr_task, _discrete_cov, _mean_se)

Z_TOL = 5.0
Z_REJECT = 10.0


# ---------------------------------------------------------------------------------------------
# 1. the Gaussian readout draw: exact mean and covariance, primal and dual, with and without a window


def _problem(n, N, P=1, seed=0):
    rng = np.random.default_rng(seed)
    F = np.tanh(rng.normal(size=(n, N)))
    y = rng.normal(size=(n, P))
    return F, y, 0.7, 0.3


def _closed_form(F, y, c, s2, bias=None):
    N = F.shape[1]
    Lam = np.eye(N) + (c * c / s2) * F.T @ F
    b = (c / s2) * F.T @ y[:, 0]
    if bias is not None:
        g = np.asarray(bias.g)[:, 0]
        Lam = Lam + bias.kappa * np.outer(g, g)
        b = b + bias.kappa * bias.m0 * g
    cov = np.linalg.inv(Lam)
    return cov @ b, cov


def _affine_moments(F, y, c, s2, bias=None):
    """Mean and covariance of readout_draw's output, exactly: it is affine in (xi, eps, bias eps)."""
    n, N = F.shape
    dual = N > n

    def draw(xi, eps, e):
        b = None if bias is None else bias._replace(eps=e)
        return readout_draw(jnp.asarray(F), jnp.asarray(y), c, s2, xi[:, None], eps[:, None] if dual else None,
                            b)[:, 0]

    xi0, eps0, e0 = jnp.zeros(N), jnp.zeros(n), jnp.zeros(())
    mean = np.asarray(draw(xi0, eps0, e0))
    # affine: the Jacobian's columns are draw(unit vector) - draw(0) (the draw has a batching rule, no JVP)
    J_xi = np.asarray(jax.vmap(lambda e: draw(e, eps0, e0))(jnp.eye(N))).T - mean[:, None]
    J_eps = np.asarray(jax.vmap(lambda e: draw(xi0, e, e0))(jnp.eye(n))).T - mean[:, None]
    J_e = np.asarray(draw(xi0, eps0, jnp.ones(()))) - mean
    cov = J_xi @ J_xi.T + J_eps @ J_eps.T + np.outer(J_e, J_e)
    return mean, cov


@pytest.mark.parametrize("n, N", [(30, 8), (8, 30)], ids=["primal", "dual"])
@pytest.mark.parametrize("windowed", [False, True], ids=["plain", "window"])
def test_readout_draw_is_the_exact_conditional(n, N, windowed):
    """Primal (N <= n) and dual (N > n) draws have exactly the conditional's mean and covariance, with an
    umbrella window too; the unwindowed law is rejected when the window is on (the test has power)."""
    F, y, c, s2 = _problem(n, N)
    bias = None
    if windowed:
        g = np.random.default_rng(1).normal(size=(N, 1)) / math.sqrt(N)
        bias = ReadoutBias(jnp.asarray(g), 50.0, 0.8, jnp.zeros(()))
    mean, cov = _affine_moments(F, y, c, s2, bias)
    want_mean, want_cov = _closed_form(F, y, c, s2, bias)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-9, atol=1e-11)
    if windowed:
        plain_mean, _ = _closed_form(F, y, c, s2)
        assert np.max(np.abs(plain_mean - mean)) > 1e-3


def _ts_sim(**kw):
    base = dict(N=12, d=6, n=20, s2=(0.2,), datasets=1, inits=1, steps=10, burn_in=0, record_every=10, n_test=50,
                dtype="float64", readout="gibbs")
    base.update(kw)
    return TeacherStudentSim(**base)


def _ts_hyper(sim, **extra):
    from grokphase.sims.teacher_student.run import stage_hyper
    hyper = stage_hyper(sim)(np.asarray(sim.s2, np.float64))
    hyper = hyper._replace(**extra)
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v[0]) if v is not None else None, hyper)


@pytest.mark.parametrize("N", [12, 40], ids=["primal", "dual"])
def test_teacher_student_gibbs_readout_matches_conditional(N):
    """The teacher-student task's Gibbs update: 4000 draws (independent keys) of z_a at fixed w have the
    conditional's mean and variance within standard errors, features phi(x w) with c = sqrt(sa2/N);
    the first layer is untouched."""
    sim = _ts_sim(N=N)
    task = make_task(sim)
    hyper = _ts_hyper(sim)
    data = task.make_data(jax.random.PRNGKey(3), hyper)
    z = task.init(jax.random.PRNGKey(4), data, hyper)
    keys = jax.random.split(jax.random.PRNGKey(5), 4000)
    draws = jax.jit(jax.vmap(lambda k: task.gibbs(z, data, hyper, k)))(keys)
    np.testing.assert_array_equal(np.asarray(draws["w"]), np.broadcast_to(np.asarray(z["w"]), draws["w"].shape))
    std = erf_prior_std(z, hyper)
    F = np.asarray(jax.scipy.special.erf(data["x"] @ (std["w"] * z["w"])))
    mean, cov = _closed_form(F, np.asarray(data["y"])[:, None], float(std["a"]), float(hyper.s2))
    za = np.asarray(draws["a"])
    se_mean = np.sqrt(np.diag(cov) / za.shape[0])
    assert np.all(np.abs(za.mean(0) - mean) < Z_TOL * se_mean)
    var_hat = za.var(0, ddof=1)
    se_var = np.diag(cov) * math.sqrt(2.0 / (za.shape[0] - 1))
    assert np.all(np.abs(var_hat - np.diag(cov)) < Z_TOL * se_var)
    # along the best-determined direction (the smallest eigenvalue of the covariance) the sampled variance
    # is the conditional's and the prior's (1) is rejected: the test has power
    lam, V = np.linalg.eigh(cov)
    proj = za @ V[:, 0]
    se_proj = lam[0] * math.sqrt(2.0 / (za.shape[0] - 1))
    assert abs(proj.var(ddof=1) - lam[0]) < Z_TOL * se_proj
    assert 1.0 - lam[0] > Z_REJECT * math.sqrt(2.0 / (za.shape[0] - 1))


def test_teacher_student_gibbs_window_draws_biased_conditional():
    """With an umbrella window on the cubic learned fraction, the Gibbs readout's conditional mean (zero
    normals) is the biased conditional's, with g = the exact linear coefficient of m in z_a."""
    sim = _ts_sim(umbrella_m0=(0.5,), umbrella_kappa=(200.0,))
    task = make_task(sim)
    hyper = _ts_hyper(sim, umbrella_kappa=np.array([200.0]), umbrella_m0=np.array([0.5]))
    data = task.make_data(jax.random.PRNGKey(3), hyper)
    z = task.init(jax.random.PRNGKey(4), data, hyper)
    std = erf_prior_std(z, hyper)
    c = float(std["a"])
    w = std["w"] * z["w"]
    # m(z_a) = theta-space order parameter, linear in z_a: g_i by finite differences of unit vectors
    m_of = lambda za: float(task.order_parameter({"w": w, "a": c * jnp.asarray(za)}, data, hyper))  # noqa: E731
    g = np.array([m_of(np.eye(sim.N)[i]) - m_of(np.zeros(sim.N)) for i in range(sim.N)])
    F = np.asarray(jax.scipy.special.erf(data["x"] @ w))
    bias = ReadoutBias(g[:, None], 200.0, 0.5, 0.0)
    want_mean, want_cov = _closed_form(F, np.asarray(data["y"])[:, None], c, float(hyper.s2), bias)
    keys = jax.random.split(jax.random.PRNGKey(6), 4000)
    za = np.asarray(jax.jit(jax.vmap(lambda k: task.gibbs(z, data, hyper, k)["a"]))(keys))
    se = np.sqrt(np.diag(want_cov) / za.shape[0])
    assert np.all(np.abs(za.mean(0) - want_mean) < Z_TOL * se)
    # the window pulls m towards m0: the sampled m is within SE of g.mean, and far from the unbiased one
    m_draws = za @ g
    m_want = g @ want_mean
    m_se = math.sqrt(g @ want_cov @ g / za.shape[0])
    assert abs(m_draws.mean() - m_want) < Z_TOL * m_se
    plain_mean, _ = _closed_form(F, np.asarray(data["y"])[:, None], c, float(hyper.s2))
    assert abs(g @ plain_mean - m_want) > Z_REJECT * m_se


# ---------------------------------------------------------------------------------------------
# 2. MALA: the exact posterior at a step size where the unadjusted chain is 2.5x too wide


def _mala_blr_task() -> Task:
    base = _blr_task()
    return base._replace(make_tx=lambda hyper: metropolis_adjusted(base.make_tx(hyper)), metropolis=True,
                         fixed_leaves=("w",))


@pytest.fixture(scope="module")
def mala_run():
    task = _mala_blr_task()
    cf = _blr_closed_form(task)
    h_max = np.linalg.eigvalsh(cf["H"])[-1]
    eta = 1.2 / h_max
    M = 200
    noise = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(NOISE_SEED), i))(jnp.arange(M))
    members = Members(np.tile(np.asarray(jax.random.PRNGKey(DATA_KEY)), (M, 1)),
                      np.tile(np.asarray(jax.random.PRNGKey(INIT_KEY)), (M, 1)),
                      np.asarray(noise), _blr_hyper(np.full(M, eta)))
    schedule = Schedule(steps=BLR_SCHEDULE.steps, burn_in=BLR_SCHEDULE.burn_in, record_every=BLR_SCHEDULE.record_every)
    out = run_ensemble(task, members, schedule)
    return {"out": out, "cf": cf, "eta": eta, "schedule": schedule}


def test_mala_blr_exact_posterior_covariance(mala_run):
    """MALA at eta h_max = 1.2: mean and covariance are the exact posterior's (A^-1 = s2 H^-1) entry by
    entry and along the extreme eigenvectors; the unadjusted chain's s2 H^-1 (I - eta H/2)^-1 is rejected
    along the top eigenvector by more than Z_REJECT standard errors.  The acceptance rate is recorded."""
    out, cf, eta = mala_run["out"], mala_run["cf"], mala_run["eta"]
    after = out.record_steps > mala_run["schedule"].burn_in
    z = out.records["a"][:, after, :] / cf["S"]
    dz = z - cf["mean"]
    bias, se = _mean_se(dz.mean(1))
    assert np.all(np.abs(bias / se) < Z_TOL), bias / se
    cov_chains = np.einsum("mti,mtj->mij", dz, dz) / dz.shape[1]
    est, se_c = _mean_se(cov_chains)
    A_inv = S2 * np.linalg.inv(cf["H"])
    iu = np.triu_indices(N_FEAT)
    assert np.all(np.abs((est - A_inv) / se_c)[iu] < Z_TOL), ((est - A_inv) / se_c)[iu]
    h, U = np.linalg.eigh(cf["H"])
    u = U[:, -1]
    p_hat, p_se = _mean_se(np.einsum("i,mij,j->m", u, cov_chains, u))
    assert abs(p_hat - u @ A_inv @ u) < Z_TOL * p_se
    assert (u @ _discrete_cov(cf["H"], eta) @ u - p_hat) / p_se > Z_REJECT
    acc = out.records["metropolis_acceptance"][:, -1]
    assert np.all((acc > 0.05) & (acc < 1.0)), acc
    # the counters live in the update rule's state and count every step
    assert isinstance(metropolis_adjusted(langevin(0.1, 1.0)).init({"a": jnp.zeros(2)}), MetropolisState)


def test_mala_accepted_step_is_the_langevin_step():
    """At a tiny step every proposal is accepted and the MALA chain equals the unadjusted chain bit for bit
    (the proposal is the Langevin step with the same noise)."""
    task = _blr_task()
    mala = task._replace(make_tx=lambda hyper: metropolis_adjusted(task.make_tx(hyper)), metropolis=True,
                         fixed_leaves=("w",))
    M = 4
    noise = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(NOISE_SEED), i))(jnp.arange(M))
    members = Members(np.tile(np.asarray(jax.random.PRNGKey(DATA_KEY)), (M, 1)),
                      np.tile(np.asarray(jax.random.PRNGKey(INIT_KEY)), (M, 1)),
                      np.asarray(noise), _blr_hyper(np.full(M, 1e-5)))
    schedule = Schedule(steps=200, burn_in=0, record_every=50)
    plain = run_ensemble(task, members, schedule)
    adjusted = run_ensemble(mala, members, schedule)
    np.testing.assert_array_equal(adjusted.records["metropolis_acceptance"], 1.0)
    np.testing.assert_array_equal(adjusted.z["a"], plain.z["a"])


# ---------------------------------------------------------------------------------------------
# 3. teacher-student: the same statistics with every sampler; options and bad inputs


@pytest.fixture(scope="module")
def ts_samplers():
    """One tiny teacher-student ensemble (8 data sets x 2 inits) per sampler, same seeds."""
    common = dict(N=16, d=8, n=24, s2=(0.2,), datasets=8, inits=2, steps=4000, burn_in=1000, record_every=20,
                  lr=0.02, n_test=100)
    out = {}
    for name, kw in {"plain": {}, "gibbs": {"readout": "gibbs"}, "mala": {"mala": True, "lr": 0.05},
                     "gibbs+mala": {"readout": "gibbs", "mala": True, "lr": 0.05},
                     "pcn-mala": {"mala": True, "prior_exact": True, "readout_lr_scale": 0.3, "lr": 0.1}}.items():
        out[name] = run_teacher_student(TeacherStudentSim(**{**common, **kw}))
    return out


@pytest.mark.parametrize("name", ["gibbs", "mala", "gibbs+mala", "pcn-mala"])
def test_teacher_student_samplers_agree_with_plain_langevin(ts_samplers, name):
    """Learned fractions (both degrees) and the training MSE agree with plain Langevin within paired
    standard errors (the same 8 data sets: per-data-set differences of the init-averaged means)."""
    plain, other = ts_samplers["plain"], ts_samplers[name]
    for var in ("learned_network", "train_mse_network"):
        d = other[var].mean("init").values - plain[var].mean("init").values     # (s2, dataset[, degree])
        diff = np.moveaxis(d, 1, -1).reshape(-1, d.shape[1])                     # (..., dataset)
        d_mean = diff.mean(axis=-1)
        d_se = diff.std(axis=-1, ddof=1) / math.sqrt(diff.shape[-1])
        assert np.all(np.abs(d_mean) < Z_TOL * d_se + 1e-12), (var, d_mean, d_se)
    if "mala" in name:
        acc = other["metropolis_acceptance"].values
        assert np.all((acc > 0.3) & (acc <= 1.0)), acc
        assert json.loads(other.attrs["parameters_json"])["mala"] is True
    else:
        assert "metropolis_acceptance" not in other
    # the defaults keep the plain run's parameters (hash) unchanged
    assert not {"readout", "mala", "readout_lr_scale", "prior_exact"} & set(json.loads(plain.attrs["parameters_json"]))
    if name == "pcn-mala":
        params = json.loads(other.attrs["parameters_json"])
        assert params["prior_exact"] is True and params["readout_lr_scale"] == 0.3


@pytest.mark.parametrize("kwargs, match", [
    (dict(readout="exact"), "readout update"),
    (dict(readout="gibbs", optimizer="adam"), "optimizer langevin"),
    (dict(mala=True, optimizer="sgd"), "optimizer langevin"),
    (dict(mala="yes"), "mala must be"),
])
def test_sampler_options_rejected(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        TeacherStudentSim(N=8, d=4, n=8, s2=(0.2,), **kwargs)


def test_gibbs_readout_refuses_a_user_model():
    sim = TeacherStudentSim(N=8, d=4, n=8, s2=(0.2,), readout="gibbs")
    with pytest.raises(ParameterError, match="user model"):
        make_task(sim, TwoLayerNet(8, activation=jnp.tanh))


def test_optax_multi_transform_gibbs_leaves_are_fixed():
    """The Gibbs task's update rule leaves the readout alone (its increment is exactly zero)."""
    sim = _ts_sim()
    task = make_task(sim)
    hyper = _ts_hyper(sim)
    data = task.make_data(jax.random.PRNGKey(3), hyper)
    z = task.init(jax.random.PRNGKey(4), data, hyper)
    tx = optax.with_extra_args_support(task.make_tx(hyper))
    upd, _ = tx.update(jax.tree_util.tree_map(jnp.ones_like, z), tx.init(z), z, key=jax.random.PRNGKey(0))
    assert np.all(np.asarray(upd["a"]) == 0.0) and np.any(np.asarray(upd["w"]) != 0.0)


def test_cli_mala_and_gibbs_readout(tmp_path, capsys):
    """CLI: ``sim teacher-student --readout gibbs --mala`` and ``sim modular --mala --prior-exact`` report the acceptance
    rate (a probability, recorded in the result file), and --mala with a plain optimiser is refused."""
    from grokphase.cli import main
    out = tmp_path / "ts.nc"
    rc = main(["sim", "teacher-student", "--N", "8", "--d", "4", "--n", "12", "--s2", "0.2", "--datasets", "1",
               "--inits", "2", "--steps", "200", "--lr", "0.05", "--readout", "gibbs", "--mala", "--no-progress",
               "--out", str(out), "--json"])
    assert rc == 0
    import xarray as xr
    with xr.open_dataset(out) as ds:
        acc = float(ds["metropolis_acceptance"].values[0])
        assert 0.0 < acc <= 1.0
        params = json.loads(ds.attrs["parameters_json"])
        assert params["readout"] == "gibbs" and params["mala"] is True
    mod = tmp_path / "mod.nc"
    rc = main(["sim", "modular", "--P", "5", "--N", "8", "--s2", "0.1", "--seeds", "2", "--steps", "100", "--mala",
               "--prior-exact", "--no-progress", "--out", str(mod), "--json"])
    assert rc == 0
    with xr.open_dataset(mod) as ds:
        assert 0.0 < float(ds["metropolis_acceptance"].values[0]) <= 1.0
        params = json.loads(ds.attrs["parameters_json"])
        assert params["mala"] is True and params["prior_exact"] is True
    capsys.readouterr()
    assert main(["sim", "modular", "--P", "5", "--N", "8", "--optimizer", "adamw", "--mala", "--no-progress"]) != 0
    assert "--mala" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 4. preconditioned MALA: one step size per block and the prior-exact (pCN) noise, on a Gaussian posterior
#
# Two parameter blocks u (weak data) and v (stiff data), theta = z (unit prior), f = X_u u + X_v v: the
# posterior in z is N(A^-1 X^T y/s2, A^-1), A = I + X^T X/s2.  The update rule moves u with rate eta and v
# with rate eta s_v (a constant diagonal preconditioner P), both at eta_k h_k,max = 1.2, where the
# unadjusted chain's stationary covariance (the discrete Lyapunov solution below) is far from A^-1.

PC_KU, PC_KV, PC_N, PC_S2 = 3, 3, 20, 0.5
PC_SCHEDULE = Schedule(steps=6000, burn_in=2000, record_every=20)


class PCHyper(NamedTuple):
    s2: Any
    lr: Any
    v_scale: Any


def _pc_task(prior_exact: bool, adjusted: bool = True) -> Task:
    def make_data(key, hyper):
        ku, kv, ky = jax.random.split(key, 3)
        xu = 0.15 * jax.random.normal(ku, (PC_N, PC_KU), jnp.float64)        # curvature ~ the prior's
        xv = 2.0 * jax.random.normal(kv, (PC_N, PC_KV), jnp.float64)         # ~ 100x the prior's
        y = xu @ jnp.array([3.0, -2.0, 1.0]) + xv @ jnp.array([0.5, 0.2, -0.4]) \
            + 0.5 * jax.random.normal(ky, (PC_N,), jnp.float64)
        return {"xu": xu, "xv": xv, "y": y}

    def init(key, data, hyper):
        return {"u": jnp.zeros((PC_KU,), jnp.float64), "v": jnp.zeros((PC_KV,), jnp.float64)}

    def prior_std(z, hyper):
        return {"u": jnp.ones(()), "v": jnp.ones(())}

    def loss(theta, data):
        return 0.5 * jnp.sum((data["xu"] @ theta["u"] + data["xv"] @ theta["v"] - data["y"]) ** 2)

    def make_tx(hyper):
        tx = optax.multi_transform({"u": langevin(hyper.lr, hyper.s2, prior_exact=prior_exact),
                                    "v": langevin(hyper.lr * hyper.v_scale, hyper.s2, prior_exact=prior_exact)},
                                   {"u": "u", "v": "v"})
        return metropolis_adjusted(tx) if adjusted else tx

    def init_accum(theta, data, hyper):
        return {"count": jnp.zeros((), jnp.float64)}

    def observe(theta, data, hyper, accum, weight):
        return {"z": jnp.concatenate([theta["u"], theta["v"]])}, {"count": accum["count"] + weight}

    return Task(make_data, init, prior_std, loss, make_tx, init_accum, observe, metropolis=adjusted,
                step_scales=lambda hyper: {"v": hyper.v_scale}, prior_exact=prior_exact)


def _pc_closed_form(task):
    hyper = PCHyper(*(jnp.asarray(v) for v in (PC_S2, 1.0, 1.0)))
    data = task.make_data(jax.random.PRNGKey(DATA_KEY), hyper)
    X = np.concatenate([np.asarray(data["xu"]), np.asarray(data["xv"])], axis=1)
    H = X.T @ X + PC_S2 * np.eye(PC_KU + PC_KV)                 # Hessian of the update potential
    mean = np.linalg.solve(H, X.T @ np.asarray(data["y"]))
    hu = np.linalg.eigvalsh(H[:PC_KU, :PC_KU])[-1]
    hv = np.linalg.eigvalsh(H[PC_KU:, PC_KU:])[-1]
    eta = 1.2 / hu
    return {"H": H, "mean": mean, "cov": PC_S2 * np.linalg.inv(H), "eta": eta, "v_scale": hu / hv}


def _pc_unadjusted_cov(cf, prior_exact):
    """Stationary covariance of the unadjusted preconditioned chain z' = (I - eta P H) z + N(0, 2 eta s2 P F)
    (F = I - eta P s2/2 with the prior-exact noise): C = B C B^T + Q."""
    from scipy.linalg import solve_discrete_lyapunov
    p = np.r_[np.ones(PC_KU), np.full(PC_KV, cf["v_scale"])] * cf["eta"]
    B = np.eye(p.size) - p[:, None] * cf["H"]
    q = 2.0 * PC_S2 * p * ((1.0 - 0.5 * p * PC_S2) if prior_exact else 1.0)
    return solve_discrete_lyapunov(B, np.diag(q))


@pytest.mark.parametrize("prior_exact", [False, True], ids=["euler", "prior-exact"])
def test_preconditioned_mala_exact_posterior(prior_exact):
    """MALA with per-block rates (eta, eta s_v; s_v = h_u/h_v ~ 0.02) and, optionally, the prior-exact noise:
    mean and covariance are the exact posterior's entry by entry within Z_TOL SE, whereas the unadjusted
    chain with the same preconditioner is more than Z_REJECT SE off along its worst direction.  A proposal
    density that ignores the block rates or the noise factor (planted mutants of metropolis_step) fails."""
    task = _pc_task(prior_exact)
    cf = _pc_closed_form(task)
    M = 200
    noise = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(NOISE_SEED), i))(jnp.arange(M))
    f = lambda v: np.full(M, v, np.float64)  # noqa: E731
    members = Members(np.tile(np.asarray(jax.random.PRNGKey(DATA_KEY)), (M, 1)),
                      np.tile(np.asarray(jax.random.PRNGKey(INIT_KEY)), (M, 1)),
                      np.asarray(noise), PCHyper(f(PC_S2), f(cf["eta"]), f(cf["v_scale"])))
    out = run_ensemble(task, members, PC_SCHEDULE)
    after = out.record_steps > PC_SCHEDULE.burn_in
    z = out.records["z"][:, after, :]
    bias, se = _mean_se(z.mean(1) - cf["mean"])
    assert np.all(np.abs(bias / se) < Z_TOL), bias / se
    dz = z - cf["mean"]
    cov_chains = np.einsum("mti,mtj->mij", dz, dz) / dz.shape[1]
    est, se_c = _mean_se(cov_chains)
    iu = np.triu_indices(PC_KU + PC_KV)
    assert np.all(np.abs((est - cf["cov"]) / se_c)[iu] < Z_TOL), ((est - cf["cov"]) / se_c)[iu]
    wrong = _pc_unadjusted_cov(cf, prior_exact)
    h, U = np.linalg.eigh(wrong - cf["cov"])
    u = U[:, np.argmax(np.abs(h))]
    p_hat, p_se = _mean_se(np.einsum("i,mij,j->m", u, cov_chains, u))
    assert abs(p_hat - u @ cf["cov"] @ u) < Z_TOL * p_se
    assert abs(u @ wrong @ u - p_hat) / p_se > Z_REJECT
    acc = out.records["metropolis_acceptance"][:, -1]
    assert 0.2 < acc.mean() < 0.99, acc.mean()


def test_prior_exact_langevin_samples_the_prior_at_any_step():
    """On the prior alone (no likelihood) the prior-exact Langevin step z' = (1 - eta s2) z + N(0, 2 eta s2
    (1 - eta s2/2)) keeps unit variance at eta s2 = 0.8 (the Euler step: 1/(1 - eta s2/2) = 1.67, rejected)."""
    s2, eta, M, T = 0.5, 1.6, 4000, 300
    tx = optax.with_extra_args_support(langevin(eta, s2, prior_exact=True))
    z0 = {"z": jnp.zeros((M,), jnp.float64)}

    def step(carry, t):
        z, st = carry
        upd, st = tx.update({"z": jnp.zeros((M,), jnp.float64)}, st, z, key=jax.random.fold_in(jax.random.PRNGKey(5), t))
        return (optax.apply_updates(z, upd), st), None

    (z, _), _ = jax.lax.scan(step, (z0, tx.init(z0)), jnp.arange(T))
    x = np.asarray(z["z"])
    var, var_se = (x * x).mean(), (x * x).std(ddof=1) / math.sqrt(M)
    assert abs(var - 1.0) < Z_TOL * var_se, var
    assert (1.0 / (1.0 - 0.5 * eta * s2) - var) / var_se > Z_REJECT
    with pytest.raises(ValueError, match="scalar prior_variance"):
        langevin(eta, s2, prior_variance={"z": 1.0}, prior_exact=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(readout_lr_scale=0.0), "readout_lr_scale must be a finite number > 0"),
    (dict(readout_lr_scale=-0.5), "readout_lr_scale must be a finite number > 0"),
    (dict(readout_lr_scale=float("nan")), "readout_lr_scale must be a finite number > 0"),
    (dict(readout_lr_scale="0.3"), "readout_lr_scale must be a finite number > 0"),
    (dict(readout_lr_scale=0.5, readout="gibbs"), "readout_lr_scale sets the readout's Langevin step"),
    (dict(readout_lr_scale=0.5, optimizer="adam"), "optimizer langevin"),
    (dict(prior_exact="yes"), "prior_exact must be true or false"),
    (dict(prior_exact=True, optimizer="sgd"), "optimizer langevin"),
    (dict(prior_exact=True, lr=10.0), "prior_exact needs lr \\* s2 < 2"),
    (dict(prior_exact=True, lr=5.0, readout_lr_scale=3.0), "prior_exact needs lr \\* s2 < 2"),
])
def test_preconditioner_options_rejected(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        TeacherStudentSim(N=8, d=4, n=8, s2=(0.2,), **kwargs)


def test_readout_lr_scale_moves_the_readout_at_its_own_rate():
    """The teacher-student update rule with readout_lr_scale s moves the readout by exactly s times the
    first-layer rate: the drift part of the increment (noise cancelled with one key) is -lr s (g + s2 z)."""
    sim = _ts_sim(readout="langevin", readout_lr_scale=0.25, lr=0.1)
    task = make_task(sim)
    hyper = _ts_hyper(sim)
    data = task.make_data(jax.random.PRNGKey(3), hyper)
    z = task.init(jax.random.PRNGKey(4), data, hyper)
    tx = optax.with_extra_args_support(task.make_tx(hyper))
    g = jax.tree_util.tree_map(jnp.ones_like, z)
    key = jax.random.PRNGKey(0)
    moved = tx.update(g, tx.init(z), z, key=key)[0]
    still = tx.update(jax.tree_util.tree_map(jnp.zeros_like, z), tx.init(z), z, key=key)[0]
    np.testing.assert_allclose(np.asarray(moved["a"] - still["a"]), -0.1 * 0.25, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(moved["w"] - still["w"]), -0.1, rtol=1e-12)
    assert task.step_scales(hyper) == {"a": hyper.readout_lr_scale}


def test_preconditioner_cli_and_toml(tmp_path, capsys):
    """``--mala --prior-exact --readout-lr-scale`` run and are recorded in the result's parameters; the TOML
    keys build the same sim; a non-positive scale is refused naming the flag / key."""
    from grokphase.cli import main
    from grokphase.experiments.models.teacher_student import sim_from_options
    out = tmp_path / "ts.nc"
    rc = main(["sim", "teacher-student", "--N", "8", "--d", "4", "--n", "12", "--s2", "0.2", "--datasets", "1",
               "--inits", "2", "--steps", "200", "--lr", "0.2", "--mala", "--prior-exact", "--readout-lr-scale", "0.3",
               "--no-progress", "--out", str(out), "--json"])
    assert rc == 0
    import xarray as xr
    with xr.open_dataset(out) as ds:
        assert 0.0 < float(ds["metropolis_acceptance"].values[0]) <= 1.0
        params = json.loads(ds.attrs["parameters_json"])
        assert params["prior_exact"] is True and params["readout_lr_scale"] == 0.3 and params["mala"] is True
    sim = sim_from_options({"N": 8, "d": 4, "n": 12, "mala": True, "prior_exact": True, "readout_lr_scale": 0.3})
    assert sim.prior_exact and sim.readout_lr_scale == 0.3
    with pytest.raises(ParameterError, match="readout_lr_scale"):
        sim_from_options({"N": 8, "d": 4, "n": 12, "readout_lr_scale": 0.0})
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["sim", "teacher-student", "--N", "8", "--readout-lr-scale", "0", "--no-progress"])
    assert "--readout-lr-scale" in capsys.readouterr().err


def test_modular_prior_exact_mala():
    """The modular model's ``prior_exact`` (pCN-Langevin proposal for the input layer): at the same lr and seeds
    its acceptance exceeds plain MALA's (the Gaussian prior's part of the Hastings ratio cancels; with the
    option ignored the two chains would be identical), both are exact, so the target component and |w|^2
    agree within combined standard errors over the 8 seeds; recorded in the result's parameters."""
    from grokphase.sims.modular import ModularSim, run_modular
    common = dict(P=5, N=8, s2=(0.3,), seeds=8, steps=4000, burn_in=1000, record_every=10, lr=0.1, mala=True)
    mala = run_modular(ModularSim(**common))
    pcn = run_modular(ModularSim(**common, prior_exact=True))
    acc_m, acc_p = (float(ds["metropolis_acceptance"].values[0]) for ds in (mala, pcn))
    assert acc_p > acc_m, (acc_p, acc_m)
    for var in ("target_component_mean", "w_norm2"):
        diff = float(pcn[var].values[0] - mala[var].values[0])
        se = math.hypot(float(pcn[f"{var}_sem"].values[0]), float(mala[f"{var}_sem"].values[0]))
        assert abs(diff) < Z_TOL * se, (var, diff, se)
    assert json.loads(pcn.attrs["parameters_json"])["prior_exact"] is True
    assert "prior_exact" not in json.loads(mala.attrs["parameters_json"])
    with pytest.raises(ParameterError, match="prior_exact needs"):
        ModularSim(P=5, N=8, s2=(0.3,), lr=10.0, prior_exact=True)
    with pytest.raises(ParameterError, match="optimizer langevin"):
        ModularSim(P=5, N=8, optimizer="adamw", prior_exact=True)

