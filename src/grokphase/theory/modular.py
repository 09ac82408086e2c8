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
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase._params import broadcast_fields, check_positive, is_traced, register_params
from grokphase.errors import ParameterError, SolverError
from grokphase.theory.modular_gp import is_prime
from grokphase.theory.roots import bisect, chandrupatla
from grokphase.theory.teacher_student import PHASE_LABELS, Phase, Status, bucket_size, default_chunk

PARAM_NAMES = ("N", "P", "s2", "sa2", "gamma")
METHODS = ("saddle", "exact")
CONVENTIONS = ("paper", "network")


def check_convention(convention: str) -> None:
    """ParameterError unless ``convention`` is one of :data:`CONVENTIONS` (a static string, so this
    also runs at trace time under jit/vmap)."""
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise ParameterError(f"convention must be one of {CONVENTIONS} (got {convention!r})")


def mode_factors(P, convention: str = "paper"):
    """(P_eff, kappa) of a convention (module docstring): a mode's weight is exp(-S_k) with the action
    prefactor P -> P_eff, and lambda = kappa sa2 <Phi Psi>.  ``"paper"``: (P, 1); ``"network"``:
    (2P, 4P^2).  Works on floats, NumPy and traced arrays."""
    check_convention(convention)
    if convention == "paper":
        return P, 1.0
    return 2.0 * P, 4.0 * P * P


def warn_if_composite(P) -> None:
    """UserWarning for integer composite P (any array shape): the paper's symmetry argument (all phi_{k,k}, k != 0,
    related by n -> qn) assumes a prime modulus.  Non-integer P (from the Table-1 scaling) is a
    continuous size parameter and is not checked."""
    values = np.unique(np.asarray(P, dtype=float))
    bad = [int(v) for v in values if float(v).is_integer() and not is_prime(int(v))]
    if bad:
        warnings.warn(f"P = {bad[0]} is not prime: the paper's symmetry argument for the adapted kernel "
                      "(all modes phi_(k,k), k != 0, related by n -> qn) assumes a prime modulus", UserWarning,
                      stacklevel=3)


@register_params
@dataclasses.dataclass(frozen=True)
class ModularParams:
    """Parameters of the modular-addition model (defaults: the paper's Fig. 3).

    N: hidden width; P: modulus (>= 3); s2: sigma^2; sa2: readout prior a ~ N(0, sa2/N) (``None``:
    0.002/N); gamma: strength of the sextic Fourier penalty.  Fields may be broadcastable arrays."""

    N: Any = 1000.0
    P: Any = 401.0
    s2: Any = 0.2
    sa2: Any = None
    gamma: Any = 1e-4

    def __post_init__(self):
        if self.sa2 is None:
            if is_traced(self.N):
                object.__setattr__(self, "sa2", 0.002 / self.N)
            else:
                check_positive("N", self.N)
                object.__setattr__(self, "sa2", 0.002 / np.asarray(self.N, dtype=np.float64))
        for k in PARAM_NAMES:
            check_positive(k, getattr(self, k))
        if not is_traced(self.P):
            P = np.asarray(self.P, dtype=float)
            if np.any(P < 3):
                raise ParameterError(f"P must be >= 3 (got {P.min()!r})")
        if not any(is_traced(getattr(self, k)) for k in PARAM_NAMES):
            broadcast_fields(self, PARAM_NAMES)

    @property
    def u(self):
        """u = 2 sa2 P^2/(N s2^2), invariant under the Table-1 scaling."""
        return 2.0 * self.sa2 * self.P**2 / (self.N * self.s2**2)

    @property
    def shape(self):
        return broadcast_fields(self, PARAM_NAMES)[0]

    def replace(self, **changes) -> "ModularParams":
        return dataclasses.replace(self, **changes)

    def broadcast(self) -> "ModularParams":
        _, arrays = broadcast_fields(self, PARAM_NAMES)
        return ModularParams(**{k: np.array(v) for k, v in arrays.items()})

    def scaled(self, beta=1.0, convention: str = "paper") -> "ModularParams":
        """The family along which a convention's P -> infinity solution is invariant (s2 -> s2/beta in both,
        so the transition temperatures scale as 1/beta).

        ``"paper"``: Table 1, N -> beta^2 N, P -> sqrt(beta) P, sa2 -> sa2/beta, s2 -> s2/beta (u, gamma and
        sa2/s2 invariant).  ``"network"``: lambda/s2 = 4 P^2 sa2 <Phi Psi>/s2, so Table 1 (which keeps
        P^2 sa2 but not P^2 sa2/s2) does not fix its limit; instead N -> beta N, P -> sqrt(beta) P,
        sa2 -> sa2/beta^2, s2 -> s2/beta keeps u, gamma and kappa sa2/s2 invariant."""
        check_positive("beta", beta)
        check_convention(convention)
        if convention == "paper":
            return ModularParams(N=self.N * beta**2, P=self.P * np.sqrt(beta), s2=self.s2 / beta,
                                 sa2=self.sa2 / beta, gamma=self.gamma)
        return ModularParams(N=self.N * beta, P=self.P * np.sqrt(beta), s2=self.s2 / beta, sa2=self.sa2 / beta**2,
                             gamma=self.gamma)

    def with_axis(self, name: str, value, *, sa2_times_N: float | None = None) -> "ModularParams":
        if name not in PARAM_NAMES:
            raise ParameterError(f"unknown modular parameter {name!r}; choose from {PARAM_NAMES}")
        changes = {name: value}
        if name == "N" and sa2_times_N is not None:
            changes["sa2"] = sa2_times_N / np.asarray(value, dtype=np.float64)
        return self.replace(**changes)


