"""Langevin sampling physics (THEORY.md §1) and the ensemble driver's bookkeeping.

Closed forms used here, for the update of :func:`grokphase.sims.langevin.langevin`

    theta <- theta - eta (grad L + (s2/v) theta) + sqrt(2 eta s2) xi:

* quadratic potential L = lam theta^2/2: with the total curvature lam_tot = lam + s2/v the chain is
  the AR(1) process theta' = rho theta + sqrt(2 eta s2) xi, rho = 1 - eta lam_tot, so its stationary
  law is N(0, 2 eta s2/(1 - rho^2)) = N(0, s2/(lam_tot (1 - eta lam_tot/2))) and its lag-1
  autocovariance is rho times the variance.  The continuous-time (eta -> 0) value s2/lam_tot is
  what the test must be able to tell apart from it.
* Bayesian linear regression (fixed random features Phi, readout only, unit variables z with
  a = S z, S = prior std of a): the update potential is U(z) = L(S z) + s2 |z|^2/2, with Hessian
  H = S^2 Phi^T Phi + s2 I = s2 A, A the posterior precision.  The discrete chain
  z' = z - eta (H z - S Phi^T y) + sqrt(2 eta s2) xi is linear, so its stationary mean is the exact
  posterior mean m = H^{-1} S Phi^T y for every eta, and its covariance C solves
  C = (I - eta H) C (I - eta H) + 2 eta s2 I, i.e. C = s2 H^{-1} (I - eta H/2)^{-1}
  (eigenvalue by eigenvalue s2/(h (1 - eta h/2))), which tends to s2 H^{-1} = A^{-1} as eta -> 0.

Statistical tolerances are Z_TOL standard errors computed from the samples; every comparison also
asserts that the alternative it must reject (continuous-time variance, correlated leaves, ...) is
many standard errors away, so each test can fail.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.linalg import solve_discrete_lyapunov

import grokphase  # noqa: F401  (float64 enabled)
from grokphase.errors import ParameterError
from grokphase.sims.driver import Members, Schedule, Task, run_ensemble
from grokphase.sims.langevin import langevin
from grokphase.sims.models import TwoLayerNet, erf_prior_std

Z_TOL = 5.0          # allowed |deviation| in standard errors (P(|Z| > 5) ~ 6e-7 per comparison)
Z_REJECT = 10.0      # the wrong closed form must be at least this many standard errors away


def _discrete_var(s2, lam_tot, eta):
    """Exact stationary variance of theta' = (1 - eta lam_tot) theta + sqrt(2 eta s2) xi."""
    return s2 / (lam_tot * (1.0 - 0.5 * eta * lam_tot))


# ---------------------------------------------------------------------------------------------
# 1. quadratic potential: exact discrete-time stationary law


