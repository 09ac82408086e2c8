"""Fourier observables of modular-addition neurons (grokphase.sims.fourier).

References are written from the equations, in NumPy, not from the module: the Fourier convention
x_k = (1/P) sum_n x_n e^{+2 pi i k n/P} as a literal double loop, the sextic penalty Gamma as the
literal sum over k in Z_P, the network output f_p(n, m) = sum_i a_pi (u_in + v_im)^2 built on the
whole table, and the exact Dirichlet moments of the IPR of Gaussian vectors.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grokphase  # noqa: F401  (float64 in JAX)
from grokphase.errors import ParameterError
from grokphase.sims import fourier as _fourier


class F:
    """The module's functions, jitted whole: on a 2-core machine op-by-op dispatch (one compile per
    primitive and shape) costs more than the tests themselves."""

    fourier_modes = jax.jit(_fourier.fourier_modes)
    power_spectrum = jax.jit(_fourier.power_spectrum)
    mode_power = jax.jit(_fourier.mode_power)
    ipr = jax.jit(_fourier.ipr, static_argnames="exclude_zero")
    dominant_frequency = jax.jit(_fourier.dominant_frequency)
    phase_at = jax.jit(_fourier.phase_at)
    phase_constraint = jax.jit(_fourier.phase_constraint)
    gamma_per_neuron = jax.jit(_fourier.gamma_per_neuron, static_argnames="axis")
    gamma_penalty = jax.jit(_fourier.gamma_penalty, static_argnames="axis")
    gamma_penalty_direct = jax.jit(_fourier.gamma_penalty_direct, static_argnames="axis")
    droplet_mask = jax.jit(_fourier.droplet_mask)
    ipr_gaussian_mean = staticmethod(_fourier.ipr_gaussian_mean)
    raw = _fourier


def literal_modes(x):
    """x_k = (1/P) sum_n x_n exp(+2 pi i k n/P), k = 0..P-1, as a double loop (last axis)."""
    x = np.asarray(x, dtype=float)
    P = x.shape[-1]
    out = np.zeros(x.shape, dtype=complex)
    for k in range(P):
        for n in range(P):
            out[..., k] += x[..., n] * np.exp(2j * np.pi * ((k * n) % P) / P)
    return out / P


def cosine(P, k, A, phi):
    n = np.arange(P)
    return A * np.cos(2 * np.pi * k * n / P + phi)


def wrap(x):
    return (np.asarray(x) + np.pi) % (2 * np.pi) - np.pi


def target_component(u, v, a):
    """T = sum_{n,m} sum_p f_p(n,m) (delta_{p,(n+m) mod P} - 1/P) for one neuron, from the output table."""
    P = u.shape[-1]
    h = u[:, None] + v[None, :]                        # (n, m): w.x_nm
    f = a[None, None, :] * h[..., None] ** 2           # (n, m, p)
    n, m = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    return f[n, m, (n + m) % P].sum() - f.sum() / P


# ---------------------------------------------------------------------------------------------------
# convention


@pytest.mark.parametrize("P", [7, 12, 23])
def test_fourier_modes_literal_sum_and_cosine_amplitude(P):
    rng = np.random.default_rng(P)
    x = rng.normal(size=(3, P))
    np.testing.assert_allclose(F.fourier_modes(x), literal_modes(x), rtol=0, atol=1e-13)
    ps = np.asarray(F.power_spectrum(x))
    # Parseval: sum_k power_k = sum_{k in Z_P} |x_k|^2 = (1/P) sum_n x_n^2
    np.testing.assert_allclose(ps.sum(-1), (x**2).sum(-1) / P, rtol=1e-12)

    # |w_k|^2 = Phi at one pair <=> w_n = 2 sqrt(Phi) cos(2 pi k n/P + phi)
    Phi, phi = 2.7, 0.9
    for k in range(1, (P - 1) // 2 + 1):
        w = cosine(P, k, 2 * math.sqrt(Phi), phi)
        wk = np.asarray(F.fourier_modes(w))
        np.testing.assert_allclose(wk[k], math.sqrt(Phi) * np.exp(-1j * phi), atol=1e-12)
        np.testing.assert_allclose(wk[P - k], math.sqrt(Phi) * np.exp(1j * phi), atol=1e-12)
        np.testing.assert_allclose(F.mode_power(w, k), Phi, rtol=1e-12)
        expected = np.zeros(P // 2 + 1)
        expected[k] = 2 * Phi                          # the pair k, -k combined
        np.testing.assert_allclose(F.power_spectrum(w), expected, atol=1e-12)
        np.testing.assert_allclose((w**2).sum(), 2 * P * Phi, rtol=1e-12)
    if P % 2 == 0:                                     # k = P/2: a real mode, |w_{P/2}| = |A cos phi|
        w = cosine(P, P // 2, 1.3, phi)
        np.testing.assert_allclose(abs(np.asarray(F.fourier_modes(w))[P // 2]), 1.3 * abs(math.cos(phi)), rtol=1e-12)
        np.testing.assert_allclose(F.power_spectrum(w)[-1], (1.3 * math.cos(phi)) ** 2, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------
# pure cosine neurons: IPR, frequency, phases


@pytest.mark.parametrize("P, dtype, tol", [(23, np.float64, 1e-12), (24, np.float64, 1e-12), (97, np.float64, 1e-12),
                                           (24, np.float32, 2e-5), (97, np.float32, 2e-5)])
def test_pure_cosine_neuron(P, dtype, tol):
    rng = np.random.default_rng(1000 + P)
    ks = np.arange(1, (P - 1) // 2 + 1)
    phi1, phi2 = rng.uniform(-np.pi, np.pi, (2, ks.size))
    phi3 = phi1 + phi2
    u = np.stack([cosine(P, k, 1.7, p) for k, p in zip(ks, phi1)]).astype(dtype)
    v = np.stack([cosine(P, k, 1.7, p) for k, p in zip(ks, phi2)]).astype(dtype)
    a = np.stack([cosine(P, k, 0.3, p) for k, p in zip(ks, phi3)]).astype(dtype)
    for x, ph in ((u, phi1), (v, phi2), (a, phi3)):
        r = F.ipr(x)
        assert r.dtype == dtype
        np.testing.assert_allclose(r, 1.0, atol=1e-6)
        np.testing.assert_array_equal(F.dominant_frequency(x), ks)
        np.testing.assert_allclose(wrap(F.phase_at(x, ks) - ph), 0.0, atol=tol)
        np.testing.assert_allclose(wrap(F.phase_at(x, P - ks) + ph), 0.0, atol=tol)   # phase at -k is -phi
    res = F.phase_constraint(u, v, a)
    np.testing.assert_array_equal(res.k, ks)
    np.testing.assert_allclose(res.delta, 0.0, atol=tol)
    assert res.delta.dtype == dtype
    # a uniform spectrum over K pairs has IPR 1/K
    K = P // 2
    flat = sum(cosine(P, k, 1.0 if k < P / 2 else math.sqrt(0.5), 0.0) for k in range(1, K + 1))   # power 1/2 each
    np.testing.assert_allclose(F.ipr(flat), 1.0 / K, rtol=1e-10)


def test_phase_constraint_sign_is_physical():
    """The constraint's zero is where the neuron's output has the largest target component.

    For u = A cos(wn + phi1), v = A cos(wm + phi2), a = cos(wp + phi3) the cross term 2 a_p u_n v_m
    gives T = (A^2 P^2/2) cos(phi1 + phi2 - phi3): built here from the full output table and
    compared with phase_constraint's delta."""
    P, A = 23, 1.3
    rng = np.random.default_rng(7)
    shifts = np.linspace(-np.pi, np.pi, 16, endpoint=False)          # contains 0 and +-pi/2
    for k in (1, 4, 11):
        phi1, phi2 = rng.uniform(-np.pi, np.pi, 2)
        u, v = cosine(P, k, A, phi1), cosine(P, k, A, phi2)
        T, delta = [], []
        for s in shifts:
            a = cosine(P, k, 1.0, phi1 + phi2 + s)
            T.append(target_component(u, v, a))
            delta.append(float(F.phase_constraint(u[None], v[None], a[None]).delta[0]))
        T, delta = np.array(T), np.array(delta)
        np.testing.assert_allclose(wrap(delta + shifts), 0.0, atol=1e-10)   # delta = phi1 + phi2 - phi3
        np.testing.assert_allclose(T, A**2 * P**2 / 2 * np.cos(delta), rtol=1e-9, atol=1e-9 * A**2 * P**2)
        assert np.argmin(np.abs(delta)) == np.argmax(T)
        assert T.max() > 0.99 * A**2 * P**2 / 2
        # the readouts a wrong sign convention would call aligned do worse: phi3 = phi1 - phi2, -phi1 - phi2
        for wrong in (phi1 - phi2, -phi1 - phi2):
            Tw = target_component(u, v, cosine(P, k, 1.0, wrong))
            dw = float(F.phase_constraint(u[None], v[None], cosine(P, k, 1.0, wrong)[None]).delta[0])
            np.testing.assert_allclose(Tw, A**2 * P**2 / 2 * math.cos(dw), atol=1e-9 * A**2 * P**2)
            assert Tw < T.max() - 1e-6 * A**2 * P**2 or abs(wrap(dw)) < 1e-9
    # v running backwards, cos(-wm + phi2), has cosine phase -phi2 at +k: aligned readout phase phi1 - phi2
    phi1, phi2, k = 0.7, -2.1, 5
    u, v = cosine(P, k, A, phi1), cosine(P, -k, A, phi2)
    a = cosine(P, k, 1.0, phi1 - phi2)
    res = F.phase_constraint(u[None], v[None], a[None])
    assert int(res.k[0]) == k and abs(float(res.delta[0])) < 1e-10
    np.testing.assert_allclose(target_component(u, v, a), A**2 * P**2 / 2, rtol=1e-10)


