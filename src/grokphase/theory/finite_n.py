r"""Finite-n mean-field theory of the teacher-student model on an actual training set (issue 22).

The N -> infinity (mean-field) theory of THEORY.md §2 without the equivalent-kernel (EK) step: the
sum over the n training points stays a sum.  With the discrepancy t = y - fbar on the training points
(``t = s2 tau``) the hidden neurons are i.i.d. with

    p(w) ∝ prior(w) exp( (sa2 / (2 N s2^2)) (t · phi(X w))^2 ),   prior: w ~ N(0, (sw2/d) I),
    t = s2 (s2 I + K)^{-1} y,   K_{mu nu} = sa2 <phi(w·x_mu) phi(w·x_nu)>_p          (eqs. 7-10),

phi = erf.  K carries no factor N: the readout sum has N terms of prior variance sa2/N each, so the
GP kernel of f is N (sa2/N) <phi phi> = sa2 <phi phi>.  In the EK limit (sum_mu -> n E_x, t(x) =
b H1 + c H3) the exponent becomes (sa2 n^2/(2 N s2^2)) (v·g)^2 = (u d/2)(v·g)^2 with v = [b, sqrt(6) c],
exactly the exact (q, t) action of THEORY.md §3b, so n -> infinity at fixed u = n^2 sa2/(s2^2 d N) and
r = s2 N/n reduces this theory to :func:`grokphase.theory.teacher_student.solve_finite_d`.

**Sampler.**  p(w) is bimodal in the GMFL-I phase (bulk at q = w·w* ≈ 0, droplets at ±q*), with a
barrier that a local sampler does not cross, so the overlap q is not sampled: write
w = q w* + sqrt(sw2/d) z with z ⊥ w* (a (d-1)-vector), put q on a grid q_0 = 0 < ... < q_max, and
sample z | q by a vmapped MALA (``walkers`` chains per grid point; the conditional law of z is
unimodal at these sizes).  The q-marginal comes from thermodynamic integration,

    log p(q) = -d q^2/(2 sw2) + F(q) + const,   F(q) = log E_{z ~ N(0, I)} exp((A/2) m^2),
    dF/dq = A < m dm/dq >_{z | q},   m = tau · phi(q s + c X_perp z),   A = sa2/N,  c = sqrt(sw2/d),

integrated by the trapezoid rule from q = 0 (phi is odd, so p(q) = p(-q) and q >= 0 suffices).  Every
average over p is then sum_j omega_j < . >_{z | q_j} with omega_j the normalised trapezoid weights of
p(q_j).  The self-consistency is a damped fixed point on tau (equivalently a preconditioned ascent on
the concave free energy G(tau) of THEORY.md §2), started from the exact EK solution; the chains
continue across iterations.  Then tau is frozen at its average over the last iterations and a
production run gives the observables by batch means.

**Observables** are those of the simulations (``sims.teacher_student``'s exact population projections):
the mean predictor is fbar(x) = sa2 <phi(w·x) m(w)>_p, so <fbar, Hhat_k> = sa2 <g_k(q, |w|^2) m(w)>_p
with the closed-form erf overlaps g1 = 2q/sqrt(pi D), g3 = -4q^3/(sqrt(6 pi) D^{3/2}), D = 1 + 2|w|^2;
linear learned = <fbar, Hhat1>, cubic learned = <fbar, Hhat3>/(sqrt(6) eps).

**Data** are drawn exactly as the simulations draw them (:func:`draw_dataset` reimplements the sims'
``make_data`` in the theory layer: same key splits, float32 normals, then float64), with the data-set
keys of :func:`dataset_key` (the sims' ``member_keys``), so the theory sees the simulated training sets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.theory.teacher_student import TeacherStudentParams, solve_finite_d

SQRT6 = math.sqrt(6.0)
#: |grad G|/|y| above which a solution is reported as not converged: the Monte-Carlo noise of the
#: gradient at the frozen tau is 0.03-0.08 at beta = 1/8; a run caught in the runaway state (every
#: neuron a droplet, learned fractions >> 1) reads ~10
RESIDUAL_OK = 0.2
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


# ----------------------------------------------------------------------------------------------- data
def dataset_key(seed: int, dataset: int) -> jax.Array:
    """The simulations' data key of data set ``dataset``: fold_in(fold_in(PRNGKey(seed), 0), dataset)
    (``grokphase.sims.teacher_student.run.member_keys``)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(int(seed)), 0), int(dataset))


