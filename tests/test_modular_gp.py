"""Physics tests of the NNGP limit of the modular-addition model (eq. 21, App. B.1; THEORY.md §4)."""

from __future__ import annotations

import math
import warnings

import jax
import numpy as np
import pytest
from scipy import special

import grokphase  # noqa: F401  (float64 in JAX)
from grokphase.errors import ParameterError
from grokphase.theory import modular_gp as mg

MODULI = [5, 6, 7, 11]   # primes and one composite: the NNGP spectrum holds for every P
SA2 = 0.37               # arbitrary, not 1, so that a missing sa2 factor shows


def _bonferroni_z(num_entries: int, family_alpha: float) -> float:
    """|z| bound exceeded by any of ``num_entries`` standard normals with probability <= family_alpha
    (Bonferroni: valid however the entries are correlated)."""
    return float(special.ndtri(1.0 - family_alpha / (2.0 * num_entries)))


# ----------------------------------------------------------------------------------------------
# 1. Monte Carlo over prior weights reproduces eq. 21
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("P", MODULI)
def test_monte_carlo_kernel_reproduces_eq21(P):
    """Q = sa2 E_w[(w·x)^2 (w·x')^2] estimated from M = 2e5 draws w ~ N(0, I_2P) (fixed key) agrees with
    eq. 21 entrywise within standard errors.

    Statistic: max over the P^2(P^2+1)/2 distinct entries of |z|, z = (mean - Q)/stderr.  Bound: the
    Bonferroni threshold at family-wise false-alarm 1e-4 (5.1 for P = 5, 5.7 for P = 11).  The
    summands are skewed (the diagonal one is X^4, skewness 10), so the mean's skewness is
    10/sqrt(M) = 0.02; the Edgeworth correction makes the Gaussian tail at |z| ~ 5.5 at most ~2.5x
    heavier, i.e. false-alarm <= 3e-4 — still negligible.  (Observed max |z| with this key: 3.0-4.0.)"""
    M = 200_000
    Q = mg.nngp_kernel_matrix(P, SA2)
    est = mg.monte_carlo_kernel(jax.random.fold_in(jax.random.key(2024), P), P, SA2, M, batch_size=4096)
    mean, se = np.asarray(est.mean), np.asarray(est.stderr)
    assert mean.shape == se.shape == (P * P, P * P)
    iu = np.triu_indices(P * P)
    bound = _bonferroni_z(len(iu[0]), 1e-4)
    z = ((mean - Q) / se)[iu]
    assert np.abs(z).max() < bound, (np.abs(z).max(), bound)

    # The standard errors are right (an inflated stderr would make the z-test vacuous): for w·x = X,
    # w·x' = X' ~ N(0, 2), Var(X^4) = 105·2^4 - 12^2 = 1536 on the diagonal and, for inputs sharing
    # neither n nor m (X, X' independent), Var(X^2 X'^2) = 12^2 - 2^4 = 128.  The relative sd of an
    # estimated SE is sqrt(kurtosis - 1)/(2 sqrt(M)) = sqrt(206/M)/2 = 1.6% (diagonal) and
    # sqrt(158/M)/2 = 1.4% (disjoint).  The sample variance of such heavy-tailed summands has a long
    # upper tail and the maximum runs over up to ~7000 correlated entries (observed max deviation
    # 3-6%), so the bound is 15% (~9 sd): it still catches any O(1) factor error in the stderr.
    K = mg.input_kernel(P)
    diag = np.eye(P * P, dtype=bool)
    disjoint = K == 0
    np.testing.assert_allclose(se[diag], SA2 * math.sqrt(1536.0 / M), rtol=0.15)
    np.testing.assert_allclose(se[disjoint], SA2 * math.sqrt(128.0 / M), rtol=0.15)

    # Power: the same statistic rejects eq. 21 without Isserlis' factor 2 (sa2 [K K + K^2]; observed
    # max |z| ~ 47) and a 5% error in the normalisation (diagonal stderr is 0.7% of the entry, so
    # z ~ 7 on each of the P^2 diagonal entries; observed max |z| ~ 10-12).
    wrong = SA2 * (np.outer(np.diag(K), np.diag(K)) + K * K)
    assert np.abs(((mean - wrong) / se)[iu]).max() > 5 * bound
    assert np.abs(((mean - 1.05 * Q) / se)[iu]).max() > bound