@pytest.mark.parametrize("P", [7, 12, 23])
def test_target_component_in_fourier_space(P):
    """For any neuron, T = 2 P^2 sum_{k != 0} Re(a_k conj(u_k) conj(v_k)) with the module's modes."""
    rng = np.random.default_rng(P + 1)
    for _ in range(3):
        u, v, a = rng.normal(size=(3, P))
        uk, vk, ak = (np.asarray(F.fourier_modes(x)) for x in (u, v, a))
        pred = 2 * P**2 * np.real(ak * np.conj(uk) * np.conj(vk))[1:].sum()
        np.testing.assert_allclose(target_component(u, v, a), pred, rtol=1e-10, atol=1e-10 * P**2)


# ---------------------------------------------------------------------------------------------------
# IPR of Gaussian vectors


def test_ipr_gaussian_mean_closed_form():
    for P in (3, 5, 23, 59, 97, 101):
        assert F.ipr_gaussian_mean(P) == pytest.approx(4.0 / (P + 1), rel=1e-14)
    # even P: (P/2 - 1) pairs (alpha = 1) and the real mode P/2 (alpha = 1/2)
    P = 24
    K, a0 = P // 2 - 1, P // 2 - 0.5
    assert F.ipr_gaussian_mean(P) == pytest.approx((2 * K + 0.75) / (a0 * (a0 + 1)), rel=1e-14)


