"""Guards for the modular-addition simulation (issue 16, mutation check), against independent NumPy.

* The exact Gibbs readout (:func:`grokphase.sims.modular.gibbs_readout`) in both of its forms (primal
  N x N when N <= n, dual n x n when N > n) against Bayesian linear regression written out here: for
  features F_(nm),i = (w_{i,n} + w_{i,P+m})^2 and f = c F z with prior z ~ N(0, I) and noise variance
  s2, the posterior of each output's z is N(Lambda^-1 (c/s2) F^T y, Lambda^-1), Lambda = I + (c^2/s2) F^T F.
  A draw is affine in the caller's standard normals, so its mean (all normals zero) and its exact
  covariance (the linear map's columns, read off with unit vectors) are compared, not samples:
  the tolerance is float64 rounding amplified by the condition number of Lambda (< 1e3 here).
* The recorded train and test MSE on a split table against a NumPy recomputation of the network's
  outputs f_p(n, m) = sum_i a_ip (w_{i,n} + w_{i,P+m})^2 and of the targets y_p = delta_{p,(n+m) mod P} - 1/P
  (THEORY.md §4), per example and output.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import grokphase  # noqa: F401  (float64)
from grokphase.sims.modular import ModularSim, build_members, gibbs_readout, make_task


def _features(w, pairs, P):
    return (w[pairs[:, 0]] + w[P + pairs[:, 1]]) ** 2          # (n, N)


def _blr(F, y, c, s2):
    """Posterior mean (N, P) and covariance (N, N) of z for f = c F z, z ~ N(0, I), noise s2."""
    Lam = np.eye(F.shape[1]) + (c * c / s2) * F.T @ F
    cov = np.linalg.inv(Lam)
    return cov @ ((c / s2) * F.T @ y), cov, np.linalg.cond(Lam)


def _problem(P, N, n, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(2 * P, N))
    table = np.array([(i, j) for i in range(P) for j in range(P)])
    pairs = table[rng.choice(P * P, size=n, replace=False)]
    y = np.eye(P)[(pairs[:, 0] + pairs[:, 1]) % P] - 1.0 / P
    return w, pairs, y


@pytest.mark.parametrize("P,N,n", [(7, 5, 20), (5, 12, 6)], ids=["primal", "dual"])
def test_gibbs_readout_is_the_exact_bayesian_linear_regression_posterior(P, N, n):
    """Mean and covariance of the Gibbs readout's draw equal the BLR posterior (rtol 1e-9: float64
    algebra with cond(Lambda) < 1e3; a factor 2 in the precision moves both by O(1), since
    (c^2/s2) F^T F has eigenvalues from ~0.1 to ~10 here)."""
    c, s2 = 0.3, 0.5
    w, pairs, y = _problem(P, N, n, seed=P * 100 + N)
    F = _features(w, pairs, P)
    mean_ref, cov_ref, cond = _blr(F, y, c, s2)
    ev = np.linalg.eigvalsh((c * c / s2) * F.T @ F)
    assert cond < 1e3 and ev.max() > 1.0                          # the likelihood matters, well conditioned
    dual = N > n
    draw = jax.jit(lambda xi, eps: gibbs_readout(w, pairs, y, c, s2, xi, eps if dual else None))
    zeros_xi, zeros_eps = np.zeros((N, P)), np.zeros((n, P))
    mean = np.asarray(draw(zeros_xi, zeros_eps))
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-9, atol=1e-12 * np.abs(mean_ref).max())
    # the draw is mean + B xi (+ C eps in the dual form): read B and C column by column (P at a time)
    def columns(size, which):
        cols = []
        for start in range(0, size, P):
            e = np.zeros((size, P))
            k = min(P, size - start)
            e[start + np.arange(k), np.arange(k)] = 1.0
            xi, eps = (e, zeros_eps) if which == "xi" else (zeros_xi, e)
            cols.append((np.asarray(draw(xi, eps)) - mean)[:, :k])
        return np.concatenate(cols, axis=1)

    B = columns(N, "xi")
    cov = B @ B.T
    if dual:
        C = columns(n, "eps")
        cov = cov + C @ C.T
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-9, atol=1e-11 * np.abs(cov_ref).max())


def test_recorded_mse_equals_numpy_recomputation():
    """train_mse / test_mse: mean of (f_p(n, m) - y_p)^2 over the training (test) pairs and the P outputs,
    with f and y recomputed here from the weights and from THEORY.md §4's targets.  Exact to rounding."""
    sim = ModularSim(P=7, N=6, alpha=0.5, s2=(0.3,), sa2=0.05, dtype="float64")
    task = make_task(sim)
    members, _ = build_members(sim)
    hyper = jax.tree_util.tree_map(lambda a: a[0], members.hyper)
    data = jax.jit(task.make_data)(members.data_keys[0], hyper)
    rng = np.random.default_rng(1)
    P, N = sim.P, sim.N
    theta = {"w": rng.normal(size=(2 * P, N)), "a": rng.normal(size=(N, P)) * 0.2}
    accum = jax.jit(task.init_accum)(theta, data, hyper)
    record, _ = jax.jit(task.observe)(theta, data, hyper, accum, np.float64(1.0))

    table = np.array([(i, j) for i in range(P) for j in range(P)])
    f = sim.scale * _features(theta["w"], table, P) @ theta["a"]             # (P^2, P)
    y = np.eye(P)[(table[:, 0] + table[:, 1]) % P] - 1.0 / P
    train = np.zeros(P * P, bool)
    train[np.asarray(data["train_idx"])] = True
    assert train.sum() == sim.n_train and 0 < train.sum() < P * P
    r2 = (f - y) ** 2
    assert float(record["train_mse"]) == pytest.approx(r2[train].mean(), rel=1e-10)
    assert float(record["test_mse"]) == pytest.approx(r2[~train].mean(), rel=1e-10)
