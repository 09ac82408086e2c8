r"""The exact Gaussian draw of a readout that enters the output linearly (THEORY.md §1): given the
first-layer weights, f = c F z (features F (n, N), unit readout variables z (N, P) with prior N(0, I),
c the readout's prior std times the model's scale), so p(z | w) ∝ exp(-|y - c F z|^2/(2 s2) - |z|^2/2)
is Gaussian with precision Lambda = I + (c^2/s2) F^T F and mean Lambda^-1 (c/s2) F^T y, independently
per output column.  :func:`readout_draw` draws it in the primal form (an N x N Cholesky) or, wider than
the data (N > n), in the n-dimensional dual form (Matheron's rule); an umbrella window on an order
parameter linear in z (:class:`ReadoutBias`) is a rank-one update drawn exactly.  Shared by the modular
model (square activation, P outputs) and the teacher-student model (one output)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class ReadoutBias(NamedTuple):
    r"""An umbrella window on an order parameter linear in the readout's unit variables (THEORY.md §7):
    the extra factor exp(-(kappa/2)(m0 - g.z)^2) of the readout's conditional, m = g.z = sum_{i,p} g_ip z_ip.
    g: (N, P) (the modular target component: g = c F_all^T y/(y, y), :func:`full_table_Fy`); kappa, m0:
    scalars in log-posterior units; eps: the draw's extra standard normal (scalar; 0 with xi = 0 gives
    the conditional mean)."""

    g: Any
    kappa: Any
    m0: Any
    eps: Any


def _bias_correction(z0, Sg, bias: ReadoutBias):
    r"""Matheron's rule for one extra Gaussian observation m0 = g.z + eta, eta ~ N(0, 1/kappa): a draw z0
    of the unbiased conditional N(mu, Sigma) becomes a draw of the biased one (precision
    Sigma^-1 + kappa g g^T, mean shifted accordingly) as

        z = z0 + Sigma g (m0 - g.z0 - eps/sqrt(kappa)) / (g.Sigma g + 1/kappa)
          = z0 + Sigma g (kappa (m0 - g.z0) - sqrt(kappa) eps) / (kappa g.Sigma g + 1),

    the second form finite at kappa = 0 (where it returns z0 exactly).  ``Sg`` = Sigma g, from the same
    factorisation as z0; Sigma is block diagonal over the P outputs (I_P x Lambda^-1), so the rank-one
    term is what couples them."""
    g = jnp.asarray(bias.g, jnp.float64)
    kappa = jnp.asarray(bias.kappa, jnp.float64)
    gz = jnp.sum(g * z0)
    gSg = jnp.sum(g * Sg)
    t = (kappa * (bias.m0 - gz) - jnp.sqrt(kappa) * bias.eps) / (kappa * gSg + 1.0)
    return z0 + t * Sg


def _spd_draw_one(Lam, b, xi):
    """Lam^{-1} b + chol(Lam)^{-T} xi for one SPD matrix (float64): a draw of N(Lam^-1 b, Lam^-1)."""
    chol = jnp.linalg.cholesky(Lam)
    mean = jax.scipy.linalg.cho_solve((chol, True), b)
    return mean + jax.scipy.linalg.solve_triangular(chol.T, xi, lower=False)


@jax.custom_batching.custom_vmap
def _spd_draw(Lam, b, xi):
    return _spd_draw_one(Lam, b, xi)


@_spd_draw.def_vmap
def _spd_draw_vmap(axis_size, in_batched, Lam, b, xi):
    """Batching rule: on a GPU/TPU the batched factorisation; on XLA:CPU one matrix after another
    (``lax.map``).  jaxlib's batched CPU LAPACK kernels split the batch over the intra-op thread pool
    and wait for it, which deadlocked (nondeterministically) when the pool's threads were busy with
    the same executable: 8 networks of N = 256 on 2 cores, also with 2 host devices (jaxlib 0.10)."""
    args = [x if bat else jnp.broadcast_to(x, (axis_size,) + x.shape) for x, bat in zip((Lam, b, xi), in_batched)]
    if jax.default_backend() == "cpu":
        out = jax.lax.map(lambda a: _spd_draw(*a), tuple(args))
    else:
        out = jax.vmap(_spd_draw_one)(*args)
    return out, True


def _spd_draw_solve_one(Lam, b, xi, extra):
    """(Lam^{-1} b + chol(Lam)^{-T} xi, Lam^{-1} extra) with one factorisation; the first output is computed
    by exactly the operations of :func:`_spd_draw_one` (the same bits)."""
    chol = jnp.linalg.cholesky(Lam)
    mean = jax.scipy.linalg.cho_solve((chol, True), b)
    draw = mean + jax.scipy.linalg.solve_triangular(chol.T, xi, lower=False)
    return draw, jax.scipy.linalg.cho_solve((chol, True), extra)


@jax.custom_batching.custom_vmap
def _spd_draw_solve(Lam, b, xi, extra):
    return _spd_draw_solve_one(Lam, b, xi, extra)


@_spd_draw_solve.def_vmap
def _spd_draw_solve_vmap(axis_size, in_batched, Lam, b, xi, extra):
    """The batching rule of :func:`_spd_draw` (one matrix after another on XLA:CPU)."""
    args = [x if bat else jnp.broadcast_to(x, (axis_size,) + x.shape)
            for x, bat in zip((Lam, b, xi, extra), in_batched)]
    if jax.default_backend() == "cpu":
        out = jax.lax.map(lambda a: _spd_draw_solve(*a), tuple(args))
    else:
        out = jax.vmap(_spd_draw_solve_one)(*args)
    return out, (True, True)


def readout_draw(F, y, c, s2, xi, eps=None, bias: ReadoutBias | None = None):
    r"""A draw of the readout's unit variables from N(Lambda^-1 (c/s2) F^T y, Lambda^-1),
    Lambda = I + (c^2/s2) F^T F (one network; float64 algebra; not differentiable).  F: (n, N) features,
    y: (n, P) targets, xi: (N, P) standard normals, eps: (n, P) the dual form's second set of standard
    normals (None: zeros; ignored in the primal form); xi = 0 and eps None give the conditional mean.
    The primal N x N form for N <= n, the dual n x n form (:func:`_dual_draw`) for N > n: the same law
    (tested), O(n^2 N + n^3) instead of O(N^2 n + N^3)."""
    if F.shape[1] > F.shape[0]:
        return _dual_draw(F, y.astype(jnp.float64), c, s2, xi, eps, bias)
    return _draw_from_gram((F.T @ F).astype(jnp.float64), (F.T @ y).astype(jnp.float64), c, s2, xi, bias)


def _dual_draw(F, y, c, s2, xi, eps, bias: ReadoutBias | None = None):
    r"""A draw of N(Lambda^-1 (c/s2) F^T y, Lambda^-1), Lambda = I + (c^2/s2) F^T F, from an n x n system
    (Matheron's rule): z = xi + c F^T K^-1 (y - c F xi - sqrt(s2) eps), K = c^2 F F^T + s2 I_n, with
    xi ~ N(0, I_N) a prior draw and eps ~ N(0, I_n) the likelihood's noise.  Its mean is
    c F^T K^-1 y = Lambda^-1 (c/s2) F^T y (push-through identity) and its covariance
    I - c^2 F^T K^-1 F = Lambda^-1 (Woodbury).  F: (n, N) in the simulation's dtype (F F^T is formed in
    it, as the primal form forms F^T F; the rest is float64), y: (n, P), xi: (N, P), eps: (n, P) or None
    (zeros).  ``bias``: an umbrella window (:func:`gibbs_readout`), with Sigma g = Lambda^-1 g =
    g - c^2 F^T K^-1 F g (Woodbury) from the same factorisation of K."""
    c = jnp.asarray(c, jnp.float64)
    xi = jnp.asarray(xi, jnp.float64)
    K = (c * c) * (F @ F.T).astype(jnp.float64) + s2 * jnp.eye(F.shape[0], dtype=jnp.float64)
    F = F.astype(jnp.float64)
    r = y - c * (F @ xi)
    if eps is not None:
        r = r - jnp.sqrt(s2) * jnp.asarray(eps, jnp.float64)
    if bias is None:
        sol = _spd_draw(K, r, jnp.zeros_like(r))                 # K^-1 r (the batching rule of _spd_draw)
        return xi + c * (F.T @ sol)
    g = jnp.asarray(bias.g, jnp.float64)
    sol, sol_g = _spd_draw_solve(K, r, jnp.zeros_like(r), F @ g)
    return _bias_correction(xi + c * (F.T @ sol), g - (c * c) * (F.T @ sol_g), bias)


def _draw_from_gram(G, b, c, s2, xi, bias: ReadoutBias | None = None):
    """A draw of N(Lambda^-1 (c/s2) b, Lambda^-1), Lambda = I + (c^2/s2) G, per output (columns of b and
    xi); with ``bias`` the umbrella window's biased conditional (:func:`gibbs_readout`)."""
    c = jnp.asarray(c, jnp.float64)
    Lam = jnp.eye(G.shape[0], dtype=jnp.float64) + (c * c / s2) * G
    if bias is None:
        return _spd_draw(Lam, (c / s2) * b, jnp.asarray(xi, jnp.float64))
    z0, Sg = _spd_draw_solve(Lam, (c / s2) * b, jnp.asarray(xi, jnp.float64), jnp.asarray(bias.g, jnp.float64))
    return _bias_correction(z0, Sg, bias)

