r"""The modular model's mean-field free energy along the target component m (THEORY.md §2, §4, §7):
F(m) = -log p(m) of the whole network, the Legendre-constrained saddle of the theory's free energy.

**The order parameter.**  m(theta) = (f, y)/(y, y), the target component of the network output on
the whole P x P table (P outputs per input), Y = (y, y) = P(P - 1).  In the theory the mean output is
(1 + a) y, so at the unconstrained solution m = 1 + a = ``ModularSolution.target_component``.

**Derivation.**  Tilt the posterior exp(-L/s2 - prior) by exp(-h m(theta)).  m is linear in the
readout, so the tilt only rescales the target in the cross term f·y/s2: y -> alpha y with
alpha = 1 - h s2/Y, plus the constant (alpha^2 - 1) Y/(2 s2).  The theory's free energy (THEORY.md §2)
with the discrepancy along the target, s2 tau = -a y, is

    G(a) = -(Y/s2)(a + a^2/2) - L(a),      L(a) = c [log zeta(a) - log zeta(0)],

zeta(a) = int dPhi dPsi e^{-S_k(Phi, Psi; a)} the mode integral with the action prefactor P_eff
(:func:`~grokphase.theory.modular.params.mode_factors`), c = Y kappa N/(4 P_eff P^2) the number of
independent mode pairs per network (N (P - 1)/2 in the network convention, where it is exact: a
neuron's action is the sum of its (P - 1)/2 complex mode pairs, each weighted e^{-2 S_k}).  Its
stationarity G'(a) = 0 is eq. 38, because L'(a) = (Y/s2^2) a lambda(a), lambda = kappa sa2 <Phi Psi>_a.
Adding the tilt, eliminating h for m and keeping the discrepancy as the one unknown gives

    F(m) = max_a Phi_m(a),   Phi_m(a) = (Y/(2 s2)) [(m - 1)^2 - 2 a m] - L(a)
         = G(a) + (Y/(2 s2)) (a + 1 - m)^2,

stationary where  m = -a lambda(a)/s2  (the kernel's response to the discrepancy is the output
m y), and the multiplier is dF/dm = (Y/s2)(m - 1 - a(m)) (= -h).  At m = 1 + a* the multiplier
vanishes and F = G(a*), the unconstrained free energy.

**Fixed m, not fixed multiplier.**  The profile is solved at fixed m with a as the unknown.  L is a
log-partition function of a quadratic form in a, hence convex, so Phi_m is strictly concave in a and
m -> a(m) is single valued (the root of the monotone a lambda(a)/s2 + m; Chandrupatla in a bracket).
The same convexity proves that **F(m) is strictly convex** in this theory: F is the Gaussian readout
term (Y/(2 s2))(1 - m)^2 plus the convex conjugate max_a[-(Y/s2) a m - L(a)], and
F''(m) = (Y/s2)(1 - da/dm) >= Y/s2 since a(m) decreases.  The mean-field F(m) has one well: no S-shaped
branch exists to follow, and no barrier in m separates a disordered from an ordered network.  The
first-order character of GMFL-I lives in the single-neuron coordinate (a mode pair either at the origin
or at the droplet saddle w+^2, separated by the per-neuron barrier P_eff Shat(w-^2), THEORY.md §4), which
the simulations see as nucleation delays and hysteresis.  In m it shows as the change of curvature:
Y(lambda + s2)/(s2 lambda) on the GP side (the exact GP posterior of the readout, see below), down to
~Y/s2 in the mixed phase, where droplets form or melt at almost no cost.

**Frozen droplet counts** (``droplets=j``): every mode pair has exactly j of its N neurons in the
droplet basin (Phi + Psi >= ``cut``) and N - j in the origin basin, with the multiplicity C(N, j) kept:
L_j = c/N [(N - j) log zeta_0 + j log zeta_d + log C(N, j)] - c log zeta(0), where zeta_0 and zeta_d are
the mode integral over either basin (the full one normalises all of them, so F_j and F are on one
scale).  Each F_j is convex and F(m) <= F_j(m) for every j (zeta_0 + zeta_d >= either; C(N, j)
zeta_0^{N-j} zeta_d^j is one term of (zeta_0 + zeta_d)^N).  j = 0 is the supercooled (droplet-free)
network; the minima min_m F_j compare droplet counts, and min F_1 = min F_0 is where one droplet per
mode is as likely as none: 0.9976 s1 at P = 23, N = 256 (s1 the P -> infinity GFL -> GMFL-I point of
:func:`~grokphase.theory.modular.transitions`; 1.0050, 1.0047, 1.0032 s1 at P = 46, 92, 184 along the
network scaling family), while the finite-P solver's label N p/(1 - p) = 1 sits at 0.975 s1.  The lower
envelope min_j F_j(m) is not convex (a well per count, with barriers between them: 129 between j = 0 and
j = 1 at that point, 703 and 3244 at P = 46, 92): that is the profile of a network that cannot exchange
droplets, not the equilibrium one.  Each F_j solves its own saddle in a; a droplet moves it by about
sqrt(s2/Y_mode) here, so sum_j e^{-F_j} and e^{-F} differ by O(1) per mode pair (at P = 23, 0.8 s1 the
per-mode sum is 0.18 of the equilibrium weight, nearly all from j = 5, the count nearest N p = 4.9):
compare F_j with F, or counts with each other, only up to such terms.  Frozen counts need
``method="exact"``.

**Closed form (GP).**  At u -> 0 the kernel does not adapt, lambda = 4 sa2 (network convention: the
NNGP target eigenvalue of eq. 21), a(m) = -s2 m/lambda and F is the parabola
(Y (lambda + s2)/(2 s2 lambda)) (m - lambda/(lambda + s2))^2 + const, i.e. m is Gaussian with the exact
posterior mean and variance s2 lambda/(Y (lambda + s2)) of Bayesian linear regression on the target mode.

**Units.**  F is -log p(m) of the N-neuron network in units of its log posterior (the simulation's
potential L/s2 + prior, L = (1/2) sum |f - y|^2 over the whole table), up to an m-independent constant
(log p(data) and the prior's normalisation zeta(0)), at the saddle-point (mean-field) level: the
Gaussian fluctuation determinants of the discrepancy saddle are dropped (see the frozen counts above for
their size).  In the network convention F is exactly that mean-field -log p(m).
What is extensive: F is a sum over the data, Y/s2 = P(P - 1)/s2 times an O(1) function of m, and over the
c = N(P - 1)/2 independent mode pairs (N log zeta per pair); at fixed P and s2 nothing in F grows with N
alone (u ~ 1/N).  Along the network convention's invariant family (``ModularParams.scaled(beta,
"network")``: N -> beta N, P -> sqrt(beta) P, sa2 -> sa2/beta^2, s2 -> s2/beta) the curvature bound
F'' >= Y/s2 grows like beta^2 = (N/N_0)^2 and the well's width in m shrinks like 1/beta.
In the ``"paper"`` convention the same G is used with the paper's lambda (sa2 unscaled, P_eff = P) and
c = N (P - 1)/(4 P^2); it is not the log posterior of any network, only the paper's theory written with
the network's data term.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp

from grokphase.errors import ParameterError
from grokphase.theory.batching import bucket_size, to_float64
from grokphase.theory.modular.action import reduced_action, saddle_moment, saddles
from grokphase.theory.modular.finite_p import solve
from grokphase.theory.modular.limit import solve_limit
from grokphase.theory.modular.params import ModularParams, _check_method, check_convention, mode_factors
from grokphase.theory.modular.quadrature import _GL_W, _GL_W4, _GL_X, _GL_X4, QUAD_TOL, _breakpoints, _nodes
from grokphase.theory.roots import bisect, chandrupatla
from grokphase.theory.status import Status

#: relative residual |a lambda(a)/s2 + m| / (1 + |m|) accepted at a constrained saddle
RESIDUAL_TOL = 1e-10
#: doublings of the lower end of the bracket for a (from -1): |a| up to 2^MAX_DOUBLINGS
MAX_DOUBLINGS = 10
#: Gauss-Legendre panels of the saddle method's integral of a (1 - p(a)) (uniform part, patch part)
_SADDLE_PANELS, _SADDLE_PATCH = 64, 48
#: smallest padded grid length (one executable for every grid up to this many points)
MIN_BUCKET = 64
#: relative distances of the extra breakpoints on either side of a basin boundary
_CUT_STEPS = np.asarray(0.5 ** np.arange(1, 31))


class ModularProfile(NamedTuple):
    """F(m) of :func:`free_energy_profile` on the grid ``m`` (fields have the shape of ``m`` unless said).

    m: target component (f, y)/(y, y); F: -log p(m) in units of the network's log posterior, up to the
    constant of the module docstring (F(m_star) = F_star); multiplier: lambda(m) = dF/dm = (Y/s2)(m - 1 - a);
    a: the discrepancy at the constrained saddle; lam: the kernel eigenvalue kappa sa2 <Phi Psi> there;
    droplet_fraction: the mode's mass beyond the separatrix (equilibrium) or j/N (frozen count);
    residual: |a lam/s2 + m|/(1 + |m|); quad_error: 8- vs 4-node rule (exact method: log zeta and the
    moment; saddle method: the integral's half-panel check); status (:class:`Status`; NO_BRANCH: m is
    beyond what |a| <= 2^MAX_DOUBLINGS reaches, or a frozen count's droplet basin is empty).
    Scalars: m_star, a_star, F_star, status_star: the stationary point of this profile (with droplets=None
    the finite-P equilibrium, solved by this module's own root finding); m_solver: the target component
    of :func:`~grokphase.theory.modular.solve` (droplets=None; NaN otherwise); m_limit, m_superheated,
    m_supercooled: the P -> infinity equilibrium and metastable branches (1 + a of
    :func:`~grokphase.theory.modular.solve_limit`); Y, c: the data norm and the number of mode pairs."""

    m: np.ndarray
    F: np.ndarray
    multiplier: np.ndarray
    a: np.ndarray
    lam: np.ndarray
    droplet_fraction: np.ndarray
    residual: np.ndarray
    quad_error: np.ndarray
    status: np.ndarray
    m_star: float
    a_star: float
    F_star: float
    status_star: int
    m_solver: float
    m_limit: float
    m_superheated: float
    m_supercooled: float
    Y: float
    c: float
    params: ModularParams
    method: str
    convention: str
    droplets: int | None
    cut: float

    def to_dataset(self):
        """An annotated xarray Dataset (kind ``theory.modular.free_energy_profile``)."""
        import xarray as xr

        from grokphase.io import annotate
        from grokphase.theory.status import Status as St

        status_attrs = {"flag_values": np.array([int(s) for s in St], dtype=np.int32),
                        "flag_meanings": " ".join(s.label for s in St)}
        dims = ("m",)
        data = {
            "F": xr.Variable(dims, self.F, {"long_name": "-log p(m) of the network (log-posterior units, up to a "
                                                          "constant)"}),
            "multiplier": xr.Variable(dims, self.multiplier, {"long_name": "lambda(m) = dF/dm"}),
            "a": xr.Variable(dims, self.a, {"long_name": "discrepancy along the target at the constrained saddle"}),
            "lam": xr.Variable(dims, self.lam, {"long_name": "kernel eigenvalue kappa sa2 <Phi Psi> there"}),
            "droplet_fraction": xr.Variable(dims, self.droplet_fraction),
            "residual": xr.Variable(dims, self.residual),
            "quad_error": xr.Variable(dims, self.quad_error),
            "status": xr.Variable(dims, self.status, status_attrs),
        }
        ds = xr.Dataset(data, coords={"m": ("m", self.m, {"long_name": "target component (f, y)/(y, y)"})})
        p = self.params
        params = {k: float(np.asarray(getattr(p, k))) for k in ("N", "P", "s2", "sa2", "gamma")}
        return annotate(ds, kind="theory.modular.free_energy_profile", parameters={
            **params, "method": self.method, "convention": self.convention,
            "droplets": -1 if self.droplets is None else int(self.droplets), "cut": self.cut},
            extra={"m_star": self.m_star, "a_star": self.a_star, "F_star": self.F_star,
                   "status_star": int(self.status_star), "m_solver": self.m_solver, "m_limit": self.m_limit,
                   "m_superheated": self.m_superheated, "m_supercooled": self.m_supercooled,
                   "Y": self.Y, "c": self.c,
                   "units": "F = -log p(m) + const of the whole network, in units of its log posterior"})


# ------------------------------------------------------------------------------------------------
# the mode integral: log zeta and <Phi Psi>, whole and split into basins (exact method)


def _transverse(A):
    """(I0, I2) = (int e^{-A d^2} dd, int (1/4 - d^2) e^{-A d^2} dd) over d in [-1/2, 1/2], A >= 0:
    I0 = sqrt(pi/A) erf(sqrt(A)/2), int d^2 e^{-A d^2} = (I0 - e^{-A/4})/(2A) (its Taylor series
    1/12 - A/80 + A^2/896 below A = 1e-3, where the closed form cancels)."""
    small = A < 1e-3
    As = jnp.where(small, 1.0, A)
    rA = jnp.sqrt(As)
    I0 = jnp.where(small, 1.0 - A / 12.0 + A * A / 160.0, jnp.sqrt(jnp.pi) / rA * jax.scipy.special.erf(0.5 * rA))
    d2 = jnp.where(small, 1.0 / 12.0 - A / 80.0 + A * A / 896.0, (I0 - jnp.exp(-0.25 * As)) / (2.0 * As))
    return I0, 0.25 * I0 - d2


def _exact_parts(a, u, gamma, P_eff, cut, x, w):
    """(log zeta, log zeta_0, log zeta_d, <PhiPsi>, <PhiPsi>_0, <PhiPsi>_d, droplet mass) of the mode
    integral zeta = int dPhi dPsi e^{-S_k} over [0, inf)^2 (prefactor ``P_eff``), the basins split at
    Phi + Psi = ``cut`` (NaN: at 2 w-^2(a), the exact solver's separatrix; no droplet basin where the
    saddle does not exist).

    In s = Phi + Psi, Phi = s (1/2 + d), the action is exactly quadratic in d at fixed s:
    S_k = P_eff [s/2 - u a^2 s^2 (1/4 - d^2) + (gamma/6) s^3 (1/4 + 3 d^2)] = P_eff Shat(s/2) + A(s) d^2,
    A = P_eff s^2 (u a^2 + gamma s/2) >= 0, and dPhi dPsi = s ds dd.  The d-integrals are closed forms
    (:func:`_transverse`), leaving a 1-D integral in s on composite Gauss-Legendre panels: the exact
    solver's breakpoints (geometric from the origin, a patch around the droplet, mapped to s = 2 Phi)
    plus the basin boundary, so that the split is exact (no node straddles it).  An independent
    quadrature of the same integral as :func:`~grokphase.theory.modular.quadrature.exact_moment`."""
    wm, _, exists = saddles(a, u, gamma)
    own_cut = jnp.isnan(cut)
    c = jnp.where(own_cut, jnp.where(exists, 2.0 * wm, 0.0), cut)
    has_d = jnp.where(own_cut, exists, True)
    bp = 2.0 * _breakpoints(a, u, gamma, P_eff)
    # panels shrinking geometrically towards the boundary from both sides: a basin held beyond its
    # own barrier piles its mass up against the boundary
    near = c * (1.0 + jnp.concatenate([-_CUT_STEPS, _CUT_STEPS]))
    bp = jnp.sort(jnp.concatenate([bp, jnp.clip(jnp.concatenate([jnp.reshape(c, (1,)), near]), 0.0, bp[-1])]))
    s, wt = _nodes(bp, jnp.asarray(x), jnp.asarray(w))
    logw = jnp.log(jnp.maximum(wt, 1e-300)) + jnp.where(wt > 0.0, 0.0, -jnp.inf)
    ua2 = u * a * a
    I0, I2 = _transverse(P_eff * s * s * (ua2 + 0.5 * gamma * s))
    L = -P_eff * reduced_action(0.5 * s, a, u, gamma) + jnp.log(s) + jnp.log(I0) + logw
    ratio = s * s * I2 / I0                                   # <Phi Psi> at fixed s
    beyond = (s >= c) & has_d
    L0 = jnp.where(beyond, -jnp.inf, L)
    Ld = jnp.where(beyond, L, -jnp.inf)
    lz, lz0, lzd = logsumexp(L), logsumexp(L0), logsumexp(Ld)
    safe = lambda v: jnp.where(jnp.isfinite(v), v, 0.0)  # noqa: E731
    mom = jnp.sum(jnp.exp(L - lz) * ratio)
    mom0 = jnp.sum(jnp.exp(L0 - safe(lz0)) * ratio)
    momd = jnp.sum(jnp.exp(Ld - safe(lzd)) * ratio)
    return lz, lz0, lzd, mom, mom0, momd, jnp.exp(lzd - lz)


class _Model(NamedTuple):
    """Scalar quantities of one parameter point (traced)."""

    u: jax.Array
    gamma: jax.Array
    s2: jax.Array
    ksa2: jax.Array     # kappa sa2
    P: jax.Array
    P_eff: jax.Array
    N: jax.Array
    Y: jax.Array
    c: jax.Array


def _model(params: ModularParams, convention: str) -> _Model:
    p = to_float64(params)
    P_eff, kappa = mode_factors(p.P, convention)
    Y = p.P * (p.P - 1.0)
    c = Y * kappa * p.N / (4.0 * P_eff * p.P * p.P)
    return _Model(p.u, p.gamma, p.s2, kappa * p.sa2, p.P, P_eff, p.N, Y, c)


def _log_binom(N, j):
    return gammaln(N + 1.0) - gammaln(j + 1.0) - gammaln(N - j + 1.0)


def _exact_L_and_moment(a, mdl: _Model, droplets, cut, lz_zero, x=_GL_X, w=_GL_W):
    """(L(a), <Phi Psi>(a) of the ensemble, droplet fraction, basin-empty flag) for the exact method;
    ``droplets``: a traced count j, negative for the equilibrium (both are evaluated from the same basin
    integrals and selected, so one executable serves both); ``lz_zero`` = log zeta(0) (whole)."""
    lz, lz0, lzd, mom, mom0, momd, drop = _exact_parts(a, mdl.u, mdl.gamma, mdl.P_eff, cut, x, w)
    eq = droplets < 0
    j = jnp.where(eq, 0.0, droplets)
    f = j / mdl.N
    per = (1.0 - f) * jnp.where(j < mdl.N, lz0, 0.0) + f * jnp.where(j > 0, lzd, 0.0)
    L_j = mdl.c * (per + _log_binom(mdl.N, j) / mdl.N - lz_zero)
    mom_j = (1.0 - f) * jnp.where(j < mdl.N, mom0, 0.0) + f * jnp.where(j > 0, momd, 0.0)
    empty = ~eq & (((j > 0) & ~jnp.isfinite(lzd)) | ((j < mdl.N) & ~jnp.isfinite(lz0)))
    return (jnp.where(eq, mdl.c * (lz - lz_zero), L_j), jnp.where(eq, mom, mom_j), jnp.where(eq, drop, f), empty)


# ------------------------------------------------------------------------------------------------
# the saddle method: lambda(a) of eq. 41-42 (either convention) and L(a) = (Y/s2^2) int_0^a a' lambda da'


def _saddle_L(a, mdl: _Model, convention: str, panels=_SADDLE_PANELS, patch=_SADDLE_PATCH):
    """L(a) for the saddle method, consistent with its lambda(a) to quadrature accuracy.

    The droplet part of lambda is kappa sa2 p w+^4 with p = sigmoid(log 4 - S+), and
    c 2 P_eff u a p w+^4 = c p (-dS+/da) (envelope theorem), so its integral is c log(1 + 4 e^{-S+(a)})
    exactly.  The network convention's origin part kappa sa2 (1 - p)/P^2 leaves
    c (2 P_eff u/P^2) int_0^a a' (1 - p(a')) da', integrated by Gauss-Legendre panels, uniform on
    [a, 0] plus a patch of ``patch`` panels around the sigmoid's centre S+ = log 4 (its width
    1/|dS+/da| there can be 1e-7 at P = 401).  Returns (L, half-panel error estimate)."""
    _, wp, exists = saddles(a, mdl.u, mdl.gamma)
    S_plus = mdl.P_eff * reduced_action(wp, a, mdl.u, mdl.gamma)
    L_drop = mdl.c * jnp.where(exists, jax.nn.softplus(math.log(4.0) - S_plus), 0.0)   # log(1 + 4 e^{-S+})
    if convention == "paper":
        return L_drop, jnp.zeros_like(a)

    def p_of(x):
        _, p = saddle_moment(x, mdl.u, mdl.gamma, mdl.P, convention)
        return p

    # sigmoid centre: S+(a_c) = log 4 on the side of a (S+ decreases as |a| grows where the saddle exists)
    def excess(x):
        _, wpx, ex = saddles(x, mdl.u, mdl.gamma)
        return jnp.where(ex, mdl.P_eff * reduced_action(wpx, x, mdl.u, mdl.gamma) - math.log(4.0), 1.0)

    a_c = bisect(excess, a, jnp.zeros_like(a), iters=80)
    h = 1e-7 * (1.0 + jnp.abs(a_c))
    slope = jnp.abs(excess(a_c + h) - excess(a_c - h)) / (2.0 * h)
    width = jnp.where(jnp.isfinite(slope) & (slope > 0), 1.0 / jnp.maximum(slope, 1e-300), jnp.abs(a))
    width = jnp.minimum(width, jnp.abs(a) / patch + 1e-300)
    uni = a * (1.0 - jnp.linspace(0.0, 1.0, panels + 1))            # a .. 0
    pat = jnp.clip(a_c + width * (jnp.arange(patch + 1) - patch / 2), jnp.minimum(a, 0.0), jnp.maximum(a, 0.0))
    bp = jnp.sort(jnp.concatenate([uni, pat]))

    def integral(x, w):
        nodes, wts = _nodes(bp, jnp.asarray(x), jnp.asarray(w))
        return jnp.sum(wts * nodes * p_of(nodes))          # int_{min}^{max} a' p da'

    sgn = jnp.where(a < 0.0, -1.0, 1.0)                    # int_0^a = -int_a^0 for a < 0
    I8 = sgn * integral(_GL_X, _GL_W)
    I4 = sgn * integral(_GL_X4, _GL_W4)
    k = mdl.c * 2.0 * mdl.P_eff * mdl.u / (mdl.P * mdl.P)
    L = L_drop + k * (0.5 * a * a - I8)
    err = jnp.abs(k * (I8 - I4)) / jnp.maximum(jnp.abs(L), 1e-300)
    return L, err


def _saddle_moment(a, mdl: _Model, convention: str):
    m, p = saddle_moment(a, mdl.u, mdl.gamma, mdl.P, convention)
    return m, p


# ------------------------------------------------------------------------------------------------
# the constrained saddle at one m


def _profile_point(m, star, params: ModularParams, method: str, convention: str, droplets, cut):
    """F and its diagnostics at one target component ``m``, or (``star`` True, ``m`` ignored) at the
    profile's own minimum.  jit/vmap-compatible in every argument but ``method``/``convention``;
    ``droplets``: a count, negative for the equilibrium; ``cut``: NaN for the solver's separatrix.

    One root search serves both kinds of lane (so the function is traced once): on [lo, 0] either
    h(a) = a lambda(a)/s2 + |m| (the constrained saddle; a lambda(a) decreases with |a|) or, for the
    minimum, h(a) = a + s2/(lambda(a) + s2) (eq. 38 with this ensemble's lambda, as
    :func:`~grokphase.theory.modular.finite_p.solve_point`); both increase with a and h(0) > 0.  The
    bracket's lower end is the first of -1, -2, ..., -2^MAX_DOUBLINGS with h <= 0 (h(-1) <= 0 always
    holds for the minimum)."""
    mdl = _model(params, convention)
    exact = method == "exact"
    nan_cut = jnp.float64(jnp.nan)
    if exact:
        lz_zero = _exact_parts(jnp.float64(0.0), mdl.u, mdl.gamma, mdl.P_eff, nan_cut, _GL_X, _GL_W)[0]

    def moment(x):
        if exact:
            _, mom, drop, empty = _exact_L_and_moment(x, mdl, droplets, cut, lz_zero)
            return mom, drop, empty
        mom, drop = _saddle_moment(x, mdl, convention)
        return mom, drop, jnp.bool_(False)

    mm = jnp.where(star, 1.0, jnp.abs(m))

    def h(x):
        lam = mdl.ksa2 * moment(x)[0]
        return jnp.where(star, x + mdl.s2 / (lam + mdl.s2), x * lam / mdl.s2 + mm)

    los = -(2.0 ** jnp.arange(MAX_DOUBLINGS + 1.0))
    hs = jax.vmap(h)(los)
    ok = jnp.isfinite(hs) & (hs <= 0.0)
    first = jnp.argmax(ok)
    bracketed = jnp.any(ok)
    lo, hlo = los[first], jnp.where(bracketed, hs[first], -1.0)
    root, _ = chandrupatla(h, jnp.where(bracketed, lo, -1.0), jnp.float64(0.0), f_lo=hlo, f_hi=mm)
    at = jnp.where(hlo == 0.0, lo, jnp.where(mm == 0.0, 0.0, root))
    # a(-m) = -a(m) (lambda is even in a); the minimum's lane has m = 1 + a
    a = jnp.where(star, at, jnp.where(m < 0.0, -at, at))
    m = jnp.where(star, 1.0 + a, m)
    if exact:
        L, mom, drop, empty = _exact_L_and_moment(a, mdl, droplets, cut, lz_zero)
        lz_zero4 = _exact_parts(jnp.float64(0.0), mdl.u, mdl.gamma, mdl.P_eff, nan_cut, _GL_X4, _GL_W4)[0]
        L4, mom4, _, _ = _exact_L_and_moment(a, mdl, droplets, cut, lz_zero4, _GL_X4, _GL_W4)
        qerr = jnp.maximum(jnp.abs(mom - mom4) / jnp.maximum(jnp.abs(mom), 1e-300),
                           jnp.abs(L - L4) / (mdl.c * (1.0 + jnp.abs(L) / mdl.c)))
    else:
        L, qerr = _saddle_L(a, mdl, convention)
        mom, drop = _saddle_moment(a, mdl, convention)
        empty = jnp.bool_(False)
    lam = mdl.ksa2 * mom
    Y, s2 = mdl.Y, mdl.s2
    F = 0.5 * (Y / s2) * ((m - 1.0) ** 2 - 2.0 * a * m) - L
    mult = (Y / s2) * (m - 1.0 - a)
    residual = jnp.abs(a * lam / s2 + m) / (1.0 + jnp.abs(m))
    finite = jnp.isfinite(F) & jnp.isfinite(a) & jnp.isfinite(lam)
    status = jnp.where(~bracketed | empty, Status.NO_BRANCH,
                       jnp.where(~finite, Status.NONFINITE,
                                 jnp.where(residual > RESIDUAL_TOL, Status.MAX_ITER,
                                           jnp.where(qerr > QUAD_TOL, Status.UNRESOLVED, Status.CONVERGED))))
    return m, F, mult, a, lam, drop, residual, qerr, status.astype(jnp.int32)


@jax.jit(static_argnames=("method", "convention"))
def _profile_batch(m, params, droplets, cut, method: str, convention: str):
    """The grid ``m`` and, in the last lane, the profile's minimum: one vmapped trace for both."""
    lanes = jnp.concatenate([m, jnp.zeros(1)])
    star = jnp.arange(lanes.size) == m.size
    out = jax.vmap(lambda mi, si: _profile_point(mi, si, params, method, convention, droplets, cut))(lanes, star)
    return tuple(x[:-1] for x in out), tuple(x[-1] for x in out)