def test_quadratic_potential_exact_discrete_stationary_law():
    """Many independent chains on sum_k lam_k theta_k^2/2 (two leaves with different prior
    variances, so the per-leaf prior decay is exercised) reach the exact AR(1) stationary law:
    variance s2/(lam_tot (1 - eta lam_tot/2)), mean 0, lag-1 autocovariance (1 - eta lam_tot) var,
    and independent noise in different leaves."""
    s2, eta = 0.5, 0.1
    prior_variance = {"u": 2.0, "v": 0.5}                 # prior decay s2/v = 0.25 and 1.0
    eta_lam_tot = np.array([0.2, 0.5, 1.0, 1.6])          # discrete bias factor 1.11 ... 5
    lam_tot = eta_lam_tot / eta
    lam = {k: lam_tot - s2 / v for k, v in prior_variance.items()}   # v-leaf has lam = 0: pure prior
    chains, steps = 40_000, 200                           # |rho| <= 0.8: start forgotten after 200 steps
    tx = langevin(jnp.asarray(eta), jnp.asarray(s2), prior_variance)
    lam_j = {k: jnp.asarray(v) for k, v in lam.items()}

    def chain(key):
        theta0 = {k: jnp.full(lam_tot.shape, 3.0) for k in lam}   # far from the mean 0

        def step(carry, t):
            theta, _, opt_state = carry
            grads = {k: lam_j[k] * theta[k] for k in theta}       # grad of sum lam theta^2/2
            upd, opt_state = tx.update(grads, opt_state, theta, key=jax.random.fold_in(key, t))
            return (optax.apply_updates(theta, upd), theta, opt_state), None

        (theta, prev, _), _ = jax.lax.scan(step, (theta0, theta0, tx.init(theta0)), jnp.arange(steps))
        return theta, prev

    root = jax.random.PRNGKey(20240601)
    keys = jax.vmap(lambda c: jax.random.fold_in(root, c))(jnp.arange(chains))
    theta, prev = jax.jit(jax.vmap(chain))(keys)
    theta = {k: np.asarray(v) for k, v in theta.items()}
    prev = {k: np.asarray(v) for k, v in prev.items()}
    sqrt_c = math.sqrt(chains)

    var_exact = _discrete_var(s2, lam_tot, eta)
    var_cont = s2 / lam_tot
    rho = 1.0 - eta * lam_tot
    for k in theta:
        x, xp = theta[k], prev[k]
        assert np.all(np.isfinite(x))
        # mean 0 (the start at 3 must have been forgotten)
        z_mean = x.mean(0) / (x.std(0, ddof=1) / sqrt_c)
        assert np.all(np.abs(z_mean) < Z_TOL), (k, z_mean)
        # variance: exact discrete value, and NOT the continuous-time one
        sq = x**2
        var_hat, var_se = sq.mean(0), sq.std(0, ddof=1) / sqrt_c
        z_var = (var_hat - var_exact) / var_se
        z_cont = (var_hat - var_cont) / var_se
        assert np.all(np.abs(z_var) < Z_TOL), (k, var_hat / var_exact, z_var)
        assert np.all(z_cont > Z_REJECT), (k, z_cont)
        # lag-1 autocovariance rho * var (rho = 0 at eta lam_tot = 1, negative beyond)
        lag = x * xp
        z_lag = (lag.mean(0) - rho * var_exact) / (lag.std(0, ddof=1) / sqrt_c)
        assert np.all(np.abs(z_lag) < Z_TOL), (k, z_lag)
    # the two leaves draw independent noise (fold_in(key, leaf index)): zero cross-covariance,
    # whereas a shared key would make them correlated with coefficient ~ 1 for equal curvature
    cross = theta["u"] * theta["v"]
    z_cross = cross.mean(0) / (cross.std(0, ddof=1) / sqrt_c)
    assert np.all(np.abs(z_cross) < Z_TOL), z_cross


# ---------------------------------------------------------------------------------------------
# 2. Bayesian linear regression through the driver (frozen random first layer)

D_IN, N_FEAT, N_DATA = 3, 6, 24
S2, SA2, SW2 = 0.5, 0.4, 2.0
ETA_H_LARGE, ETA_H_SMALL = 1.2, 0.015          # eta * h_max of the two step-size groups
M_LARGE, M_SMALL = 200, 600
# slowest relaxation (small eta): 1/(eta h_min) ~ 400 steps, so the burn-in is ~8 relaxation times and
# each chain averages ~12 more; the SEs are taken across the independent chains.
BLR_SCHEDULE = Schedule(steps=8000, burn_in=3200, record_every=40)
DATA_KEY, INIT_KEY, NOISE_SEED = 11, 12, 13


class BLRHyper(NamedTuple):
    s2: Any
    sa2: Any
    sw2: Any
    lr: Any


def _blr_task() -> Task:
    model = TwoLayerNet(N_FEAT)

    def make_data(key, hyper):
        kx, ky = jax.random.split(key)
        x = jax.random.normal(kx, (N_DATA, D_IN), jnp.float64)
        # a strong signal puts the posterior mean several posterior standard deviations from 0,
        # so the mean test resolves a few-percent error in the drift
        y = 4.0 * (jnp.sin(x[:, 0]) + 0.5 * x[:, 1]) + 0.3 * jax.random.normal(ky, (N_DATA,), jnp.float64)
        return {"x": x, "y": y}

    def init(key, data, hyper):
        return model.init(key, data["x"][:1])["params"]

    def loss(theta, data):
        f = model.apply({"params": theta}, data["x"])
        return 0.5 * jnp.sum((f - data["y"]) ** 2)

    def make_tx(hyper):   # first layer frozen: only the readout is sampled
        return optax.multi_transform({"frozen": optax.set_to_zero(), "sample": langevin(hyper.lr, hyper.s2)},
                                     {"w": "frozen", "a": "sample"})

    def init_accum(theta, data, hyper):
        return {"count": jnp.zeros((), jnp.float64), "a": jnp.zeros((N_FEAT,), jnp.float64)}

    def observe(theta, data, hyper, accum, weight):
        return {"a": theta["a"]}, {"count": accum["count"] + weight, "a": accum["a"] + weight * theta["a"]}

    return Task(make_data, init, erf_prior_std, loss, make_tx, init_accum, observe)