def draw_dataset(key, n: int, d: int, eps: float, dtype=jnp.float32):
    """(x (n, d), y (n,), w_star (d,)) in float64, drawn as the simulations' ``make_data`` draws them:
    split the key in three, w* ~ N(0, I_d) normalised, x ~ N(0, I) (n, d), in ``dtype`` (the sims'
    default float32), y = H1(w*·x) + eps H3(w*·x) evaluated in ``dtype``."""
    k_w, k_x, _ = jax.random.split(key, 3)
    w_star = jax.random.normal(k_w, (d,), dtype)
    w_star = w_star / jnp.linalg.norm(w_star)
    x = jax.random.normal(k_x, (n, d), dtype)
    s = x @ w_star
    y = s + jnp.asarray(eps, dtype) * (s**3 - 3.0 * s)
    return x.astype(jnp.float64), y.astype(jnp.float64), w_star.astype(jnp.float64)


def split_teacher(x, w_star):
    """(s = X w* (n,), X_perp (n, d-1)): the inputs in an orthonormal basis [w*, e_2, ..., e_d] (a
    Householder reflection that maps w* to e_1; w* is renormalised in float64 first)."""
    x = jnp.asarray(x, jnp.float64)
    w_star = jnp.asarray(w_star, jnp.float64)
    w_star = w_star / jnp.linalg.norm(w_star)        # a float32-normalised w* is unit only to ~1e-7
    d = w_star.shape[0]
    e1 = jnp.zeros(d).at[0].set(1.0)
    v = w_star - e1
    nv = jnp.linalg.norm(v)
    v = jnp.where(nv > 1e-12, v / jnp.where(nv > 1e-12, nv, 1.0), jnp.zeros(d))
    H = jnp.eye(d) - 2.0 * jnp.outer(v, v)          # H w* = e1, H symmetric orthogonal
    xr = x @ H                                        # coordinates in the basis of H's columns
    return xr[:, 0], xr[:, 1:]