@pytest.mark.parametrize("P, exclude_zero", [(23, True), (59, True), (97, True), (24, True), (23, False), (30, False)])
def test_ipr_of_gaussian_vectors(P, exclude_zero):
    M = 20000
    x = np.random.default_rng(P + 100 * exclude_zero).normal(scale=2.5, size=(M, P))
    r = np.asarray(F.ipr(x, exclude_zero=exclude_zero))
    mean, se = r.mean(), r.std(ddof=1) / math.sqrt(M)
    expected = F.ipr_gaussian_mean(P, exclude_zero)
    assert abs(mean - expected) < 5 * se, (mean, expected, se)
    # the test resolves the alternatives: counting k and -k separately, or all modes as pairs
    K = (P - 1) // 2 + (P % 2 == 0) + (not exclude_zero)
    for wrong in (1.0 / (K + 1), 2.0 / (K + 2)):
        assert abs(wrong - expected) > 10 * se


# ---------------------------------------------------------------------------------------------------
# the sextic penalty Gamma


def literal_gamma(w, gamma):
    """sum_i sum_{k in Z_P} P (gamma/6)(|u_ik|^6 + |v_ik|^6), straight from THEORY.md §4."""
    w = np.asarray(w, dtype=float)
    P = w.shape[-1] // 2
    uk, vk = literal_modes(w[..., :P]), literal_modes(w[..., P:])
    return float(np.sum(P * gamma / 6.0 * (np.abs(uk) ** 6 + np.abs(vk) ** 6)))


