r"""Gaussian-process (NNGP, infinite-width) baseline of the teacher-student model (THEORY.md §3).

The erf network's NNGP kernel is the arcsine kernel

    K(x, z) = sa2 (2/pi) arcsin( 2 s x·z / sqrt((1 + 2 s |x|^2)(1 + 2 s |z|^2)) ),   s = sw2/d.

For Gaussian data its exact Rayleigh quotients on the teacher directions Hhat1 = H1 and
Hhat3 = H3/sqrt6 follow from Stein's lemma and 1/X^k = \int t^{k-1} e^{-tX} dt/(k-1)! (no
|w|^2 -> sw2 concentration, no Monte Carlo):

    lambda1  = sa2 (4 s/pi)        \int_0^inf     e^{-t} (1 + 4 s t)^{-(d+2)/2} dt,
    lambda3  = sa2 (20 s^3/pi)     \int_0^inf t^2 e^{-t} (1 + 4 s t)^{-(d+6)/2} dt,
    lambda13 = -sa2 (24 s^2/(sqrt6 pi)) \int_0^inf t e^{-t} (1 + 4 s t)^{-(d+4)/2} dt,

lambda13 = <Hhat1, K Hhat3> being the off-diagonal element (Hhat3 is not an exact eigenfunction).
The integrals are done by Gauss-Laguerre quadrature (the integrands are analytic with their only
singularity at t = -d/(4 sw2), so the rule converges geometrically).

The learned fractions use the equivalent-kernel (EK) approximation of App. A.2: a component with
eigenvalue lambda is learned to lambda/(lambda + s2/n).  This is an approximation twice over: EK
replaces the finite training set by the population (it overestimates learning by a few per cent at
n of a few hundred, THEORY.md §3), and treating Hhat3 as an eigenfunction ignores its small overlap
with the linear eigenfunction (:func:`subspace_discrepancy` keeps it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.theory.teacher_student import TeacherStudentParams, _flat_params

_LAGUERRE_ORDER = 96
_LAG_T, _LAG_W = np.polynomial.laguerre.laggauss(_LAGUERRE_ORDER)


def arcsine_kernel(x, z, sa2, sw2):
    """NNGP kernel of sum_i a_i erf(w_i·x) with a_i ~ N(0, sa2/N), w_i ~ N(0, sw2/d I).

    ``x`` and ``z`` have shape (..., d) and broadcast; returns shape (...)."""
    x = jnp.asarray(x)
    z = jnp.asarray(z)
    d = x.shape[-1]
    s = sw2 / d
    xz = jnp.sum(x * z, axis=-1)
    xx = jnp.sum(x * x, axis=-1)
    zz = jnp.sum(z * z, axis=-1)
    return sa2 * (2.0 / jnp.pi) * jnp.arcsin(2.0 * s * xz / jnp.sqrt((1.0 + 2.0 * s * xx) * (1.0 + 2.0 * s * zz)))


class GPEigen(NamedTuple):
    """Exact Rayleigh quotients of the arcsine kernel on Hhat1, Hhat3 and their cross term."""

    lambda1: jax.Array
    lambda3: jax.Array
    lambda13: jax.Array


def _laguerre(power, expo):
    t = jnp.asarray(_LAG_T)
    w = jnp.asarray(_LAG_W)
    return lambda s, d: jnp.sum(w * t**power * (1.0 + 4.0 * s * t) ** (-(d + expo) / 2.0))


_I1 = _laguerre(0, 2.0)
_I3 = _laguerre(2, 6.0)
_I13 = _laguerre(1, 4.0)


def rayleigh_quotients(d, sa2, sw2) -> GPEigen:
    """Exact lambda1, lambda3, lambda13 (THEORY.md §3) for scalar or array (d, sa2, sw2)."""
    d, sa2, sw2 = (jnp.asarray(a, jnp.float64) for a in (d, sa2, sw2))
    shape = jnp.broadcast_shapes(d.shape, sa2.shape, sw2.shape)
    d, sa2, sw2 = (jnp.broadcast_to(a, shape).reshape(-1) for a in (d, sa2, sw2))
    s = sw2 / d
    i1 = jax.vmap(_I1)(s, d)
    i3 = jax.vmap(_I3)(s, d)
    i13 = jax.vmap(_I13)(s, d)
    lam1 = sa2 * 4.0 * s / jnp.pi * i1
    lam3 = sa2 * 20.0 * s**3 / jnp.pi * i3
    lam13 = -sa2 * 24.0 * s**2 / (math.sqrt(6.0) * jnp.pi) * i13
    return GPEigen(*(a.reshape(shape) for a in (lam1, lam3, lam13)))


def plugin_quotients(d, sa2, sw2) -> tuple:
    """The plug-in forms with |w|^2 -> sw2 (off by about 0.5/d and 6/d relatively; for comparison)."""
    s = sw2 / d
    return sa2 * 4.0 * s / (jnp.pi * (1.0 + 2.0 * sw2)), sa2 * 40.0 * s**3 / (jnp.pi * (1.0 + 2.0 * sw2) ** 3)


def ek_learned_fraction(lam, s2, n):
    """EK learned fraction lambda/(lambda + s2/n) of a component with kernel eigenvalue lambda."""
    return lam / (lam + s2 / n)


class GPSolution(NamedTuple):
    """GP baseline at given parameters (N is irrelevant: infinite width).

    linear_learned, cubic_learned: EK fractions lambda/(lambda + s2/n) on Hhat1, Hhat3.
    n_half_linear, n_half_cubic: n at which each component is half learned (s2/lambda).
    """

    lambda1: np.ndarray
    lambda3: np.ndarray
    lambda13: np.ndarray
    linear_learned: np.ndarray
    cubic_learned: np.ndarray
    n_half_linear: np.ndarray
    n_half_cubic: np.ndarray


def solve_gp(params: TeacherStudentParams) -> GPSolution:
    """GP/EK learned fractions for every point of ``params`` (any broadcast shape)."""
    shape, flat = _flat_params(params)
    eig = rayleigh_quotients(flat.d, flat.sa2, flat.sw2)
    l1, l3, l13 = (np.asarray(a) for a in eig)
    out = GPSolution(
        lambda1=l1, lambda3=l3, lambda13=l13,
        linear_learned=np.asarray(ek_learned_fraction(l1, flat.s2, flat.n)),
        cubic_learned=np.asarray(ek_learned_fraction(l3, flat.s2, flat.n)),
        n_half_linear=np.asarray(flat.s2 / l1), n_half_cubic=np.asarray(flat.s2 / l3),
    )
    if not all(np.all(np.isfinite(a)) for a in out):
        raise ParameterError("GP baseline is not finite for these parameters (d, sa2, sw2 out of float64 range)")
    return GPSolution(*(a.reshape(shape) for a in out))


def subspace_discrepancy(params: TeacherStudentParams):
    """EK discrepancy (b, c) with the exact 2x2 kernel restricted to span(Hhat1, Hhat3):
    [b, sqrt6 c] = (s2/n)(K2 + s2/n)^{-1} [1, sqrt6 eps], K2 = [[l1, l13], [l13, l3]].
    The off-diagonal term is the 'leak' of THEORY.md §3 (negative cubic projection in the GP phase)."""
    shape, flat = _flat_params(params)
    l1, l3, l13 = (np.asarray(a) for a in rayleigh_quotients(flat.d, flat.sa2, flat.sw2))
    K2 = np.stack([np.stack([l1, l13], -1), np.stack([l13, l3], -1)], -2)
    noise = (flat.s2 / flat.n)[:, None, None] * np.eye(2)
    y = np.stack([np.ones_like(flat.eps), math.sqrt(6.0) * flat.eps], -1)
    v = noise @ np.linalg.solve(K2 + noise, y[..., None])
    b, c = v[:, 0, 0], v[:, 1, 0] / math.sqrt(6.0)
    return b.reshape(shape), c.reshape(shape)
