r"""Modular addition with a square activation (paper Sec. 2.2, 3.2, App. B; THEORY.md §4).

Inputs x_nm in R^{2P} (ones at n and P+m), targets y_p = delta_{p,(n+m) mod P} - 1/P, network
f_p(x) = sum_i a_pi (w_i·x)^2 with w_i ~ N(0, I), a_pi ~ N(0, sa2/N).

The adapted kernel is diagonal in Fourier modes and every mode k != 0 of a neuron carries the same
action (eq. 16, App. B.2, with THEORY.md's corrections of App. B.4): with Phi = |w_k|^2, Psi = |v_k|^2
(uniform measure on [0, inf)^2),

    S_k(Phi, Psi; a) = P [ (Phi + Psi)/2 - u a^2 Phi Psi + (gamma/6)(Phi^3 + Psi^3) ],
    u = 2 sa2 P^2 / (N s2^2),

the sextic term being the non-linear weight decay Gamma.  Self-consistency (eq. 38):
lambda(a) = sa2 <Phi Psi>_{S_k}, a = -s2/(lambda(a) + s2); the target component of the mean
output is 1 + a.  Along Phi = Psi, Shat(Phi) = S_k/P = Phi - u a^2 Phi^2 + (gamma/3) Phi^3 has, besides
0, the saddles w±^2 = (u a^2 ± sqrt((u a^2)^2 - gamma))/gamma when u a^2 >= sqrt(gamma).

Two conventions (``convention=``).  Modes k and -k are complex conjugates, so the P - 1 actions
S_k, k != 0, describe (P - 1)/2 independent complex variables, and the neuron's action is
sum_{k in Z_P} S_k (the prior P sum_k (Phi_k + Psi_k)/2 is |w|^2/2, and -(sa2/2N) sum_p (t.phi)^2 with
t = -a y/s2 over all P^2 pairs is exactly -P u a^2 sum_k Phi_k Psi_k):

* ``"paper"`` (default, the paper's eq. 38 and THEORY.md): each mode weighted by e^{-S_k},
  lambda = sa2 <Phi Psi>.
* ``"network"`` (the network this theory describes, re-derived from eqs. 7-10 with all P^2 pairs as
  data): one complex mode pair carries e^{-2 S_k} (the action prefactor P -> P_eff = 2P, u unchanged;
  under the prior <Phi> = 1/P = E|w_k|^2 for w_n ~ N(0, 1), where e^{-S_k} gives 2/P), and the
  eigenvalue of the P^2 x P^2 matrix Q = sa2 <phi phi^T> on the normalised target mode
  phi(n, m) = e^{2 pi i k(n+m)/P}/P is lambda = kappa sa2 <Phi Psi>, kappa = 4 P^2 (the component of
  phi(w) = (w_n + v_m)^2 on it is 2 P conj(w_k v_k)).  At u -> 0 this is 4 sa2, the NNGP target
  eigenvalue of eq. 21 (:mod:`grokphase.theory.modular_gp`); the paper convention gives
  4 sa2/P^2 there, a factor P^2 smaller.

:func:`mode_factors` returns (P_eff, kappa) for either convention; every formula below holds in both
with P -> P_eff in the action and sa2 -> kappa sa2 wherever sa2 enters through lambda.
Consequences for the network convention: u, gmfl1_s2 and the pinned a of GMFL-I are unchanged, but the
droplet fraction is kappa times smaller, so in GMFL-I (|a| = s2/s1) the expected number of droplet
neurons per mode is N p = sqrt(3 gamma) (1 - s2/s1)/(12 s1) — independent of N, P and sa2 at fixed
s1, at most 6e-3 at the paper's Fig. 3 — and GMFL-II exists only if kappa sa2 < gamma^{3/2}/(12 sqrt(3) N),
i.e. gamma > 48 N^2 s1^2.  Table 1 keeps sa2/s2 but not kappa sa2/s2; the network convention's
invariant family is ``ModularParams.scaled(beta, "network")``.  Its saddle method is described in
:func:`saddle_moment`.

Solvers:

* :func:`solve` — finite P, with <Phi Psi> from the saddle mixture of eq. 41-42
  (``method="saddle"``) or from an exact 2-D quadrature (``method="exact"``: composite
  Gauss-Legendre panels, geometric from 0 and refined around w+^2, in log space, with a
  half-order check), and a(s2) from bracketed bisection of the monotone f(a) = a + s2/(lambda + s2).
* :func:`solve_limit` — P -> infinity: GFL (a = -1), GMFL-I (degeneracy pinned, u a^2 = 2 sqrt(gamma/3),
  droplet fraction p = s2 gamma (1/|a| - 1)/(3 sa2)), GMFL-II (the droplet saddle alone), the closed
  forms of both transition temperatures, and the metastable branches (superheated ordered branch
  to its spinodal u a^2 = sqrt(gamma); supercooled disordered branch a = -1 with barrier P Shat(w-^2)).

Modules (everything is re-exported here): :mod:`.params` (:class:`ModularParams`, conventions),
:mod:`.action` (mode action, saddles, the saddle method), :mod:`.quadrature` (the exact method),
:mod:`.finite_p` (:func:`solve`), :mod:`.limit` (P -> infinity).  Status codes and phases live in
:mod:`grokphase.theory.status`, batching in :mod:`grokphase.theory.batching` (shared with the
teacher-student model); the composite-modulus warning is :func:`grokphase.theory.modular_gp.warn_if_composite`.
"""

from __future__ import annotations

from grokphase.theory.modular.action import action, reduced_action, saddle_mixture, saddle_moment, saddles
from grokphase.theory.modular.finite_p import ModularSolution, solve, solve_batch, solve_point
from grokphase.theory.modular.constrained import ModularProfile, free_energy_profile
from grokphase.theory.modular.limit import (
    LimitSolution,
    Transitions,
    marginal_target_component,
    solve_limit,
    transitions,
)
from grokphase.theory.modular.params import (
    CONVENTIONS,
    METHODS,
    PARAM_NAMES,
    ModularParams,
    check_convention,
    mode_factors,
)
from grokphase.theory.modular.quadrature import N_GEOM, N_PATCH, QUAD_TOL, exact_moment
from grokphase.theory.status import PHASE_LABELS, Phase, Status

# Private helpers that tests and benchmarks reach through ``modular._name`` (the module was one file
# before it became this package); kept importable here, not part of the API.
from grokphase.theory.batching import padded as _padded  # noqa: F401
from grokphase.theory.modular.quadrature import _GL_NODES, _moment  # noqa: F401

PHASES = PHASE_LABELS

__all__ = [
    "CONVENTIONS", "METHODS", "N_GEOM", "N_PATCH", "PARAM_NAMES", "PHASES", "PHASE_LABELS", "QUAD_TOL",
    "LimitSolution", "ModularParams", "ModularProfile", "ModularSolution", "Phase", "Status", "Transitions",
    "action", "check_convention", "exact_moment", "free_energy_profile", "marginal_target_component", "mode_factors",
    "reduced_action", "saddle_mixture", "saddle_moment", "saddles", "solve", "solve_batch", "solve_limit",
    "solve_point", "transitions",
]
