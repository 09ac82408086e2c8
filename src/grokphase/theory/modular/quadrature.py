"""The exact method for the mode moment of the modular-addition model: <Phi Psi> and the droplet
probability by 2-D composite Gauss-Legendre quadrature in log space, with a half-order error check;
and :func:`_moment`, which picks the saddle or the exact method."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from grokphase.theory.modular.action import action, saddle_moment, saddles
from grokphase.theory.modular.params import mode_factors

_GL_NODES = 8
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_GL_NODES)
_GL_X4, _GL_W4 = np.polynomial.legendre.leggauss(_GL_NODES // 2)
N_GEOM = 40        # geometric panels from 1/(4P) up to Phi_max (ratio ~1.4 each)
N_PATCH = 24       # panels of one saddle width around w+^2 (± 12 widths)
QUAD_TOL = 1e-6    # agreement of 8- and 4-node Gauss-Legendre rules required of <Phi Psi>


def _breakpoints(a, u, gamma, P):
    """Panel breakpoints on [0, Phi_max]: 0, geometric from 1/(4P), plus a uniform patch of
    N_PATCH panels one saddle-width wide centred on w+^2 (when the saddle exists; else on the
    would-be saddle location, harmlessly).  Fixed count, so everything stays jit-compatible."""
    _, wp, exists = saddles(a, u, gamma)
    ua2 = u * a * a
    # beyond Phi_max the sextic term wins: S(Phi, Psi) >= P[Phi/2 + gamma Phi^3/6 - u a^2 Phi Psi]
    # is > 60 + S_min for every Psi in range; 3 w+^2 + (60/(P gamma))^(1/3) is ample.
    phi_max = jnp.maximum(3.0 * jnp.where(exists, wp, ua2 / gamma), 0.0) + (360.0 / (P * gamma)) ** (1.0 / 3.0) + 200.0 / P
    lo = 1.0 / (4.0 * P)
    t = jnp.linspace(0.0, 1.0, N_GEOM)
    g = lo * (phi_max / lo) ** t
    curv = jnp.maximum(gamma * wp - ua2, 0.0)  # Shat''/2 along the diagonal at w+^2
    width = jnp.where(curv > 0.0, 1.0 / jnp.sqrt(P * jnp.maximum(curv, 1e-300)), phi_max / N_PATCH)
    width = jnp.minimum(width, phi_max / N_PATCH)
    centre = jnp.where(exists, wp, ua2 / gamma)
    patch = centre + width * (jnp.arange(N_PATCH + 1) - N_PATCH / 2)
    patch = jnp.clip(patch, 0.0, phi_max)
    bp = jnp.sort(jnp.concatenate([jnp.zeros(1), g, patch]))
    return bp


def _nodes(bp, x, w):
    lo, hi = bp[:-1], bp[1:]
    half = 0.5 * (hi - lo)
    nodes = (0.5 * (hi + lo))[:, None] + half[:, None] * x[None, :]
    weights = half[:, None] * w[None, :]
    return nodes.reshape(-1), weights.reshape(-1)


def _exact_moments(a, u, gamma, P, x, w):
    bp = _breakpoints(a, u, gamma, P)
    phi, wt = _nodes(bp, jnp.asarray(x), jnp.asarray(w))
    logw = jnp.log(jnp.maximum(wt, 1e-300)) + jnp.where(wt > 0.0, 0.0, -jnp.inf)
    S = action(phi[:, None], phi[None, :], a, u, gamma, P)
    L = -S + logw[:, None] + logw[None, :]
    lz = logsumexp(L)
    prob = jnp.exp(L - lz)
    m = jnp.sum(prob * phi[:, None] * phi[None, :])
    wm, _, exists = saddles(a, u, gamma)
    drop = jnp.where(exists, jnp.sum(jnp.where(phi[:, None] + phi[None, :] >= 2.0 * wm, prob, 0.0)), 0.0)
    return m, drop


def exact_moment(a, u, gamma, P):
    """<Phi Psi> and the droplet probability (mass beyond the separatrix Phi + Psi = 2 w-^2, the
    line through the barrier saddle perpendicular to its unstable direction) by 2-D composite
    Gauss-Legendre quadrature in log space; also the difference to the 4-node rule (error bound)."""
    m8, d8 = _exact_moments(a, u, gamma, P, _GL_X, _GL_W)
    m4, _ = _exact_moments(a, u, gamma, P, _GL_X4, _GL_W4)
    return m8, d8, jnp.abs(m8 - m4) / jnp.maximum(jnp.abs(m8), 1e-300)


def _moment(a, u, gamma, P, method, convention, check=False):
    """(<Phi Psi>, droplet probability, quadrature error) at modulus P in ``convention``.  The exact
    method integrates e^{-S_k} with the prefactor P_eff: the breakpoints of :func:`_breakpoints` are
    functions of P_eff (origin scale 1/(4 P_eff), saddle width 1/sqrt(P_eff curv), cut-off where S
    exceeds its minimum by > 60), so they resolve the doubled action exactly as they resolve the paper
    convention at modulus 2P."""
    if method == "saddle":
        m, p = saddle_moment(a, u, gamma, P, convention)
        return m, p, jnp.zeros_like(m)
    P_eff, _ = mode_factors(P, convention)
    if check:
        return exact_moment(a, u, gamma, P_eff)
    m, p = _exact_moments(a, u, gamma, P_eff, _GL_X, _GL_W)
    return m, p, jnp.zeros_like(m)
