"""The P -> infinity limit of the modular-addition model (THEORY.md §4): closed forms of the
transition temperatures, the marginal bound of a heated ordered state, and the equilibrium and
metastable branches (:func:`solve_limit`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.theory.batching import flatten, padded, to_float64, unpad
from grokphase.theory.modular.action import reduced_action, saddles
from grokphase.theory.modular.params import ModularParams, check_convention, mode_factors
from grokphase.theory.roots import bisect
from grokphase.theory.status import Phase


class Transitions(NamedTuple):
    """sigma^2 of the P -> infinity transitions at fixed (N, P, sa2, gamma); kappa = 1 (paper convention)
    or 4 P^2 (network convention), :func:`mode_factors`.

    gmfl1_s2: GFL -> GMFL-I (u * 1 = 2 sqrt(gamma/3)): sqrt(2 sa2 P^2 / (N 2 sqrt(gamma/3))) (both conventions).
    gmfl2_s2: GMFL-I -> GMFL-II (pinned droplet fraction reaches 1): gmfl1_s2 - 3 kappa sa2/gamma
      (may be <= 0: then GMFL-II is never reached).
    spinodal_s2: end of the superheated ordered branch (u a^2 = sqrt(gamma) with the droplet saddle
      alone): sqrt(2 sa2 P^2/(N sqrt(gamma))) - kappa sa2/gamma.
    supercooled_spinodal_s2: where the droplet saddle first exists on the disordered branch (u = sqrt(gamma));
      below it the disordered branch is metastable behind the barrier P_eff Shat(w-^2)."""

    gmfl1_s2: np.ndarray
    gmfl2_s2: np.ndarray
    spinodal_s2: np.ndarray
    supercooled_spinodal_s2: np.ndarray


def transitions(params: ModularParams, convention: str = "paper") -> Transitions:
    """Closed forms of THEORY.md §4 (derivations in the docstring of :class:`Transitions`)."""
    check_convention(convention)
    p = params.broadcast()
    C = 2.0 * p.sa2 * p.P**2 / p.N          # u s2^2
    g = p.gamma
    ksa2 = mode_factors(p.P, convention)[1] * p.sa2
    s1 = np.sqrt(C / (2.0 * np.sqrt(g / 3.0)))
    return Transitions(gmfl1_s2=s1, gmfl2_s2=s1 - 3.0 * ksa2 / g,
                       spinodal_s2=np.sqrt(C / np.sqrt(g)) - ksa2 / g,
                       supercooled_spinodal_s2=np.sqrt(C / np.sqrt(g)))


def marginal_target_component(params: ModularParams) -> np.ndarray:
    r"""The largest target component 1 + a at which a droplet saddle exists: 1 - (sqrt(gamma)/u)^(1/2).

    A droplet neuron sits at w+^2, which exists only while u a^2 >= sqrt(gamma) (:func:`saddles`), i.e.
    while |a| >= (sqrt(gamma)/u)^(1/2).  Droplets raise the target component (each adds to lambda), so a
    state with any number of droplets is locally stable only below this bound; a heated ordered state
    sheds droplets until it sits below it, and it holds some only up to the supercooled spinodal
    u = sqrt(gamma), where the bound reaches 0 (NaN beyond: no droplet survives).  Since u = C/s2^2
    (C = 2 sa2 P^2/N), the bound is 1 - sqrt(sqrt(gamma)/C) s2: linear in s2, 1 - (sqrt(3)/2)^(1/2) = 0.0694
    at the GFL -> GMFL-I transition s1 (u = 2 sqrt(gamma/3)) and 0 at 1.0746 s1.  It involves only u, so it
    is the same in both conventions; it is the P -> infinity, droplet-count-free superheating limit
    (at finite P_eff the barrier to melting vanishes at the bound, so a finite network sheds droplets
    somewhat below it)."""
    p = params.broadcast()
    u = np.asarray(p.u, dtype=float)
    g = np.asarray(p.gamma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = 1.0 - np.sqrt(np.sqrt(g) / u)
    return np.where(u >= np.sqrt(g), bound, np.nan)


class LimitSolution(NamedTuple):
    """P -> infinity equilibrium and metastable branches at each point (kappa, P_eff: :func:`mode_factors`).

    a, target_component, droplet_fraction, phase: the equilibrium (GFL / GMFL-I / GMFL-II); in GMFL-I
      p = s2 gamma (1/|a| - 1)/(3 kappa sa2);
    phi_plus: w+^2 on the equilibrium branch (0 in GFL);
    a_superheated: the ordered branch (droplet saddle alone, a = -s2/(kappa sa2 w+^4 + s2)), NaN where it
      does not exist (beyond its spinodal); a_supercooled = -1 (always locally stable);
    barrier_supercooled: P_eff Shat(w-^2) at a = -1 (the action barrier a disordered network must cross),
      inf where the droplet saddle does not exist (u < sqrt(gamma))."""

    a: np.ndarray
    target_component: np.ndarray
    droplet_fraction: np.ndarray
    phi_plus: np.ndarray
    phase: np.ndarray
    a_superheated: np.ndarray
    a_supercooled: np.ndarray
    barrier_supercooled: np.ndarray


def _droplet_alone(u, gamma, s2, sa2):
    """Solve a = -s2/(sa2 w+^4(a) + s2) on |a| >= (sqrt(gamma)/u)^(1/2) (the saddle exists);
    g(a) = a + s2/(sa2 w+^4 + s2) increases with a there, so the root is unique when it exists."""
    a_sp = -jnp.sqrt(jnp.sqrt(gamma) / u)

    def g(a):
        # on |a| >= |a_sp| the saddle exists; clamp the discriminant so that rounding at the
        # spinodal (where it vanishes) cannot switch the saddle off
        ua2 = u * a * a
        wp = (ua2 + jnp.sqrt(jnp.maximum(ua2 * ua2 - gamma, 0.0))) / gamma
        return a + s2 / (sa2 * wp * wp + s2)

    # at the spinodal w+^2 = 1/sqrt(gamma) exactly: g(a_sp) = a_sp + s2/(sa2/gamma + s2)
    exists = (a_sp > -1.0) & (a_sp + s2 / (sa2 / gamma + s2) >= 0.0)
    hi = jnp.where(exists, a_sp, -0.5)
    a = bisect(g, jnp.float64(-1.0), hi, iters=80)
    return jnp.where(exists, a, jnp.nan), exists


@jax.jit(static_argnames="convention")
def _limit_batch(params: ModularParams, convention: str = "paper"):
    p = to_float64(params)

    def one(u, gamma, s2, sa2, P):
        P_eff, kappa = mode_factors(P, convention)
        sa2 = kappa * sa2                    # sa2 enters the limit only through lambda
        a_pin = -jnp.sqrt(2.0 * jnp.sqrt(gamma / 3.0) / u)
        p_pin = s2 * gamma * (1.0 / jnp.abs(a_pin) - 1.0) / (3.0 * sa2)
        a_sh, sh_exists = _droplet_alone(u, gamma, s2, sa2)
        gfl = a_pin <= -1.0
        gmfl2 = (~gfl) & (p_pin >= 1.0)
        a = jnp.where(gfl, -1.0, jnp.where(gmfl2, a_sh, a_pin))
        drop = jnp.where(gfl, 0.0, jnp.where(gmfl2, 1.0, p_pin))
        _, wp, _ = saddles(a, u, gamma)
        phase = jnp.where(gfl, Phase.GFL, jnp.where(gmfl2, Phase.GMFL_II, Phase.GMFL_I)).astype(jnp.int32)
        wm1, _, ex1 = saddles(jnp.float64(-1.0), u, gamma)
        barrier = jnp.where(ex1, P_eff * reduced_action(wm1, -1.0, u, gamma), jnp.inf)
        return a, 1.0 + a, drop, jnp.where(gfl, 0.0, wp), phase, a_sh, jnp.full_like(a, -1.0), barrier

    return jax.vmap(one)(p.u, p.gamma, p.s2, p.sa2, p.P)


def solve_limit(params: ModularParams, convention: str = "paper") -> LimitSolution:
    """P -> infinity equilibrium and metastable branches at every point of ``params``.

    ``convention="network"``: the paper's formulas with sa2 -> kappa sa2 = 4 P^2 sa2 wherever sa2 enters
    through lambda (droplet fraction, GMFL-II branch) and P -> 2P in the barrier; u, gmfl1_s2 and the
    pinned a of GMFL-I are the same in both conventions."""
    check_convention(convention)
    shape, flat = flatten(params)
    padded_flat, M = padded(flat)
    return unpad(LimitSolution(*jax.device_get(_limit_batch(padded_flat, convention))), M, shape)
