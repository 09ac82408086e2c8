r"""Fourier observables of modular-addition neurons (THEORY.md §4; Gromov, arXiv 2301.02679).

Model: inputs x_nm in R^{2P} (ones at n and P+m), f_p(x) = sum_i a_pi (w_i·x)^2.  Neuron i has the
input halves u_i = w_i[:P] (first operand n) and v_i = w_i[P:] (second operand m) and the readout
vector a_i = (a_pi)_p in R^P, so f_p(n, m) = sum_i a_pi (u_in + v_im)^2.

**Fourier convention (THEORY.md §4, eq. 16).**  For a real vector x of length P,

    x_n = sum_{k in Z_P} x_k e^{-2 pi i k n/P},   x_k = (1/P) sum_n x_n e^{+2 pi i k n/P}
        = ifft(x)_k = conj(fft(x)_k)/P,

so x_{-k} = conj(x_k), Parseval reads sum_n x_n^2 = P sum_{k in Z_P} |x_k|^2, and the theory's
order parameters are Phi = |u_k|^2, Psi = |v_k|^2 (one mode k, not the pair).  A cosine
x_n = A cos(2 pi k n/P + phi) has x_k = (A/2) e^{-i phi} and x_{-k} = (A/2) e^{+i phi} for
k != 0, P/2, i.e. **|x_k|^2 = A^2/4, A = 2 sqrt(Phi)**; at k = P/2 (even P) x_n = A cos(phi) (-1)^n
and |x_{P/2}| = |A cos phi|.

**Half spectrum.**  ``power_spectrum``, ``ipr``, ``dominant_frequency`` and ``droplet_mask`` work on
frequencies k = 0 .. P//2 (numpy's ``rfft``) with the conjugate modes k, -k combined:
power_k = m_k |x_k|^2 with multiplicity m_k = 2 for 0 < k < P/2 and m_k = 1 for k = 0 and k = P/2,
so sum_k power_k = sum_{k in Z_P} |x_k|^2 = (1/P) sum_n x_n^2 and a pure cosine at k != 0 has all its
power in one bin.

**Phases.**  ``phase_at(x, k)`` is the *cosine phase* phi of x's frequency-k component,
x_n ⊃ |.| cos(2 pi k n/P + phi), i.e. phi = arg fft(x)_k = -arg x_k (this is Gromov's phi: his
solution, eq. 8 there as we read it, is W1_kn = cos(2 pi s(k) n/P + phi1), W2_km = cos(2 pi s(k) m/P
+ phi2), W3_qk = cos(-2 pi s(k) q/P - phi3) = cos(2 pi s(k) q/P + phi3) with phi1 + phi2 = phi3).
Derivation of the sign for this model: the neuron's contribution to the target component of the
output, T = sum_{n,m} sum_p f_p(n, m) (delta_{p,(n+m) mod P} - 1/P), comes from the cross term
2 a_p u_n v_m (the square terms u_n^2, v_m^2 give P a_0 sum u^2 and P a_0 sum v^2 and cancel against
the -1/P part, which also removes the k = 0 cross term); inserting the Fourier series and summing
over n, m (sum_{n,m} a_{n+m} u_n v_m = P^2 sum_k a_k u_{-k} v_{-k}),

    T = 2 P^2 sum_{k != 0} Re(a_k conj(u_k) conj(v_k))
      = 2 P^2 sum_{k != 0} |a_k u_k v_k| cos(phi_u,k + phi_v,k - phi_a,k).

So a neuron helps the target at frequency k when Delta = phi_u + phi_v - phi_a = 0 (mod 2 pi) in
cosine phases (or, as the constraint is linear, equally in the phases of x_k; using the -k phases
flips all three signs).
For u = A cos(wn + phi1), v = A cos(wm + phi2), a = cos(wp + phi3), w = 2 pi k/P, 0 < k < P/2:
T = (A^2 P^2 / 2) cos(phi1 + phi2 - phi3).  ``tests/test_fourier.py`` checks this numerically on the
network output.

All functions are pure, jit- and vmap-compatible and keep the input's precision (float32 in,
float32/complex64 out; float64 in, float64/complex128 out).  Sizes come from static shapes;
scalars such as ``gamma``, ``phi_plus``, ``rel_tol`` may be traced array leaves.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError

__all__ = [
    "fourier_modes", "power_spectrum", "mode_power", "ipr", "ipr_gaussian_mean", "dominant_frequency",
    "phase_at", "NeuronPhases", "phase_constraint", "gamma_per_neuron", "gamma_penalty",
    "gamma_penalty_direct", "droplet_mask",
]


# ----------------------------------------------------------------------------------------------------
# helpers


def _real_array(x, name: str) -> jnp.ndarray:
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        raise ParameterError(f"{name} must be real, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim < 1 or x.shape[-1] < 2:
        raise ParameterError(f"{name} must have a last axis of length P >= 2, got shape {x.shape}")
    return x


def _multiplicity(P: int, dtype) -> jnp.ndarray:
    """m_k for k = 0 .. P//2: 2 for 0 < k < P/2 (the pair k, -k), 1 for k = 0 and k = P/2."""
    m = np.full(P // 2 + 1, 2.0)
    m[0] = 1.0
    if P % 2 == 0:
        m[-1] = 1.0
    return jnp.asarray(m, dtype=dtype)


def _abs2(z: jnp.ndarray) -> jnp.ndarray:
    """|z|^2 as re^2 + im^2 (smooth at z = 0, unlike abs(z)**2 under autodiff)."""
    return jnp.real(z) ** 2 + jnp.imag(z) ** 2


def _wrap(x: jnp.ndarray) -> jnp.ndarray:
    """x mod 2 pi, wrapped into (-pi, pi]."""
    return x - 2.0 * jnp.pi * jnp.ceil((x - jnp.pi) / (2.0 * jnp.pi))


def _safe_div(num, den):
    """num/den with 0 where den == 0 (zero vectors have no spectrum)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def _check_fraction(value, name: str, hi: float | None = 1.0) -> None:
    """Range check (0, hi] at the Python boundary; traced / array values are left to the caller."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if not math.isfinite(v) or v <= 0.0 or (hi is not None and v > hi):
            rng = f"(0, {hi:g}]" if hi is not None else "(0, inf)"
            raise ParameterError(f"{name} must be finite and in {rng}, got {value!r}")


def _check_same_shape(**arrays) -> None:
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ParameterError("shapes must agree: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))


# ----------------------------------------------------------------------------------------------------
# spectra


def fourier_modes(x) -> jnp.ndarray:
    r"""Fourier coefficients x_k = (1/P) sum_n x_n e^{+2 pi i k n/P}, k = 0 .. P-1 (THEORY.md §4).

    The inverse of x_n = sum_k x_k e^{-2 pi i k n/P}, i.e. ``ifft`` along the last axis
    (= conj(fft(x))/P for real x).  x: (..., P) real -> (..., P) complex.  x_{P-k} = conj(x_k).
    """
    x = _real_array(x, "x")
    return jnp.fft.ifft(x, axis=-1)


def _half_modes(x: jnp.ndarray) -> jnp.ndarray:
    """x_k for k = 0 .. P//2 (the non-redundant half), conj(rfft(x))/P."""
    P = x.shape[-1]
    return jnp.conj(jnp.fft.rfft(x, axis=-1)) / P


def power_spectrum(x) -> jnp.ndarray:
    r"""Power per frequency pair: power_k = m_k |x_k|^2, k = 0 .. P//2.

    m_k = 2 for 0 < k < P/2 (|x_k|^2 + |x_{-k}|^2 = 2|x_k|^2, the pair k, -k combined) and m_k = 1
    for k = 0 and, for even P, k = P/2.  So sum_k power_k = sum_{k in Z_P} |x_k|^2 = (1/P) sum_n x_n^2
    (Parseval) and A cos(2 pi k n/P + phi), 0 < k < P/2, has power A^2/2 at k and 0 elsewhere.
    Computed with ``rfft``.  x: (..., P) real -> (..., P//2 + 1) real.
    """
    x = _real_array(x, "x")
    P = x.shape[-1]
    return _multiplicity(P, x.dtype) * _abs2(_half_modes(x))


def mode_power(x, k) -> jnp.ndarray:
    r"""|x_k|^2 of the single mode k (the theory's Phi = |u_k|^2), k an integer array broadcast against
    x.shape[:-1], reduced mod P.  Equals power_spectrum(x)[k]/2 for 0 < k < P/2."""
    x = _real_array(x, "x")
    return _abs2(_take_last(jnp.fft.fft(x, axis=-1), k, x.shape[-1])) / x.shape[-1] ** 2


def _take_last(X: jnp.ndarray, k, P: int) -> jnp.ndarray:
    k = jnp.mod(jnp.asarray(k), P)
    k = jnp.broadcast_to(k, X.shape[:-1])
    return jnp.take_along_axis(X, k[..., None].astype(jnp.int32), axis=-1)[..., 0]


def ipr(x, exclude_zero: bool = True) -> jnp.ndarray:
    r"""Inverse participation ratio of each vector's Fourier power (Gromov 2023, with r = 2):

        IPR = sum_k p_k^2,   p_k = power_k / sum_k' power_k',

    over the half spectrum with k and -k combined (:func:`power_spectrum`), k = 1 .. P//2 when
    ``exclude_zero`` (default: the mean is not a Fourier feature of modular addition), else
    k = 0 .. P//2.  p_k = |what_k|^2 with what the Fourier amplitudes normalised so that
    sum |what_k|^2 = 1.  A pure cosine at one k != 0 gives IPR = 1 exactly (with the full spectrum
    and k, -k counted separately it would be 1/2); power spread evenly over K pairs gives 1/K.
    A vector without power in the counted bins gives 0.  x: (..., P) -> (...).

    Gaussian vectors (i.i.d. N(0, s^2) entries): the pair powers are independent, s^2/P times
    chi^2_2 for a pair and chi^2_1 for a real mode (k = 0, k = P/2), so p is Dirichlet(alpha) with
    alpha_k = 1 per pair and 1/2 per real mode, and

        E[IPR] = sum_k alpha_k (alpha_k + 1) / (alpha_0 (alpha_0 + 1)),  alpha_0 = sum_k alpha_k,

    which for odd P and ``exclude_zero`` (K = (P-1)/2 pairs) is exactly 2/(K+1) = 4/(P+1)
    (:func:`ipr_gaussian_mean`).
    """
    ps = power_spectrum(x)
    if exclude_zero:
        ps = ps[..., 1:]
    total = jnp.sum(ps, axis=-1)
    p = _safe_div(ps, total[..., None])
    return jnp.sum(p * p, axis=-1)


def ipr_gaussian_mean(P: int, exclude_zero: bool = True) -> float:
    r"""Exact E[IPR] of :func:`ipr` for a vector of P i.i.d. centred Gaussians (any variance):
    sum_k alpha_k(alpha_k + 1)/(alpha_0(alpha_0 + 1)) with alpha_k = 1 for each of the (P-1)//2 pairs
    and 1/2 for each real mode (k = P/2 for even P; k = 0 unless ``exclude_zero``).
    Odd P with ``exclude_zero``: 4/(P + 1)."""
    if not isinstance(P, numbers.Integral) or P < 3:
        raise ParameterError(f"P must be an integer >= 3, got {P!r}")
    pairs = (P - 1) // 2
    real = (1 if P % 2 == 0 else 0) + (0 if exclude_zero else 1)
    alpha0 = pairs + 0.5 * real
    return (2.0 * pairs + 0.75 * real) / (alpha0 * (alpha0 + 1.0))


def dominant_frequency(x) -> jnp.ndarray:
    r"""argmax_{k = 1 .. P//2} power_k: the dominant nonzero frequency (k, -k combined; ties -> the
    smallest k).  x: (..., P) -> (...) integer in [1, P//2]."""
    ps = power_spectrum(x)
    return jnp.argmax(ps[..., 1:], axis=-1) + 1


def phase_at(x, k) -> jnp.ndarray:
    r"""Cosine phase phi of x at frequency k: x_n ⊃ |.| cos(2 pi k n/P + phi), phi = arg fft(x)_k
    = -arg x_k in (-pi, pi].  k: integer array broadcast against x.shape[:-1], reduced mod P
    (phase_at(x, P - k) = -phase_at(x, k)).  For x_n = A cos(2 pi k n/P + phi), A > 0, 0 < k < P/2,
    it returns phi (wrapped).  x: (..., P) -> (...)."""
    x = _real_array(x, "x")
    return _wrap(jnp.angle(_take_last(jnp.fft.fft(x, axis=-1), k, x.shape[-1])))


class NeuronPhases(NamedTuple):
    """Per-neuron phase diagnostics (:func:`phase_constraint`); every field has shape (..., N)."""

    k: jnp.ndarray       # dominant frequency of the input halves, in 1 .. P//2
    phi_u: jnp.ndarray   # cosine phase of u at k
    phi_v: jnp.ndarray   # cosine phase of v at k
    phi_a: jnp.ndarray   # cosine phase of the readout a at k
    delta: jnp.ndarray   # phi_u + phi_v - phi_a wrapped to (-pi, pi]; 0 for an aligned neuron


def phase_constraint(u, v, a) -> NeuronPhases:
    r"""Gromov's phase constraint phi_u + phi_v - phi_a = 0 (mod 2 pi), per neuron.

    u, v, a: (..., N, P) — row i holds neuron i's input halves u_i = w_i[:P], v_i = w_i[P:] and its
    readout vector (a_pi)_p.  (A readout matrix stored as (P, N), f = A h, is passed as
    ``jnp.swapaxes(A, -1, -2)``.)  The neuron's frequency k is the argmax over k = 1 .. P//2 of
    power_k(u) + power_k(v); the three cosine phases (:func:`phase_at`) are taken at that same k and

        delta = phi_u + phi_v - phi_a  wrapped to (-pi, pi]
              = arg( fft(u)_k fft(v)_k conj(fft(a)_k) ).

    The neuron's contribution to the target component of the output from the pair k, -k
    (0 < k < P/2) is 4 P^2 |a_k u_k v_k| cos(delta) (module docstring), so delta = 0 is the
    aligned (modular-addition) neuron and |delta| = pi/2 contributes nothing.  Phases of modes with
    zero amplitude are arbitrary (0 here)."""
    u, v, a = _real_array(u, "u"), _real_array(v, "v"), _real_array(a, "a")
    _check_same_shape(u=u, v=v, a=a)
    P = u.shape[-1]
    k = jnp.argmax(power_spectrum(u)[..., 1:] + power_spectrum(v)[..., 1:], axis=-1) + 1
    U = _take_last(jnp.fft.fft(u, axis=-1), k, P)
    V = _take_last(jnp.fft.fft(v, axis=-1), k, P)
    A = _take_last(jnp.fft.fft(a, axis=-1), k, P)
    delta = _wrap(jnp.angle(U * V * jnp.conj(A)))
    return NeuronPhases(k=k, phi_u=_wrap(jnp.angle(U)), phi_v=_wrap(jnp.angle(V)), phi_a=_wrap(jnp.angle(A)),
                        delta=delta)


# ----------------------------------------------------------------------------------------------------
# the sextic Fourier penalty Gamma


def _split_halves(w: jnp.ndarray, axis: int):
    w = _real_array(jnp.moveaxis(jnp.asarray(w), axis, -1), "w")
    if w.shape[-1] % 2:
        raise ParameterError(f"w must have an even length 2P along axis {axis}, got shape {w.shape}")
    P = w.shape[-1] // 2
    if P < 2:
        raise ParameterError(f"w must have length 2P >= 4 along axis {axis}, got shape {w.shape}")
    return w[..., :P], w[..., P:], P


def gamma_per_neuron(w, gamma, axis: int = -1) -> jnp.ndarray:
    r"""Sextic Fourier penalty of each neuron (THEORY.md §4, under eq. 16), computed with an FFT:

        Gamma_i = sum_{k in Z_P} P (gamma/6) (|u_ik|^6 + |v_ik|^6),   u_i = w_i[:P], v_i = w_i[P:],

    with x_k = (1/P) sum_n x_n e^{+2 pi i k n/P}.  The sum runs over **all** k in Z_P exactly as
    written: k = 0 once, every conjugate pair k, -k twice (|u_{-k}| = |u_k|), k = P/2 once for even P,
    i.e. sum_{k=0}^{P//2} m_k |u_k|^6 with :func:`power_spectrum`'s multiplicities.  This is the same
    counting as the Gaussian prior, (1/2)|u|^2 = sum_{k in Z_P} P (1/2)|u_k|^2, so per mode k the
    neuron's action is the theory's S_k = P[(Phi + Psi)/2 - ... + (gamma/6)(Phi^3 + Psi^3)]; a cosine
    neuron with |u_k|^2 = Phi, |v_k|^2 = Psi at one pair pays 2 P (gamma/6)(Phi^3 + Psi^3).

    w: the 2P input weights of each neuron along ``axis`` (default last: (..., N, 2P); a Flax kernel
    of shape (2P, N) takes ``axis=0``); gamma: scalar or array broadcast against the result.
    Returns the penalty per neuron, shape w.shape without ``axis``.  Smooth (|.|^2 = re^2 + im^2),
    so ``jax.grad`` works at w = 0."""
    u, v, P = _split_halves(w, axis)
    m = _multiplicity(P, u.dtype)
    s6 = jnp.sum(m * _abs2(_half_modes(u)) ** 3, axis=-1) + jnp.sum(m * _abs2(_half_modes(v)) ** 3, axis=-1)
    return P * (jnp.asarray(gamma, u.dtype) / 6.0) * s6


def gamma_penalty(w, gamma, axis: int = -1) -> jnp.ndarray:
    r"""Gamma[w] = sum_i sum_{k in Z_P} P (gamma/6)(|u_ik|^6 + |v_ik|^6): :func:`gamma_per_neuron`
    summed over every neuron (all axes but ``axis``) -> scalar.  Written for one network: lift to an
    ensemble with ``vmap``.  In Langevin dynamics it enters the potential as s2 * Gamma (THEORY.md §1)."""
    return jnp.sum(gamma_per_neuron(w, gamma, axis=axis))


def gamma_penalty_direct(w, gamma, axis: int = -1) -> jnp.ndarray:
    r"""Reference for :func:`gamma_penalty`: the literal O(P^2) sum
    sum_i sum_{k=0}^{P-1} P (gamma/6)(|u_ik|^6 + |v_ik|^6), u_ik = (1/P) sum_{n=0}^{P-1} u_in
    e^{+2 pi i k n/P} (a dense DFT matrix, the exponent's k n reduced mod P exactly in integers).
    Same arguments and result as :func:`gamma_penalty`; differentiable."""
    u, v, P = _split_halves(w, axis)
    kn = np.mod(np.outer(np.arange(P), np.arange(P)), P)
    E = jnp.asarray(np.exp(2j * np.pi * kn / P), dtype=jnp.result_type(u.dtype, jnp.complex64))
    uk = jnp.einsum("kn,...n->...k", E, u) / P
    vk = jnp.einsum("kn,...n->...k", E, v) / P
    g = jnp.asarray(gamma, u.dtype)
    return jnp.sum(P * (g / 6.0) * (jnp.sum(_abs2(uk) ** 3, axis=-1) + jnp.sum(_abs2(vk) ** 3, axis=-1)))


# ----------------------------------------------------------------------------------------------------
# droplet neurons


def droplet_mask(u, v, phi_plus, rel_tol=0.5, dominance=0.5) -> jnp.ndarray:
    r"""Boolean per neuron: does the neuron sit at the theory's droplet saddle Phi = Psi = Phi_+?

    Rule (all must hold), with the half spectra of :func:`power_spectrum` over k = 1 .. P//2:

    1. u has a dominant frequency k_u carrying at least ``dominance`` of u's nonzero-frequency
       power, power_{k_u}(u) >= dominance * sum_{k>=1} power_k(u); likewise v with k_v;
    2. k_u == k_v (frequencies k and -k are the same bin, so v = cos(-2 pi k m/P + .) counts);
    3. the single-mode powers |u_k|^2 and |v_k|^2 at k = k_u (the theory's Phi and Psi; half the
       pair power for k < P/2) lie within a factor 1 ± rel_tol of Phi_+:
       |Phi - Phi_+| <= rel_tol * Phi_+ and the same for Psi.

    u, v: (..., N, P) input halves of each neuron (u_i = w_i[:P], v_i = w_i[P:]); phi_plus: Phi_+
    = w_+^2 of THEORY.md §4 (the nontrivial saddle), broadcast against (..., N) (pass
    ``phi_plus[..., None]`` for one value per network).  rel_tol > 0, dominance in (0, 1].
    Returns bool (..., N).  A neuron with no nonzero-frequency power is not a droplet neuron."""
    _check_fraction(rel_tol, "rel_tol", hi=None)
    _check_fraction(dominance, "dominance")
    u, v = _real_array(u, "u"), _real_array(v, "v")
    _check_same_shape(u=u, v=v)
    P = u.shape[-1]
    m = _multiplicity(P, u.dtype)[1:]

    def half(x):
        ps = power_spectrum(x)[..., 1:]
        j = jnp.argmax(ps, axis=-1)
        top = jnp.take_along_axis(ps, j[..., None], axis=-1)[..., 0]
        total = jnp.sum(ps, axis=-1)
        single = top / m[j]
        return j, (total > 0) & (top >= dominance * total), single

    ju, dom_u, Phi = half(u)
    jv, dom_v, Psi = half(v)
    phi_plus = jnp.asarray(phi_plus, u.dtype)
    tol = jnp.asarray(rel_tol, u.dtype) * phi_plus
    near = (jnp.abs(Phi - phi_plus) <= tol) & (jnp.abs(Psi - phi_plus) <= tol)
    return dom_u & dom_v & (ju == jv) & near
