r"""NNGP (infinite-width GP) limit of the modular-addition model (paper Sec. 2.2, eq. 21, App. B.1;
THEORY.md §4).

Inputs ``x_nm`` in R^{2P} carry a one at position n and a one at position P + m (n, m in Z_P); the
P^2 inputs are indexed ``nm = n*P + m`` throughout.  The network is
``f_p(x) = sum_i a_pi (w_i·x)^2`` with ``w_i ~ N(0, I_{2P})`` and ``a_pi ~ N(0, sa2/N)``; the targets
are ``y_p(n, m) = delta_{p, (n+m) mod P} - 1/P`` (eq. 15).

Symbols: P the modulus, sa2 = sigma_a^2 (readout prior variance times N), s2 = sigma^2 (the
observation-noise variance / Langevin temperature), n the number of training pairs.

**Input kernel.**  ``K_{nm,n'm'} = x_nm·x_n'm' = delta_{nn'} + delta_{mm'}``; as an operator on
functions of (n, m), ``K = I⊗J + J⊗I`` (J the all-ones P×P matrix, the first factor acting on n).

**NNGP kernel (eq. 21).**  By Isserlis' theorem, for ``w ~ N(0, I)``
``E[(w·x)^2 (w·x')^2] = K_{xx} K_{x'x'} + 2 K_{xx'}^2``, so with the readout sum over N neurons

    Q_{nm,n'm'} = sa2 [ K_{nm,nm} K_{n'm',n'm'} + 2 K_{nm,n'm'}^2 ].

Since ``K_{nm,nm} = 2`` and ``(delta_{nn'} + delta_{mm'})^2 = delta_{nn'} + delta_{mm'} +
2 delta_{nn'} delta_{mm'}``, as an operator

    Q = sa2 [ 4 J⊗J + 2 (I⊗J + J⊗I) + 4 I⊗I ].

J has eigenvalue P on the constant and 0 on every other Fourier mode, so in the basis
``phi_{k,k'}(n, m) = P^{-1} e^{2 pi i (kn + k'm)/P}`` Q is diagonal with exactly three distinct
eigenvalues (matrix eigenvalues, i.e. with respect to the counting measure on the P^2 inputs):

    class 0: (k, k') = (0, 0)          sa2 (4P^2 + 4P + 4)   multiplicity 1
    class 1: exactly one of k, k' = 0   sa2 (2P + 4)          multiplicity 2(P - 1)
    class 2: k != 0 and k' != 0         4 sa2                 multiplicity (P - 1)^2

for every P, prime or not.  The target lives in class 2 (its Fourier transform is supported on
k = k' != 0), so ``Q y = 4 sa2 y``: the GP puts equal prior weight on all (P-1)^2 modes of class 2,
of which the target uses only P - 1, and therefore needs O(P^2) examples — a fixed fraction of the
whole addition table (:func:`n_half`).

Primality enters only the paper's argument for the *adapted* kernel (all phi_{k,k}, k != 0, related
by n -> qn, which permutes the nonzero k only when P is prime); :func:`warn_if_composite` is for
the solvers that rely on it.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase._params import check_finite, check_positive, plain
from grokphase.errors import ParameterError

#: Largest modulus for which the explicit P^2 × P^2 matrices are built (P = 64: 4096^2 float64 =
#: 134 MB; the Monte-Carlo estimator keeps two such accumulators).
MAX_EXPLICIT_P = 64

#: Mode-class labels returned by :func:`mode_classes`, in the order of ``NNGPSpectrum.values``.
MODE_CLASS_NAMES = ("k=k'=0", "exactly one of k, k' zero", "k, k' both nonzero")


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _as_integer(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
                what: str = "an integer"):
    """Integer scalar or array (integral floats accepted, bools and fractions rejected)."""
    if isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be {what} (got {plain(value)})")
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001  (anything np.asarray chokes on is a malformed parameter)
        raise ParameterError(f"{name} must be {what} (got {plain(value)})") from None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ParameterError(f"{name} must be {what} (got {plain(value)})")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            first = arr[bad].ravel()[0].item()
            raise ParameterError(f"{name} must be {what} (got {first!r})")
        if np.any(np.abs(arr) > 2**53):
            raise ParameterError(f"{name} is too large to be represented exactly (got {plain(value)})")
    arr = arr.astype(np.int64)
    if minimum is not None and np.any(arr < minimum):
        raise ParameterError(f"{name} must be {what} >= {minimum} (got {arr[arr < minimum].ravel()[0].item()!r})")
    if maximum is not None and np.any(arr > maximum):
        raise ParameterError(f"{name} must be <= {maximum} here (got {arr[arr > maximum].ravel()[0].item()!r})")
    return int(arr) if arr.ndim == 0 else arr


def _check_modulus(P, *, explicit: bool = False):
    """The modulus P: an integer >= 3 (scalar only when an explicit P^2 × P^2 matrix is built)."""
    P = _as_integer("P", P, minimum=3, what="an integer modulus")
    if explicit:
        if not isinstance(P, int):
            raise ParameterError(f"P must be a scalar integer for the explicit P^2 x P^2 matrices (got shape {P.shape})")
        if P > MAX_EXPLICIT_P:
            raise ParameterError(
                f"P must be <= {MAX_EXPLICIT_P} for the explicit P^2 x P^2 matrices (got {P}: "
                f"{P**2} x {P**2} entries); use nngp_eigenvalues / gp_learning_curve for large P")
    return P


def _check_scalar_positive(name: str, value) -> float:
    if np.ndim(value) != 0:
        raise ParameterError(f"{name} must be a scalar here (got shape {np.shape(value)})")
    check_positive(name, value)
    return float(value)


# ----------------------------------------------------------------------------------------------
# Primality
# ----------------------------------------------------------------------------------------------


def is_prime(P) -> bool:
    """True if the integer P is prime (deterministic trial division; P < 2 is not prime)."""
    P = _as_integer("P", P)
    if not isinstance(P, int):
        raise ParameterError(f"P must be a scalar integer (got shape {P.shape})")
    if P < 2:
        return False
    if P % 2 == 0:
        return P == 2
    return all(P % q for q in range(3, math.isqrt(P) + 1, 2))


def warn_if_composite(P, *, continuous: bool = False, stacklevel: int = 2) -> None:
    """Issue one ``UserWarning`` naming the first modulus in P (any array shape) that is not prime.

    The paper's reduction of the adapted kernel to a single mode action (App. B.2) uses that all
    phi_{k,k}, k != 0, are related by the relabelling n -> q n, m -> q m (q != 0), which permutes the
    nonzero frequencies only when P is prime.  The NNGP spectrum of this module holds for every P.

    ``continuous=True`` (the mean-field theory of :mod:`grokphase.theory.modular`): P is a size
    parameter that the Table-1 scaling makes non-integer, and non-integer values are not checked;
    otherwise every P must be an integer >= 3 (ParameterError).  ``stacklevel`` is passed to
    :func:`warnings.warn` (2: the warning points at the caller of this function)."""
    if continuous:
        values = np.unique(np.asarray(P, dtype=float))
        P = values[values == np.round(values)]
    values = np.unique(np.ravel(_check_modulus(P)))
    bad = [int(v) for v in values if not is_prime(int(v))]
    if bad:
        warnings.warn(
            f"P = {bad[0]} is not prime: the paper's symmetry argument (all modes phi_(k,k), k != 0, related "
            f"by n -> q n, m -> q m) assumes a prime modulus, so the single-mode mean-field theory is not "
            f"justified for this P",
            UserWarning, stacklevel=stacklevel)


# ----------------------------------------------------------------------------------------------
# Explicit matrices (P <= MAX_EXPLICIT_P)
# ----------------------------------------------------------------------------------------------


def inputs(P) -> np.ndarray:
    """The P^2 one-hot-pair inputs x_nm in R^{2P} as rows of a (P^2, 2P) array (row nm = n*P + m)."""
    P = _check_modulus(P, explicit=True)
    n, m = np.divmod(np.arange(P * P), P)
    X = np.zeros((P * P, 2 * P))
    X[np.arange(P * P), n] = 1.0
    X[np.arange(P * P), P + m] = 1.0
    return X


def input_kernel(P) -> np.ndarray:
    """Input kernel K_{nm,n'm'} = x_nm·x_n'm' = delta_{nn'} + delta_{mm'} (App. B.1), shape (P^2, P^2),
    index nm = n*P + m."""
    P = _check_modulus(P, explicit=True)
    n, m = np.divmod(np.arange(P * P), P)
    return (n[:, None] == n[None, :]).astype(np.float64) + (m[:, None] == m[None, :])


def nngp_kernel_matrix(P, sa2) -> np.ndarray:
    """NNGP kernel of eq. 21, Q_{nm,n'm'} = sa2 [K_{nm,nm} K_{n'm',n'm'} + 2 K_{nm,n'm'}^2], as an
    explicit (P^2, P^2) float64 array (P <= MAX_EXPLICIT_P).

    The bracket is an integer matrix (entries 4, 6 or 12), so the result is ``sa2`` times exact
    integers."""
    P = _check_modulus(P, explicit=True)
    sa2 = _check_scalar_positive("sa2", sa2)
    K = input_kernel(P)
    diag = np.diag(K)
    return sa2 * (diag[:, None] * diag[None, :] + 2.0 * K * K)


def fourier_basis(P) -> np.ndarray:
    """Unitary (P^2, P^2) complex matrix U whose column kk' = k*P + k' is
    phi_{k,k'}(n, m) = P^{-1} e^{2 pi i (kn + k'm)/P} evaluated at row nm = n*P + m (U = F⊗F with F
    the unitary DFT matrix).  ``U^H Q U`` is diagonal (App. B.1)."""
    P = _check_modulus(P, explicit=True)
    j = np.arange(P)
    F = np.exp(2j * np.pi * (np.outer(j, j) % P) / P) / math.sqrt(P)  # reduce kn mod P: exact phases
    return np.kron(F, F)


def mode_classes(P) -> np.ndarray:
    """Mode-class label of each column kk' = k*P + k' of :func:`fourier_basis`: 0 if k = k' = 0, 1 if
    exactly one of k, k' is zero, 2 if both are nonzero (the index into ``NNGPSpectrum.values``)."""
    P = _check_modulus(P, explicit=True)
    k, kp = np.divmod(np.arange(P * P), P)
    return (k != 0).astype(np.int64) + (kp != 0)