# ----------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class FiniteNConfig:
    """Numerical settings of :func:`solve_finite_n` (static sizes; no physics here).

    Attributes:
      q_size: grid points q_j on [0, q_max] (uniform).
      q_max: end of the q grid (p(q) must be negligible beyond it: checked, see ``tail``).
      walkers: MALA chains per grid point.
      iterations: fixed-point iterations on tau (burn-in); tau is frozen at its mean over the last half.
      steps: MALA steps per iteration.
      damping: eta of the damped Newton step tau <- tau + eta H^{-1} grad G.
      trust: the step is shortened to at most ``trust`` |tau| (a trust region).
      stride: the n x n moments of the Newton step are sampled every ``stride``-th MALA step (they cost
        n^2 per walker, the step n d).
      blocks, block_steps: production batch means (tau frozen).
      step_size: initial MALA step h (in prior-standardised units), adapted per grid point during
        burn-in toward acceptance ``target_accept``.
    """

    q_size: int = 32
    q_max: float = 1.4
    walkers: int = 32
    iterations: int = 30
    steps: int = 20
    damping: float = 0.5
    blocks: int = 4
    block_steps: int = 150
    step_size: float = 0.5
    target_accept: float = 0.6
    trust: float = 0.1
    stride: int = 4

    def __post_init__(self):
        for name in ("q_size", "walkers", "iterations", "steps", "blocks", "block_steps", "stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ParameterError(f"{name} must be a positive integer, got {v!r}")
        if self.q_size < 3:
            raise ParameterError(f"q_size must be >= 3 (trapezoid thermodynamic integration), got {self.q_size}")
        if self.blocks < 2:
            raise ParameterError(f"blocks must be >= 2 (batch-means error), got {self.blocks}")
        if not (math.isfinite(self.q_max) and self.q_max > 0):
            raise ParameterError(f"q_max must be a finite number > 0, got {self.q_max!r}")
        if not (0.0 < self.trust and math.isfinite(self.trust)):
            raise ParameterError(f"trust must be a finite number > 0, got {self.trust!r}")
        if not (0.0 < self.damping <= 1.0):
            raise ParameterError(f"damping must be in (0, 1], got {self.damping!r}")
        if not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ParameterError(f"step_size must be a finite number > 0, got {self.step_size!r}")
        if not (0.0 < self.target_accept < 1.0):
            raise ParameterError(f"target_accept must be in (0, 1), got {self.target_accept!r}")


class Problem(NamedTuple):
    """One data set in the teacher's basis and the model's numbers (float64 leaves)."""

    s: jax.Array        # (n,) w*·x_mu
    xp: jax.Array       # (n, d-1) perpendicular coordinates
    y: jax.Array        # (n,) targets
    A: jax.Array        # sa2 / N
    c: jax.Array        # sqrt(sw2 / d)
    d: jax.Array        # input dimension (float)
    sw2: jax.Array


class Walkers(NamedTuple):
    z: jax.Array        # (Q, M, d-1) standardised perpendicular weights
    h: jax.Array        # (Q,) MALA step per grid point


class Averages(NamedTuple):
    """Per-grid-point chain averages over a run of MALA steps (not carried between runs)."""

    dF: jax.Array       # (Q,) <A m dm/dq>
    g1m: jax.Array      # (Q,) <g1 m>
    g3m: jax.Array      # (Q,) <g3 m>
    accept: jax.Array   # (Q,) acceptance rate
    t_perp: jax.Array   # (Q,) <|w_perp|^2>


# ------------------------------------------------------------------------------------- single-neuron law
def neuron_terms(z, q, tau, prob: Problem):
    """For walkers z (..., d-1) at overlap q (broadcast to z.shape[:-1]): (log pi(z | q) up to the q-only
    prior term, grad_z log pi, m, dm/dq, phi (..., n)).  log pi = -|z|^2/2 + (A/2) m^2,
    m = tau·erf(q s + c X_perp z) (closed form; a test checks it against jax.grad)."""
    H = q[..., None] * prob.s + prob.c * (z @ prob.xp.T)
    phi = jax.scipy.special.erf(H)
    dphi = TWO_OVER_SQRT_PI * jnp.exp(-H * H)
    m = phi @ tau
    G = dphi * tau
    logp = -0.5 * jnp.sum(z * z, axis=-1) + 0.5 * prob.A * m * m
    grad = -z + (prob.A * prob.c * m)[..., None] * (G @ prob.xp)
    dm_dq = G @ prob.s
    return logp, grad, m, dm_dq, phi


def log_conditional(z, q, tau, prob: Problem):
    """log pi(z | q) = -|z|^2/2 + (A/2)(tau·erf(q s + c X_perp z))^2 (one walker; for autodiff tests)."""
    return neuron_terms(z[None], jnp.asarray(q)[None], tau, prob)[0][0]


def mala_step(key, z, h, q, tau, prob: Problem):
    """One Metropolis-adjusted Langevin step of every walker z (Q, M, d-1), per-grid-point step h (Q,).
    Returns (z_new, accepted (Q, M), terms at z_new)."""
    k1, k2 = jax.random.split(key)
    qb = jnp.broadcast_to(q[:, None], z.shape[:-1])
    hb = h[:, None, None]
    logp, grad, *_ = neuron_terms(z, qb, tau, prob)
    prop = z + 0.5 * hb**2 * grad + hb * jax.random.normal(k1, z.shape)
    logp2, grad2, *_ = neuron_terms(prop, qb, tau, prob)
    fwd = -jnp.sum((prop - z - 0.5 * hb**2 * grad) ** 2, -1) / (2.0 * h[:, None] ** 2)
    bwd = -jnp.sum((z - prop - 0.5 * hb**2 * grad2) ** 2, -1) / (2.0 * h[:, None] ** 2)
    log_a = logp2 - logp + bwd - fwd
    acc = jnp.log(jax.random.uniform(k2, log_a.shape)) < log_a
    return jnp.where(acc[..., None], prop, z), acc


def _overlaps(q, tp):
    """The erf overlaps with the target's Hermite directions, g1 = <erf(w·x), Hhat1(w*·x)> = 2q/sqrt(pi D)
    and g3 = <erf(w·x), Hhat3(w*·x)> = -4q^3/(sqrt(6 pi) D^{3/2}), D = 1 + 2(q^2 + |w_perp|^2)."""
    D = 1.0 + 2.0 * (q * q + tp)
    return 2.0 * q / jnp.sqrt(jnp.pi * D), -4.0 * q**3 / (math.sqrt(6.0 * math.pi) * D**1.5)


def _observe(z, q, tau, prob: Problem):
    """Per-walker observables at (z, q): dF/dq integrand, g1 m, g3 m, |w_perp|^2, phi."""
    qb = jnp.broadcast_to(q[:, None], z.shape[:-1])
    _, _, m, dm_dq, phi = neuron_terms(z, qb, tau, prob)
    tp = prob.c**2 * jnp.sum(z * z, axis=-1)
    g1, g3 = _overlaps(qb, tp)
    return prob.A * m * dm_dq, g1 * m, g3 * m, tp, phi


def run_chains(key, walkers: Walkers, q, tau, prob: Problem, steps: int, omega=None, stride: int = 4):
    """``steps`` MALA steps at fixed tau; returns (walkers, Averages, moments).  With ``omega`` (Q,)
    (weights of p(q_j), summing to 1) ``moments`` are the mixture moments over p, sampled every
    ``stride``-th step: (P1 = <phi phi^T>, P2 = <m^2 phi phi^T>, mu = <m phi>) (else None)."""
    Q, M, _ = walkers.z.shape
    n = prob.s.shape[0]

    def moments(phi):
        m = phi @ tau
        wphi = (phi * jnp.sqrt(omega / M)[:, None, None]).reshape(Q * M, n)
        mphi = wphi * m.reshape(Q * M, 1)
        return wphi.T @ wphi, mphi.T @ mphi, jnp.einsum("j,jmn->n", omega / M, phi * m[..., None])

    def body(carry, i):
        z, sums, mom = carry
        z, acc = mala_step(jax.random.fold_in(key, i), z, walkers.h, q, tau, prob)
        dF, g1m, g3m, tp, phi = _observe(z, q, tau, prob)
        new = (dF.mean(1), g1m.mean(1), g3m.mean(1), acc.mean(1).astype(jnp.float64), tp.mean(1))
        sums = tuple(a + b for a, b in zip(sums, new))
        if omega is not None:
            mom = jax.lax.cond(i % stride == 0, lambda m0: tuple(a + b for a, b in zip(m0, moments(phi))),
                               lambda m0: m0, mom)
        return (z, sums, mom), None

    zeros = tuple(jnp.zeros(Q) for _ in range(5))
    mom0 = (jnp.zeros((n, n)), jnp.zeros((n, n)), jnp.zeros(n)) if omega is not None else ()
    (z, sums, mom), _ = jax.lax.scan(body, (walkers.z, zeros, mom0), jnp.arange(steps))
    avg = Averages(*(s / steps for s in sums))
    count = (steps + stride - 1) // stride
    return Walkers(z, walkers.h), avg, (tuple(m / count for m in mom) if omega is not None else None)


def newton_direction(tau, moments, prob: Problem, s2, sa2):
    """(Newton step on the concave G(tau), relative gradient norm).  grad G = y - s2 tau - sa2 <m phi>
    (= y - (s2 + K) tau), -hess G = s2 I + sa2 <phi phi^T> + sa2 A Cov_p(m phi) (THEORY.md §2: the
    Hessian of N log z is K + sa2 A Cov(m phi)); the fixed point t = s2 (s2 + K)^{-1} y is grad G = 0."""
    P1, P2, mu = moments
    g = prob.y - s2 * tau - sa2 * mu
    Hn = saddle_hessian(P1, P2, mu, s2, sa2, prob.A)
    return jnp.linalg.solve(Hn, g), float(jnp.linalg.norm(g) / jnp.linalg.norm(prob.y))


_run_chains = jax.jit(run_chains, static_argnames=("steps", "stride"))


def q_weights(q, dF, d, sw2):
    """(log p(q_j) up to a constant, omega_j): thermodynamic integration of dF/dq by the cumulative
    trapezoid rule from q_0 = 0, the prior term -d q^2/(2 sw2), and omega_j = the normalised trapezoid
    weights of p on the grid (p symmetric in q, so the half line carries the whole mass)."""
    q = np.asarray(q, np.float64)
    dF = np.asarray(dF, np.float64)
    dq = np.diff(q)
    F = np.concatenate([[0.0], np.cumsum(0.5 * dq * (dF[1:] + dF[:-1]))])
    logp = F - d * q**2 / (2.0 * sw2)
    trap = np.empty_like(q)
    trap[0], trap[-1] = dq[0] / 2, dq[-1] / 2
    trap[1:-1] = 0.5 * (dq[1:] + dq[:-1])
    lw = logp + np.log(trap)
    w = np.exp(lw - lw.max())
    return logp, w / w.sum()


# ------------------------------------------------------------------------- one-loop (1/N) correction
class LoopSums(NamedTuple):
    """Averages over p at the saddle tau that the one-loop correction contracts, with C = H^{-1}, the
    means mu = E[m phi] and E[g_k m] held fixed: dZ = m phi - mu, a1 = phi·C dZ, a2 = phi·C phi,
    a3 = dZ·C dZ (per neuron), g_k the overlaps of the observables L_k = sa2 E[g_k m]."""

    phi_a1: jax.Array   # (n,) E[phi a1]
    dZ_a2: jax.Array    # (n,) E[dZ a2]
    dZ_a3: jax.Array    # (n,) E[dZ a3]
    g_phi: jax.Array    # (K, n) E[g_k phi]
    gm_dZ: jax.Array    # (K, n) E[g_k m dZ]
    g_a1: jax.Array     # (K,) E[g_k a1]
    dgm_a2: jax.Array   # (K,) E[(g_k m - E[g_k m]) a2]
    dgm_a3: jax.Array   # (K,) E[(g_k m - E[g_k m]) a3]


def loop_sums(phi, g, weights, tau, C, mu, gm_mean) -> LoopSums:
    """The weighted sums of :class:`LoopSums` over neurons ``phi`` (S, n) = phi(X w_s) with overlaps ``g``
    (K, S) and weights (S,) (averages when the weights sum to 1)."""
    m = phi @ tau
    dZ = phi * m[:, None] - mu
    v = dZ @ C
    a1 = jnp.sum(phi * v, axis=1)
    a2 = jnp.sum(phi * (phi @ C), axis=1)
    a3 = jnp.sum(dZ * v, axis=1)
    gw = g * weights
    dgm = (g * m - gm_mean[:, None]) * weights
    return LoopSums((weights * a1) @ phi, (weights * a2) @ dZ, (weights * a3) @ dZ, gw @ phi, (gw * m) @ dZ,
                    gw @ a1, dgm @ a2, dgm @ a3)


def one_loop_correction(sums: LoopSums, C, A, sa2):
    r"""The one-loop (first order in 1/N) shift of the observables L_k = sa2 E_p[g_k m] and of tau.

    The saddle over tau of THEORY.md §2 is the N -> infinity limit of the exact integral
    Z = int dtau exp(-G(tau)) (along tau* + i eta; G(tau) = tau·y - s2|tau|^2/2 - N log z(tau)), whose
    exponent is Gaussian up to terms of order 1/N (every derivative of N log z beyond the second carries a
    factor A = sa2/N).  To the first non-Gaussian order, with C = H^{-1}, H = -grad^2 G and G3 the third
    derivative of G:

        <tau> = tau* - C G3[C] / 2,    <L> = L* - grad L · C G3[C] / 2 - tr(grad^2 L C) / 2,

        G3[C]_a = -sa2 (A (2 E[phi_a a1] + E[dZ_a a2]) + A^2 E[dZ_a a3]),
        grad L = sa2 (E[g phi] + A E[g m dZ]),
        tr(grad^2 L C) = sa2 (2A E[g a1] + A E[(gm - E gm) a2] + A^2 E[(gm - E gm) a3])

    (the third cumulants of the neuron action: :class:`LoopSums`).  Returns (delta L (K,), delta tau (n,));
    the mean training discrepancy shifts by s2 delta tau.  Tested against the exact contour integral at
    n = 2 (tests/test_finite_n_loop.py), where the remainder falls like 1/N^2."""
    G3C = -sa2 * (A * (2.0 * sums.phi_a1 + sums.dZ_a2) + A**2 * sums.dZ_a3)
    dtau = -0.5 * C @ G3C
    grad = sa2 * (sums.g_phi + A * sums.gm_dZ)
    tr = sa2 * (2.0 * A * sums.g_a1 + A * sums.dgm_a2 + A**2 * sums.dgm_a3)
    return grad @ dtau - 0.5 * tr, dtau


def saddle_hessian(P1, P2, mu, s2, sa2, A):
    """H = -grad^2 G = s2 I + sa2 E[phi phi^T] + sa2 A Cov(m phi) from the mixture moments (P1, P2, mu)."""
    n = mu.shape[0]
    return s2 * jnp.eye(n) + sa2 * P1 + sa2 * A * (P2 - jnp.outer(mu, mu))


def one_loop(phi, g, weights, tau, s2, sa2, A):
    """The mean-field observables and their one-loop correction from weighted neuron samples of p at the
    saddle tau: ``phi`` (S, n) = phi(X w_s), ``g`` (K, S) overlaps, ``weights`` (S,) (normalised here).
    Returns (L (K,) = sa2 E[g_k m], delta L (K,), delta tau (n,)) (:func:`one_loop_correction`)."""
    weights = weights / jnp.sum(weights)
    m = phi @ tau
    wphi = phi * jnp.sqrt(weights)[:, None]
    mu = weights @ (phi * m[:, None])
    H = saddle_hessian(wphi.T @ wphi, (wphi * m[:, None]).T @ (wphi * m[:, None]), mu, s2, sa2, A)
    C = jnp.linalg.inv(H)
    C = 0.5 * (C + C.T)
    gm_mean = (g * m) @ weights
    dL, dtau = one_loop_correction(loop_sums(phi, g, weights, tau, C, mu, gm_mean), C, A, sa2)
    return sa2 * gm_mean, dL, dtau


def run_loop_chains(key, walkers: Walkers, q, tau, prob: Problem, steps: int, omega, C, mu, gm_mean, stride: int = 4):
    """``steps`` MALA steps at the frozen tau accumulating :class:`LoopSums` (observables g1, g3) over the
    mixture p = sum_j omega_j p(z | q_j) every ``stride``-th step.  Returns (walkers, averaged LoopSums)."""
    Q, M, _ = walkers.z.shape
    n = prob.s.shape[0]
    wt = jnp.broadcast_to((omega / M)[:, None], (Q, M)).reshape(Q * M)

    def sums_at(z):
        qb = jnp.broadcast_to(q[:, None], z.shape[:-1])
        phi = neuron_terms(z, qb, tau, prob)[4].reshape(Q * M, n)
        g = jnp.stack(_overlaps(qb, prob.c**2 * jnp.sum(z * z, axis=-1))).reshape(2, Q * M)
        return loop_sums(phi, g, wt, tau, C, mu, gm_mean)

    def body(carry, i):
        z, acc = carry
        z, _ = mala_step(jax.random.fold_in(key, i), z, walkers.h, q, tau, prob)
        acc = jax.lax.cond(i % stride == 0, lambda a: jax.tree_util.tree_map(jnp.add, a, sums_at(z)),
                           lambda a: a, acc)
        return (z, acc), None

    zero = LoopSums(jnp.zeros(n), jnp.zeros(n), jnp.zeros(n), jnp.zeros((2, n)), jnp.zeros((2, n)), jnp.zeros(2),
                    jnp.zeros(2), jnp.zeros(2))
    (z, acc), _ = jax.lax.scan(body, (walkers.z, zero), jnp.arange(steps))
    count = (steps + stride - 1) // stride
    return Walkers(z, walkers.h), jax.tree_util.tree_map(lambda a: a / count, acc)


_run_loop_chains = jax.jit(run_loop_chains, static_argnames=("steps", "stride"))


# ----------------------------------------------------------------------------------------------- solver
class FiniteNSolution(NamedTuple):
    """One data set at one parameter point.  ``*_sem``: batch-means standard errors of the production
    run (tau frozen); ``residual``: |tau_new - tau|/|tau| at the frozen tau (MC noise included)."""

    linear_learned: float
    linear_learned_sem: float
    cubic_learned: float
    cubic_learned_sem: float
    droplet_mass: float        # mass of p(q) beyond |q| > q_barrier (0.4 if p has no barrier on the grid)
    tail: float                # mass of p(q) in the last 10 % of the grid (must be small)
    residual: float            # |grad G|/|y| at the frozen tau (MC noise included)
    accept: float              # mean MALA acceptance in production
    converged: bool            # residual < RESIDUAL_OK
    q: np.ndarray
    log_p: np.ndarray
    tau: np.ndarray
    history: np.ndarray        # (iterations, 3): linear, cubic learned, |grad G|/|y| per burn-in iteration
    # the one-loop (1/N) corrections (solve_finite_n(one_loop=True); NaN otherwise): the finite-N
    # prediction is linear_learned + linear_one_loop, with their batch-means errors
    linear_one_loop: float = math.nan
    linear_one_loop_sem: float = math.nan
    cubic_one_loop: float = math.nan
    cubic_one_loop_sem: float = math.nan


def check_params(params: TeacherStudentParams) -> TeacherStudentParams:
    """A single parameter point with integer sizes n, d >= 2 (the data are an actual training set)."""
    if params.shape != ():
        raise ParameterError(f"solve_finite_n takes one parameter point, got fields of shape {params.shape}")
    for name in ("n", "d"):
        v = float(getattr(params, name))
        if v != int(v) or v < 2:
            raise ParameterError(f"{name} must be an integer >= 2 for a training set, got {v!r}")
    if float(params.eps) == 0.0:
        raise ParameterError("eps must be nonzero (the cubic learned fraction divides by it)")
    return params


def make_problem(params: TeacherStudentParams, x, y, w_star) -> Problem:
    """The data set in the teacher's basis with the model's constants."""
    n, d = int(params.n), int(params.d)
    x = jnp.asarray(x, jnp.float64)
    if x.shape != (n, d) or jnp.shape(y) != (n,) or jnp.shape(w_star) != (d,):
        raise ParameterError(f"data shapes must be x (n, d) = ({n}, {d}), y ({n},), w_star ({d},); got "
                             f"{tuple(x.shape)}, {tuple(jnp.shape(y))}, {tuple(jnp.shape(w_star))}")
    s, xp = split_teacher(x, w_star)
    f = lambda v: jnp.asarray(float(v), jnp.float64)  # noqa: E731
    return Problem(s, xp, jnp.asarray(y, jnp.float64), f(params.sa2 / params.N),
                   f(math.sqrt(float(params.sw2) / d)), f(d), f(params.sw2))


def ek_tau(params: TeacherStudentParams, s):
    """The start tau = t/s2 from the exact EK theory: t(x) = b H1(s) + c H3(s)."""
    sol = solve_finite_d(params)
    b, c = float(np.asarray(sol.b)), float(np.asarray(sol.c))
    return (b * s + c * (s**3 - 3.0 * s)) / float(params.s2)


def _learned(avg: Averages, omega, params):
    sa2, eps = float(params.sa2), float(params.eps)
    lin = sa2 * float(np.sum(omega * np.asarray(avg.g1m)))
    cub = sa2 * float(np.sum(omega * np.asarray(avg.g3m))) / (SQRT6 * eps)
    return lin, cub


def solve_finite_n(params: TeacherStudentParams, x, y, w_star, key, config: FiniteNConfig = FiniteNConfig(),
                   tau0=None, verbose: bool = False, one_loop: bool = False) -> FiniteNSolution:
    """Solve the finite-n mean-field theory (module docstring) on one training set (x, y, w_star).

    ``params``: one point (N, n, d, s2, sa2, sw2, eps; n, d must match the data).  ``key``: the
    sampler's key (chains keyed by fold_in(key, iteration)).  ``tau0``: start (default: the exact EK
    solution on these data).  ``one_loop``: also the first finite-width (1/N) correction of the learned
    fractions (:func:`one_loop_correction`), measured by ``blocks`` further blocks of ``block_steps`` at the
    frozen tau with C = H^{-1} from the last production block (batch means); the mean-field numbers are
    unchanged by it (the extra chains are keyed by fold_in(production key, 10^6 + block))."""
    params = check_params(params)
    prob = make_problem(params, x, y, w_star)
    cfg = config
    Q, M, d = cfg.q_size, cfg.walkers, int(params.d)
    s2, sa2 = float(params.s2), float(params.sa2)
    q = jnp.linspace(0.0, cfg.q_max, Q)
    tau = jnp.asarray(ek_tau(params, prob.s) if tau0 is None else tau0, jnp.float64)
    k_init, k_burn, k_prod = jax.random.split(key, 3)
    walkers = Walkers(jax.random.normal(k_init, (Q, M, d - 1)), jnp.full((Q,), cfg.step_size))
    # a first run to equilibrate the chains at the start tau and get weights
    walkers, avg, _ = _run_chains(jax.random.fold_in(k_burn, 10**6), walkers, q, tau, prob, cfg.steps)
    _, omega = q_weights(q, avg.dF, d, float(params.sw2))
    taus, history = [], []
    for it in range(cfg.iterations):
        walkers, avg, mom = _run_chains(jax.random.fold_in(k_burn, it), walkers, q, tau, prob, cfg.steps,
                                        omega=jnp.asarray(omega), stride=cfg.stride)
        # adapt the step per grid point toward the target acceptance (burn-in only)
        h = walkers.h * jnp.exp(0.7 * (avg.accept - cfg.target_accept))
        walkers = Walkers(walkers.z, h)
        _, omega = q_weights(q, avg.dF, d, float(params.sw2))
        step, res = newton_direction(tau, mom, prob, s2, sa2)
        # trust region: the MC Hessian at tau misses droplets that switch on further along the step
        step = cfg.damping * step
        scale = jnp.minimum(1.0, cfg.trust * jnp.linalg.norm(tau) / jnp.linalg.norm(step))
        tau = tau + scale * step
        if it >= cfg.iterations // 2:
            taus.append(tau)
        history.append(_learned(avg, omega, params) + (res,))
        if verbose:
            print(f"  it {it:3d} lin {history[-1][0]:.4f} cub {history[-1][1]:.4f} grad {res:.3g} "
                  f"acc {float(avg.accept.min()):.2f}-{float(avg.accept.max()):.2f}", flush=True)
    tau = jnp.mean(jnp.stack(taus), axis=0)
    # production: tau frozen, batch means over blocks; the last block also measures the residual
    lins, cubs, masses, tails, accs, logps = [], [], [], [], [], []
    for b in range(cfg.blocks):
        last = b == cfg.blocks - 1
        walkers, avg, mom = _run_chains(jax.random.fold_in(k_prod, b), walkers, q, tau, prob, cfg.block_steps,
                                        omega=jnp.asarray(omega) if last else None, stride=cfg.stride)
        logp, omega = q_weights(q, avg.dF, d, float(params.sw2))
        lin, cub = _learned(avg, omega, params)
        lins.append(lin)
        cubs.append(cub)
        logps.append(logp)
        accs.append(float(avg.accept.mean()))
        tails.append(float(omega[q >= 0.9 * cfg.q_max].sum()))
        masses.append(_droplet_mass(np.asarray(q), logp, omega))
        if last:
            _, residual = newton_direction(tau, mom, prob, s2, sa2)
    B = cfg.blocks
    se = lambda v: float(np.std(v, ddof=1) / math.sqrt(B))  # noqa: E731
    loop = ()
    if one_loop:
        P1, P2, mu = mom
        C = jnp.linalg.inv(saddle_hessian(P1, P2, mu, s2, sa2, prob.A))
        C = 0.5 * (C + C.T)
        om = jnp.asarray(omega)
        gm_mean = jnp.stack([om @ avg.g1m, om @ avg.g3m])
        d_lin, d_cub = [], []
        for b in range(cfg.blocks):
            walkers, sums = _run_loop_chains(jax.random.fold_in(k_prod, 10**6 + b), walkers, q, tau, prob,
                                             cfg.block_steps, om, C, mu, gm_mean, stride=cfg.stride)
            dL, _ = one_loop_correction(sums, C, prob.A, sa2)
            d_lin.append(float(dL[0]))
            d_cub.append(float(dL[1]) / (SQRT6 * float(params.eps)))
        loop = (float(np.mean(d_lin)), se(d_lin), float(np.mean(d_cub)), se(d_cub))
    return FiniteNSolution(float(np.mean(lins)), se(lins), float(np.mean(cubs)), se(cubs), float(np.mean(masses)),
                           float(np.max(tails)), residual, float(np.mean(accs)), bool(residual < RESIDUAL_OK),
                           np.asarray(q),
                           np.mean(logps, axis=0), np.asarray(tau), np.asarray(history), *loop)


def _droplet_mass(q, logp, omega, default: float = 0.4) -> float:
    """Mass of p(q) beyond the barrier (the first local minimum of log p on the grid after q = 0), else
    beyond |q| = ``default`` (the simulations' DEFAULT_DROPLET_THRESHOLD)."""
    interior = np.where((logp[1:-1] < logp[:-2]) & (logp[1:-1] < logp[2:]))[0]
    thr = q[interior[0] + 1] if interior.size else default
    return float(omega[q > thr].sum())
