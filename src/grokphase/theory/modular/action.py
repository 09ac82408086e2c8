"""The mode action of the modular-addition model and its saddles (eq. 16, eq. 41-42, App. B.2-B.4;
THEORY.md §4), and the saddle method's moment <Phi Psi> in either convention."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from grokphase.theory.modular.params import mode_factors


def action(Phi, Psi, a, u, gamma, P):
    """S_k(Phi, Psi; a) of eq. 16 (THEORY.md §4)."""
    return P * (0.5 * (Phi + Psi) - u * a * a * Phi * Psi + gamma / 6.0 * (Phi**3 + Psi**3))


def reduced_action(Phi, a, u, gamma):
    """Shat(Phi) = S_k(Phi, Phi)/P = Phi - u a^2 Phi^2 + (gamma/3) Phi^3."""
    return Phi - u * a * a * Phi**2 + gamma / 3.0 * Phi**3


def saddles(a, u, gamma):
    """(w-^2, w+^2, exists): the non-trivial symmetric saddles (App. B.4); 0 where they do not exist."""
    ua2 = u * a * a
    disc = ua2 * ua2 - gamma
    exists = disc >= 0.0
    root = jnp.sqrt(jnp.where(exists, disc, 0.0))
    return jnp.where(exists, (ua2 - root) / gamma, 0.0), jnp.where(exists, (ua2 + root) / gamma, 0.0), exists


def saddle_mixture(a, u, gamma, P):
    """Eq. 41-42: <Phi Psi> ~ 4 w+^4 e^{-S+}/(1 + 4 e^{-S+}), S+ = P Shat(w+^2); returns
    (<Phi Psi>, droplet probability p = 4e^{-S+}/(1 + 4e^{-S+}), w+^2, S+, exists).  ``P`` is the action
    prefactor (P_eff of :func:`mode_factors`); see :func:`saddle_moment` for the network convention."""
    _, wp, exists = saddles(a, u, gamma)
    S_plus = P * reduced_action(wp, a, u, gamma)
    p = jnp.where(exists, jax.nn.sigmoid(math.log(4.0) - S_plus), 0.0)
    return p * wp * wp, p, wp, jnp.where(exists, S_plus, jnp.inf), exists


def saddle_moment(a, u, gamma, P, convention: str = "paper"):
    """<Phi Psi> and the droplet probability of the saddle method in either convention (P the modulus).

    ``"paper"``: eq. 41-42 verbatim (a delta at the origin, droplet odds 4 e^{-S+}, S+ = P Shat(w+^2)).
    ``"network"``: the same two-basin mixture for the weight e^{-2 S_k}: droplet odds 4 e^{-S+} with
    S+ = 2P Shat(w+^2) (the paper's odds prefactor 4 is kept, so "saddle" is the same approximation in
    both conventions and lambda(a) stays monotone; Laplace's method would give the prefactor
    pi P/sqrt(det h), h the Hessian of S_k/P at the droplet, which moves the pinned u a^2 by only
    (gamma/3) ln(W/4)/(2 P x0), the O(log P/P) gap to the exact method), and the origin basin carries its
    exact free moment <Phi Psi>_0 = (1/P)^2 (Phi, Psi ~ Exp(mean 1/P) under e^{-P(Phi+Psi)}) instead
    of a delta: kappa sa2 (1/P)^2 = 4 sa2 is the NNGP target eigenvalue, which the saddle method then
    reproduces at u -> 0.  (The paper drops the analogous 4/P^2 as an O(P^-2) correction; in the
    network convention it is the whole GP-limit learning, so it is kept.)
    Returns (<Phi Psi>, p)."""
    P_eff, _ = mode_factors(P, convention)
    m, p, _, _, _ = saddle_mixture(a, u, gamma, P_eff)
    if convention == "network":
        m = m + (1.0 - p) / (P * P)
    return m, p