def target_matrix(P) -> np.ndarray:
    """Targets y_p(n, m) = delta_{p, (n+m) mod P} - 1/P (eq. 15) as a (P^2, P) array: row nm = n*P + m,
    column p = output p.  Every column lies in the class-2 eigenspace of Q (k = k' != 0)."""
    P = _check_modulus(P, explicit=True)
    n, m = np.divmod(np.arange(P * P), P)
    return (((n + m) % P)[:, None] == np.arange(P)[None, :]).astype(np.float64) - 1.0 / P


# ----------------------------------------------------------------------------------------------
# Closed-form spectrum
# ----------------------------------------------------------------------------------------------


class NNGPSpectrum(NamedTuple):
    """The three distinct eigenvalues of the NNGP kernel matrix Q (eq. 21) and their multiplicities.

    values[..., c], multiplicities[..., c] for the mode classes c = 0, 1, 2 of :func:`mode_classes`:
    sa2 (4P^2 + 4P + 4) [1], sa2 (2P + 4) [2(P - 1)], 4 sa2 [(P - 1)^2].  ``values[mode_classes(P)]``
    is the eigenvalue of every Fourier column."""

    values: np.ndarray
    multiplicities: np.ndarray


def nngp_eigenvalues(P, sa2) -> NNGPSpectrum:
    """Closed-form spectrum of Q = sa2 [4 J⊗J + 2 (I⊗J + J⊗I) + 4 I⊗I] (eq. 21; module docstring).

    P (integers >= 3) and sa2 (> 0) may be arrays; they broadcast, and a trailing axis of length 3
    indexes the mode class.  Matrix eigenvalues (counting measure on the P^2 inputs); divide by P^2
    for the operator eigenvalues with respect to the uniform measure."""
    P = np.asarray(_check_modulus(P), dtype=np.int64)
    check_positive("sa2", sa2)
    sa2 = np.asarray(sa2, dtype=np.float64)
    Pf = P.astype(np.float64)
    shape = np.broadcast_shapes(P.shape, sa2.shape)
    values = sa2[..., None] * np.stack([4.0 * Pf**2 + 4.0 * Pf + 4.0, 2.0 * Pf + 4.0, np.full_like(Pf, 4.0)], -1)
    mult = np.stack([np.ones_like(P), 2 * (P - 1), (P - 1) ** 2], -1)
    return NNGPSpectrum(np.broadcast_to(values, shape + (3,)).copy(), np.broadcast_to(mult, shape + (3,)).copy())


