"""The modular readout's exact conditional draw (Gibbs update) and the closed-form sums over the whole
P x P table (the loss and the Gram matrices without forming the (P^2, N) hidden layer)."""

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


def gibbs_readout(w, pairs, y, c, s2, xi, eps=None, bias: ReadoutBias | None = None):
    r"""Exact draw of the readout's unit variables z_a from p(z_a | w) (one network, float64 algebra).

    The output f = c (h^2) z_a (c = scale * prior std of a, h_i(n, m) = w_{i,n} + w_{i,P+m}) is linear
    in z_a, whose prior is N(0, I), so given the input weights the posterior exp(-L/s2 - |z_a|^2/2) is
    Gaussian, independently for each output p: precision Lambda = I + (c^2/s2) F^T F with the
    features F = h^2 over the training pairs, mean Lambda^{-1} (c/s2) F^T y.  Returns
    mean + chol(Lambda)^{-T} xi for the caller's standard normals xi (N, P) (xi = 0: the conditional
    mean).  w: (2P, N) input weights, pairs: (n, 2) training pairs, y: (n, P) their targets.  Not
    differentiable (a sampler step, never inside a gradient).

    Wider than the data (N > n) the same posterior is drawn in the n-dimensional dual form
    (:func:`_dual_draw`, Matheron's rule): O(n^2 N + n^3) instead of O(N^2 n + N^3): 3.0x cheaper at
    P = 23, N = 1024 (n = P^2 = 529) and 9.8x at N = 2048 (benchmarks/bench_gibbs_readout.py).  It
    needs a second set of standard normals ``eps`` (n, P) for a draw; ``eps=None`` means zeros, which
    with xi = 0 gives the conditional mean (for N <= n ``eps`` is ignored).

    ``bias`` (:class:`ReadoutBias`, optional): an umbrella window (kappa/2)(m - m0)^2 on m = g.z_a, which
    keeps the conditional Gaussian with precision I_P x Lambda + kappa g g^T (rank one, coupling the P
    outputs); it is drawn exactly by Matheron's rule (:func:`_bias_correction`) from the unbiased draw
    and Sigma g, solved with the same factorisation (primal: Lambda^-1 g; dual: g - c^2 F^T K^-1 F g).
    Without it the draw is unchanged, bit for bit."""
    F = (w[pairs[:, 0]] + w[y.shape[-1] + pairs[:, 1]]) ** 2
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


def _circ_conv(u, v):
    """(u * v)_p = sum_n u_n v_{(p - n) mod P} along axis 0 for (P, N) arrays, by FFT."""
    return jnp.fft.irfft(jnp.fft.rfft(u, axis=0) * jnp.fft.rfft(v, axis=0), n=u.shape[0], axis=0)