def _blr_hyper(lr):
    f = lambda v: np.full(np.shape(lr), v, np.float64)  # noqa: E731
    return BLRHyper(s2=f(S2), sa2=f(SA2), sw2=f(SW2), lr=np.asarray(lr, np.float64))


def _blr_closed_form(task):
    """Features, prior std of a, Hessian H of the update potential in z, and the posterior mean."""
    hyper = jax.tree_util.tree_map(lambda v: jnp.asarray(v[0]), _blr_hyper(np.ones(1)))
    data = task.make_data(jax.random.PRNGKey(DATA_KEY), hyper)
    z0 = task.init(jax.random.PRNGKey(INIT_KEY), data, hyper)
    std = erf_prior_std(z0, hyper)
    phi = np.asarray(jax.scipy.special.erf(data["x"] @ (std["w"] * z0["w"])), np.float64)
    S = float(std["a"])
    H = S**2 * phi.T @ phi + S2 * np.eye(N_FEAT)
    mean = np.linalg.solve(H, S * phi.T @ np.asarray(data["y"]))
    return {"z_w": np.asarray(z0["w"]), "S": S, "H": H, "mean": mean}


def _discrete_cov(H, eta):
    h, U = np.linalg.eigh(H)
    return (U * (S2 / (h * (1.0 - 0.5 * eta * h)))) @ U.T


@pytest.fixture(scope="module")
def blr_run():
    task = _blr_task()
    cf = _blr_closed_form(task)
    h_max = np.linalg.eigvalsh(cf["H"])[-1]
    eta = {"large": ETA_H_LARGE / h_max, "small": ETA_H_SMALL / h_max}
    lr = np.concatenate([np.full(M_LARGE, eta["large"]), np.full(M_SMALL, eta["small"])])
    M = lr.size
    # independent chains: one data set and one (frozen) feature draw, different noise keys
    noise = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(NOISE_SEED), i))(jnp.arange(M))
    members = Members(np.tile(np.asarray(jax.random.PRNGKey(DATA_KEY)), (M, 1)),
                      np.tile(np.asarray(jax.random.PRNGKey(INIT_KEY)), (M, 1)),
                      np.asarray(noise), _blr_hyper(lr))
    out = run_ensemble(task, members, BLR_SCHEDULE)
    groups = {"large": slice(0, M_LARGE), "small": slice(M_LARGE, M)}
    return {"out": out, "cf": cf, "eta": eta, "groups": groups}


def _chain_stats(run, group):
    """Per-chain time averages (after burn-in) of z - m and (z - m)(z - m)^T, in unit variables."""
    out, cf = run["out"], run["cf"]
    after = out.record_steps > BLR_SCHEDULE.burn_in
    z = out.records["a"][run["groups"][group]][:, after, :] / cf["S"]        # (M, T, N)
    dz = z - cf["mean"]
    return dz.mean(1), np.einsum("mti,mtj->mij", dz, dz) / dz.shape[1]


def _mean_se(x):
    return x.mean(0), x.std(0, ddof=1) / math.sqrt(x.shape[0])


def test_blr_first_layer_frozen_and_accumulator(blr_run):
    """set_to_zero keeps every member's first layer at its initial draw; the engine's weighted
    accumulator equals the average of the recorded trajectory over the times after burn-in."""
    out, cf = blr_run["out"], blr_run["cf"]
    np.testing.assert_array_equal(out.z["w"], np.broadcast_to(cf["z_w"], out.z["w"].shape))
    after = out.record_steps > BLR_SCHEDULE.burn_in
    np.testing.assert_array_equal(out.accum["count"], np.full(out.z["a"].shape[0], after.sum()))
    np.testing.assert_allclose(out.accum["a"] / out.accum["count"][:, None],
                               out.records["a"][:, after, :].mean(1), rtol=1e-12, atol=1e-14)
    assert out.record_steps[-1] == BLR_SCHEDULE.steps
    np.testing.assert_allclose(out.records["a"][:, -1, :], out.z["a"] * cf["S"], rtol=1e-14)