# ----------------------------------------------------------------------------------------------
# Monte-Carlo estimate of eq. 21 from prior weight samples
# ----------------------------------------------------------------------------------------------


class KernelEstimate(NamedTuple):
    """Monte-Carlo estimate of Q (eq. 21): entrywise sample mean and its standard error, (P^2, P^2)."""

    mean: jax.Array
    stderr: jax.Array
    num_samples: int


@functools.partial(jax.jit, static_argnames=("P", "num_samples", "batch_size"))
def _feature_moments(key, P: int, num_samples: int, batch_size: int):
    """Sample means of g_x g_x' and (g_x g_x')^2 with g_x = (w·x)^2 over w ~ N(0, I_{2P}).

    Sample i uses the key ``fold_in(key, i)``, so the draws (and the estimate, up to summation
    order) do not depend on ``batch_size``; the last batch is masked."""
    num_batches = -(-num_samples // batch_size)
    n_idx, m_idx = jnp.divmod(jnp.arange(P * P), P)

    def draw(i):
        return jax.random.normal(jax.random.fold_in(key, i), (2 * P,), dtype=jnp.float64)

    def body(carry, b):
        s1, s2 = carry
        idx = b * batch_size + jnp.arange(batch_size)
        w = jax.vmap(draw)(idx)                                   # (B, 2P)
        z = w[:, n_idx] + w[:, P + m_idx]                         # (B, P^2): w·x_nm
        g = jnp.where((idx < num_samples)[:, None], z * z, 0.0)   # features (w·x)^2, padded rows 0
        g2 = g * g
        return (s1 + g.T @ g, s2 + g2.T @ g2), None

    zeros = jnp.zeros((P * P, P * P), jnp.float64)
    (s1, s2), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(num_batches))
    return s1 / num_samples, s2 / num_samples