def test_monte_carlo_kernel_independent_of_batch_size():
    """Sample i uses key fold_in(key, i), so the estimate does not depend on batching (up to the
    summation order: 1e-12 relative, float64 sums of 3000 O(10) terms)."""
    key = jax.random.key(7)
    a = mg.monte_carlo_kernel(key, 5, SA2, 3000, batch_size=3000)
    b = mg.monte_carlo_kernel(key, 5, SA2, 3000, batch_size=128)   # 3000 = 23·128 + 56: masked tail
    np.testing.assert_allclose(np.asarray(a.mean), np.asarray(b.mean), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(a.stderr), np.asarray(b.stderr), rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# 2. Spectrum: Fourier modes diagonalise Q with three closed-form eigenvalues
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("P", MODULI)
def test_fourier_modes_diagonalise_Q_with_closed_form_eigenvalues(P):
    """U^H Q U is diagonal (off-diagonal < 1e-10 of the largest eigenvalue; rounding in the O(P^4)
    products is ~1e-15 relative) and its diagonal is the closed-form eigenvalue of each mode class."""
    Q = mg.nngp_kernel_matrix(P, SA2)
    U = mg.fourier_basis(P)
    np.testing.assert_allclose(U.conj().T @ U, np.eye(P * P), atol=1e-13)        # unitary
    D = U.conj().T @ Q @ U
    spec = mg.nngp_eigenvalues(P, SA2)
    scale = spec.values.max()
    off = D - np.diag(np.diag(D))
    assert np.abs(off).max() < 1e-10 * scale
    cls = mg.mode_classes(P)
    assert np.bincount(cls, minlength=3).tolist() == spec.multiplicities.tolist()
    np.testing.assert_allclose(np.diag(D).real, spec.values[cls], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(spec.values, SA2 * np.array([4 * P * P + 4 * P + 4, 2 * P + 4, 4]), rtol=1e-15)
    assert spec.multiplicities.tolist() == [1, 2 * (P - 1), (P - 1) ** 2]


@pytest.mark.parametrize("P", MODULI)
def test_eigvalsh_matches_closed_forms_with_multiplicities(P):
    """numpy.linalg.eigvalsh(Q), sorted, equals the closed forms repeated by their multiplicities, and
    there are exactly three distinct values.  eigvalsh is backward stable: errors ~ P^2 eps |Q| ~
    1e-14 |Q|, so 1e-11 |Q| is safe while the gaps between classes are >= (2P + 4 - 4)/(4P^2) |Q|."""
    Q = mg.nngp_kernel_matrix(P, SA2)
    ev = np.linalg.eigvalsh(Q)
    spec = mg.nngp_eigenvalues(P, SA2)
    tol = 1e-11 * spec.values.max()
    ref = np.sort(np.repeat(spec.values, spec.multiplicities))
    np.testing.assert_allclose(ev, ref, rtol=0, atol=tol)
    # exactly three clusters, with the stated sizes
    breaks = np.nonzero(np.diff(ev) > tol)[0]
    sizes = np.diff(np.concatenate([[0], breaks + 1, [ev.size]]))
    assert sorted(sizes.tolist()) == sorted([1, 2 * (P - 1), (P - 1) ** 2])
    assert len(sizes) == 3


@pytest.mark.parametrize("P", MODULI)
def test_operator_identity_exact(P):
    """Q = sa2 [4 J⊗J + 2 (I⊗J + J⊗I) + 4 I⊗I] holds bit for bit (both sides are sa2 times the same
    exact integers), index nm = n*P + m so kron(A, B)[nm, n'm'] = A[n, n'] B[m, m']."""
    I, J = np.eye(P), np.ones((P, P))
    bracket = 4 * np.kron(J, J) + 2 * (np.kron(I, J) + np.kron(J, I)) + 4 * np.kron(I, I)
    np.testing.assert_array_equal(mg.nngp_kernel_matrix(P, SA2), SA2 * bracket)
    np.testing.assert_array_equal(mg.input_kernel(P), np.kron(I, J) + np.kron(J, I))
    X = mg.inputs(P)
    np.testing.assert_array_equal(X @ X.T, mg.input_kernel(P))


# ----------------------------------------------------------------------------------------------
# 3. The target lives in the (P-1)^2-fold eigenspace
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("P", MODULI)
def test_target_in_class2_eigenspace(P):
    """Every column y_p has zero projection (< 1e-12; entries are O(1), rounding ~1e-15) on the
    Fourier modes of classes 0 and 1, and Q y = 4 sa2 y."""
    y = mg.target_matrix(P)
    assert y.shape == (P * P, P)
    np.testing.assert_allclose(y.sum(axis=1), 0.0, atol=1e-14)     # one 1 - P·(1/P) per row
    c = mg.fourier_basis(P).conj().T @ y
    cls = mg.mode_classes(P)
    assert np.abs(c[cls != 2]).max() < 1e-12
    assert np.abs(c[cls == 2]).max() > 0.1                        # non-trivial: the target is there
    Q = mg.nngp_kernel_matrix(P, SA2)
    np.testing.assert_allclose(Q @ y, 4 * SA2 * y, rtol=0, atol=1e-12 * np.abs(Q).sum(axis=1).max())


# ----------------------------------------------------------------------------------------------
# 4. GP learning curve
# ----------------------------------------------------------------------------------------------


def test_learning_curve_half_point_monotone_and_P2_scaling():
    P = np.array([5, 7, 11, 101, 401])[:, None]
    s2 = 0.2
    nh = mg.n_half(P, SA2, s2)
    np.testing.assert_allclose(nh, s2 * P**2 / (4 * SA2), rtol=1e-15)
    curve = mg.gp_learning_curve(P, SA2, s2, nh)
    np.testing.assert_allclose(curve.learned, 0.5, rtol=1e-14)
    np.testing.assert_allclose(curve.n_half, nh, rtol=1e-15)
    np.testing.assert_allclose(curve.lam, 4 * SA2 / P**2, rtol=1e-15)
    # monotone in n, from 0 at n = 0 towards 1
    n = np.concatenate([[0.0], np.geomspace(1.0, 1e9, 200)])[None, :]
    lc = mg.gp_learning_curve(P, SA2, s2, n).learned
    assert lc.shape == (5, 201)
    assert np.all(lc[:, 0] == 0.0) and np.all(np.diff(lc, axis=1) > 0) and np.all(lc < 1)
    # n_half ∝ P^2: doubling P multiplies it by 4
    Ps = np.array([5, 6, 7, 11, 64])
    np.testing.assert_allclose(mg.n_half(2 * Ps, SA2, s2) / mg.n_half(Ps, SA2, s2), 4.0, rtol=1e-15)
    # the fraction of the whole table needed at half-learning is the P-independent s2/(4 sa2)
    np.testing.assert_allclose(mg.n_half(Ps, SA2, s2) / Ps**2, s2 / (4 * SA2), rtol=1e-15)


@pytest.mark.parametrize("P", [5, 6, 7])
def test_learning_curve_at_full_table_is_exact_gp_posterior(P):
    """With every input observed once (n = P^2) the EK fraction is exact: the GP posterior mean on the
    table is Q (Q + s2 I)^{-1} y = 4 sa2/(4 sa2 + s2) y (y is an eigenvector of Q).  Tolerance 1e-12:
    a well-conditioned solve (cond <= (|Q| + s2)/s2 ~ 1e3)."""
    s2 = 0.3
    Q = mg.nngp_kernel_matrix(P, SA2)
    y = mg.target_matrix(P)
    fbar = Q @ np.linalg.solve(Q + s2 * np.eye(P * P), y)
    frac = np.sum(fbar * y) / np.sum(y * y)
    np.testing.assert_allclose(fbar, frac * y, atol=1e-12)
    np.testing.assert_allclose(mg.gp_learning_curve(P, SA2, s2, P * P).learned, frac, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# 5. Primality and parameter validation
# ----------------------------------------------------------------------------------------------


def test_is_prime_against_sieve():
    N = 2000
    sieve = np.ones(N, dtype=bool)
    sieve[:2] = False
    for p in range(2, int(N**0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = False
    assert [mg.is_prime(k) for k in range(N)] == sieve.tolist()
    assert mg.is_prime(401) and not mg.is_prime(403) and mg.is_prime(np.int64(7)) and mg.is_prime(7.0)


def test_warn_if_composite():
    with pytest.warns(UserWarning, match="prime"):
        mg.warn_if_composite(6)
    with pytest.warns(UserWarning, match="P = 9"):
        mg.warn_if_composite(9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mg.warn_if_composite(7)
        mg.warn_if_composite(401)


@pytest.mark.parametrize("call, name", [
    (lambda: mg.nngp_kernel_matrix(2, SA2), "P"),
    (lambda: mg.nngp_kernel_matrix(-5, SA2), "P"),
    (lambda: mg.nngp_kernel_matrix(5.5, SA2), "P"),
    (lambda: mg.nngp_kernel_matrix("7", SA2), "P"),
    (lambda: mg.nngp_kernel_matrix(True, SA2), "P"),
    (lambda: mg.nngp_kernel_matrix(65, SA2), "P"),
    (lambda: mg.input_kernel(1000), "P"),
    (lambda: mg.fourier_basis(2), "P"),
    (lambda: mg.target_matrix(4.5), "P"),
    (lambda: mg.nngp_kernel_matrix(5, 0.0), "sa2"),
    (lambda: mg.nngp_kernel_matrix(5, -1.0), "sa2"),
    (lambda: mg.nngp_kernel_matrix(5, float("nan")), "sa2"),
    (lambda: mg.nngp_eigenvalues(np.array([5, 2]), SA2), "P"),
    (lambda: mg.nngp_eigenvalues(5, np.array([1.0, -1.0])), "sa2"),
    (lambda: mg.monte_carlo_kernel(jax.random.key(0), 5, SA2, 1), "num_samples"),
    (lambda: mg.monte_carlo_kernel(jax.random.key(0), 5, 0.0, 100), "sa2"),
    (lambda: mg.monte_carlo_kernel(jax.random.key(0), 80, SA2, 100), "P"),
    (lambda: mg.n_half(5, SA2, 0.0), "s2"),
    (lambda: mg.n_half(5.5, SA2, 0.1), "P"),
    (lambda: mg.gp_learning_curve(5, SA2, 0.1, -1.0), "n_train"),
    (lambda: mg.gp_learning_curve(5, -SA2, 0.1, 10.0), "sa2"),
    (lambda: mg.warn_if_composite(2), "P"),
    (lambda: mg.is_prime(2.5), "P"),
])
def test_bad_input_raises_parameter_error_naming_parameter(call, name):
    with pytest.raises(ParameterError, match=rf"^{name} "):
        call()


def test_large_P_closed_forms_need_no_matrix():
    """The closed forms are vectorised and work far beyond the explicit-matrix limit."""
    spec = mg.nngp_eigenvalues(np.array([401, 1009]), np.array([[0.1], [0.2]]))
    assert spec.values.shape == (2, 2, 3) and spec.multiplicities.shape == (2, 2, 3)
    np.testing.assert_allclose(spec.values[1, 0], 0.2 * np.array([4 * 401**2 + 4 * 401 + 4, 806, 4]), rtol=1e-15)
    assert spec.multiplicities[0, 1].tolist() == [1, 2016, 1008**2]