def _scalar(params: ModularParams) -> ModularParams:
    p = params.broadcast()
    if p.shape != ():
        raise ParameterError(f"free_energy_profile takes one parameter point (got fields of shape {p.shape}); "
                             "loop or vmap over points")
    return p


def free_energy_profile(params: ModularParams, m, *, method: str = "exact", convention: str = "network",
                        droplets: int | None = None, cut: float | None = None) -> ModularProfile:
    """F(m) = -log p(m) + const of the network on the grid ``m`` of target components (module docstring).

    ``params``: one point (scalar fields).  ``method``: ``"exact"`` (2-D quadrature, default) or
    ``"saddle"`` (eq. 41-42, cheap at large P); ``convention``: ``"network"`` (default: the log posterior
    of the network the simulations run) or ``"paper"``.  ``droplets``: None for the equilibrium profile,
    or a frozen number j (0 <= j <= N) of droplet neurons per mode pair (exact method only), the basins
    split at Phi + Psi = ``cut`` (default: 2 w-^2 at a = -1, the barrier saddle of a disordered network;
    a frozen count needs it, so below u = sqrt(gamma) pass ``cut`` yourself).  Never raises on values:
    check ``status``; the reference fields (``m_star``, ``m_solver``, the limit branches) are computed
    alongside."""
    _check_method(method)
    check_convention(convention)
    p = _scalar(params)
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    if m.ndim != 1 or not np.all(np.isfinite(m)):
        raise ParameterError("m must be a finite 1-D grid of target components")
    frozen = droplets is not None
    if frozen:
        if method != "exact":
            raise ParameterError("frozen droplet counts need method='exact' (the basins are regions of the "
                                 "2-D quadrature)")
        j = float(droplets)
        if j != int(j) or not (0 <= j <= float(p.N)):
            raise ParameterError(f"droplets must be an integer in [0, N = {float(p.N):g}] (got {droplets!r})")
    else:
        j = -1.0
    if cut is None:
        if frozen:
            wm, _, exists = saddles(-1.0, float(p.u), float(p.gamma))
            if not bool(exists):
                raise ParameterError("no droplet saddle at a = -1 (u < sqrt(gamma)): pass cut = the Phi + Psi "
                                     "separating the basins")
            cut = 2.0 * float(wm)
        else:
            cut = float("nan")
    elif not (np.isfinite(cut) and cut > 0):
        raise ParameterError(f"cut must be a positive number (got {cut!r})")
    # m padded to a bucket size (repeating its last value): grids of different lengths share one executable
    mp = np.concatenate([m, np.repeat(m[-1:], max(MIN_BUCKET, bucket_size(m.size)) - m.size)])
    out, star = _profile_batch(jnp.asarray(mp), p, jnp.float64(j), jnp.float64(cut), method, convention)
    _, F, mult, a, lam, drop, res, qerr, status = (np.asarray(x)[:m.size] for x in out)
    m_star = float(np.asarray(star[0]))
    if frozen:
        m_solver = float("nan")
    else:
        sol = solve(p, method, convention=convention, check=False)
        m_solver = float(np.asarray(sol.target_component)) if int(sol.status) == Status.CONVERGED else float("nan")
    lim = solve_limit(p, convention)
    mdl = _model(p, convention)
    return ModularProfile(
        m=m, F=F, multiplier=mult, a=a, lam=lam, droplet_fraction=drop, residual=res, quad_error=qerr,
        status=status, m_star=m_star, a_star=float(np.asarray(star[3])), F_star=float(np.asarray(star[1])),
        status_star=int(np.asarray(star[8])), m_solver=m_solver,
        m_limit=float(np.asarray(lim.target_component)), m_superheated=float(1.0 + np.asarray(lim.a_superheated)),
        m_supercooled=float(1.0 + np.asarray(lim.a_supercooled)), Y=float(mdl.Y), c=float(mdl.c),
        params=p, method=method, convention=convention, droplets=None if not frozen else int(j),
        cut=float(cut))