def full_table_loss(w, a, scale):
    r"""L = 1/2 sum over the whole P x P table and all outputs of (f - y)^2 without forming the
    (P^2, N) hidden layer: with u = w[:P], v = w[P:] (P, N), A = (u^2) a, B = (v^2) a (P, P) and the
    cross term C_p(n, m) = 2 sum_i a_ip u_ni v_mi,

        sum f^2 = s^2 [P |A|^2 + P |B|^2 + 2 (1^T A)(B^T 1) + 4 sum((a a^T) o (u^T u) o (v^T v))
                       + 4 sum_i (sum_m v_mi) (a o u^T A)_i + 4 sum_i (sum_n u_ni) (a o v^T B)_i],
        sum f y = s [sum A + sum B + 2 sum_i sum_p a_ip (u_i * v_i)_p
                     - (1/P)(P sum A + P sum B + 2 sum_i (sum_p a_ip)(sum_n u_ni)(sum_m v_mi))],
        sum y^2 = P (P - 1),

    (* the circular convolution, by FFT).  O(N^2 P + N P^2) instead of the O(N P^3) of the direct
    sum; equal to it to rounding (tested).  w: (2P, N) input weights, a: (N, P) readout."""
    P = a.shape[-1]
    u, v = w[:P], w[P:]
    A = (u * u) @ a                                   # (P, P): A[n, p] = sum_i u_ni^2 a_ip
    B = (v * v) @ a
    su, sv = jnp.sum(u, axis=0), jnp.sum(v, axis=0)   # (N,)
    cross = 4.0 * jnp.sum((a @ a.T) * (u.T @ u) * (v.T @ v))
    AC = 4.0 * jnp.sum(sv * jnp.sum(a * (u.T @ A), axis=1))
    BC = 4.0 * jnp.sum(su * jnp.sum(a * (v.T @ B), axis=1))
    f2 = P * jnp.sum(A * A) + P * jnp.sum(B * B) + 2.0 * jnp.sum(jnp.sum(A, 0) * jnp.sum(B, 0)) + cross + AC + BC
    conv = _circ_conv(u, v)                           # (P, N): (u_i * v_i)_p
    sum_a = jnp.sum(a, axis=1)
    fy = (jnp.sum(A) + jnp.sum(B) + 2.0 * jnp.sum(conv.T * a)
          - (P * jnp.sum(A) + P * jnp.sum(B) + 2.0 * jnp.sum(sum_a * su * sv)) / P)
    return 0.5 * scale * scale * f2 - scale * fy + 0.5 * P * (P - 1)


def full_table_gram(w):
    r"""F^T F and F^T y of the features F_(nm),i = (u_ni + v_mi)^2 over the whole table, in O(N^2 P)
    (expanding the square: moments of u over n times moments of v over m) instead of O(N^2 P^2).
    F^T y[i, p] = 2 (u_i * v_i)_p - 2 (sum_n u_ni)(sum_m v_mi)/P.  Returns float64 (N, N), (N, P)."""
    w = w.astype(jnp.float64)
    P = w.shape[0] // 2
    u, v = w[:P], w[P:]
    u2, v2 = u * u, v * v
    su, sv, su2, sv2 = (jnp.sum(x, axis=0) for x in (u, v, u2, v2))
    t = (u2.T @ u) * sv[None, :]                      # sum_n u_i^2 u_j * sum_m v_j
    s_ = (v2.T @ v) * su[None, :]
    G = (P * (u2.T @ u2) + P * (v2.T @ v2) + 4.0 * (u.T @ u) * (v.T @ v)
         + jnp.outer(su2, sv2) + jnp.outer(sv2, su2)
         + 2.0 * (t + t.T) + 2.0 * (s_ + s_.T))
    return G, full_table_Fy(w)


def full_table_Fy(w):
    """F^T y over the whole table, (N, P): F^T y[i, p] = 2 (u_i * v_i)_p - 2 (sum_n u_ni)(sum_m v_mi)/P
    (the squares u_n^2 and v_m^2 meet every output equally and cancel against the -1/P part)."""
    w = w.astype(jnp.float64)
    P = w.shape[0] // 2
    u, v = w[:P], w[P:]
    return 2.0 * _circ_conv(u, v).T - 2.0 * (jnp.sum(u, axis=0) * jnp.sum(v, axis=0))[:, None] / P


def _draw_from_gram(G, b, c, s2, xi, bias: ReadoutBias | None = None):
    """A draw of N(Lambda^-1 (c/s2) b, Lambda^-1), Lambda = I + (c^2/s2) G, per output (columns of b and
    xi); with ``bias`` the umbrella window's biased conditional (:func:`gibbs_readout`)."""
    c = jnp.asarray(c, jnp.float64)
    Lam = jnp.eye(G.shape[0], dtype=jnp.float64) + (c * c / s2) * G
    if bias is None:
        return _spd_draw(Lam, (c / s2) * b, jnp.asarray(xi, jnp.float64))
    z0, Sg = _spd_draw_solve(Lam, (c / s2) * b, jnp.asarray(xi, jnp.float64), jnp.asarray(bias.g, jnp.float64))
    return _bias_correction(z0, Sg, bias)