def monte_carlo_kernel(key, P, sa2, num_samples: int, batch_size: int = 2048) -> KernelEstimate:
    """Estimate Q_{nm,n'm'} = sa2 E_w[(w·x_nm)^2 (w·x_n'm')^2], w ~ N(0, I_{2P}) (eq. 21 before the
    Isserlis step), from ``num_samples`` prior draws of one hidden neuron's input weights.

    The readout average is done analytically (E[a_pi a_p'j] = delta sa2/N over the N neurons).  Returns
    the entrywise sample mean and its standard error sqrt(var/num_samples) (unbiased variance).
    Memory: two (P^2, P^2) accumulators plus one (batch_size, P^2) batch."""
    P = _check_modulus(P, explicit=True)
    sa2 = _check_scalar_positive("sa2", sa2)
    num_samples = _as_integer("num_samples", num_samples, minimum=2)
    batch_size = _as_integer("batch_size", batch_size, minimum=1)
    if not isinstance(num_samples, int) or not isinstance(batch_size, int):
        raise ParameterError("num_samples and batch_size must be scalar integers")
    batch_size = min(batch_size, num_samples)
    m1, m2 = _feature_moments(key, P, num_samples, batch_size)
    var = jnp.maximum(m2 - m1 * m1, 0.0) * (num_samples / (num_samples - 1))
    return KernelEstimate(sa2 * m1, sa2 * jnp.sqrt(var / num_samples), num_samples)