# ----------------------------------------------------------------------------------------------
# Action and saddles
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Exact 2-D quadrature
# ----------------------------------------------------------------------------------------------

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
    from jax.scipy.special import logsumexp

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


# ----------------------------------------------------------------------------------------------
# Finite-P self-consistency
# ----------------------------------------------------------------------------------------------


class ModularSolution(NamedTuple):
    """Finite-P solution (fields have the batch shape).

    a: discrepancy along the target; target_component = 1 + a; lam = kappa sa2 <Phi Psi> (kappa = 1 in
    the paper convention, 4 P^2 in the network one);
    droplet_fraction: probability of the non-trivial saddle; phi_plus = w+^2 (0 if no saddle);
    action_gap = P_eff Shat(w+^2) - 0, the droplet's action against the origin in the mode weight
    (P_eff = P or 2P; inf if no saddle); u; quad_error (exact method, else 0);
    status (:class:`Status`); phase: GFL if N p < 1, GMFL-II if N (1 - p) < 1, GMFL-I otherwise."""

    a: np.ndarray
    target_component: np.ndarray
    lam: np.ndarray
    droplet_fraction: np.ndarray
    phi_plus: np.ndarray
    action_gap: np.ndarray
    u: np.ndarray
    quad_error: np.ndarray
    status: np.ndarray
    phase: np.ndarray


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS} (got {method!r})")


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


def _solve_point(params: ModularParams, method: str, convention: str = "paper") -> ModularSolution:
    _check_method(method)  # static strings: checked at trace time, also under jit/vmap
    check_convention(convention)
    p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
    u, gamma, P, s2, sa2 = p.u, p.gamma, p.P, p.s2, p.sa2
    P_eff, kappa = mode_factors(P, convention)
    ksa2 = kappa * sa2

    def f(a):  # strictly increasing on [-1, 0): lambda grows with a^2
        m, _, _ = _moment(a, u, gamma, P, method, convention)
        return a + s2 / (ksa2 * m + s2)

    lo, hi = jnp.float64(-1.0), jnp.float64(0.0)
    f_lo = f(lo)
    # f(-1) <= 0 always; f(-1) == 0 exactly when lambda(-1) vanishes: then a = -1 exactly.
    # f(0) = 1 > 0.  Chandrupatla keeps the bracket and converges superlinearly (~10 evaluations).
    root, _ = chandrupatla(f, lo, hi, f_lo=f_lo, f_hi=jnp.float64(1.0))
    a = jnp.where(f_lo >= 0.0, lo, root)
    m, drop, err = _moment(a, u, gamma, P, method, convention, check=True)
    lam = ksa2 * m
    _, wp, exists = saddles(a, u, gamma)
    gap = jnp.where(exists, P_eff * reduced_action(wp, a, u, gamma), jnp.inf)
    status = jnp.where(jnp.isfinite(a) & jnp.isfinite(lam), Status.CONVERGED, Status.NONFINITE)
    status = jnp.where((status == Status.CONVERGED) & (err > QUAD_TOL), Status.UNRESOLVED, status).astype(jnp.int32)
    N = p.N
    phase = jnp.where(N * drop < 1.0, Phase.GFL, jnp.where(N * (1.0 - drop) < 1.0, Phase.GMFL_II, Phase.GMFL_I))
    return ModularSolution(a=a, target_component=1.0 + a, lam=lam, droplet_fraction=drop, phi_plus=wp,
                           action_gap=gap, u=u, quad_error=err, status=status, phase=phase.astype(jnp.int32))