@pytest.mark.parametrize("group", ["large", "small"])
def test_blr_stationary_mean_is_exact_posterior_mean(blr_run, group):
    """The discrete chain is linear, so its stationary mean is the posterior mean at any eta."""
    dz, _ = _chain_stats(blr_run, group)
    bias, se = _mean_se(dz)
    assert np.all(np.abs(bias / se) < Z_TOL), bias / se
    # resolution: the SE is a small fraction of the posterior spread (the test has power)
    post_sd = np.sqrt(np.diag(np.linalg.inv(blr_run["cf"]["H"] / S2)))
    assert np.all(se < 0.05 * post_sd)


def test_blr_covariance_large_step_exact_discrete_not_continuous(blr_run):
    """At eta h_max = 1.2 the covariance is the exact discrete s2 H^-1 (I - eta H/2)^-1 entry by
    entry and along the extreme eigenvectors, and is far from the posterior covariance A^-1."""
    cf, eta = blr_run["cf"], blr_run["eta"]["large"]
    _, cov = _chain_stats(blr_run, "large")
    C_exact = _discrete_cov(cf["H"], eta)
    A_inv = S2 * np.linalg.inv(cf["H"])
    est, se = _mean_se(cov)
    iu = np.triu_indices(N_FEAT)
    z = ((est - C_exact) / se)[iu]
    assert np.all(np.abs(z) < Z_TOL), z
    h, U = np.linalg.eigh(cf["H"])
    for k in (0, -1):
        u = U[:, k]
        proj = np.einsum("i,mij,j->m", u, cov, u)
        p_hat, p_se = _mean_se(proj)
        want = S2 / (h[k] * (1.0 - 0.5 * eta * h[k]))
        assert abs(p_hat - want) < Z_TOL * p_se, (k, p_hat / want, (p_hat - want) / p_se)
    # top eigenvector: the discrete variance is 1/(1 - 0.6) = 2.5 x the posterior's
    u = U[:, -1]
    p_hat, p_se = _mean_se(np.einsum("i,mij,j->m", u, cov, u))
    assert (p_hat - u @ A_inv @ u) / p_se > Z_REJECT


def test_blr_covariance_small_step_converges_to_posterior(blr_run):
    """At eta h_max = 0.015 the sampled covariance matches the closed-form posterior covariance
    A^-1 = s2 H^-1 within standard errors; the remaining discrete bias is below 2 SE, and the
    exact discrete covariance differs from A^-1 by (eta s2/2) I + O(eta^2)."""
    cf, eta = blr_run["cf"], blr_run["eta"]["small"]
    _, cov = _chain_stats(blr_run, "small")
    A_inv = S2 * np.linalg.inv(cf["H"])
    C_exact = _discrete_cov(cf["H"], eta)
    est, se = _mean_se(cov)
    iu = np.triu_indices(N_FEAT)
    assert np.all(np.abs((est - A_inv) / se)[iu] < Z_TOL), ((est - A_inv) / se)[iu]
    assert np.all(np.abs((est - C_exact) / se)[iu] < Z_TOL)
    assert np.all(np.abs(C_exact - A_inv)[iu] < 2.0 * se[iu])        # bias not resolvable here
    assert np.all(se[np.diag_indices(N_FEAT)] < 0.03 * np.diag(A_inv))  # ... but the test has power
    h, U = np.linalg.eigh(cf["H"])
    for k in (0, -1):
        u = U[:, k]
        p_hat, p_se = _mean_se(np.einsum("i,mij,j->m", u, cov, u))
        assert abs(p_hat - S2 / h[k]) < Z_TOL * p_se, (k, p_hat * h[k] / S2, (p_hat - S2 / h[k]) / p_se)
    # the eigenbasis formula solves the discrete Lyapunov equation C = B C B^T + 2 eta s2 I, B = I - eta H
    B = np.eye(N_FEAT) - eta * cf["H"]
    np.testing.assert_allclose(solve_discrete_lyapunov(B, 2.0 * eta * S2 * np.eye(N_FEAT)), C_exact, rtol=1e-8)
    # first-order convergence of the closed form: C(eta) - A^-1 = (eta s2/2)(I - eta H/2)^-1, so
    # (C(eta) - A^-1)/eta -> (s2/2) I with a relative error <= eta h_max
    h_max = h[-1]
    for e in (1e-2, 1e-3, 1e-4):
        slope = (_discrete_cov(cf["H"], e / h_max) - A_inv) / (e / h_max)
        assert np.abs(slope - 0.5 * S2 * np.eye(N_FEAT)).max() <= 0.5 * S2 * e