# ----------------------------------------------------------------------------------------------
# GP learning curve (equivalent kernel)
# ----------------------------------------------------------------------------------------------


class ModularGPCurve(NamedTuple):
    """EK learning curve of the GP on modular addition (arrays broadcast over P, sa2, s2, n).

    learned: fraction of the target learned, lam n/(lam n + s2) = lam/(lam + s2/n).
    lam: operator eigenvalue of Q on the target space w.r.t. the uniform measure on the P^2 inputs,
      4 sa2 / P^2.
    n_half: number of training pairs at which half of the target is learned, s2 P^2/(4 sa2).
    """

    learned: np.ndarray
    lam: np.ndarray
    n_half: np.ndarray


def n_half(P, sa2, s2) -> np.ndarray:
    """Training pairs at which the GP (EK) has learned half of the target: s2/lam = s2 P^2/(4 sa2).

    This is O(P^2): the GP needs the fixed fraction s2/(4 sa2) of the whole P^2 addition table,
    because the target shares its eigenvalue with all (P-1)^2 modes k, k' != 0 (module docstring).
    P (integers >= 3), sa2 > 0 and s2 > 0 broadcast."""
    P = np.asarray(_check_modulus(P), dtype=np.float64)
    check_positive("sa2", sa2)
    check_positive("s2", s2)
    return np.asarray(s2, np.float64) * P**2 / (4.0 * np.asarray(sa2, np.float64))


def gp_learning_curve(P, sa2, s2, n_train) -> ModularGPCurve:
    """Equivalent-kernel learning curve of the NNGP on modular addition (App. A.2 applied to eq. 21).

    With training pairs drawn from the uniform measure on the P^2 inputs, the operator eigenvalue on
    the target space is lam = 4 sa2/P^2 (the matrix eigenvalue 4 sa2 divided by P^2), and the EK
    learned fraction is lam/(lam + s2/n) = lam n/(lam n + s2).  At n = P^2 this equals the exact GP
    posterior mean on the full table observed once, 4 sa2/(4 sa2 + s2); otherwise it is the usual EK
    approximation (n > P^2 means repeated draws).  All arguments broadcast; n_train >= 0 (n = 0
    gives 0)."""
    P = np.asarray(_check_modulus(P), dtype=np.float64)
    check_positive("sa2", sa2)
    check_positive("s2", s2)
    if isinstance(n_train, (bool, np.bool_)):
        raise ParameterError(f"n_train must be a finite number >= 0 (got {plain(n_train)})")
    check_finite("n_train", n_train)
    n = np.asarray(n_train, dtype=np.float64)
    if np.any(n < 0):
        raise ParameterError(f"n_train must be >= 0 (got {n[n < 0].ravel()[0].item()!r})")
    sa2 = np.asarray(sa2, np.float64)
    s2 = np.asarray(s2, np.float64)
    lam = 4.0 * sa2 / P**2
    learned = lam * n / (lam * n + s2)
    shape = np.broadcast_shapes(P.shape, sa2.shape, s2.shape, n.shape)
    nh = n_half(P.astype(np.int64), sa2, s2)
    return ModularGPCurve(*(np.broadcast_to(a, shape).copy() for a in (learned, lam, nh)))