@pytest.mark.parametrize("P", [9, 12, 23])
def test_gamma_penalty_fft_equals_direct_sum(P):
    rng = np.random.default_rng(P + 7)
    w = rng.normal(scale=1.5, size=(4, 2 * P))
    w[0, :P] += 2.0                                   # a k = 0 component
    w[1, P:] += cosine(P, P // 2, 3.0, 0.2)           # the real mode k = P/2 for even P
    gamma = 0.37
    fft_val = float(F.gamma_penalty(w, gamma))
    direct = float(F.gamma_penalty_direct(w, gamma))
    np.testing.assert_allclose(fft_val, direct, rtol=1e-10)
    if P <= 12:
        np.testing.assert_allclose(direct, literal_gamma(w, gamma), rtol=1e-12)
    if P == 12:
        np.testing.assert_allclose(F.gamma_per_neuron(w, gamma).sum(), fft_val, rtol=1e-14)
        np.testing.assert_allclose(F.gamma_penalty(w.T, gamma, axis=0), fft_val, rtol=1e-14)   # (2P, N) layout
    grad = jax.jit(jax.grad(F.raw.gamma_penalty, argnums=(0, 1)))
    g_fft, dgamma = grad(jnp.asarray(w), gamma)
    g_dir = jax.jit(jax.grad(F.raw.gamma_penalty_direct))(jnp.asarray(w), gamma)
    np.testing.assert_allclose(g_fft, g_dir, rtol=1e-10, atol=1e-12 * np.abs(g_dir).max())
    np.testing.assert_allclose(dgamma, fft_val / gamma, rtol=1e-12)       # Gamma is linear in gamma
    # gradient at w = 0 is 0, not NaN (|.|^2 = re^2 + im^2)
    assert np.all(np.asarray(grad(jnp.zeros_like(w), gamma)[0]) == 0)


def test_gamma_penalty_counts_each_pair_twice():
    P, gamma, Phi, Psi = 23, 1e-2, 3.0, 0.5
    w = np.concatenate([cosine(P, 4, 2 * math.sqrt(Phi), 0.3), cosine(P, 4, 2 * math.sqrt(Psi), -1.0)])[None]
    np.testing.assert_allclose(F.gamma_penalty(w, gamma), 2 * P * gamma / 6 * (Phi**3 + Psi**3), rtol=1e-12)
    const = np.concatenate([np.full(P, 1.5), np.zeros(P)])[None]                  # k = 0 counted once
    np.testing.assert_allclose(F.gamma_penalty(const, gamma), P * gamma / 6 * 1.5**6, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------
# precision, jit and vmap


def test_float32_jit_vmap_consistency():
    rng = np.random.default_rng(3)
    B, N, P = 3, 5, 23
    u, v, a = rng.normal(size=(3, B, N, P))
    w = np.concatenate([u, v], axis=-1)
    res = F.phase_constraint(u, v, a)
    res_jv = jax.jit(jax.vmap(F.raw.phase_constraint))(u, v, a)
    for x, y in zip(res, res_jv):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    loop = np.stack([F.gamma_penalty(w[b], 0.2) for b in range(B)])
    np.testing.assert_allclose(jax.jit(jax.vmap(F.raw.gamma_penalty))(w, jnp.full(B, 0.2)), loop, rtol=1e-12)

    f32 = lambda x: x.astype(np.float32)  # noqa: E731
    for fn in (F.power_spectrum, F.ipr, F.dominant_frequency):
        out32, out64 = fn(f32(u)), fn(u)
        if jnp.issubdtype(out64.dtype, jnp.floating):
            assert out32.dtype == jnp.float32 and out64.dtype == jnp.float64
        np.testing.assert_allclose(out32, out64, rtol=2e-5, atol=1e-6)
    assert F.fourier_modes(f32(u)).dtype == jnp.complex64
    g32 = F.gamma_penalty(f32(w[0]), 0.2)
    assert g32.dtype == jnp.float32
    np.testing.assert_allclose(g32, F.gamma_penalty(w[0], 0.2), rtol=1e-5)
    np.testing.assert_allclose(F.gamma_penalty_direct(f32(w[0]), 0.2), g32, rtol=1e-5)
    assert F.droplet_mask(f32(u), f32(v), 1.0).dtype == jnp.bool_


# ---------------------------------------------------------------------------------------------------
# droplet neurons


def test_droplet_mask():
    P, phi_plus = 23, 40.0
    rng = np.random.default_rng(11)
    amp = 2 * math.sqrt(phi_plus)                      # |u_k|^2 = phi_plus
    rows_u, rows_v, expect = [], [], []

    def add(u, v, is_droplet):
        rows_u.append(u)
        rows_v.append(v)
        expect.append(is_droplet)

    for k in (1, 5, 11):                               # droplets with 5 % amplitude noise; v may run at -k
        noise = 0.05 * amp / math.sqrt(P)
        add(cosine(P, k, amp, rng.uniform(-3, 3)) + noise * rng.normal(size=P),
            cosine(P, k if k != 5 else -k, amp, rng.uniform(-3, 3)) + noise * rng.normal(size=P), True)
    for _ in range(5):                                 # prior draws: |u_k|^2 ~ 1/P, no dominant frequency
        add(rng.normal(size=P), rng.normal(size=P), False)
    for _ in range(3):                                 # random neurons scaled up to the droplet's norm
        x = rng.normal(size=(2, P))
        x *= math.sqrt(2 * P * phi_plus) / np.linalg.norm(x, axis=1, keepdims=True)
        add(x[0], x[1], False)
    for factor, ok in ((1.4, True), (0.6, True), (1.6, False), (0.4, False), (3.0, False), (0.1, False)):
        add(cosine(P, 3, math.sqrt(factor) * amp, 0.2), cosine(P, 3, amp, 1.0), ok)   # Phi = factor * phi_plus
        add(cosine(P, 3, amp, 0.2), cosine(P, 3, math.sqrt(factor) * amp, 1.0), ok)   # Psi = factor * phi_plus
    add(cosine(P, 3, amp, 0.0), cosine(P, 4, amp, 0.0), False)                          # frequencies differ
    two = (cosine(P, 3, amp, 0.0) + cosine(P, 7, 0.9 * amp, 1.0))                       # 55 % / 45 % of the power
    add(two, cosine(P, 3, amp, 0.5), True)
    three = (cosine(P, 3, amp, 0.0) + cosine(P, 7, 0.9 * amp, 1.0) + cosine(P, 9, 0.9 * amp, 2.0))
    add(three, cosine(P, 3, amp, 0.5), False)                                           # dominant bin < 50 %
    add(np.zeros(P), np.zeros(P), False)

    u, v, expect = np.array(rows_u), np.array(rows_v), np.array(expect)
    mask = F.droplet_mask(u, v, phi_plus)
    np.testing.assert_array_equal(mask, expect)
    # phi_plus broadcast per network; jit with traced tolerances
    batched = F.droplet_mask(np.stack([u, u]), np.stack([v, v]), jnp.array([[phi_plus], [3 * phi_plus]]),
                                      0.5, 0.5)
    np.testing.assert_array_equal(batched[0], expect)
    np.testing.assert_array_equal(batched[1], np.zeros_like(expect))
    # a looser dominance admits the three-frequency neuron, a tighter one rejects the two-frequency one
    assert bool(F.droplet_mask(three, cosine(P, 3, amp, 0.5), phi_plus, dominance=0.35))
    assert not bool(F.droplet_mask(two, cosine(P, 3, amp, 0.5), phi_plus, dominance=0.6))


def test_bad_input():
    F = _fourier
    with pytest.raises(ParameterError, match="even length"):
        F.gamma_penalty(np.zeros((2, 7)), 1.0)
    with pytest.raises(ParameterError, match="rel_tol"):
        F.droplet_mask(np.zeros((2, 5)), np.zeros((2, 5)), 1.0, rel_tol=0.0)
    with pytest.raises(ParameterError, match="dominance"):
        F.droplet_mask(np.zeros((2, 5)), np.zeros((2, 5)), 1.0, dominance=1.5)
    with pytest.raises(ParameterError, match="shapes must agree"):
        F.phase_constraint(np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((5, 2)))
    with pytest.raises(ParameterError, match="P >= 2"):
        F.ipr(np.zeros((3, 1)))
    with pytest.raises(ParameterError, match="real"):
        F.power_spectrum(np.zeros(5, dtype=complex))
    with pytest.raises(ParameterError, match="P must be"):
        F.ipr_gaussian_mean(2)
