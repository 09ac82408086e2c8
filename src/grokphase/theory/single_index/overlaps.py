r"""Overlaps of one neuron with the normalised Hermite functions (THEORY.md §6).

For a neuron with overlap q = w·w* and t = |w_perp|^2, (s, h) = (w*·x, w·x) are jointly Gaussian with
Cov(s, h) = q and Var h = V = q^2 + t, and Gaussian integration by parts gives

    g_k(q, t) = E[phi(h) Hhat_k(s)] = (q/sqrt(V))^k m_k(V),   m_k(V) = E_u[phi(sqrt(V) u) He_k(u)] / sqrt(k!),

with Hhat_k = He_k/sqrt(k!) orthonormal under N(0, 1) and u ~ N(0, 1).  Closed forms:

* erf: by Stein's lemma m_k(V) = V^{k/2} E[erf^{(k)}(sqrt(V) u)] = (V/D)^{k/2} erf^{(k)}(0), D = 1 + 2V,
  so g_k = C_k q^k / D^{k/2} with C_k = (2/sqrt(pi)) (-1)^{k-1} H_{k-1}(0) / sqrt(k!) (H physicists'
  Hermite; zero for even k): g1 = 2q/sqrt(pi D), g3 = -4q^3/(sqrt(6 pi) D^{3/2}) of §3.
* relu (1-homogeneous): E_u[relu(sqrt(V) u) He_k(u)] = sqrt(V) M_k with M_0 = 1/sqrt(2 pi), M_1 = 1/2 and
  M_k = He_{k-2}(0)/sqrt(2 pi) for k >= 2 (zero for odd k >= 3): g_k = q^k V^{(1-k)/2} M_k / sqrt(k!).

Every other activation: a one-dimensional Gaussian quadrature in u (:func:`gaussian_rule`: Gauss-Legendre
on each half line, QUAD_NODES nodes each, rather than full-line Gauss-Hermite, which converges only
algebraically for a kink at u = 0 such as relu's); it agrees with the closed forms and with adaptive
quadrature to ~5e-15 for erf, relu, tanh, GELU and SiLU (tests/test_single_index.py)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss

from grokphase.errors import ParameterError
from grokphase.theory.single_index.activations import Activation, get_activation

#: largest Hermite degree supported (targets and discrepancy bases)
MAX_DEGREE = 8
#: Gauss-Legendre nodes per half line for activations without a closed form (:func:`gaussian_rule`)
QUAD_NODES = 64
U_MAX = 12.0


def check_degrees(degrees) -> tuple[int, ...]:
    """Degrees as a tuple of ints in 0..MAX_DEGREE without duplicates (ParameterError otherwise)."""
    try:
        out = tuple(int(k) for k in degrees)
    except (TypeError, ValueError):
        raise ParameterError(f"degrees must be integers in 0..{MAX_DEGREE} (got {degrees!r})") from None
    if any(float(k) != float(k0) for k, k0 in zip(out, degrees)):
        raise ParameterError(f"degrees must be integers in 0..{MAX_DEGREE} (got {degrees!r})")
    if not out:
        raise ParameterError("degrees must not be empty")
    bad = [k for k in out if not 0 <= k <= MAX_DEGREE]
    if bad:
        raise ParameterError(f"Hermite degree {bad[0]} is out of range: degrees must be in 0..{MAX_DEGREE}")
    if len(set(out)) != len(out):
        raise ParameterError(f"degree {next(k for k in out if out.count(k) > 1)} appears twice in {out}")
    return out


def hermite_he(kmax: int, x):
    """[He_0(x), ..., He_kmax(x)] (probabilists' Hermite, He_{k+1} = x He_k - k He_{k-1}), stacked on
    the last axis.  A NumPy array gives a NumPy result (a constant even inside a traced function)."""
    xp = np if isinstance(x, (np.ndarray, float)) else jnp
    x = xp.asarray(x)
    out = [xp.ones_like(x), x]
    for k in range(1, kmax):
        out.append(x * out[k] - k * out[k - 1])
    return xp.stack(out[:kmax + 1], axis=-1)


def he_at_zero(k: int) -> float:
    """He_k(0): 0 for odd k, (-1)^j (2j-1)!! for k = 2j."""
    if k % 2:
        return 0.0
    j = k // 2
    return float((-1) ** j * math.prod(range(1, 2 * j, 2)))


def erf_coefficient(k: int) -> float:
    """C_k with g_k = C_k q^k / D^{k/2} for erf: (2/sqrt(pi)) (-1)^{k-1} H_{k-1}(0)/sqrt(k!), where
    the physicists' H_{2j}(0) = (-1)^j (2j)!/j!; zero for even k."""
    if k % 2 == 0:
        return 0.0
    j = (k - 1) // 2
    H = (-1) ** j * math.factorial(2 * j) / math.factorial(j)
    return 2.0 / math.sqrt(math.pi) * (-1) ** (k - 1) * H / math.sqrt(math.factorial(k))


def relu_moment(k: int) -> float:
    """M_k = E_u[relu(u) He_k(u)] (THEORY.md §6): 1/sqrt(2 pi), 1/2, then He_{k-2}(0)/sqrt(2 pi)."""
    if k == 0:
        return 1.0 / math.sqrt(2.0 * math.pi)
    if k == 1:
        return 0.5
    return he_at_zero(k - 2) / math.sqrt(2.0 * math.pi)


def gaussian_rule(nodes: int = QUAD_NODES):
    """Nodes and weights of E_u[f(u)], u ~ N(0, 1): Gauss-Legendre with ``nodes`` nodes on each of
    [-U_MAX, 0] and [0, U_MAX] times the normal density.  Split at u = 0, so that activations with a
    kink there (relu) are integrated as accurately as smooth ones (full-line Gauss-Hermite converges
    only algebraically for them); the tails beyond U_MAX weigh exp(-U_MAX^2/2) ~ 1e-31."""
    x, w = leggauss(nodes)
    u = 0.5 * U_MAX * (x + 1.0)
    w = 0.5 * U_MAX * w * np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return np.concatenate([-u[::-1], u]), np.concatenate([w[::-1], w])


def hermite_moments(activation, V, kmax: int = MAX_DEGREE, nodes: int = QUAD_NODES):
    """m_k(V) = E_u[phi(sqrt(V) u) He_k(u)] / sqrt(k!) for k = 0..kmax by :func:`gaussian_rule` (any
    activation), shape ``V.shape + (kmax + 1,)``."""
    phi = get_activation(activation)
    u, w = gaussian_rule(nodes)
    He = hermite_he(kmax, np.asarray(u, dtype=np.float64))    # NumPy: a constant under jit
    norm = np.sqrt([math.factorial(k) for k in range(kmax + 1)])
    W = jnp.asarray(w[:, None] * He / norm)                      # (nodes, kmax + 1)
    V = jnp.asarray(V, dtype=jnp.float64)
    return phi(jnp.sqrt(V)[..., None] * jnp.asarray(u)) @ W


def _erf_overlaps(degrees, q, t):
    D = 1.0 + 2.0 * (t + q * q)
    return [erf_coefficient(k) * q**k / D ** (0.5 * k) if k % 2 else jnp.zeros_like(D) for k in degrees]


def _relu_overlaps(degrees, q, t):
    V = q * q + t
    out = []
    for k in degrees:
        Mk = relu_moment(k) / math.sqrt(math.factorial(k))
        if k == 1:
            out.append(Mk * q + jnp.zeros_like(V))
        elif Mk == 0.0:
            out.append(jnp.zeros_like(V))
        else:
            out.append(Mk * q**k * V ** (0.5 * (1 - k)))
    return out


def overlaps(activation, degrees, q, t, quadrature: bool = False, nodes: int = QUAD_NODES):
    """g_k(q, t) for k in ``degrees``, shape ``broadcast(q, t).shape + (len(degrees),)``.

    Closed forms for erf and relu unless ``quadrature``; :func:`gaussian_rule` with ``nodes`` nodes otherwise.
    Overlaps that vanish by the activation's parity are exact zeros.  Needs t > 0 (or q != 0)."""
    phi: Activation = get_activation(activation)
    degrees = check_degrees(degrees)
    q = jnp.asarray(q, dtype=jnp.float64)
    t = jnp.asarray(t, dtype=jnp.float64)
    q, t = jnp.broadcast_arrays(q, t)
    if phi.closed_form and not quadrature:
        parts = _erf_overlaps(degrees, q, t) if phi.name == "erf" else _relu_overlaps(degrees, q, t)
        return jnp.stack(parts, axis=-1)
    V = q * q + t
    m = hermite_moments(phi, V, max(degrees), nodes)            # (..., kmax + 1)
    rho = q / jnp.sqrt(V)
    parts = []
    for k in degrees:
        vanishes = (phi.parity == 1 and k % 2 == 1) or (phi.parity == -1 and k % 2 == 0)
        parts.append(jnp.zeros_like(V) if vanishes else rho**k * m[..., k])
    return jnp.stack(parts, axis=-1)


def overlap_bound(activation, degrees) -> tuple[float, float]:
    """(A, B) with |g(q, t)|^2 = sum_{k in degrees} g_k^2 <= A + B V for every (q, t), V = q^2 + t.

    Uses |g_k| <= |m_k(V)|.  erf: the supremum of each C_k^2 (V/D)^k is C_k^2 2^{-k} (B = 0; for
    {1, 3} this is the 7/(3 pi) of the paper's model); relu: B = sum M_k^2/k! (A = 0); other bounded
    activations: the largest m_k(V)^2 on a wide V grid (1e-4..1e4) with a 10 % margin; other unbounded ones: the largest m_k^2/(1 + V) on that grid,
    with a 10 % margin, in A and B alike."""
    phi = get_activation(activation)
    degrees = check_degrees(degrees)
    if phi.closed_form and phi.name == "erf":
        return sum(erf_coefficient(k) ** 2 * 2.0 ** (-k) for k in degrees), 0.0
    if phi.closed_form and phi.name == "relu":
        return 0.0, sum(relu_moment(k) ** 2 / math.factorial(k) for k in degrees)
    V = np.logspace(-4.0, 4.0, 161)
    m = np.asarray(hermite_moments(phi, V, max(degrees), 400))[:, list(degrees)]
    if phi.bounded:
        return float(1.1 * np.sum(np.max(m**2, axis=0))), 0.0
    c = float(1.1 * np.sum(np.max(m**2 / (1.0 + V[:, None]), axis=0)))
    return c, c