# ---------------------------------------------------------------------------------------------
# 3. one step is exactly the documented formula


def _leaf_id(name: str) -> int:
    """The documented noise-stream id of a top-level dict leaf: crc32 of its key path "['name']"."""
    return zlib.crc32(f"['{name}']".encode()) & 0x7FFFFFFF


@pytest.mark.parametrize("prior_variance", [1.0, 0.3, {"a": 0.3, "b": 2.5}])
def test_langevin_one_step_matches_formula(prior_variance):
    """update = -lr (grads + s2/v params) + sqrt(2 lr s2) normal(fold_in(key, crc32 of the leaf's path))."""
    lr, s2 = 0.07, 0.4
    params = {"a": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([[1.5, -0.25], [0.0, 3.0]])}
    grads = {"a": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array([[-1.0, 0.5], [2.0, 0.0]])}
    key = jax.random.PRNGKey(7)
    tx = langevin(lr, s2, prior_variance)
    upd, _ = jax.jit(lambda g, p, k: tx.update(g, tx.init(p), p, key=k))(grads, params, key)
    for i, name in enumerate(sorted(params)):               # dict leaves flatten in key order
        v = prior_variance[name] if isinstance(prior_variance, dict) else prior_variance
        xi = jax.random.normal(jax.random.fold_in(key, _leaf_id(name)), params[name].shape, params[name].dtype)
        want = (-lr * (np.asarray(grads[name]) + s2 / v * np.asarray(params[name]))
                + math.sqrt(2 * lr * s2) * np.asarray(xi))
        np.testing.assert_allclose(np.asarray(upd[name]), want, rtol=1e-13, atol=1e-15)
    # the noise is not shared between leaves, and depends on the key
    upd2, _ = tx.update(grads, tx.init(params), params, key=jax.random.PRNGKey(8))
    assert not np.allclose(upd["a"], upd2["a"])
    with pytest.raises(ValueError, match="key"):
        tx.update(grads, tx.init(params), params)


@pytest.mark.parametrize("labels", ["flat", "prefix"])
def test_langevin_groups_of_multi_transform_draw_independent_noise(labels):
    """Per-layer learning rates via optax.multi_transform: every parameter leaf must still get its
    own noise stream (shared draws correlate the layers' fluctuations and change the stationary
    law).  All four leaves have the same shape, so a shared stream shows as identical draws."""
    params = {"l1": {"a": jnp.zeros(4), "b": jnp.zeros(4)}, "l2": {"a": jnp.zeros(4), "b": jnp.zeros(4)}}
    if labels == "flat":
        label_tree = {"l1": {"a": "x", "b": "x"}, "l2": {"a": "y", "b": "y"}}
    else:
        label_tree = {"l1": "x", "l2": "y"}
    lr = {"x": 0.1, "y": 0.4}
    tx = optax.multi_transform({g: langevin(v, 1.0) for g, v in lr.items()}, label_tree)
    upd, _ = tx.update(params, tx.init(params), params, key=jax.random.PRNGKey(3))
    xi = [np.asarray(upd[l][k]) / math.sqrt(2.0 * lr["x" if l == "l1" else "y"]) for l in ("l1", "l2") for k in "ab"]
    for i in range(len(xi)):
        for j in range(i):
            assert not np.allclose(xi[i], xi[j]), (i, j)


# ---------------------------------------------------------------------------------------------
# 4. dtype preservation