def solve_point(params: ModularParams, method: str = "saddle", convention: str = "paper") -> ModularSolution:
    """One parameter point: pure, jit/vmap-compatible over every field, never raises on values
    (``method`` and ``convention`` are static strings, rejected with ParameterError at trace time)."""
    return _solve_point(params, method, convention)


@jax.jit(static_argnames=("method", "chunk", "convention"))
def solve_batch(params: ModularParams, method: str = "saddle", chunk: int | None = None, *,
                convention: str = "paper") -> ModularSolution:
    """Jitted solutions over 1-D parameter arrays: one vmap (``chunk=None``) or a map over chunks of
    ``chunk`` vmapped points (faster on CPUs: root finding then stops per chunk, not at the slowest
    point of the whole batch).  ``convention`` is static (keyword-only, so positional ``chunk`` keeps
    its meaning)."""
    one = lambda q: _solve_point(q, method, convention)  # noqa: E731
    return jax.vmap(one)(params) if chunk is None else jax.lax.map(one, params, batch_size=chunk)


def _flat(params: ModularParams):
    shape, arrays = broadcast_fields(params, PARAM_NAMES)
    return shape, ModularParams(**{k: np.ascontiguousarray(v).reshape(-1) for k, v in arrays.items()})


def _padded(flat: ModularParams):
    M = int(np.asarray(flat.N).size)
    pad = bucket_size(M) - M
    if pad:
        flat = jax.tree_util.tree_map(lambda a: np.concatenate([a, np.repeat(a[-1:], pad)]), flat)
    return flat, M


def solve(params: ModularParams, method: str = "saddle", *, convention: str = "paper",
          check: bool = True) -> ModularSolution:
    """Finite-P solution at every point of ``params`` (any broadcast shape); one compiled vmap.

    ``method``: ``"saddle"`` (eq. 41-42, :func:`saddle_moment`) or ``"exact"`` (2-D quadrature).
    ``convention``: ``"paper"`` (mode weight e^{-S_k}, lambda = sa2 <Phi Psi>) or ``"network"``
    (e^{-2 S_k}, lambda = 4 P^2 sa2 <Phi Psi>; module docstring).  Warns for composite P."""
    _check_method(method)
    check_convention(convention)
    warn_if_composite(params.P)
    shape, flat = _flat(params)
    padded, M = _padded(flat)
    # the exact method's root finding costs a 2-D quadrature per step: chunks avoid lockstep waste
    # on CPUs (measured 2.6x); the closed-form saddle method is fastest as one vmap
    chunk = default_chunk() if method == "exact" else None
    sol = jax.device_get(solve_batch(padded, method, chunk, convention=convention))
    sol = ModularSolution(*[np.asarray(x)[:M].reshape(shape) for x in sol])
    if check:
        bad = np.flatnonzero(sol.status.ravel() != Status.CONVERGED)
        if bad.size:
            i = int(bad[0])
            point = ", ".join(f"{k}={float(np.asarray(getattr(flat, k))[i]):.6g}" for k in PARAM_NAMES)
            raise SolverError(f"modular {method} solver ({convention} convention) failed at {bad.size} of {M} points, "
                              f"first at ({point}): {Status(int(sol.status.ravel()[i])).label}")
    return sol


# ----------------------------------------------------------------------------------------------
# P -> infinity: boundaries, equilibrium and metastable branches
# ----------------------------------------------------------------------------------------------


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
    p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)

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
    shape, flat = _flat(params)
    padded, M = _padded(flat)
    out = [np.asarray(x)[:M].reshape(shape) for x in jax.device_get(_limit_batch(padded, convention))]
    return LimitSolution(*out)


PHASES = PHASE_LABELS