def test_langevin_preserves_float32_with_float64_hyperparameters():
    params = {"w": jnp.ones((4, 3), jnp.float32), "a": jnp.linspace(-1, 1, 3, dtype=jnp.float32)}
    grads = jax.tree_util.tree_map(lambda p: 0.5 * p, params)
    key = jax.random.PRNGKey(0)

    @jax.jit
    def step(params, grads, lr, s2, v):      # traced float64 hyperparameters, as in the driver
        tx = langevin(lr, s2, v)
        upd, _ = tx.update(grads, tx.init(params), params, key=key)
        return upd, optax.apply_updates(params, upd)

    f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
    upd, new = step(params, grads, f64(0.05), f64(0.3), f64(2.0))
    for tree in (upd, new):
        for leaf in jax.tree_util.tree_leaves(tree):
            assert leaf.dtype == jnp.float32, leaf.dtype
    # the float32 step is the formula to float32 precision (the noise is the float32 normal draw)
    for i, k in enumerate(sorted(params)):
        xi = np.asarray(jax.random.normal(jax.random.fold_in(key, _leaf_id(k)), params[k].shape, jnp.float32),
                        np.float64)
        p, g = np.asarray(params[k], np.float64), np.asarray(grads[k], np.float64)
        want = -0.05 * (g + 0.3 / 2.0 * p) + math.sqrt(2 * 0.05 * 0.3) * xi
        np.testing.assert_allclose(np.asarray(upd[k], np.float64), want, rtol=1e-6, atol=1e-7)
    # and with Python-float hyperparameters, unjitted
    tx = langevin(0.05, 0.3)
    upd, _ = tx.update(grads, tx.init(params), params, key=key)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(upd))


# ---------------------------------------------------------------------------------------------
# 5. Schedule validation and record times


@pytest.mark.parametrize("kwargs, name", [
    (dict(steps=0), "steps"),
    (dict(steps=-5), "steps"),
    (dict(steps=10.5), "steps"),
    (dict(steps=10, burn_in=10), "burn_in"),
    (dict(steps=10, burn_in=11), "burn_in"),
    (dict(steps=10, burn_in=-1), "burn_in"),
    (dict(steps=10, burn_in=2.5), "burn_in"),
    (dict(steps=10, record_every=2.5), "record_every"),
    (dict(steps=10, record_every=0), "record_every"),
    (dict(steps=10, per_decade=0), "per_decade"),
])
def test_schedule_rejects_bad_values(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        Schedule(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(steps=1000, record_every=300),
    dict(steps=1000, record_every=100),
    dict(steps=5, record_every=100),
    dict(steps=1, record_every=1),
    dict(steps=100_000, record_every=10, log_times=True, per_decade=5),
    dict(steps=1000, record_every=1, log_times=True, per_decade=20),
    dict(steps=7, record_every=50, log_times=True),
])
def test_schedule_record_steps(kwargs):
    s = Schedule(**kwargs)
    t = s.record_steps()
    assert t.dtype.kind == "i"
    assert t[-1] == s.steps
    assert t[0] >= 1
    assert np.all(np.diff(t) > 0)
    if not s.log_times:
        np.testing.assert_array_equal(t[:-1], np.arange(1, t.size) * s.record_every)
        assert s.steps - t[-2 if t.size > 1 else -1] <= s.record_every
    elif s.record_every < s.steps:
        assert t[0] == s.record_every
        # log-spaced: in every full decade far from the rounding limit there are per_decade points
        lo = max(s.record_every, s.per_decade)      # above per_decade, spacing > 2 (no merging)
        decades = np.arange(math.ceil(math.log10(lo)), math.floor(math.log10(s.steps)))
        assert decades.size >= 1
        for e in decades:
            count = np.sum((t > 10**e) & (t <= 10 ** (e + 1)))
            assert count == s.per_decade, (e, count)
        # consecutive ratios are 10^(1/per_decade) up to rounding to integers
        big = t[:-1] >= s.per_decade
        ratio = t[1:][big] / t[:-1][big]
        r0 = 10 ** (1 / s.per_decade)
        assert np.all(np.abs(ratio - r0) <= r0 / t[:-1][big] + 1e-12), ratio
